"""Complete and quasi-complete separation in binomial models, found before fitting.

The maximum likelihood estimates of a binomial model (any link) are finite exactly when
no direction ``d != 0`` of the fixed effects has ``x_i'd >= 0`` on every success and
``x_i'd <= 0`` on every failure (Albert & Anderson 1984). Random effects do not change
that: along such a ``d`` every row's likelihood grows for any value of the random
effects, so the marginal likelihood does too. As R's ``detectseparation`` (Konis 2007,
the "primal" linear program of ``safeBinaryRegression``), the check maximizes
``sum_i s_i x_i'd`` subject to ``s_i x_i'd >= 0`` (``s_i = +1`` for a success, ``-1`` for a
failure) within the box ``|d_j| <= 1``; a nonzero solution reveals separation, and its
nonzero entries name the coefficients whose estimates are infinite, with their signs.
Here the columns of X are first scaled to a maximum absolute value of 1 (so the verdict
and the ``1e-3`` tolerance do not depend on the units of a covariate; signs and zeros of
``d`` are unchanged by that scaling). A successes/trials row with ``0 < y < n`` is both a
success and a failure (two constraints: ``x_i'd = 0``). Duplicate constraints are merged
(their count weights the objective, which leaves the linear program as it is), and on
large data a subsample is tried first: a subsample that is not separated and whose X
has full column rank proves the whole data are not separated.

Most data are not separated, and that is proved without the linear program by Stiemke's
theorem: there is no separating ``d`` exactly when some strictly positive weights
``lambda_i`` have ``sum_i lambda_i s_i x_i = 0``. A few Newton steps on
``sum_i c_i log(1 + exp(-s_i x_i'd))`` (finite exactly when there is no separation) give
such weights, ``c_i / (1 + exp(s_i x_i'd))``, up to a small residual, which a
least-squares correction removes; when the corrected weights are all positive (by a
margin) the data are not separated, and only otherwise the linear program runs
(:func:`_certified`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .design import ModelFrame, build_frame
from .errors import GLMMInputError, SeparationError, SeparationWarning, warn
from .families import Binomial, Family, get_family
from .formula import parse_formula

TOL = 1e-3  # an entry of the scaled LP direction above this is an infinite estimate
TOL_ROW = 1e-7  # a row with |x_i'd| (scaled) below this is not separated by d
SCREEN_ROWS = 4000  # above this many constraints, try a subsample first
SAMPLE_ROWS = 1000
POLICIES = ("error", "warn", "ignore")
ADVICE = ("remove or recode the separating covariate(s), merge sparse factor levels, or "
          "use a penalized (bias-reduced, e.g. R's brglm2) or Bayesian fit with a prior on "
          "the fixed effects; on_separation='warn' fits anyway and reports these estimates "
          "as infinite")


@dataclass(frozen=True, eq=False)
class Separation:
    """The outcome of a separation check.

    ``separated``: whether some fixed-effect estimates are infinite; ``kind``: "complete"
    (every row is predicted perfectly), "quasi-complete", "none", or "not applicable"
    (not a binomial model); ``infinite``: +inf / -inf / 0.0 per coefficient (named as
    ``res.x_names``); ``direction``: the separating direction d of the linear program
    (in the units of X, largest entry 1 in absolute value; zeros when not separated);
    ``n_predicted``: the rows predicted perfectly (all, for complete separation; else
    those with ``x_i'd != 0``: all successes on one side, all failures on the other);
    ``message`` says it all in words. ``policy``: the fit's ``on_separation``.
    """

    separated: bool
    kind: str
    infinite: pd.Series
    direction: pd.Series
    n_predicted: int
    n_rows: int
    message: str
    policy: str = "error"
    _response: tuple = field(default=(), repr=False, compare=False)

    @property
    def applicable(self) -> bool:
        return self.kind != "not applicable"

    def describes(self, frame: ModelFrame) -> bool:
        """Whether this record was made for ``frame``'s response (not a new one)."""
        if not self._response:
            return False
        y, trials = self._response
        return (y is frame.y or np.array_equal(y, frame.y)) and \
            (trials is frame.trials or np.array_equal(trials, frame.trials))

    def __repr__(self) -> str:
        if not self.separated:
            return f"<Separation {self.kind}: {self.message}>"
        inf = self.infinite[self.infinite != 0]
        cols = ", ".join(f"{n} {'+' if v > 0 else '-'}Inf" for n, v in inf.items())
        return f"<Separation {self.kind}: {cols}; {self.n_predicted} of {self.n_rows} rows " \
               "predicted perfectly>"


def detect_separation(formula: str, data: pd.DataFrame, family: str | Family = "binomial",
                      link: str | None = None, *, weights=None, offset=None,
                      contrasts: dict | None = None) -> Separation:
    """Check a binomial model for complete or quasi-complete separation by the linear
    program of R's ``detectseparation`` on its fixed-effects design, built as the fit
    builds it (random terms are parsed and validated but play no part: random effects
    do not cure separation). Arguments as in :func:`glmm_jax.fit`. For other families
    the result says that the check does not apply (``kind == "not applicable"``).

    >>> import glmm_jax as gj
    >>> df = gj.datasets.load("cbpp")
    >>> gj.detect_separation("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                      df).separated
    False
    >>> df["x"] = (df.incidence > 0).astype(float)   # x = 1 exactly where y > 0
    >>> sep = gj.detect_separation("cbind(incidence, size - incidence) ~ x", df)
    >>> sep.kind, float(sep.infinite["x"]), float(sep.infinite["(Intercept)"])
    ('quasi-complete', inf, -inf)
    """
    fam = get_family(family, link)
    spec = parse_formula(formula)
    frame = build_frame(spec, data, fam, weights=weights, offset=offset, contrasts=contrasts)
    return separation_of(frame, fam, spec.formula)


def check_policy(on_separation: str) -> str:
    if on_separation not in POLICIES:
        raise GLMMInputError(f"on_separation must be one of {', '.join(map(repr, POLICIES))}, "
                             f"not {on_separation!r}")
    return on_separation


def check(frame: ModelFrame, fam: Family, formula: str, policy: str = "error"
          ) -> Separation | None:
    """The separation record of a model about to be fitted, acting on ``policy``:
    "error" raises :class:`SeparationError`, "warn" issues a :class:`SeparationWarning`,
    "ignore" skips the check (None). Non-binomial models are not checked (None)."""
    if check_policy(policy) == "ignore" or not isinstance(fam, Binomial):
        return None
    sep = separation_of(frame, fam, formula, policy)
    if sep.separated:
        if policy == "error":
            raise SeparationError(sep.message)
        warn(sep.message, SeparationWarning)
    return sep


def separation_of(frame: ModelFrame, fam: Family, formula: str = "",
                  policy: str = "error") -> Separation:
    """The separation record of a validated model frame (see :func:`detect_separation`)."""
    names = list(frame.x_names)
    zeros = pd.Series(np.zeros(len(names)), index=names)
    response = (frame.y, frame.trials)
    if not isinstance(fam, Binomial):
        msg = (f"separation checks apply to binomial models only; this model's family is "
               f"{fam.name!r}: nothing was checked")
        return Separation(False, "not applicable", zeros, zeros.copy(), 0, len(frame.y), msg,
                          policy, response)
    rows, succ, fail = _classes(frame)
    d = _direction(frame.X, succ, fail) if len(names) else None
    if d is None:
        msg = f"{formula}: no separation: the fixed-effect estimates are finite"
        return Separation(False, "none", zeros, zeros.copy(), 0, len(frame.y), msg, policy,
                          response)
    d, scale = d
    big = np.abs(d) > TOL * np.max(np.abs(d))  # (d in scaled units)
    infinite = np.zeros(len(names))
    infinite[big] = np.sign(d[big]) * np.inf
    complete = _complete(_constraints(frame.X / scale, succ, fail))
    d = d / scale
    d = d / np.max(np.abs(d))
    v = frame.X @ d
    tol = TOL_ROW * np.max(np.abs(frame.X * d), axis=1)
    strict = rows & ~(succ & fail) & (np.abs(v) > tol)  # both outcomes: never strict
    kind = "complete" if complete else "quasi-complete"
    inf = pd.Series(infinite, index=names)
    direction = pd.Series(d, index=names)
    msg = _message(formula, kind, inf, direction, frame, v, strict, rows)
    n_predicted = int(rows.sum()) if complete else int(strict.sum())
    return Separation(True, kind, inf, direction, n_predicted, len(frame.y), msg, policy,
                      response)


def _classes(frame: ModelFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that take part (positive weight and trials), rows with a success (y > 0) and
    rows with a failure (y < n): a row with 0 < y < n is both."""
    y, n = frame.y, frame.trials
    rows = (frame.weights > 0) & (n > 0)
    return rows, rows & (y > 0), rows & (y < n)


def _constraints(X: np.ndarray, succ: np.ndarray, fail: np.ndarray) -> np.ndarray:
    """The LP's rows ``s_i x_i``: +x_i for a success, -x_i for a failure (both for a
    row with both)."""
    return np.concatenate([X[succ], -X[fail]])


def _scale(X: np.ndarray) -> np.ndarray:
    """Each column's largest absolute value (1 for a column of zeros)."""
    T = np.ascontiguousarray(X.T)  # (row reductions of the transpose: 10x faster)
    scale = np.maximum(T.max(axis=1), -T.min(axis=1)) if len(X) else np.ones(X.shape[1])
    scale[scale == 0] = 1.0
    return scale


def _direction(X: np.ndarray, succ: np.ndarray, fail: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """A separating direction (``s_i x_i'd >= 0`` on every row, not all 0) of the design
    with columns scaled by their largest absolute values on the rows that take part, and
    those scales (so d is in scaled units); None when there is none. On large data a
    subsample (scaled by its own columns: separation does not depend on the scaling)
    may prove there is none without a pass over all rows."""
    n = int(succ.sum() + fail.sum())
    size = SAMPLE_ROWS
    nonzero = None
    while n > SCREEN_ROWS and 2 * size < n:
        idx, nonzero = _sample(X, succ, fail, size, nonzero)
        sub = X[idx]
        sub_scale = _scale(sub)
        sub = sub / sub_scale
        S = _constraints(sub, succ[idx], fail[idx])
        if size == SAMPLE_ROWS and _certified(S) and \
                np.linalg.matrix_rank(sub) == X.shape[1]:
            return None  # (the subsample is not separated and has full rank)
        d = _solve(S)
        if d is None and np.linalg.matrix_rank(sub) == X.shape[1]:
            return None  # a full-rank subsample without separation: none in the whole
        if d is not None:
            v = X @ (d / sub_scale)
            if np.all(v[succ] >= -TOL_ROW) and np.all(v[fail] <= TOL_ROW):
                break  # the subsample's direction separates all rows: solve the whole
        size *= 8
    used = succ | fail
    scale = _scale(X if used.all() else X[used])
    A, counts = _unique_rows(_constraints(X / scale, succ, fail))
    if _certified(A, counts):
        return None
    d = _solve(A, counts)
    return None if d is None else (d, scale)


def _certified(S: np.ndarray, counts: np.ndarray | None = None, steps: int = 25) -> bool:
    """Whether strictly positive weights ``lam`` with ``S'lam = 0`` are found (then no
    ``d != 0`` has ``S d >= 0``: Stiemke's theorem): damped Newton on
    ``f(d) = sum_i c_i softplus(-S_i d)``, whose gradient is ``-S'lam`` with
    ``lam_i = c_i sigmoid(-S_i d)``, then ``lam`` corrected by least squares so that
    ``S'lam = 0`` exactly; True when every corrected weight is positive by a margin.
    False says nothing (the linear program decides)."""
    c = np.ones(len(S)) if counts is None else counts
    d = np.zeros(S.shape[1])

    def value(d):
        return float(c @ np.logaddexp(0.0, -(S @ d)))

    def sigmoid_minus(d):  # sigmoid(-S d), stable
        return 0.5 * (1.0 + np.tanh(-0.5 * (S @ d)))

    f = value(d)
    for _ in range(steps):
        sig = sigmoid_minus(d)
        g = -(S.T @ (c * sig))
        H = (S * (c * sig * (1.0 - sig))[:, None]).T @ S
        try:
            step = np.linalg.solve(H, -g)
        except np.linalg.LinAlgError:
            return False
        t, f_trial = 1.0, value(d + step)
        while t > 1e-4 and f_trial > f:  # halve until the value does not increase
            t *= 0.5
            f_trial = value(d + t * step)
        if t <= 1e-4:
            break
        d, f = d + t * step, f_trial
        if np.max(np.abs(t * step)) < 1e-10 * (1.0 + np.max(np.abs(d))):
            break
    lam = c * sigmoid_minus(d)
    M = (S * c[:, None]).T @ S
    try:
        a = np.linalg.solve(M, S.T @ lam)
    except np.linalg.LinAlgError:
        return False
    corrected = lam - c * (S @ a)
    positive = np.all(corrected > 1e-8 * c * max(1.0, float(np.max(lam / c))))
    # S'corrected is 0 but for rounding, unless M is singular (then no certificate)
    residual = np.max(np.abs(S.T @ corrected))
    return bool(positive and residual <= 1e-9 * np.max(np.abs(S).T @ np.abs(corrected)))


def _complete(S: np.ndarray) -> bool:
    """Whether some direction has ``S d >= t > 0`` on every row (complete separation):
    maximize t subject to S d >= t, |d| <= 1, t <= 1."""
    from scipy.optimize import linprog  # (imported when needed: slow to import)

    S, _ = _unique_rows(S)
    p = S.shape[1]
    c = np.zeros(p + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=np.hstack([-S, np.ones((len(S), 1))]), b_ub=np.zeros(len(S)),
                  bounds=[(-1.0, 1.0)] * p + [(0.0, 1.0)], method="highs")
    return bool(res.status == 0 and res.x is not None and res.x[-1] > TOL_ROW * 1e3)


def _sample(X: np.ndarray, succ: np.ndarray, fail: np.ndarray, size: int,
            nonzero: dict | None) -> tuple[np.ndarray, dict]:
    """Rows of a deterministic subsample of about ``size`` rows: random rows, every row
    where a sparse column (at most 200 nonzero entries) is nonzero, and all the rows of a
    rare outcome; and ``nonzero`` updated: the nonzero rows of each column that may be
    sparse (a column nonzero on more than 1% of the random rows is taken as not sparse;
    the others' rows are found once, on all rows, and kept for the next, larger sample)."""
    used = succ | fail
    pick = np.flatnonzero(used)
    random_rows = np.random.default_rng(0).choice(pick, min(size, len(pick)), replace=False)
    nonzero = {} if nonzero is None else nonzero
    dense = np.count_nonzero(X[random_rows], axis=0) > 0.01 * len(random_rows)
    for j in np.flatnonzero(~dense):
        if j not in nonzero:
            nonzero[j] = np.flatnonzero(X[:, j])
    take = [random_rows] + [nz for nz in nonzero.values() if len(nz) <= 200]
    take += [np.flatnonzero(c) for c in (succ, fail) if c.sum() <= size // 2]
    idx = np.unique(np.concatenate(take))
    return idx[used[idx]], nonzero


def _unique_rows(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of S and how often each occurs."""
    df = pd.DataFrame(S)
    keys = pd.util.hash_pandas_object(df, index=False).to_numpy()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return S[first], counts.astype(float)


def _solve(S: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray | None:
    """maximize sum_i c_i S_i d subject to S d >= 0, |d| <= 1 (HiGHS); d, or None when
    the optimum is d = 0 (no separation)."""
    from scipy.optimize import linprog  # (imported when needed: slow to import)

    c = S.sum(axis=0) if counts is None else counts @ S
    p = S.shape[1]
    res = linprog(-c, A_ub=-S, b_ub=np.zeros(len(S)), bounds=[(-1.0, 1.0)] * p,
                  method="highs")
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"separation check: the linear program failed ({res.message})")
    d = np.asarray(res.x)
    if np.max(np.abs(d)) <= TOL:
        return None
    v = S @ d
    if np.max(v) <= TOL_ROW * 1e3 or np.min(v) < -1e-6:  # nothing strictly separated
        return None
    return d


def _message(formula: str, kind: str, inf: pd.Series, d: pd.Series, frame: ModelFrame,
             v: np.ndarray, strict: np.ndarray, rows: np.ndarray) -> str:
    shown = inf[inf != 0]
    cols = ", ".join(f"`{n}` ({'+' if s > 0 else '-'}Inf)" for n, s in shown.items())
    verb = "estimates of {} are infinite" if len(shown) > 1 else "estimate of {} is infinite"
    n_succ, n_fail = int((strict & (v > 0)).sum()), int((strict & (v < 0)).sum())
    sides = [f"> 0 on {n_succ} rows, all successes (y = 1)" if n_succ else "",
             f"< 0 on {n_fail} rows, all failures (y = 0)" if n_fail else ""]
    out = (f"{kind} separation in {formula}: the maximum likelihood {verb.format(cols)}. "
           f"The combination {_combination(d)} is " + " and ".join(s for s in sides if s))
    rest = int((rows & ~strict).sum())
    if rest:
        out += f"; it is 0 on the other {rest} rows"
        if kind == "complete":
            out += " (a nearby combination is nonzero on every row: complete separation)"
    return f"{out}. To fix: {ADVICE}."


def _combination(d: pd.Series) -> str:
    terms = [(n, c) for n, c in d.items() if abs(c) > 1e-12]
    parts = []
    for k, (n, c) in enumerate(terms):
        sign = "-" if c < 0 else ("+" if k else "")
        mag = abs(c)
        body = f"{mag:.3g}" if n == "(Intercept)" else \
            (f"`{n}`" if np.isclose(mag, 1.0) else f"{mag:.3g}*`{n}`")
        parts.append(f"{sign} {body}" if k else f"{sign}{body}")
    return " ".join(parts)
