"""``fit``: formula + DataFrame -> GLMMResult."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from threadpoolctl import ThreadpoolController

from . import lmm, nested, xla
from .crossed import MultiData, MultiStructure, TermData, rest_columns
from .design import ModelFrame, build_frame
from .errors import ConvergenceWarning, GLMMInputError, SingularFitWarning, warn
from .families import Family, get_family
from .formula import parse_formula
from .laplace import ClusterData, Structure, block_rows, cluster_arrays, make_layout
from .objective import modes, pack, unpack_np
from .optimize import lbfgs_fit, newton_fit, value_grad_hess
from .results import GLMMResult, TermFit

MAX_QUADRATURE_NODES = 1000  # nagq**q per cluster for AGHQ
START_ROWS = 100_000  # start coefficients from at most about this many rows (a strided sample)
START_SD = (0.1, 5.0)  # a random intercept's start SD, link scale, in units of `scale`
SINGULAR_TOL = 1e-4  # relative size of a Cholesky diagonal below which a fit is singular


@dataclass(frozen=True)
class Model:
    """A model ready to fit: validated arrays, static structure, and its pure objective.

    ``loglik(theta)`` and ``value_grad_hess(theta)`` evaluate the (Laplace/AGHQ) marginal
    log-likelihood of the parameter vector ``theta`` (see ``theta_names``); they are what
    ``fit`` maximizes and are exposed for inference and tests.
    """

    formula: str
    frame: ModelFrame
    structure: Structure | MultiStructure
    data: ClusterData | MultiData
    clusters: tuple | None = None  # one grouping factor: (block, slot) of each cluster

    @property
    def theta_names(self) -> list[str]:
        s = self.structure
        names = [] if getattr(s, "reml", False) else list(self.frame.x_names)
        for g in self.frame.groups:
            z, q = g.z_names, len(g.z_names)
            names += [f"L_{g.name}[{z[i]},{z[j]}]"
                      for i, j in zip(*np.tril_indices(q), strict=True)]
        if s.family.has_dispersion:
            names.append(f"log({s.family.dispersion_name})")
        return names

    def start(self) -> np.ndarray:
        return start_values(self.frame, self.structure.family, self.structure)

    def loglik(self, theta) -> float:
        """Log marginal likelihood at ``theta`` (conditional modes solved from zero)."""
        return -float(self.value_grad_hess(theta)[0])

    def value_grad_hess(self, theta):
        """-loglik, its gradient and its exact Hessian at ``theta`` (NumPy arrays)."""
        f, g, H = _vgh(np.asarray(theta, dtype=float), self.data, self.structure)
        return float(f), np.asarray(g), np.asarray(H)


@partial(xla.jit, static_argnames="s")
def _vgh(theta, data, s):
    u, _ = modes(theta, zero_modes(s, _n_blocks(data, s)), data, s)
    return value_grad_hess(theta, u, data, s)


def _n_blocks(data, s) -> int:
    return 1 if isinstance(s, MultiStructure) else data.y.shape[0]


def zero_modes(s, n_blocks: int = 1, xp=jnp):
    """Starting conditional modes: zeros, [B, J, q] (a [J_k, q_k] list for several terms).
    ``xp=np`` outside jitted code: NumPy arguments compile no conversion programs."""
    if isinstance(s, MultiStructure):
        return [xp.zeros((J, q)) for q, J in zip(s.qs, s.Js, strict=True)]
    return xp.zeros((n_blocks, s.n_groups, s.q))


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
) -> Model:
    """Parse, validate and lay out a model without fitting it (arguments as in :func:`fit`)."""
    fam = get_family(family, link)
    reml = fam.name == "gaussian" if reml is None else bool(reml)
    if reml and fam.name != "gaussian":
        raise GLMMInputError(f"reml=True is available for the gaussian family, not {fam.name!r}")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 1:
        raise GLMMInputError(f"nagq must be a positive integer, not {nagq!r}")
    spec = parse_formula(formula)
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
        return model_from_frame(spec.formula, frame, fam, int(nagq), devices, reml)


@functools.cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """Context: NumPy/SciPy's BLAS on one thread, for the row-level NumPy work around a
    fit. Idle BLAS workers spin for a while after each call and take the cores from
    XLA's threads: a 100k-row fit ran 30-40 ms slower right after the start values."""
    return _blas_threads().limit(limits=1, user_api="blas")


def model_from_frame(formula: str, frame: ModelFrame, fam: Family, nagq: int = 1,
                     devices=None, reml: bool = False) -> Model:
    """Lay out a validated model frame for the engine (see :func:`build_model`)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise GLMMInputError("devices= is empty")
    if fam.name == "gaussian":
        model = _build_lmm(formula, frame, fam, nagq, reml, devices)
        if model is not None:
            return model
    if len(frame.groups) > 1 or reml:
        return _build_multi(formula, frame, fam, nagq, reml, devices)
    return _build_single(formula, frame, fam, nagq, devices)


def _build_single(formula: str, frame: ModelFrame, fam: Family, nagq: int, devices) -> Model:
    """One grouping factor: the per-cluster path (laplace.py), in blocks of clusters."""
    grouping = frame.groups[0]
    q = grouping.Z.shape[1]
    if nagq**q > MAX_QUADRATURE_NODES:
        raise GLMMInputError(
            f"nagq={nagq} with {q} random effects per group needs nagq**{q} = {nagq**q} "
            f"quadrature nodes per group; the limit is {MAX_QUADRATURE_NODES}: lower nagq"
        )
    layout = make_layout(grouping.codes, len(grouping.levels),
                         block_rows=block_rows(devices[0].platform))
    # pad blocks, clusters and chunks to size buckets, so that models of nearby sizes reuse
    # one compiled program (padding has zero weight; empty clusters add exactly 0)
    s = Structure(fam, frame.X.shape[1], q, bucket(layout.max_clusters), nagq)
    # and chunks to a multiple of the number of devices, over which they are sharded
    n_chunks = -(-bucket(layout.max_chunks) // len(devices)) * len(devices)
    arrays = frame_arrays(frame, fam, layout, n_chunks, s.n_groups, bucket(layout.n_blocks),
                          put=lambda a: place(a, devices))
    return Model(formula, frame, s, arrays, (layout.cluster_block, layout.cluster_slot))


def bucket(n: int) -> int:
    """n rounded up to the grid 8, 9, 10, 11, 13, 16, ... (steps of 2**(1/4), so at most
    19% padding)."""
    if n <= 8:
        return max(n, 1)
    k = int(np.floor(4 * np.log2(n)))
    while int(np.ceil(2 ** (k / 4))) < n:
        k += 1
    return int(np.ceil(2 ** (k / 4)))


def _build_lmm(formula: str, frame: ModelFrame, fam: Family, nagq: int, reml: bool,
               devices) -> Model | None:
    """A Gaussian model fitted from its cross products (lmm.py); None when its dense part
    would be too large (then the joint Laplace path, exact too, takes it)."""
    _check_one_term_for_agq(frame, nagq)
    groups = sorted(frame.groups, key=lambda g: -len(g.levels) * len(g.z_names))
    p = frame.X.shape[1]
    if sum(len(g.levels) * len(g.z_names) for g in groups[1:]) + reml * p > lmm.MAX_DENSE:
        return None
    terms = [(g.Z, g.codes) for g in groups]
    Js = tuple(len(g.levels) for g in groups)
    stats = lmm.cross_products(frame.X, frame.y - frame.offset, terms, Js, frame.trials)
    if stats is None:
        return None
    qs = tuple(len(g.z_names) for g in groups) + (p,) * reml
    s = lmm.LmmStructure(fam, p, qs, Js + (1,) * reml, nagq, reml=reml)
    return Model(formula, replace(frame, groups=tuple(groups)), s,
                 jax.device_put(stats, devices[0]))


def _check_one_term_for_agq(frame: ModelFrame, nagq: int) -> None:
    if nagq != 1 and len(frame.groups) > 1:
        raise GLMMInputError(
            f"nagq={nagq}: adaptive Gauss-Hermite quadrature needs a single random term; "
            f"this model has {len(frame.groups)} (use nagq=1, the Laplace approximation)"
        )


def _build_multi(formula: str, frame: ModelFrame, fam: Family, nagq: int,
                 reml: bool = False, devices=None) -> Model:
    """Several random terms (or REML): joint Laplace (crossed.py). Nested terms, finest
    first, are eliminated level by level (nested.py); otherwise the term with the most
    effects comes first (it is eliminated; lme4 too orders terms by their number of
    levels). Under REML the fixed effects are a last pseudo-term with a flat prior.
    Rows are sharded over ``devices`` (padded with zero-weight rows to a multiple of
    their number)."""
    _check_one_term_for_agq(frame, nagq)
    p = frame.X.shape[1]

    def layout(groups):
        terms = [(g.Z, g.codes) for g in groups]
        terms += [(frame.X, np.zeros(len(frame.y), np.int64))] * reml
        Js = tuple(len(g.levels) for g in groups) + (1,) * reml
        return terms, Js

    groups = sorted(frame.groups, key=lambda g: (-len(g.levels), -len(g.z_names)))
    terms, Js = layout(groups)
    anc = nested.ancestors([c for _, c in terms], Js)
    if anc is None:  # crossed: dense Schur complement after the largest term
        groups = sorted(frame.groups, key=lambda g: -len(g.levels) * len(g.z_names))
        terms, Js = layout(groups)
    frame = replace(frame, groups=tuple(groups))
    qs = tuple(Z.shape[1] for Z, _ in terms)
    s = MultiStructure(fam, p, qs, Js, reml=reml, nested=anc is not None)
    devices = list(jax.devices() if devices is None else devices)
    n = len(frame.y)
    pad = -n % len(devices)

    def rows(a, fill=0):  # zero-weight padding rows (level 0 of every term, y = 1)
        return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)])

    arrays = MultiData(
        X=rows(frame.X), y=rows(frame.y, 1), trials=rows(frame.trials, 1),
        offset=rows(frame.offset), weights=rows(frame.weights),
        terms=tuple(TermData(rows(Z), rows(c.astype(np.int32))) for Z, c in terms),
        rest_cols=np.zeros((n + pad, 0), np.int32) if s.nested else
        rest_columns([rows(c) for _, c in terms], qs, Js),
        log_const=np.asarray(np.sum(frame.weights * fam.log_const(frame.y, frame.trials))),
        anc=anc or (),
    )
    return Model(formula, frame, s, place_rows(arrays, devices))


def _shard(arrays, devices, spec: P, is_sharded):
    """Put ``arrays`` on ``devices``: those where ``is_sharded(a)`` split by ``spec`` (over
    mesh axis "d"), the rest replicated."""
    if len(devices) == 1:
        return jax.device_put(arrays, devices[0])
    mesh = Mesh(np.asarray(devices), ("d",))
    split, whole = NamedSharding(mesh, spec), NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.device_put(a, split if is_sharded(a) else whole), arrays)


def place_rows(arrays: MultiData, devices) -> MultiData:
    """Put row-level arrays on ``devices``, sharded by rows; the rest replicated."""
    n = arrays.y.shape[0]
    return _shard(arrays, devices, P("d"), lambda a: np.ndim(a) > 0 and a.shape[0] == n)


def place(arrays, devices):
    """Put the arrays (a ClusterData, or one of its arrays) on ``devices``: each block's
    row chunks sharded across them, the per-block constants replicated."""
    return _shard(arrays, devices, P(None, "d"), lambda a: np.ndim(a) > 1)


def frame_arrays(frame: ModelFrame, fam: Family, layout, n_chunks=None, n_groups=None,
                 n_blocks=None, put=None):
    """The engine's (NumPy, or ``put`` applied to each) arrays of a model frame in a chunk
    layout."""
    g = frame.groups[0]
    return cluster_arrays(frame.X, g.Z, frame.y, frame.trials, frame.offset,
                          frame.weights * fam.log_const(frame.y, frame.trials), layout,
                          n_chunks, n_groups, n_blocks, put, frame.weights)


def fit(
    formula: str,
    data: pd.DataFrame,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    *,
    max_iter: int = 100,
    devices=None,
    reml: bool | None = None,
    weights=None,
    offset=None,
    contrasts: dict | None = None,
) -> GLMMResult:
    """Fit a generalized linear mixed model by maximum likelihood.

    Args:
      formula: lme4-style formula, e.g. ``"y ~ x + (1 + x | g)"``; binomial responses may
        be 0/1, logical, two-level, or ``cbind(successes, failures)``.
      data: DataFrame holding every column the formula uses (it is not modified).
      family: ``"binomial"``, ``"poisson"``, ``"gaussian"``, ``"gamma"``,
        ``"negative_binomial"``, or a ``glmm_jax.families`` object.
      link: link function name, if not the family's default.
      nagq: 1 for the Laplace approximation, > 1 for adaptive Gauss-Hermite quadrature
        with ``nagq`` nodes per random-effect dimension (``nagq**q`` per cluster, at most
        ``MAX_QUADRATURE_NODES``).
      reml: restricted maximum likelihood (Gaussian only; default True for Gaussian models,
        as in lmer): the fixed effects are integrated out of the likelihood that is
        maximized, and ``loglik`` is the restricted log-likelihood.
      devices: JAX devices to spread the data over (clusters' row chunks are sharded
        across them with ``jax.sharding``); default: all devices of the default backend.
        Gaussian models are reduced to cross products, which live on the first device.
      weights: prior weights, a column name or one value per row (as lme4's
        ``weights=``): binomial proportions (or 0/1) with ``weights`` = the number of
        trials (the same fit as ``cbind``); for a ``cbind`` response and for Poisson,
        Gamma and negative binomial models they multiply each row's log-likelihood; for
        Gaussian models they are precision weights (residual variance sigma^2 / w, as
        lmer). Weights must be positive and finite.
      offset: a column name or array added to the linear predictor (beside any
        ``offset()`` terms of the formula).
      contrasts: codings of factors, e.g. ``{"period": "sum"}``: "treatment" (the
        default for unordered factors), "sum", "helmert" or "poly" (the default for
        ordered categoricals), or R's names ("contr.sum", ...). Columns are named as R
        names them (``period1``, ... for sum contrasts).
      max_iter: maximum outer Newton iterations. If Newton has not converged by then, an
        L-BFGS fallback (optax, at most ``5 * max_iter`` iterations) continues from where it
        stopped and Newton is run once more from its result.

    Returns:
      A :class:`GLMMResult`. Non-convergence and singular fits raise warnings and are
      recorded in ``result.converged`` / ``result.singular``.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"), family="binomial")
    >>> round(res.loglik, 3)
    -92.026
    """
    model = build_model(formula, data, family, link, nagq, devices, reml, weights=weights,
                        offset=offset, contrasts=contrasts)
    return fit_model(model, max_iter)


def fit_model(model: Model, max_iter: int = 100) -> GLMMResult:
    """Fit a model from :func:`build_model` (what :func:`fit` does after building it)."""
    s = model.structure
    with one_blas_thread():
        theta0 = np.asarray(model.start(), dtype=float)
    out = newton_fit(theta0, zero_modes(s, _n_blocks(model.data, s), np), model.data, s,
                     max_iter=max_iter)
    notes = ()
    if not bool(out.converged):
        out, notes = continue_with_lbfgs(out, model.data, s, max_iter)
    with one_blas_thread():
        return _result(model.formula, model.frame, s.family, s, out, notes, model.clusters)


def continue_with_lbfgs(out, data, s, max_iter: int):
    """Newton stopped early: L-BFGS (at most ``5 * max_iter`` iterations) from where it
    stopped, then Newton again; returns the new result and a note saying so."""
    theta, n_lbfgs = lbfgs_fit(out.theta, out.u, data, s, max_iter=5 * max_iter)
    out = newton_fit(theta, out.u, data, s, max_iter=max_iter)
    return out, (f"Newton stopped early; continued with L-BFGS ({int(n_lbfgs)} iterations) "
                 "and Newton again",)


def start_values(frame: ModelFrame, fam: Family, s: Structure) -> np.ndarray:
    """Starting theta.

    Fixed effects from least squares: with an intercept and no offset, slopes on the mean
    scale divided by dmu/deta at the mean (a linearized GLM); otherwise on the
    link-transformed response; then (not Gaussian) one IRLS step towards the GLM fit.
    Beyond ``START_ROWS`` rows they come from a strided sample of about that many rows.
    Random effects: L = 0.5 * scale / rms(Z column), except random intercepts, whose
    SDs are moment estimates (below, moved to the conditional scale), term by term, and
    (not Gaussian) vector terms, whose whole covariance is a moment estimate; then
    the fixed effects are moved from their marginal to their conditional scale, or
    (Gaussian) the residual variance is what the random intercepts leave of the total.
    """
    y, n, X = frame.y, frame.trials, frame.X
    if fam.name == "binomial":
        z = fam.link_fn((y + 0.5) / (n + 1.0))
    elif fam.link == "log":
        z = np.log(y + 0.5) if fam.name != "gamma" else np.log(y)
    else:
        z = y
    beta = None
    stride = -(-len(y) // START_ROWS)
    if stride > 1:  # large data: the coefficients from every stride-th row
        rows = slice(None, None, stride)
        if not np.any(np.all(X[rows] == 0.0, axis=0)):
            try:
                beta = _start_beta(fam, X[rows], y[rows], n[rows], frame.offset[rows],
                                   frame.x_names, z[rows])
            except np.linalg.LinAlgError:
                beta = None
    if beta is None or not np.all(np.isfinite(beta)):
        beta = _start_beta(fam, X, y, n, frame.offset, frame.x_names, z)
    eta = X @ beta + frame.offset
    scale = float(np.std(z - eta)) if fam.name == "gaussian" else 1.0
    Ls = []
    for g in frame.groups:
        rms = np.sqrt(np.mean(g.Z**2, axis=0))
        Ls.append(np.diag(0.5 * scale / np.where(rms > 0, rms, 1.0)))
    mu = fam.inverse_link(eta)
    log_phi = fam.start_dispersion(y, mu * (n if fam.name == "binomial" else 1.0))
    d_eta = fam.mu_eta(eta)
    # moment estimates of each random intercept's variance; a term nested in another
    # (a ward in its hospital, an observation in its ward) estimates the sum of its own
    # and its ancestors' variances, so the nearest ancestor's estimate is subtracted
    raw = {i: _conditional_var(fam, _intercept_sd(fam, y, n, mu, d_eta, log_phi, g.codes,
                                                   len(g.levels)) ** 2)
           for i, g in enumerate(frame.groups) if "(Intercept)" in g.z_names}
    var_sum = 0.0
    for i, var in raw.items():
        g, L = frame.groups[i], Ls[i]
        parents = [m for m in raw if len(frame.groups[m].levels) < len(g.levels)
                   and nested.parent(g.codes, len(g.levels), frame.groups[m].codes) is not None]
        if parents:
            var -= raw[max(parents, key=lambda m: len(frame.groups[m].levels))]
        k = g.z_names.index("(Intercept)")
        sd = np.sqrt(max(var, 0.0))
        L[k, k] = np.clip(sd, START_SD[0] * scale, START_SD[1] * scale) if np.isfinite(sd) \
            else scale
        var_sum += L[k, k] ** 2
    # vector terms: their whole covariance by moments (not nested-corrected; not Gaussian,
    # whose start sigma is the total SD, which makes the sampling covariances too large)
    for i, g in enumerate(frame.groups if fam.name != "gaussian" else ()):
        G = _moment_covariance(fam, y, n, mu, d_eta, log_phi, g.Z, g.codes, len(g.levels))
        if G is None:
            continue
        if "(Intercept)" in g.z_names:
            k = g.z_names.index("(Intercept)")
            G = G * (_conditional_var(fam, G[k, k]) / G[k, k])
            G = G * min(1.0, (START_SD[1] * scale) ** 2 / G[k, k])  # as scalar intercepts
            var_sum += G[k, k] - Ls[i][k, k] ** 2
        Ls[i] = np.linalg.cholesky(G)
    if fam.name == "gaussian":  # the residual variance is what the groups leave
        log_phi = 0.5 * np.log(max(scale**2 - var_sum, 0.05 * scale**2))
    elif X.shape[1] and var_sum:
        beta = _conditional_beta(fam, beta, frame.x_names, var_sum)
    L = Ls if isinstance(s, MultiStructure) else Ls[0]
    return pack(beta, L, log_phi, s)


def _start_beta(fam: Family, X, y, n, offset, x_names, z):
    """Start coefficients (see :func:`start_values`); ``z`` is the link-scale response."""
    if not X.shape[1]:
        return np.zeros(0)
    if x_names[0] == "(Intercept)" and not np.any(offset):
        mean = np.mean(y / n)
        mean = np.clip(mean, 0.01, 0.99) if fam.name == "binomial" else max(mean, 1e-3)
        eta_bar = float(fam.link_fn(mean))
        G = X.T @ X  # its first row holds the column sums
        beta = np.linalg.solve(G, X.T @ (y / n)) / float(fam.mu_eta(eta_bar))
        beta[0] = eta_bar - G[0, 1:] @ beta[1:] / len(y)
    else:
        beta = np.linalg.solve(X.T @ X, X.T @ (z - offset))
    return beta if fam.name == "gaussian" else _glm_step(fam, X, y, n, offset, beta)


def _glm_step(fam: Family, X, y, n, offset, beta):
    """One IRLS step from ``beta`` towards the GLM fit without random effects (the
    marginal coefficients); ``beta`` itself if the step is not finite."""
    eta = X @ beta + offset
    mu, d = fam.inverse_link(eta), np.maximum(fam.mu_eta(eta), 1e-10)
    w = n * d * d / np.maximum(fam.variance(mu, 0.0), 1e-10)
    z = eta - offset + (y / n - mu) / d
    try:
        new = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * z))
    except np.linalg.LinAlgError:
        return beta
    return new if np.all(np.isfinite(new)) else beta


def _intercept_sd(fam: Family, y, n, mu, d, log_phi: float, codes, J: int) -> float:
    """Moment estimate of a random intercept's SD on the link scale: the SD of the
    clusters' estimates (:func:`_cluster_estimates`) less their sampling variances v_j,
    weighted by 1 / (sd^2 + v_j) (two passes)."""
    b, V = _cluster_estimates(fam, y, n, mu, d, log_phi, None, codes, J)
    r, v = b[:, 0], V[:, 0, 0]
    var = max(np.mean(r * r - v), 0.0)
    for _ in range(2):
        w = 1.0 / (var + v + 1e-12)
        var = max(np.sum(w * (r * r - v)) / np.sum(w), 0.0)
    return float(np.sqrt(var))


def _cluster_estimates(fam: Family, y, n, mu, d, log_phi: float, Z, codes, J: int):
    """Each cluster's linearized random effects b_j = A_j^-1 sum z (y - n mu), with
    A_j = sum n dmu/deta z z' (``mu``, ``d = dmu/deta`` at the fixed-effects start, per
    row), and their sampling covariances V_j = A_j^-1 (sum n V(mu) z z') A_j^-1, over the
    clusters whose A_j is well conditioned: b [J', q], V [J', q, q]. ``Z=None``: z = 1."""
    q = 1 if Z is None else Z.shape[1]

    def cluster_sums(v):
        out = np.empty((J, q, q))
        for a in range(q):
            for c in range(a, q):
                zz = v if Z is None else v * Z[:, a] * Z[:, c]
                out[:, a, c] = out[:, c, a] = np.bincount(codes, zz, J)
        return out

    A, B = cluster_sums(n * d), cluster_sums(n * fam.variance(mu, log_phi))
    res = y - n * mu
    r = np.stack([np.bincount(codes, res if Z is None else res * Z[:, a], J)
                  for a in range(q)], axis=1)
    ev = np.linalg.eigvalsh(A)
    ok = (ev[:, 0] > 1e-8 * ev[:, -1]) & (ev[:, -1] > 0)
    Ainv = np.linalg.inv(A[ok])
    return np.einsum("jab,jb->ja", Ainv, r[ok]), Ainv @ B[ok] @ Ainv


def _attenuation(fam: Family) -> float:
    """c^2 in the marginal/conditional attenuation 1 / sqrt(1 + c^2 var) of a logit or
    probit coefficient under a random intercept of variance var (Zeger et al. 1988)."""
    return {"logit": (16.0 * np.sqrt(3.0) / (15.0 * np.pi)) ** 2, "probit": 1.0}.get(
        fam.link, 0.0)


def _moment_covariance(fam: Family, y, n, mu, d, log_phi: float, Z, codes, J: int):
    """Moment estimate of a vector random term's covariance on the link scale (q >= 2;
    None for a scalar term or when too few clusters inform it): as
    :func:`_intercept_sd`, the weighted mean of b_j b_j' - V_j over the clusters'
    estimates (:func:`_cluster_estimates`), with eigenvalues kept above 1e-3 of the
    largest.
    """
    q = Z.shape[1]
    if q < 2:
        return None
    b, V = _cluster_estimates(fam, y, n, mu, d, log_phi, Z, codes, J)
    if len(b) < max(10, 2 * q):
        return None
    dev = b[:, :, None] * b[:, None, :] - V
    G = dev.mean(axis=0)
    for _ in range(2):
        w = 1.0 / np.maximum(np.trace(G) + np.trace(V, axis1=1, axis2=2), 1e-12)
        G = np.einsum("j,jab->ab", w, dev) / w.sum()
    lam, vec = np.linalg.eigh(0.5 * (G + G.T))
    if not np.all(np.isfinite(lam)) or lam[-1] <= 0:
        return None
    return (vec * np.maximum(lam, 1e-3 * lam[-1])) @ vec.T


def _conditional_var(fam: Family, var: float) -> float:
    """A random intercept's variance from its moment estimate ``var`` at the marginal
    fit, where the cluster effects are linearized: attenuated like a coefficient under
    logit and probit (var = v / (1 + c^2 v)); under a log link they are exp(b) / E exp(b)
    - 1, of variance exp(v) - 1."""
    if fam.link == "log":
        return float(np.log1p(var))
    return var / (1.0 - min(_attenuation(fam) * var, 0.9))


def _conditional_beta(fam: Family, beta, x_names, var: float):
    """Marginal (population-averaged) start coefficients moved to the conditional scale
    for a random intercept of variance ``var`` (logit, probit: scaled up; log: intercept
    lowered by var/2)."""
    beta = beta.copy()
    if fam.link in ("logit", "probit"):
        beta *= np.sqrt(1.0 + _attenuation(fam) * var)
    elif fam.link == "log" and x_names[0] == "(Intercept)":
        beta[0] -= 0.5 * var
    return beta


def _inverse_hessian(H: np.ndarray, messages: list) -> np.ndarray:
    try:
        cov = np.linalg.inv(H)
        if np.any(np.diag(cov) < 0):
            raise np.linalg.LinAlgError
        return cov
    except np.linalg.LinAlgError:
        messages.append("Hessian of -logLik is not positive definite: standard errors are NaN")
        return np.full_like(H, np.nan)


def _result(formula: str, frame: ModelFrame, fam: Family, s, out,
            notes: tuple[str, ...] = (), clusters: tuple | None = None) -> GLMMResult:
    """The GLMMResult of a fit; ``clusters`` = (block, slot) of each cluster of a single
    grouping factor (default: all in block 0, in order)."""
    theta = np.asarray(out.theta)
    beta, L, log_phi = unpack_np(theta, s)
    several = isinstance(s, MultiStructure)
    if several:
        Ls, us, covs = L, out.u, out.u_cov
    else:
        J = len(frame.groups[0].levels)
        blk, slot = (np.zeros(J, int), np.arange(J)) if clusters is None else clusters
        Ls, us, covs = [L], [np.asarray(out.u)[blk, slot]], [np.asarray(out.u_cov)[blk, slot]]
    H = np.asarray(out.hess)
    messages = list(notes)
    cov_theta = _inverse_hessian(H, messages)
    reml = several and s.reml
    if reml:  # the fixed effects are the modes of the last pseudo-term
        beta = np.asarray(us[-1])[0]
        beta_cov = np.asarray(covs[-1])[0]
    else:
        beta_cov = cov_theta[: len(beta), : len(beta)]
    terms = []
    for Lk, uk, ck, g in zip(Ls, us, covs, frame.groups, strict=False):
        # b = L u; its conditional covariance is L cov(u) L^T. The diagonal of L is reported
        # non-negative (flipping a column of L and of u leaves the likelihood unchanged).
        Lk, uk, ck = np.asarray(Lk), np.asarray(uk), np.asarray(ck)
        b, b_cov = uk @ Lk.T, np.einsum("ab,jbc,dc->jad", Lk, ck, Lk)
        terms.append(TermFit(g.name, g.z_names, g.levels, Lk * np.where(np.diag(Lk) < 0, -1, 1),
                             b, b_cov))
    converged = bool(out.converged) and bool(np.all(np.isfinite(theta)))
    if not bool(out.inner_converged):
        converged = False
        messages.append("the conditional modes did not converge at the final estimates")
    if not bool(out.converged):
        why = "line search failed" if bool(out.line_search_failed) else \
            f"no convergence in {int(out.n_iter)} iterations"
        messages.append(f"optimizer did not converge ({why}); |gradient| = "
                        f"{np.max(np.abs(np.asarray(out.grad))):.2e}")
    if not converged:
        warn(f"{formula}: {messages[-1]}", ConvergenceWarning)
    scale = float(np.exp(log_phi)) if fam.name == "gaussian" else 1.0
    singular = any(np.any(np.abs(np.diag(t.L)) < SINGULAR_TOL * scale) for t in terms)
    if singular:
        messages.append("boundary (singular) fit: see result.varcorr")
        warn(f"{formula}: boundary (singular) fit: a random-effect variance is "
             "estimated as ~0 or a correlation as ~±1", SingularFitWarning)
    return GLMMResult(
        formula=formula, family=fam, nagq=s.nagq, nobs=len(frame.y), x_names=frame.x_names,
        terms=tuple(terms), beta=beta, beta_cov=beta_cov, reml=reml,
        dispersion=float(np.exp(log_phi)) if fam.has_dispersion else None,
        theta=theta, cov_theta=cov_theta, loglik=-float(out.f),
        converged=converged, n_iter=int(out.n_iter), singular=singular,
        messages=tuple(messages), n_dropped=frame.n_dropped, aliased=frame.aliased,
        frame=frame,
    )
