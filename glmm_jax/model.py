"""The Model: a validated, laid-out model with its pure objective, and how it is fitted."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import separation, sizes, xla
from .crossed import MultiStructure
from .design import ModelFrame, build_frame
from .errors import GLMMFitError, GLMMInputError
from .families import Family, get_family
from .fitresult import Run, issue_warnings, make_result
from .formula import parse_formula
from .laplace import Structure
from .layout import fetch, lay_out, one_blas_thread
from .objective import engine, modes, negloglik, value_grad_hess, zero_modes
from .optimize import lbfgs_fit, newton_fit, newton_fit_many
from .results import GLMMResult
from .start import start_values
from .theta import Padding, ThetaLayout


@dataclass(frozen=True)
class Model:
    """A model ready to fit: validated arrays, static structure, and its pure objective.

    ``negloglik(theta)`` (the value alone) and ``value_grad_hess(theta)`` (with the exact
    gradient and Hessian) evaluate -log L, the (Laplace/AGHQ) marginal log-likelihood, at
    the parameter vector ``theta`` (see ``theta_names``); ``fit()`` maximizes it.

    >>> import glmm_jax as gj
    >>> m = gj.build_model("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                    gj.datasets.load("cbpp"))
    >>> m.theta_names[-1]
    'L_herd[(Intercept),(Intercept)]'
    >>> res = m.fit()
    >>> round(-m.negloglik(res.theta), 3) == round(res.loglik, 3)
    True
    """

    formula: str
    frame: ModelFrame
    structure: Structure | MultiStructure
    data: object  # the engine's device arrays
    clusters: tuple | None = None  # one grouping factor: (block, slot) of each cluster
    respond: object = field(default=None, repr=False, compare=False)  # see layout.Laid
    separation: object = field(default=None, repr=False, compare=False)  # build_model's check
    padding: Padding | None = None  # the program's theta entries beyond the model's (sizes.py)
    generous: bool = True  # laid out with the generous sizes of small models (sizes.py)

    def __repr__(self) -> str:
        s = self.structure
        name = engine(s).name
        groups = ", ".join(f"{g.name} ({len(g.levels)})" for g in self.frame.groups) or "none"
        return (f"<Model {s.family.name}({s.family.link}) {self.formula!r}: "
                f"{len(self.frame.y)} rows, {len(self.frame.x_names)} fixed effects, "
                f"groups {groups}; {len(self.theta_names)} parameters, engine {name}>")

    @property
    def layout(self) -> ThetaLayout:
        """The layout of the model's theta (``structure.theta`` is its program's, which
        may hold padding: see ``sizes.py``)."""
        return self.structure.theta.of_model(len(self.frame.x_names),
                                             [len(g.z_names) for g in self.frame.groups])

    @property
    def theta_names(self) -> list[str]:
        return self.layout.names(self.frame.x_names,
                                 [(g.name, g.z_names) for g in self.frame.groups],
                                 self.structure.family.dispersion_name)

    def start(self) -> np.ndarray:
        """The starting theta of :meth:`fit` (see ``start.start_values``)."""
        return start_values(self.frame, self.structure.family, self.layout)

    # the program's theta holds the padding: these map the model's theta to it and back
    def _embed(self, theta):
        return theta if self.padding is None else self.padding.embed(theta)

    def _free(self, free=None) -> np.ndarray:
        free = np.ones(len(self.theta_names)) if free is None else np.asarray(free, float)
        return free if self.padding is None else self.padding.embed(free, fill=0.0)

    def _strip(self, out):
        """A (NumPy) NewtonResult of the program in the model's theta."""
        out = fetch(out)
        if self.padding is None:
            return out
        pad = self.padding
        return out._replace(theta=pad.strip(out.theta), grad=pad.strip(out.grad),
                            hess=pad.strip(out.hess), theta0=pad.strip(out.theta0))

    def newton(self, theta0, u0=None, max_iter: int = 100, free=None, cold: bool = False):
        """Newton's method from ``theta0`` (``optimize.newton_fit``; entries where
        ``free`` is 0 held; the engine's ``start_point`` of it), as NumPy: theta,
        gradient and Hessian in the model's theta, the modes ``u`` (and ``u_cov``) in the
        engine's layout (see :meth:`modes`). ``cold``: theta0 are start values, not
        near the optimum (the modes there are solved to a looser tolerance)."""
        theta0 = self._theta(theta0)
        return self._strip(newton_fit(self._embed(theta0), self._u0(u0), self.data,
                                      self.structure, max_iter=max_iter, free=self._free(free),
                                      cold=cold))

    def newton_many(self, starts, max_iter: int = 100):
        """:meth:`newton` from each row of ``starts``, in one vmapped program."""
        starts = [self._theta(t) for t in starts]
        s = self.structure
        u0 = jax.tree.map(lambda a: np.stack([a] * len(starts)), self._u0(None))
        out = fetch(newton_fit_many(
            np.stack([self._embed(t) for t in starts]), u0, self.data, s,
            max_iter=max_iter, fields=(), free=self._free()))
        return [self._strip(jax.tree.map(lambda a, k=k: a[k], out)) for k in range(len(starts))]

    def continue_with_lbfgs(self, out, max_iter: int, run: Run, free=None):
        """After a Newton run ``out`` that stopped early: :func:`continue_with_lbfgs`, in
        the model's theta."""
        out = out._replace(theta=self._embed(out.theta))
        out, notes = continue_with_lbfgs(out, self.data, self.structure, max_iter, run,
                                         self._free(free))
        return self._strip(out), notes

    def _theta(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (len(self.theta_names),):
            raise GLMMInputError(f"theta must have {len(self.theta_names)} entries "
                                 f"({', '.join(self.theta_names)}), not shape {theta.shape}")
        return theta

    def negloglik(self, theta, u0=None) -> float:
        """-log L at ``theta``: the value alone (no derivatives); one compiled program per
        model structure. The conditional modes are solved from ``u0`` (default zeros; the
        modes of a nearby theta, from :meth:`modes`, save most of the work: profiles)."""
        s = self.structure
        return float(_nll(self._embed(self._theta(theta)), self._u0(u0), self.data, s))

    def loglik(self, theta, u0=None) -> float:
        """Log marginal likelihood at ``theta``."""
        return -self.negloglik(theta, u0)

    def value_grad_hess(self, theta, u0=None):
        """-loglik, its gradient and its exact Hessian at ``theta`` (NumPy arrays); modes
        solved from ``u0`` as in :meth:`negloglik`."""
        s = self.structure
        f, g, H = _vgh(self._embed(self._theta(theta)), self._u0(u0), self.data, s)
        if self.padding is not None:
            g, H = self.padding.strip(g), self.padding.strip(H)
        return float(f), np.asarray(g), np.asarray(H)

    def modes(self, theta, u0=None):
        """The conditional modes at ``theta`` in the engine's layout, padding included
        (to start this model's :meth:`negloglik` or :meth:`value_grad_hess` at a nearby
        theta; a fit's ``ranef`` holds them by level, without the padding)."""
        return _modes(self._embed(self._theta(theta)), self._u0(u0), self.data,
                      self.structure)

    def _u0(self, u0):
        return zero_modes(self.structure, self.data, np) if u0 is None else u0

    def design(self, newdata: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        """The fixed-effects matrix X and each random term's Z for ``newdata``, built as
        for the fit: the same levels, contrasts and stateful transforms (``scale`` and
        ``poly`` keep the fit's centre and coefficients); an unseen level is an error.

        >>> import glmm_jax as gj
        >>> df = gj.datasets.load("sleepstudy")
        >>> m = gj.build_model("Reaction ~ scale(Days) + (Days | Subject)", df,
        ...                    family="gaussian")
        >>> X, (Z,) = m.design(df.iloc[:2])
        >>> X.round(3).tolist(), Z.tolist()  # scale(): the mean and SD of all 180 rows
        ([[1.0, -1.562], [1.0, -1.215]], [[1.0, 0.0], [1.0, 1.0]])
        """
        if not isinstance(newdata, pd.DataFrame):
            raise GLMMInputError(f"newdata must be a DataFrame, not {type(newdata).__name__}")
        X = _finite(self.frame.encoding.matrix(newdata), "the fixed effects")
        Zs = []
        for g in self.frame.groups:
            full = _finite(g.encoding.matrix(newdata), f"the random term {g.term}")
            Zs.append(full[:, [g.encoding.names.index(n) for n in g.z_names]])
        return X, Zs

    def with_response(self, y, trials=None) -> Model:
        """The same model (structure, layout, compiled programs) with a new response ``y``
        (and, for binomial models, new ``trials``), one value per row of the fit."""
        y, trials = self._checked_response(y, trials, "with_response")
        return self._with_fields(y, trials, self.respond(y, trials))

    def _checked_response(self, y, trials, what: str):
        f, fam = self.frame, self.structure.family
        y = np.asarray(y, dtype=float)
        trials = f.trials if trials is None else np.asarray(trials, dtype=float)
        if y.shape != f.y.shape or trials.shape != f.y.shape:
            raise GLMMInputError(f"{what}: y (and trials) need {len(f.y)} values, one "
                                 f"per row of the fit; got shape {y.shape}")
        bad, need = fam.invalid_response(y, trials)
        if bad.any() or not np.all(np.isfinite(y)):
            raise GLMMInputError(f"{what}: the new {fam.title} response {need or ''} "
                                 f"and finite; {int(bad.sum())} values are not")
        return y, trials

    def _with_fields(self, y, trials, fields: dict, weights=None) -> Model:
        """This model with the response ``y`` and its data fields (from ``respond``; with
        ``weights``, the new prior weights and their fields)."""
        new = {k: jax.device_put(v, getattr(self.data, k).sharding) for k, v in fields.items()}
        frame = replace(self.frame, y=y, trials=trials)
        if weights is not None:
            frame = replace(frame, weights=weights)
        return replace(self, frame=frame, data=self.data._replace(**new))

    def _with_response_weights(self, y, trials, weights=None) -> Model:
        """This model with the response ``y`` (and ``trials``) and, if given, new prior
        ``weights`` (one per row)."""
        return self._with_fields(y, trials, self.respond(y, trials, weights), weights)

    @functools.cached_property
    def unpadded(self) -> Model:
        """This model laid out without the padding of small models (``sizes.py``): its
        own fixed effects and terms, the fine grid of sizes; the model itself where
        nothing is padded. For programs of its own (:meth:`fit_batches`)."""
        s = self.structure
        if not self.generous:
            return self
        sharding = jax.tree.leaves(self.data)[0].sharding
        devices = (list(sharding.mesh.devices.flat) if isinstance(sharding, NamedSharding)
                   else list(sharding.device_set))
        return replace(model_from_frame(self.formula, self.frame, s.family, s.nagq, devices,
                                        bool(getattr(s, "reml", False)), engine(s).name,
                                        pad=False), separation=self.separation)

    @staticmethod
    def _checked_weights(weights, shape) -> np.ndarray:
        """Per-fit prior weights ([K, n], or [n] for all K fits), non-negative and finite."""
        try:
            W = np.broadcast_to(np.asarray(weights, dtype=float), shape)
        except (TypeError, ValueError):
            raise GLMMInputError(f"fit_batches: weights need shape {shape} (or one value "
                                 f"per row of the fit), not {np.shape(weights)}") from None
        if not np.all(np.isfinite(W)) or np.any(W < 0):
            raise GLMMInputError("fit_batches: weights must be finite and non-negative")
        return W

    def fit_responses(self, Y, trials=None, start=None, max_iter: int = 100,
                      batch_size: int = 64) -> list[GLMMResult]:
        """Fit the model to each row of ``Y`` ([K, n]: K responses for the rows of the
        fit; ``trials`` [K, n] or [n] for binomial models) in one vmapped, compiled
        program per batch of ``batch_size`` (the last batch padded, so one program
        serves all; on several devices the responses' arrays are sharded as the model's),
        from ``start`` (default: :meth:`start` of the model's own data).
        A response whose Newton run stops early continues with L-BFGS, as in
        :meth:`fit`; warnings are not issued (see each result's ``convergence``)."""
        out = []
        for _, one, make, run, notes in self.fit_batches(Y, trials, start, max_iter,
                                                         batch_size):
            m = make()
            out.append(make_result(self.formula, m.frame, m.structure.family, m.structure,
                                   one, run, notes, m.clusters, model=m))
        return out

    def fit_batches(self, Y, trials=None, start=None, max_iter: int = 100,
                    batch_size: int = 64, progress=None, batch_iter: int | None = None,
                    lbfgs: bool = True, weights=None):
        """:meth:`fit_responses` without building results: yields, per response ``i``,
        ``(i, newton_result, model, run, notes)``: the optimizer's output as NumPy,
        ``model()`` makes the model with that response (the one whose layout the
        result's modes are in: build results with its structure and clusters), its
        ``fitresult.Run`` record, and fallback notes. ``progress(k)`` is called after
        each batch of k responses. ``weights`` ([K, n], or [n]) replace the prior
        weights of each fit (0 leaves a row out), for the "single" and "multi" engines.

        A batch runs until its slowest fit ends, so with ``batch_iter`` the vmapped
        program stops after that many iterations and the fits it leaves unconverged
        continue one by one (Newton, then, with ``lbfgs``, the L-BFGS fallback) up to
        ``max_iter``, with the model's own compiled program. The batches run on
        :attr:`unpadded` (their vmapped program is their own: a small model's padding
        would only slow it)."""
        batched = self.unpadded
        f, s = batched.frame, batched.structure
        Y = np.atleast_2d(np.asarray(Y, dtype=float))
        if Y.ndim != 2 or Y.shape[1] != len(f.y):
            raise GLMMInputError(f"fit_responses: Y needs one row of {len(f.y)} values per "
                                 f"response (one per row of the fit); got shape {Y.shape}")
        T = np.broadcast_to(f.trials if trials is None else np.asarray(trials, float),
                            Y.shape)
        for k in range(len(Y)):
            self._checked_response(Y[k], T[k], f"fit_responses: response {k}")
        W = None if weights is None else self._checked_weights(weights, Y.shape)
        theta0 = self.start() if start is None else self._theta(start)
        u0 = zero_modes(s, batched.data, np)
        w_of = (lambda i: None) if W is None else (lambda i: np.array(W[i]))
        for b0 in range(0, len(Y), batch_size):
            idx = list(range(b0, min(b0 + batch_size, len(Y))))
            parts = {i: batched.respond(Y[i], T[i], w_of(i)) for i in idx}
            pad = [parts[i] for i in idx] + [parts[idx[0]]] * (batch_size - len(idx))
            fields = tuple(parts[idx[0]])
            data = batched.data._replace(**{  # a batch axis in front, sharded as the field
                k: jax.device_put(np.stack([p[k] for p in pad]),
                                  _batched(getattr(batched.data, k).sharding))
                for k in fields})
            stack = jax.tree.map(lambda a: np.stack([a] * batch_size), u0)
            res = fetch(newton_fit_many(
                np.tile(batched._embed(theta0), (batch_size, 1)), stack, data, s,
                max_iter=min(max_iter, batch_iter or max_iter), fields=fields,
                free=batched._free()))
            batch = [batched._strip(jax.tree.map(lambda a, j=j: a[j], res))
                     for j in range(len(idx))]
            for i, one in zip(idx, batch, strict=False):
                model = partial(batched._with_fields, Y[i], T[i], parts[i], w_of(i))
                run = Run(theta0, max_iter)
                run.newton(one)
                notes = ()
                if not one.converged and (lbfgs or not one.line_search_failed and
                                          one.n_iter < max_iter):
                    # go on alone, with the model's own program (its modes from zero)
                    model = partial(self._with_response_weights, Y[i], T[i], w_of(i))
                    if not one.line_search_failed and one.n_iter < max_iter:
                        one = model().newton(one.theta, max_iter=max_iter - one.n_iter)
                        run.newton(one)
                    if lbfgs and not one.converged:
                        m = model()
                        one, notes = m.continue_with_lbfgs(one._replace(u=m._u0(None)),
                                                           max_iter, run)
                yield i, one, model, run, notes
            if progress is not None:
                progress(len(idx))

    def fit(self, start=None, fixed: dict | None = None, max_iter: int = 100) -> GLMMResult:
        """Maximize the log-likelihood from ``start`` (default :meth:`start`), holding the
        named entries of ``fixed`` (e.g. ``{"L_herd[(Intercept),(Intercept)]": 0.5}``) at
        their values; warnings as :func:`glmm_jax.fit`."""
        res = fit_model(self, max_iter, start, fixed)
        issue_warnings(res)
        return res


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise GLMMInputError(f"newdata: {what} have missing or infinite values in "
                             f"{int((~np.isfinite(a)).any(axis=1).sum())} rows")
    return a


def _batched(sharding):
    """The sharding of an array with a batch axis put in front of one laid out by
    ``sharding``: the batch axis whole on every device, the others as before."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, P(None, *sharding.spec))
    return sharding  # one device


@partial(xla.jit, static_argnames="s")
def _vgh(theta, u0, data, s):
    u, _ = modes(theta, u0, data, s)
    return value_grad_hess(theta, u, data, s)


@partial(xla.jit, static_argnames="s")
def _modes(theta, u0, data, s):
    return modes(theta, u0, data, s)[0]


@partial(xla.jit, static_argnames="s")
def _nll(theta, u0, data, s):
    u, _ = modes(theta, u0, data, s)
    return negloglik(theta, u, data, s)


def build_model(
    formula: str,
    data: pd.DataFrame,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    devices=None,
    reml: bool | None = None,
    *,
    weights=None,
    offset=None,
    contrasts: dict | None = None,
    engine: str | None = None,
    on_separation: str = "error",
) -> Model:
    """Parse, validate and lay out a model without fitting it (arguments as in
    :func:`glmm_jax.fit`; ``engine`` forces "single", "multi" or "lmm"). A binomial
    model is checked for separation first (:func:`glmm_jax.detect_separation`):
    ``on_separation`` "error" raises :class:`SeparationError`, "warn" warns and the fit
    reports the infinite estimates as +-Inf, "ignore" skips the check.

    >>> import glmm_jax as gj
    >>> m = gj.build_model("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                    gj.datasets.load("cbpp"))
    >>> m.theta_names
    ['(Intercept)', 'period2', 'period3', 'period4', 'L_herd[(Intercept),(Intercept)]']
    >>> m.separation.kind, round(m.fit().loglik, 3)
    ('none', -92.026)
    """
    fam = get_family(family, link)
    separation.check_policy(on_separation)
    spec = parse_formula(formula)
    # REML by default for Gaussian mixed models (as lmer); a linear model: ML (as glm)
    reml = fam.name == "gaussian" and bool(spec.random) if reml is None else bool(reml)
    if reml and fam.name != "gaussian":
        raise GLMMInputError(f"reml=True is available for the gaussian family, not {fam.name!r}")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 1:
        raise GLMMInputError(f"nagq must be a positive integer, not {nagq!r}")
    with one_blas_thread():
        frame = build_frame(spec, data, fam, weights=weights, offset=offset,
                            contrasts=contrasts)
        for g in frame.groups:
            if len(g.levels) * len(g.z_names) >= len(frame.y) and fam.has_dispersion:
                raise GLMMInputError(
                    f"{len(g.levels) * len(g.z_names)} random effects in {g.term} for "
                    f"{len(frame.y)} observations: the random effects and the residual "
                    "variance are not identifiable"
                )
        sep = separation.check(frame, fam, spec.formula, on_separation)
        model = model_from_frame(spec.formula, frame, fam, int(nagq), devices, reml, engine)
        return model if sep is None else replace(model, separation=sep)


def model_from_frame(formula: str, frame: ModelFrame, fam: Family, nagq: int = 1,
                     devices=None, reml: bool = False, engine: str | None = None,
                     pad: bool = True) -> Model:
    """A Model of a validated frame (see :func:`build_model`; ``pad``: see
    ``layout.lay_out``)."""
    laid = lay_out(frame, fam, nagq, devices, reml, engine, pad)
    return Model(formula, laid.frame, laid.structure, laid.data, laid.clusters, laid.respond,
                 padding=laid.padding, generous=pad and sizes.small(len(laid.frame.y)))


def ml_fit(res) -> GLMMResult:
    """The maximum likelihood fit of a REML fit's model (an ML fit as it is); an error
    if it does not converge."""
    if not res.reml:
        return res
    out = model_from_frame(res.formula, res.model.frame, res.family, res.nagq,
                           reml=False).fit()
    if not out.converged:
        raise GLMMFitError(f"the ML refit of {res.formula!r} did not converge "
                           f"({out.convergence.message})")
    return out


def fit_model(model: Model, max_iter: int = 100, start=None, fixed: dict | None = None
              ) -> GLMMResult:
    """Fit a model (what :meth:`Model.fit` does, without issuing its warnings)."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or \
            max_iter < 1:
        raise GLMMInputError(f"max_iter must be a positive integer, not {max_iter!r}")
    t0 = time.perf_counter()
    s = model.structure
    names = model.theta_names
    sep = model.separation
    if sep is not None and not sep.describes(model.frame):  # a new response: check it
        sep = separation.check(model.frame, s.family, model.formula, sep.policy)
    with one_blas_thread():
        theta0 = model.start() if start is None else model._theta(start).copy()
    theta0 = np.asarray(theta0, dtype=float)
    free = np.ones(len(names))
    for name, value in (fixed or {}).items():
        if name not in names:
            raise GLMMInputError(f"fixed= names {name!r}, which is not a parameter of the "
                                 f"model (parameters: {', '.join(names)})")
        theta0[names.index(name)] = float(value)
        free[names.index(name)] = 0.0
    run = Run(theta0, max_iter, fixed=tuple(fixed or ()))
    out = model.newton(theta0, max_iter=max_iter, free=free, cold=start is None)
    run.newton(out)
    notes = ()
    if not bool(out.converged):
        out, notes = model.continue_with_lbfgs(out, max_iter, run, free)
    run.time_s = time.perf_counter() - t0
    with one_blas_thread():
        res = make_result(model.formula, model.frame, s.family, s, out, run, notes,
                          model.clusters, model=model)
    return res if sep is None else replace(res, separation=sep)


def continue_with_lbfgs(out, data, s, max_iter: int, run: Run, free=None):
    """Newton stopped early: L-BFGS (at most ``5 * max_iter`` iterations) from where it
    stopped, then Newton again; returns the new result and a note saying so."""
    free = np.ones(len(out.theta)) if free is None else free
    theta, n_lbfgs = lbfgs_fit(out.theta, out.u, data, s, max_iter=5 * max_iter, free=free)
    out = newton_fit(theta, out.u, data, s, max_iter=max_iter, free=free)
    run.methods.append("lbfgs")
    run.n_lbfgs += int(n_lbfgs)
    run.newton(out)
    return out, (f"Newton stopped early; continued with L-BFGS ({int(n_lbfgs)} iterations) "
                 "and Newton again",)
