"""Does a fit sit at the optimum? Refits from dispersed starting values (the question lme4
users ask with ``allFit``): in one vmapped, compiled Newton program on an accelerator, one
by one with the fit's own compiled program on a CPU (see :func:`check_convergence`).

The starts are the model's default start and ``n_starts`` points drawn around the
estimate in theta's coordinates: each fixed effect moved by 2 standard errors times a
standard normal draw (where the SE is not finite, by max(1, |estimate| / 10)), each
diagonal entry of a covariance factor L multiplied by exp(N(0, 1)) (from at least 0.1,
times sigma for Gaussian models, so a variance at 0 moves off the boundary), each
off-diagonal entry moved by N(0, 1) / 2 times its row's size, and the log dispersion moved
by N(0, 1) / 2; ``scale`` multiplies every spread. A refit that Newton leaves unconverged
continues with L-BFGS and Newton again, as a fit does.

Each refit is compared with the fit: the log-likelihood (``tol_loglik``, absolute), and
the fixed effects and the variance components in lme4's sd/cor coordinates (``tol_par``,
relative to max(1, |value|); correlations of an effect whose SD is ~0 are left out, they
are not identified). These are the columns of lme4's ``summary(allFit(fit))`` (llik,
fixef, sdcor); the defaults (1e-6 and 1e-3) are well above the optimizer's own precision
(Newton's decrement below 1e-12 (1 + |f|): log-likelihoods agree to ~1e-10 and parameters
to ~1e-6 on cbpp, sleepstudy and a crossed model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

from . import varpar
from .errors import GLMMInputError
from .fitresult import SINGULAR_TOL, Run, make_result


@dataclass(frozen=True)
class ConvergenceCheck:
    """Refits of a model from dispersed starts, compared with the fit.

    ``table``: one row per start (``start`` 0 is the model's default start, then the
    perturbed ones): converged, status, loglik, ``d_loglik`` (refit - fit), the largest
    absolute differences of the fixed effects (``d_fixef``) and of the variance
    components in sd/cor coordinates (``d_varcomp``), Newton iterations and methods.
    ``same_optimum``: every refit converged to the fit's optimum within the tolerances.
    ``best``: the converged refit with the highest log-likelihood (a GLMMResult, or None);
    ``fits``: all refits; ``starts``: their starting theta; ``message``: the verdict.
    """

    formula: str
    table: pd.DataFrame
    same_optimum: bool
    loglik: float  # the fit's
    best_loglik: float  # the highest over the converged refits (nan if none converged)
    best: object
    message: str
    starts: np.ndarray = field(repr=False)
    fits: tuple = field(default=(), repr=False)
    tolerances: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def better_found(self) -> bool:
        """A converged refit has a higher log-likelihood than the fit (beyond tol_loglik):
        the fit was not at the global optimum."""
        return bool(self.best_loglik > self.loglik + self.tolerances["loglik"])

    def __repr__(self) -> str:
        t = self.table
        return (f"<ConvergenceCheck {self.formula!r}: {len(t)} starts, "
                f"{int(t['converged'].sum())} converged, same optimum: {self.same_optimum}, "
                f"best logLik {self.best_loglik:.6f} (fit {self.loglik:.6f})>")

    def __str__(self) -> str:
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            return f"{self.message}\n{self.table.to_string()}"


def check_convergence(res, n_starts: int = 5, seed: int = 0, scale: float = 1.0,
                      max_iter: int = 100, lbfgs: bool = True, tol_loglik: float = 1e-6,
                      tol_par: float = 1e-3, batched: bool | None = None
                      ) -> ConvergenceCheck:
    """Refit ``res``'s model from its default start and ``n_starts`` starts drawn around
    the estimate (``seed``; spreads times ``scale``, see the module docstring), and say
    whether they reach the fit's optimum. ``batched=True`` refits all starts in one
    vmapped program; ``False`` one start at a time with the fit's own compiled program
    (no new compile); the results are the same. The default (None) batches on an
    accelerator (GPU/TPU) and not on a CPU, where the vmapped program's compile (seconds
    for a small model, tens of seconds for a large one) costs more than it saves.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> check = gj.check_convergence(res, n_starts=5, seed=1)
    >>> check.same_optimum, len(check.table), bool(check.table["converged"].all())
    (True, 6, True)
    >>> bool(check.table["d_loglik"].abs().max() < 1e-6)
    True
    """
    _check_args(res, n_starts, seed, scale, max_iter, tol_loglik, tol_par)
    t0 = time.perf_counter()
    model = res.model
    s = model.structure
    names = model.theta_names
    fixed = tuple(res.convergence.fixed) if res.convergence is not None else ()
    free = np.ones(len(names))
    free[[names.index(n) for n in fixed]] = 0.0
    starts = _starts(res, model, int(n_starts), int(seed), float(scale), free)
    if batched is None:
        batched = jax.default_backend() != "cpu"
    outs = _refit(starts, model, int(max_iter), free, bool(batched))
    fits, rows = [], []
    for k, (theta0, one) in enumerate(zip(starts, outs, strict=True)):
        run = Run(theta0, int(max_iter), fixed=fixed)
        run.newton(one)
        notes = ()
        if lbfgs and not bool(one.converged):
            one, notes = model.continue_with_lbfgs(one, int(max_iter), run, free)
        r = make_result(res.formula, model.frame, s.family, s, one, run, notes,
                        model.clusters, model=model)
        fits.append(r)
        rows.append(_compare(k, r, res))
    table = pd.DataFrame(rows).set_index("start")
    tol = {"loglik": float(tol_loglik), "par": float(tol_par)}
    agree = (table["converged"] & (table["d_loglik"].abs() <= tol["loglik"])
             & (table["d_fixef_rel"] <= tol["par"]) & (table["d_varcomp_rel"] <= tol["par"]))
    table = table.drop(columns=["d_fixef_rel", "d_varcomp_rel"]).assign(same=agree)
    ok = table["converged"].to_numpy()
    best_k = int(np.argmax(np.where(ok, table["loglik"], -np.inf))) if ok.any() else None
    best = fits[best_k] if best_k is not None else None
    best_ll = float(table["loglik"].iloc[best_k]) if best_k is not None else float("nan")
    same = bool(agree.all())
    message = _verdict(table, res, same, best_k, best_ll, tol)
    return ConvergenceCheck(res.formula, table, same, float(res.loglik), best_ll, best,
                            message, starts, tuple(fits), tol, time.perf_counter() - t0)


def _check_args(res, n_starts, seed, scale, max_iter, tol_loglik, tol_par) -> None:
    if getattr(res, "model", None) is None or not hasattr(res, "theta"):
        raise GLMMInputError("check_convergence needs a fitted GLMMResult (from gj.fit), "
                             f"not {type(res).__name__}")
    for name, v in (("n_starts", n_starts), ("max_iter", max_iter)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise GLMMInputError(f"check_convergence: {name} must be a positive integer, "
                                 f"not {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GLMMInputError(f"check_convergence: seed must be a non-negative integer, "
                             f"not {seed!r}")
    for name, v in (("scale", scale), ("tol_loglik", tol_loglik), ("tol_par", tol_par)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not np.isfinite(v) or v <= 0:
            raise GLMMInputError(f"check_convergence: {name} must be a positive number, "
                                 f"not {v!r}")


def _starts(res, model, n: int, seed: int, scale: float, free: np.ndarray) -> np.ndarray:
    """[n + 1, len(theta)]: the default start, then n draws around the estimate."""
    lay = model.layout
    theta = np.asarray(res.theta, dtype=float)
    default = np.asarray(model.start(), dtype=float)
    fixed = free == 0
    default[fixed] = theta[fixed]
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.diag(np.asarray(res.cov_theta, dtype=float)))
    good = np.isfinite(se) & (se > 0)
    spread_beta = np.where(good, 2.0 * se, np.maximum(1.0, np.abs(theta) / 10))[: lay.p]
    floor = 0.1 * (res.sigma if res.family.name == "gaussian" else 1.0)
    rng = np.random.default_rng(seed)
    out = [default]
    for _ in range(n):
        beta, Ls, log_phi = lay.unpack_np(theta)
        beta = beta + scale * spread_beta * rng.normal(size=lay.p)
        new_Ls = []
        for L in Ls:
            q = len(L)
            size = np.maximum(np.sqrt(np.sum(L * L, axis=1)), floor)  # each row's SD
            M = np.tril(L + 0.5 * scale * size[:, None] * rng.normal(size=(q, q)), -1)
            d = np.maximum(np.abs(np.diag(L)), floor) * np.exp(scale * rng.normal(size=q))
            new_Ls.append(M + np.diag(d))
        log_phi = log_phi + 0.5 * scale * rng.normal()
        t = lay.pack(beta, new_Ls, log_phi)
        t[fixed] = theta[fixed]
        out.append(t)
    return np.stack(out)


def _refit(starts: np.ndarray, model, max_iter: int, free: np.ndarray, batched: bool) -> list:
    """Newton from each start: one vmapped program over the starts (the data shared), or
    one at a time where some entries are held fixed or the data are sharded."""
    devices = jax.tree.leaves(model.data)[0].sharding.device_set
    if batched and free.all() and len(devices) == 1:
        return model.newton_many(starts, max_iter=max_iter)
    return [model.newton(t, max_iter=max_iter, free=free) for t in starts]


def _compare(k: int, r, res) -> dict:
    """One row of the table: refit ``r`` (from start ``k``) against the fit ``res``."""
    a = varpar.values(np.asarray(r.theta), r, beta=r.beta)
    b = varpar.values(np.asarray(res.theta), res, beta=res.beta)
    p = len(res.x_names)
    keep = _identified(res) & _identified(r)
    va, vb = a[: len(a) - p][keep], b[: len(b) - p][keep]
    fa, fb = a[len(a) - p:], b[len(b) - p:]

    def diff(x, y):
        return (float(np.max(np.abs(x - y))) if len(x) else 0.0,
                float(np.max(np.abs(x - y) / np.maximum(1.0, np.abs(y)))) if len(x) else 0.0)

    (d_f, d_f_rel), (d_v, d_v_rel) = diff(fa, fb), diff(va, vb)
    c = r.convergence
    return {"start": k, "kind": "default" if k == 0 else "perturbed",
            "converged": bool(r.converged), "status": c.status, "loglik": float(r.loglik),
            "d_loglik": float(r.loglik - res.loglik), "d_fixef": d_f, "d_varcomp": d_v,
            "d_fixef_rel": d_f_rel, "d_varcomp_rel": d_v_rel, "n_iter": int(c.n_iter),
            "methods": "+".join(c.methods)}


def _identified(r) -> np.ndarray:
    """Which variance components (varpar order) to compare: all but the correlations of
    an effect whose SD is ~0 (lme4's singular rule)."""
    scale = r.sigma
    keep = []
    for t in r.terms:
        sd = np.sqrt(np.diag(t.G))
        zero = sd < SINGULAR_TOL * scale
        q = len(sd)
        keep += [True] * q
        keep += [not (zero[i] or zero[j]) for i in range(q) for j in range(i + 1, q)]
    if r.family.has_dispersion:
        keep.append(True)
    return np.asarray(keep, dtype=bool)


def _verdict(table: pd.DataFrame, res, same: bool, best_k, best_ll: float, tol) -> str:
    n = len(table)
    bad = table.index[~table["converged"]].tolist()
    lines = []
    if same:
        lines.append(
            f"all {n} starts reached the fit's optimum (logLik {res.loglik:.6f}; largest "
            f"differences: logLik {table['d_loglik'].abs().max():.1e}, fixed effects "
            f"{table['d_fixef'].max():.1e}, variance components "
            f"{table['d_varcomp'].max():.1e})")
    if best_k is not None and best_ll > res.loglik + tol["loglik"]:
        lines.append(f"start {table.index[best_k]} reached a higher log-likelihood than the "
                     f"fit ({best_ll:.6f} vs {res.loglik:.6f}, +{best_ll - res.loglik:.3g}): "
                     "the fit was not at the global optimum (check.best is that refit)")
    if bad:
        statuses = table.loc[bad, "status"].value_counts()
        lines.append(f"{len(bad)} of {n} starts did not converge (start {bad}: "
                     + ", ".join(f"{k}: {v}" for k, v in statuses.items()) + ")")
    other = table.index[table["converged"] & ~table["same"]
                        & (table["loglik"] <= res.loglik + tol["loglik"])].tolist()
    if other:
        lines.append(f"start {other} converged to a different point (a local optimum, or a "
                     "flat likelihood: see d_loglik, d_fixef, d_varcomp)")
    if not res.converged:
        lines.append("the fit itself did not converge")
    return "; ".join(lines)
