"""Laplace and adaptive Gauss-Hermite marginal likelihoods for one grouping factor.

Random effects are written b_j = L u_j with spherical u_j ~ N(0, I) (as in lme4), so a
variance can reach 0 smoothly. For cluster j the log-integrand is

    h_j(u) = sum_{i in j} w_i log p(y_i | eta_i) - |u|^2 / 2 - (q/2) log 2 pi,
    eta_i  = x_i beta + offset_i + z_i . (L u_j).

Layout: rows sorted by cluster are packed into chunks of C rows, each chunk holding rows
of one cluster only (a cluster's last chunk is padded with zero-weight rows). Sums over a
cluster are a dense sum within chunks followed by a ``segment_sum`` over chunks, so
clusters of very different sizes cost only their own rows (rounded up to C), and the
row-level work is dense and fuses well. Large models are split into blocks of whole
clusters (``make_layout``), which objective.py processes one after the other. The
per-row derivatives of log p in eta come from autodiff; gradients and Hessians in u
follow from the chain rule through the linear predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import smallmat
from .families import Family
from .modes import MAX_INNER_ITER, TOL_INNER, damped_newton, implicit_mode_rule
from .theta import ThetaLayout

LOG_2PI = float(np.log(2.0 * np.pi))


class ClusterData(NamedTuple):
    """Arrays of one model with a single grouping factor: B blocks of M chunks of C rows.

    The engine's functions below work on one block (arrays without the leading B axis);
    ``objective.py`` maps them over the blocks (or, for one scalar term of not too many
    rows, applies them to the blocks joined as one).
    """

    X: jax.Array  # [B, M, C, p] fixed-effects design
    Z: jax.Array  # [B, M, C, q] random-effects design
    y: jax.Array  # [B, M, C] response (successes for binomial)
    trials: jax.Array  # [B, M, C] binomial trials (1 elsewhere)
    offset: jax.Array  # [B, M, C]
    weights: jax.Array  # [B, M, C] prior weights; 0 marks a padding row
    group: jax.Array  # [B, M] int32 cluster (within its block) of each chunk, non-decreasing
    log_const: jax.Array  # [B] sum of the data-only log-density constants (Family.log_const)


class Layout(NamedTuple):
    """Where the rows go: the rows' clusters ``codes`` in input order, ``order`` the rows
    sorted by cluster (stably), and where each cluster went (``cluster_block[j]``,
    ``cluster_slot[j]``, its first chunk in its block ``cluster_chunk[j]`` and its number
    of chunks); row i is then in ``block[i], chunk[i], slot[i]``."""

    codes: np.ndarray
    order: np.ndarray
    counts: np.ndarray  # rows per cluster
    cluster_block: np.ndarray
    cluster_slot: np.ndarray
    cluster_chunk: np.ndarray
    chunks_per_cluster: np.ndarray
    size: int  # rows per chunk, C

    def _rank(self) -> np.ndarray:
        """Each row's place among its cluster's rows, in input order."""
        counts = self.counts
        rank = np.empty(len(self.codes), dtype=np.int64)
        rank[self.order] = np.arange(len(self.codes)) - (np.cumsum(counts) - counts)[
            self.codes[self.order]]
        return rank

    @property
    def block(self) -> np.ndarray:
        return self.cluster_block[self.codes]

    @property
    def chunk(self) -> np.ndarray:
        """Each row's chunk within its block."""
        return self.cluster_chunk[self.codes] + self._rank() // self.size

    @property
    def slot(self) -> np.ndarray:
        return self._rank() % self.size

    def block_sums(self, v: np.ndarray, n_blocks: int) -> np.ndarray:
        """The sum of the rows' values ``v`` in each of ``n_blocks`` blocks."""
        by_cluster = np.bincount(self.codes, v, len(self.cluster_block))
        return np.bincount(self.cluster_block, by_cluster, n_blocks)

    @property
    def n_blocks(self) -> int:
        return int(self.cluster_block.max()) + 1 if len(self.cluster_block) else 1

    @property
    def max_chunks(self) -> int:
        """Chunks in the fullest block."""
        return int(np.bincount(self.cluster_block, self.chunks_per_cluster).max())

    @property
    def max_clusters(self) -> int:
        """Clusters in the fullest block."""
        return int(np.bincount(self.cluster_block).max())


def chunk_size(counts: np.ndarray) -> int:
    """Rows per chunk: a power of two near half the median cluster size, at most 32."""
    med = float(np.median(counts)) if len(counts) else 1.0
    return int(min(32, 2 ** max(0, int(np.floor(np.log2(max(med / 2.0, 1.0)))))))


# rows per block on a CPU: a block's row-level temporaries stay in cache. Measured against
# 2**16 (and whole blocks rounded down): same speed from 100k to 1M rows, and XLA's
# temporaries for the 100k-row logit fit 32 -> 7.5 MB
BLOCK_ROWS = 2**15
ACCELERATOR_BLOCK_ROWS = 2**22  # on a GPU: blocks large enough to keep the device busy


def block_rows(platform: str) -> int:
    """Rows per block of clusters on a device of ``platform`` ("cpu", "gpu", ...)."""
    return BLOCK_ROWS if platform == "cpu" else ACCELERATOR_BLOCK_ROWS


def make_layout(codes: np.ndarray, n_groups: int, size: int | None = None,
                block_rows: int | None = None) -> Layout:
    """Chunk layout for rows with cluster ``codes`` (any order).

    Clusters are taken in order and packed whole into B blocks of about equal size, B the
    fewest blocks of at most ``block_rows`` rows that hold the chunks (``None``: one
    block).
    """
    counts = np.bincount(codes, minlength=n_groups)
    C = chunk_size(counts) if size is None else size
    chunks_per = -(-counts // C)  # ceil; an empty cluster gets no chunk
    cum = np.cumsum(chunks_per)
    total = int(cum[-1])
    b = 1 if block_rows is None else max(1, -(-total // max(block_rows // C, 1)))
    chunk_start = cum - chunks_per  # first chunk of each cluster, overall
    cluster_block = np.minimum(chunk_start * b // max(total, 1), b - 1)  # where it starts
    block_start = np.searchsorted(cluster_block, np.arange(b))  # first cluster of each block
    cluster_slot = np.arange(n_groups) - block_start[cluster_block]
    first_chunk = chunk_start - chunk_start[np.minimum(block_start, n_groups - 1)][cluster_block]
    # (numpy's stable sort of 16-bit integers is a radix sort: 4x faster on 100k rows)
    keys = codes.astype(np.uint16) if n_groups <= np.iinfo(np.uint16).max + 1 else codes
    return Layout(codes, np.argsort(keys, kind="stable"), counts, cluster_block, cluster_slot,
                  first_chunk, chunks_per, C)


class Positions(NamedTuple):
    """Where each of a layout's padded [B, M, C] positions takes its row: ``src`` the row
    (0 at padding), ``pad`` the padding positions (flat)."""

    src: np.ndarray
    pad: np.ndarray
    shape: tuple[int, int, int]

    def fill(self, values, fill: float) -> np.ndarray:
        """``values`` (one per row, any trailing shape) at the positions, ``fill`` at the
        padding. (A gather: a scatter into a fresh array is several times slower.)"""
        values = np.asarray(values, dtype=float)
        tail = values.shape[1:]
        if values.size and values.min() == values.max():  # constant (trials, weights, ...)
            out = np.full((len(self.src),) + tail, values.flat[0])
        else:
            out = values.take(self.src, axis=0)
        out[self.pad] = fill
        return out.reshape(self.shape + tail)


def positions(layout: Layout, n_blocks: int, n_chunks: int) -> Positions:
    """The :class:`Positions` of ``layout``'s rows in ``n_blocks`` blocks of ``n_chunks``
    chunks."""
    lay, C = layout, layout.size
    # the sorted rows' places: a cluster's rows fill its chunks in order, from its first
    counts = lay.counts
    first = (lay.cluster_block * n_chunks + lay.cluster_chunk) * C - (np.cumsum(counts) - counts)
    src = np.full(n_blocks * n_chunks * C, -1, dtype=np.intp)
    src[np.arange(len(lay.order)) + first[lay.codes[lay.order]]] = lay.order
    pad = np.flatnonzero(src < 0)
    src[pad] = 0
    return Positions(src, pad, (n_blocks, n_chunks, C))


def cluster_arrays(X, Z, y, trials, offset, log_const, layout: Layout,
                   n_chunks: int | None = None, n_groups: int | None = None,
                   n_blocks: int | None = None, put=None, weights=None,
                   where: Positions | None = None) -> ClusterData:
    """NumPy ClusterData of one model, optionally padded to ``n_blocks`` blocks of
    ``n_chunks`` chunks and ``n_groups`` clusters (padding chunks have zero weight and
    sit in a block's last cluster; padding clusters have no rows and contribute exactly 0
    to the likelihood). ``log_const`` are the per-row data-only log-density constants,
    ``weights`` the rows' prior weights (default 1); ``where``: the layout's
    :func:`positions` in that padding, if already made.
    ``put`` (e.g. a transfer to a device) is applied to each array as soon as it is
    built, so that only one padded NumPy array is alive at a time."""
    put = (lambda a: a) if put is None else put
    B = layout.n_blocks if n_blocks is None else n_blocks
    M = layout.max_chunks if n_chunks is None else n_chunks
    J = layout.max_clusters if n_groups is None else n_groups
    where = positions(layout, B, M) if where is None else where
    group = np.full((B, M), J - 1, dtype=np.int32)
    cpc = layout.chunks_per_cluster
    chunk_block = np.repeat(layout.cluster_block, cpc)
    chunk_cluster = np.repeat(layout.cluster_slot, cpc)
    block_first = np.searchsorted(chunk_block, np.arange(B))
    group[chunk_block, np.arange(len(chunk_block)) - block_first[chunk_block]] = chunk_cluster
    # padding rows: weight 0, y = trials = 1 (a valid response for every family)
    return ClusterData(
        X=put(where.fill(X, 0.0)), Z=put(where.fill(Z, 0.0)), y=put(where.fill(y, 1.0)),
        trials=put(where.fill(trials, 1.0)), offset=put(where.fill(offset, 0.0)),
        weights=put(where.fill(np.ones(len(y)) if weights is None else weights, 0.0)),
        group=put(group), log_const=put(layout.block_sums(log_const, B)),
    )


@dataclass(frozen=True)
class Structure:
    """Static description of a model: shapes, family and quadrature rule.

    ``n_groups`` is the number of clusters in each block (see ClusterData).
    """

    family: Family
    p: int
    q: int
    n_groups: int
    nagq: int = 1

    @property
    def theta(self) -> ThetaLayout:
        return ThetaLayout(self.p, (self.q,), self.family.has_dispersion)

    @property
    def n_cov(self) -> int:
        return self.theta.n_cov


def gh_rule(nagq: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Product Gauss-Hermite rule for a standard normal in q dimensions.

    Returns nodes ``t`` [K, q] and log weights [K] (weights sum to 1), K = nagq**q.
    ``nagq=1`` is the single node 0 with weight 1 (the Laplace approximation).
    """
    x, w = np.polynomial.hermite.hermgauss(nagq)
    t1, lw1 = np.sqrt(2.0) * x, np.log(w / np.sqrt(np.pi))
    grids = np.meshgrid(*([np.arange(nagq)] * q), indexing="ij")
    idx = np.stack([g.ravel() for g in grids], axis=1)
    return t1[idx], lw1[idx].sum(axis=1)


def row_derivs(eta, data, log_phi, family: Family, order: int = 2):
    """Weighted log density per row and its first ``order`` (2 or 4) derivatives in eta
    (autodiff), a tuple of ``order + 1`` arrays.

    ``data`` is any record with ``y``, ``trials`` and ``weights`` arrays.
    """

    def f(e):
        return data.weights * family.logpdf(data.y, e, data.trials, log_phi)

    def df(e):  # (f, f')
        return jax.jvp(f, (e,), (jnp.ones_like(e),))

    (ll, d1), (_, d2) = jax.jvp(df, (eta,), (jnp.ones_like(eta),))
    if order == 2:
        return ll, d1, d2

    def d2f(e):  # (the second derivative, the third)
        return jax.jvp(lambda x: jax.jvp(df, (x,), (jnp.ones_like(x),))[1][1], (e,),
                       (jnp.ones_like(e),))

    (_, d3), (_, d4) = jax.jvp(d2f, (eta,), (jnp.ones_like(eta),))
    return ll, d1, d2, d3, d4


def row_eta(u, eta0, L, data: ClusterData):
    """The rows' linear predictors [M, C] at the modes ``u`` [J, q] (eta0: X beta + offset)."""
    b = smallmat.mat_vec(L, u)[data.group]  # [M, q]
    # row-level products are written as broadcasts + sums (they fuse; small dots do not)
    return eta0 + jnp.sum(data.Z * b[:, None, :], axis=-1)


def cluster_sum(v, data: ClusterData, n_groups: int):
    """Sum chunk values [M, ...] into clusters [J, ...]."""
    return jax.ops.segment_sum(v, data.group, num_segments=n_groups, indices_are_sorted=True)


def fixed_eta(beta, data: ClusterData):
    # a matrix-vector product: its transpose (the gradient in beta) is then one dot
    # rather than a materialized [M, C, p] product and a reduction
    M, C, p = data.X.shape
    return (data.X.reshape(M * C, p) @ beta).reshape(M, C) + data.offset


def cluster_logh(u, eta0, L, log_phi, data: ClusterData, s: Structure):
    """h_j(u_j) for every cluster, [J]."""
    ll = data.weights * s.family.logpdf(data.y, row_eta(u, eta0, L, data), data.trials, log_phi)
    ll = cluster_sum(jnp.sum(ll, axis=1), data, s.n_groups)
    return ll - 0.5 * jnp.sum(u * u, axis=1) - 0.5 * s.q * LOG_2PI


def grad_negHess(u, eta0, L, log_phi, data: ClusterData, s: Structure):
    """Per-cluster h_j, its gradient [J, q] and negative Hessian [J, q, q] in u."""
    ll, d1, d2 = row_derivs(row_eta(u, eta0, L, data), data, log_phi, s.family)
    Z = data.Z
    h = cluster_sum(jnp.sum(ll, axis=1), data, s.n_groups)
    h = h - 0.5 * jnp.sum(u * u, axis=1) - 0.5 * s.q * LOG_2PI
    gb = cluster_sum(jnp.sum(d1[..., None] * Z, axis=1), data, s.n_groups)  # [J, q]
    ZZ = Z[..., :, None] * Z[..., None, :]
    Hb = cluster_sum(jnp.sum(d2[..., None, None] * ZZ, axis=1), data, s.n_groups)  # [J, q, q]
    g = smallmat.mat_vec(L.T, gb) - u
    # L' Hb L per cluster, as broadcasts and a sum (see smallmat.mat_vec)
    LHL = jnp.sum(Hb[:, :, :, None, None] * L[:, None, :, None] * L[None, :, None, :],
                  axis=(1, 2))
    negH = jnp.eye(s.q) - LHL
    return h, g, negH


def solve_modes(u0, eta0, L, log_phi, data: ClusterData, s: Structure,
                tol: float = TOL_INNER, max_iter: int = MAX_INNER_ITER):
    """Conditional modes [J, q] of every cluster (each h_j strictly concave) by
    :func:`modes.damped_newton`, each cluster accepting or shrinking its own step; and
    the number of iterations used."""
    return damped_newton(
        u0, lambda u: grad_negHess(u, eta0, L, log_phi, data, s),
        lambda nh, g: smallmat.chol_solve(nh, g), per_cluster=True, tol=tol,
        max_iter=max_iter)


implicit_mode = implicit_mode_rule(
    lambda u, e0, L, lp, data, s: grad_negHess(u, e0, L, lp, data, s),
    lambda nh, v, data, s: smallmat.chol_solve(nh, v))
"""The converged modes ``u_hat`` [J, q], differentiable in (eta0, L, log_phi)."""


def marginal_loglik(beta, L, log_phi, u_hat, data: ClusterData, s: Structure):
    """Laplace (nagq=1) or AGHQ log marginal likelihood of each cluster, [J], less the
    data-only constants (``data.log_const``).

    ``u_hat`` are converged modes; derivatives in (beta, L, log_phi) go exactly through
    them (:func:`implicit_mode`).
    """
    if s.nagq == 1:
        h, log_det_R = _at_mode(beta, L, log_phi, u_hat, data, s)[:2]
        return h + log_det_R + 0.5 * s.q * LOG_2PI
    return quadrature_loglik(beta, L, log_phi, u_hat, data, s, *gh_rule(s.nagq, s.q))


def _at_mode(beta, L, log_phi, u_hat, data, s):
    eta0 = fixed_eta(beta, data)
    u = implicit_mode(u_hat, eta0, L, log_phi, data, s)
    h, _, negH = grad_negHess(u, eta0, L, log_phi, data, s)
    C = smallmat.cholesky(negH)  # negH = C C^T;  R = C^{-T} maps N(0, I) nodes to u
    return h, -0.5 * smallmat.log_det(C), u, eta0, C


def aghq_nodes(u, C, t):
    """The adaptive quadrature nodes u + C^{-T} t_k of each cluster, [K, J, q]: the rule's
    nodes ``t`` [K, q] centred at the modes ``u`` [J, q] and scaled by the Cholesky factor
    ``C`` of -H (so they follow the curvature of each cluster's posterior)."""
    return jax.vmap(lambda tk: u + smallmat.solve_upper_t(C, jnp.broadcast_to(tk, u.shape)))(
        jnp.asarray(t))


def quadrature_loglik(beta, L, log_phi, u_hat, data: ClusterData, s: Structure, t, logw):
    """The adaptive Gauss-Hermite log marginal likelihood of each cluster with the rule
    (nodes ``t`` [K, q], log weights ``logw`` [K], see :func:`gh_rule`) placed at the
    mode and scaled by the curvature; with the one-node rule it is the Laplace value."""
    _, log_det_R, u, eta0, C = _at_mode(beta, L, log_phi, u_hat, data, s)
    hk = jax.vmap(lambda uk: cluster_logh(uk, eta0, L, log_phi, data, s))(
        aghq_nodes(u, C, t))  # [K, J]
    terms = jnp.asarray(logw + 0.5 * np.sum(t * t, axis=1))[:, None] + hk
    return jax.scipy.special.logsumexp(terms, axis=0) + log_det_R + 0.5 * s.q * LOG_2PI


def total_loglik(beta, L, log_phi, u_hat, data: ClusterData, s: Structure):
    """Log marginal likelihood with all constants."""
    return jnp.sum(marginal_loglik(beta, L, log_phi, u_hat, data, s)) + data.log_const
