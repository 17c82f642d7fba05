"""The posterior of the random effects given the data: modes, means, medians, posterior
intervals, and the shrinkage of each cluster's estimate.

Everything is conditional on the estimates (beta, the covariance factors and the
dispersion at their fitted values, as lme4's ``ranef(condVar = TRUE)``). For a model with
one random term, cluster j's effects have the posterior

    p(b_j | y) ∝ p(y_j | b_j) N(b_j; 0, G),   p(y_j | b) = prod_{i in j} p(y_i | eta_i),
    eta_i = x_i' beta + offset_i + z_i' b,

the integrand of the fit itself (``laplace.cluster_logh``), written as the fit writes it in
spherical coordinates b = L u, u ~ N(0, I), so that a singular G needs no special case.
Means and covariances are adaptive Gauss-Hermite sums at the mode, scaled by the curvature
there (``laplace.aghq_nodes``); medians and equal-tailed intervals of scalar effects invert
the posterior CDF, integrated by Gauss-Legendre pieces on a sinh-stretched standardized
scale (fine near the mode, long in the tails). Every cluster is computed at once in one
compiled program per model shape.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import laplace, rows, smallmat
from .dist import z_quantile
from .errors import GLMMInputError
from .layout import MAX_QUADRATURE_NODES
from .modes import TOL_INNER, damped_newton

KINDS = ("mode", "mean", "median")
# default Gauss-Hermite nodes per dimension: the most with nodes**q <= 1000, at most NODES
# (q = 1: 100 nodes, accurate to ~1e-10 also for the skewed posterior of a Poisson cluster
# of zeros under a large variance, where 25 nodes leave errors of ~1e-5; q = 2: 31)
NODES = 100
PIECES, LEGENDRE = 32, 8  # Gauss-Legendre pieces x points of the posterior CDF (q = 1)
# the CDF covers the standardized scale s = (u - u_hat) sqrt(A) out to |s| = TAIL sqrt(A):
# for a log-concave likelihood the log posterior lies below its value at the mode by at
# least (u - u_hat)^2 / 2 (the prior's curvature), i.e. by more than TAIL^2 / 2 = 50 there
TAIL = 10.0
QUANTILE_ITER = 8  # safeguarded Newton steps of a quantile within its piece
BATCH_ROWS = 2**22  # row evaluations held at once (nodes are processed in batches)
# an own estimate where the likelihood's curvature (determinant) is below FLAT times its
# value at the mode is a numerical infinity (a probability or rate at its bound)
FLAT = 1e-10


class _Problem(NamedTuple):
    """One term's clusters laid out as the fit's engine lays them out (one block)."""

    s: laplace.Structure
    data: laplace.ClusterData
    beta: jax.Array
    L: jax.Array
    log_phi: jax.Array
    u: jax.Array  # the conditional modes in spherical coordinates, [J, q]
    batch: int  # nodes evaluated at once


def _problem(res, k: int) -> _Problem:
    """Term k's clusters; the other terms (if any) enter the offset at their modes."""
    f, t = res.frame, res.terms[k]
    g = f.groups[k]
    offset = f.offset
    others = [i for i in range(len(f.groups)) if i != k]
    if others:
        offset = offset + rows.random_part([f.groups[i] for i in others],
                                           [res.terms[i].b for i in others])
    J = len(g.levels)
    layout = laplace.make_layout(g.codes, J)
    data = laplace.cluster_arrays(f.X, g.Z, f.y, f.trials, offset, np.zeros(len(f.y)), layout,
                                  weights=f.weights)
    data = jax.tree.map(lambda a: jnp.asarray(a[0]), data)  # the single block
    s = laplace.Structure(res.family, len(res.beta), len(t.z_names), J)
    u = t.b @ np.linalg.pinv(t.L).T  # exact where L is invertible; 0 in its null space
    return _Problem(s, data, jnp.asarray(res.beta), jnp.asarray(t.L),
                    jnp.asarray(rows.log_dispersion(res)), jnp.asarray(u),
                    max(1, BATCH_ROWS // int(data.y.size)))


def _args(p: _Problem):
    return p.u, p.beta, p.L, p.log_phi, p.data


def _logh(points, eta0, L, log_phi, data, s, batch):
    """log p(y_j | L u) N(u; 0, I) at points [K, J, q] of every cluster: [K, J]."""
    def f(uk):
        return laplace.cluster_logh(uk, eta0, L, log_phi, data, s)

    if points.shape[0] <= batch:  # (one batch: a scan would compile its body twice)
        return jax.vmap(f)(points)
    return jax.lax.map(f, points, batch_size=batch)


@partial(jax.jit, static_argnames=("s",))
def _laplace_cov(u, beta, L, log_phi, data, s):
    """The inverse negative Hessian of the log posterior in u at the modes, [J, q, q]."""
    _, _, nh = laplace.grad_negHess(u, laplace.fixed_eta(beta, data), L, log_phi, data, s)
    return smallmat.inverse(nh)


@partial(jax.jit, static_argnames=("s", "batch"))
def _moments(u, beta, L, log_phi, data, s, t, logw, batch):
    """Posterior means [J, q] and covariances [J, q, q] of u by adaptive Gauss-Hermite
    quadrature (nodes ``t``, log weights ``logw`` of ``laplace.gh_rule``)."""
    eta0 = laplace.fixed_eta(beta, data)
    _, _, nh = laplace.grad_negHess(u, eta0, L, log_phi, data, s)
    nodes = laplace.aghq_nodes(u, smallmat.cholesky(nh), t)  # [K, J, q]
    # the integrand over the rule's N(0, I) weight: p(u_k | y) / phi(t_k), up to constants
    lw = (logw + 0.5 * jnp.sum(t * t, axis=1))[:, None] + _logh(nodes, eta0, L, log_phi,
                                                               data, s, batch)
    w = jax.nn.softmax(lw, axis=0)
    mean = jnp.einsum("kj,kjq->jq", w, nodes)
    d = nodes - mean
    return mean, jnp.einsum("kj,kja,kjb->jab", w, d, d)


@partial(jax.jit, static_argnames=("s", "batch"))
def _quantiles(u, beta, L, log_phi, data, s, probs, batch):
    """Posterior quantiles [len(probs), J] of scalar u: the CDF by Gauss-Legendre pieces in
    v, u = u_hat + sinh(v) / sqrt(A) (A the curvature at the mode), then Newton with
    bisection for F(v) = p within the piece holding p."""
    eta0 = laplace.fixed_eta(beta, data)
    h0, _, nh = laplace.grad_negHess(u, eta0, L, log_phi, data, s)
    A = nh[:, 0, 0]
    xi, wl = np.polynomial.legendre.leggauss(LEGENDRE)
    at = 0.5 * (np.append(xi, 1.0) + 1.0)  # the rule's points on [0, 1], then the end

    def density(a, x):  # the density of v (over its value at the mode) at the rule's
        # points in [a, x] and at x, for a and x [n, J]: [n, G + 1, J]
        v = a[:, None] + (x - a)[:, None] * at[None, :, None]
        uv = u[:, 0] + jnp.sinh(v.reshape(-1, v.shape[-1])) / jnp.sqrt(A)
        lh = _logh(uv[..., None], eta0, L, log_phi, data, s, batch).reshape(v.shape)
        return jnp.exp(lh - h0) * jnp.cosh(v)

    def integral(a, x, g):  # int_a^x of the density, from density(a, x)
        return 0.5 * (x - a) * jnp.einsum("g,ngj->nj", wl, g[:, :-1])

    V = jnp.arcsinh(TAIL * jnp.sqrt(A))  # [J]
    width = 2.0 * V / PIECES
    edges = -V + width * jnp.arange(PIECES, dtype=V.dtype)[:, None]  # [P, J] left ends
    pieces = integral(edges, edges + width, density(edges, edges + width))  # [P, J]
    cum = jnp.cumsum(pieces, axis=0)
    target = probs[:, None] * cum[-1]  # [n, J]
    k = jnp.minimum(jnp.sum(cum[None] < target[:, None], axis=1), PIECES - 1)  # [n, J]
    below = jnp.where(k > 0, jnp.take_along_axis(cum, jnp.maximum(k - 1, 0), axis=0), 0.0)
    a = jnp.take_along_axis(edges, k, axis=0)  # the piece [a, a + width] holding p

    def newton(_, state):
        x, lo, hi = state
        g = density(a, x)
        F = below + integral(a, x, g) - target
        lo, hi = jnp.where(F < 0, x, lo), jnp.where(F > 0, x, hi)
        step = x - F / g[:, -1]
        return jnp.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi)), lo, hi

    x = a + width * (target - below) / jnp.take_along_axis(pieces, k, axis=0)
    x = jnp.clip(x, a, a + width)
    x, _, _ = jax.lax.fori_loop(0, QUANTILE_ITER, newton, (x, a, a + width))
    return u[:, 0] + jnp.sinh(x) / jnp.sqrt(A)


def _own_loglik(b, eta0, log_phi, data, s):
    """Each cluster's own log-likelihood log p(y_j | b_j) (no prior), [J]."""
    eta = eta0 + jnp.sum(data.Z * b[data.group][:, None, :], axis=-1)
    ll = data.weights * s.family.logpdf(data.y, eta, data.trials, log_phi)
    return jax.ops.segment_sum(jnp.sum(ll, axis=1), data.group, num_segments=s.n_groups,
                               indices_are_sorted=True)


@partial(jax.jit, static_argnames=("s",))
def _own_estimates(b0, beta, log_phi, data, s):
    """Each cluster's maximum of its own likelihood p(y_j | b) in b, from b0; and whether
    Newton converged there (not where the maximum is at infinity, or not unique)."""
    eta0 = laplace.fixed_eta(beta, data)
    grad = jax.grad(lambda b: jnp.sum(_own_loglik(b, eta0, log_phi, data, s)))

    def evaluate(b):  # value, gradient and the clusters' negative Hessians [J, q, q]
        cols = [jax.jvp(grad, (b,), (jnp.zeros_like(b).at[:, k].set(1.0),)) for k in
                range(s.q)]  # the Hessian is block diagonal: one column of every block
        return (_own_loglik(b, eta0, log_phi, data, s), cols[0][0],
                -jnp.stack([c[1] for c in cols], axis=-1))

    b, _ = damped_newton(b0, evaluate, smallmat.chol_solve, per_cluster=True)
    _, g, nh = evaluate(b)
    C = smallmat.cholesky(nh)
    step = smallmat.cho_solve(C, g)
    # a maximum at infinity: Newton keeps stepping, or it stops where the likelihood is
    # flat (towards a probability of 1 the gradient rounds to 0 before the curvature does)
    flat = smallmat.log_det(C) - smallmat.log_det(smallmat.cholesky(evaluate(b0)[2]))
    ok = (jnp.all(jnp.isfinite(b), axis=1) & (jnp.max(jnp.abs(step), axis=1) < TOL_INNER)
          & (flat > np.log(FLAT)))
    return b, ok


def _check(res) -> None:
    if getattr(res, "frame", None) is None or not getattr(res, "terms", None):
        raise GLMMInputError("the result has no random effects (or no model frame): the "
                             "posterior of the random effects needs a fitted GLMM")


def _label(t) -> str:
    return f"({' + '.join(t.z_names)} | {t.group})"


def _laplace(res, p: _Problem | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each term's modes [J, q] and conditional covariances at the modes [J, q, q] (for
    one term from its curvature, given beta; ``p``: its problem, if at hand)."""
    if len(res.terms) > 1:
        return [(t.b, t.b_cov) for t in res.terms]
    t, p = res.terms[0], _problem(res, 0) if p is None else p
    cov_u = np.asarray(_laplace_cov(*_args(p), p.s))
    return [(t.b, np.einsum("ab,jbc,dc->jad", t.L, cov_u, t.L))]


def _nodes(nagq, q: int) -> int:
    if nagq is None:
        n = NODES
        while n**q > MAX_QUADRATURE_NODES:
            n -= 1
        return n
    if isinstance(nagq, bool) or not isinstance(nagq, int | np.integer) or nagq < 2:
        raise GLMMInputError(f"nagq must be an integer of at least 2, not {nagq!r} (one "
                             "node is the mode: kind='mode')")
    if nagq**q > MAX_QUADRATURE_NODES:
        raise GLMMInputError(f"nagq**q = {nagq}**{q} exceeds {MAX_QUADRATURE_NODES} nodes "
                             "per cluster: lower nagq")
    return int(nagq)


def _table(t, cols: dict) -> pd.DataFrame:
    return pd.DataFrame(cols, index=t.levels.copy())


def random_effects(res, kind: str = "mode", level: float = 0.95,
                   nagq: int | None = None) -> dict[str, pd.DataFrame]:
    """The random effects' posterior per level, given the data and the estimates.

    ``kind="mode"``: the conditional modes and the SDs at the mode (the Laplace
    approximation), as lme4's ``ranef(condVar = TRUE)``. ``kind="mean"``: the posterior
    means E[b_j | y] and SDs by adaptive Gauss-Hermite quadrature with ``nagq`` nodes per
    dimension (default: the most with nagq**q <= 1000, at most 100: 100 for q = 1, 31 for
    q = 2, 10 for q = 3), vector effects included. ``kind="median"``: posterior medians and
    equal-tailed ``level`` intervals of scalar effects, by inverting the posterior CDF.

    Returns one table per grouping factor, indexed by level (terms of one factor, as from
    ``||``, joined, as ``res.ranef``): each effect's name (the estimate) and
    ``condsd <name>`` (the posterior SD), or for "median" ``lower <name>`` and
    ``upper <name>``.

    The SDs are conditional on the estimated fixed effects (lme4's condVar, as
    ``res.ranef``'s). With several terms the modes and SDs are ``res.ranef``'s, and
    "mean" and "median" are refused except for
    Gaussian models: one term's effects are then dependent across its levels given y, so
    their posterior is no per-level integral. Gaussian posteriors are normal: mean =
    median = mode, intervals mode ± z SD. lme4 and glmmTMB give the modes only.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> post = gj.random_effects(res, kind="median")["herd"]
    >>> list(post.columns)
    ['(Intercept)', 'lower (Intercept)', 'upper (Intercept)']
    >>> mean = gj.random_effects(res, kind="mean")["herd"]
    >>> bool((mean["condsd (Intercept)"] > 0).all())
    True
    """
    _check(res)
    if kind not in KINDS:
        raise GLMMInputError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")
    if not isinstance(level, float | int) or not 0.0 < level < 1.0:
        raise GLMMInputError(f"level must be a probability between 0 and 1, not {level!r}")
    if kind == "mode" or res.family.name == "gaussian":
        tables = [_normal_table(t, b, cov, kind, level)
                  for t, (b, cov) in zip(res.terms, _laplace(res), strict=True)]
    else:
        tables = [_quadrature_table(res, kind, level, nagq)]
    out: dict[str, pd.DataFrame] = {}
    for t, df in zip(res.terms, tables, strict=True):
        out[t.group] = out[t.group].join(df) if t.group in out else df
    return out


def _normal_table(t, b, cov, kind: str, level: float) -> pd.DataFrame:
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    cols = {n: b[:, k] for k, n in enumerate(t.z_names)}
    if kind == "median":
        z = z_quantile(level)
        cols.update({f"lower {n}": b[:, k] - z * sd[:, k] for k, n in enumerate(t.z_names)})
        cols.update({f"upper {n}": b[:, k] + z * sd[:, k] for k, n in enumerate(t.z_names)})
    else:
        cols.update({f"condsd {n}": sd[:, k] for k, n in enumerate(t.z_names)})
    return _table(t, cols)


def _quadrature_table(res, kind: str, level: float, nagq) -> pd.DataFrame:
    if len(res.terms) > 1:
        labels = ", ".join(_label(t) for t in res.terms)
        raise GLMMInputError(
            f"kind={kind!r} needs a model with one random term (or a Gaussian model), not "
            f"{len(res.terms)} ({labels}): given y, one term's effects are not independent "
            "across its levels (levels of the other terms link them), so their posterior "
            "is no per-level integral; use kind='mode' (the joint Laplace approximation)")
    t = res.terms[0]
    q = len(t.z_names)
    p = _problem(res, 0)
    if kind == "mean":
        mean_u, cov_u = _moments(*_args(p), p.s, *map(jnp.asarray, laplace.gh_rule(
            _nodes(nagq, q), q)), p.batch)
        b = np.asarray(mean_u) @ t.L.T
        sd = np.sqrt(np.einsum("ab,jbc,ac->ja", t.L, np.asarray(cov_u), t.L))
        return _table(t, {**{n: b[:, k] for k, n in enumerate(t.z_names)},
                          **{f"condsd {n}": sd[:, k] for k, n in enumerate(t.z_names)}})
    if q > 1:
        raise GLMMInputError(
            f"kind='median' needs scalar random effects; term {_label(t)} has {q} "
            "(medians and intervals of a vector effect's components are not computed: "
            "use kind='mean' for its posterior means and SDs)")
    probs = jnp.asarray([0.5, 0.5 - 0.5 * level, 0.5 + 0.5 * level])
    qs = np.asarray(_quantiles(*_args(p), p.s, probs, p.batch)) * t.L[0, 0]
    n = t.z_names[0]
    return _table(t, {n: qs[0], f"lower {n}": qs[1], f"upper {n}": qs[2]})


def _term_index(res, term) -> int:
    names = [t.group for t in res.terms]
    choices = ", ".join(f"{i}: {_label(t)}" for i, t in enumerate(res.terms))
    if term is None:
        if len(names) == 1:
            return 0
        raise GLMMInputError(f"the model has {len(names)} random terms: choose one with "
                             f"term= (a grouping factor's name or a position; {choices})")
    if isinstance(term, int | np.integer) and not isinstance(term, bool):
        if 0 <= term < len(names):
            return int(term)
    elif isinstance(term, str) and names.count(term) == 1:
        return names.index(term)
    raise GLMMInputError(f"term={term!r} names no single random term; give a grouping "
                         f"factor's name or a position ({choices})")


def shrinkage(res, term: str | int | None = None) -> pd.DataFrame:
    """How far each cluster's estimate is pulled towards 0, per level of one random term.

    ``term``: the grouping factor's name or the term's position in ``res.terms`` (needed
    with several terms; a position for terms of one factor from ``||``). Columns: ``n``
    (rows of the cluster), ``trials`` (binomial: their total), then for each effect
    ``mode``, ``posterior_sd`` (the conditional SD at the mode, as in
    :func:`random_effects` with kind="mode"), ``reliability`` = 1 - Var(b_j | y) / G (0
    where the variance is 0) and ``own_estimate``: the no-pooling estimate, maximizing the
    cluster's own likelihood p(y_j | b) over b with the fixed effects (and the other
    terms' effects, at their modes) held at the estimates; NaN where it has no finite
    maximum (e.g. a binomial cluster without events, or of events only), detected as
    Newton from the mode not converging, or stopping where the likelihood's curvature
    has fallen below 1e-10 of its value at the mode. For a vector effect (q > 1) the
    columns are ``mode <name>``, ``posterior_sd <name>``, ...

    For a Gaussian random intercept the reliability is the LMM shrinkage factor
    sigma_b^2 / (sigma_b^2 + sigma^2 / n_j) and mode = reliability * own_estimate.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> list(gj.shrinkage(res).columns)
    ['n', 'trials', 'mode', 'posterior_sd', 'reliability', 'own_estimate']
    """
    _check(res)
    k = _term_index(res, term)
    t, g, f = res.terms[k], res.frame.groups[k], res.frame
    p = _problem(res, k)
    b, cov = _laplace(res, p)[k]
    var, G = np.diagonal(cov, axis1=1, axis2=2), np.diag(t.G)
    with np.errstate(invalid="ignore", divide="ignore"):
        reliability = np.where(G > 0, 1.0 - var / G, 0.0)
    own, ok = _own_estimates(jnp.asarray(t.b), p.beta, p.log_phi, p.data, p.s)
    own = np.where(np.asarray(ok)[:, None], np.asarray(own), np.nan)
    J = len(t.levels)
    cols = {"n": np.bincount(g.codes, minlength=J)}
    if res.family.name == "binomial":
        cols["trials"] = np.bincount(g.codes, f.trials, minlength=J)
    scalar = len(t.z_names) == 1
    for name, v in {"mode": b, "posterior_sd": np.sqrt(var), "reliability": reliability,
                    "own_estimate": own}.items():
        for e, n in enumerate(t.z_names):
            cols[name if scalar else f"{name} {n}"] = v[:, e]
    return _table(t, cols)
