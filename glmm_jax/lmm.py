"""Linear mixed models (Gaussian response) from sufficient statistics.

For a Gaussian response the Laplace approximation of crossed.py is exact, and every
quantity it needs is a function of θ-free cross products of the data (Z'Z, Z'X, Z'y,
X'X, X'y, y'y), computed once. With T = [Z Λ, X (REML only)], e = y - X β (ML) or y (REML),
φ = σ², and A = T'T + φ diag(prior mask):

    -log L = (e'e - g'A⁻¹g) / (2φ) + n log σ + (n/2) log 2π + ½ (log det A - N log φ)
             [- (p/2) log 2π under REML],   g = T'e,  N = dim A,

the same function of θ as crossed.loglik (so the optimizer, its exact Hessian and the
results are shared), at a cost free of n. A is eliminated as in crossed.py: term 0 (the
most effects) has q0 × q0 blocks A_j; the Schur complement S over the other effects
(and, under REML, the fixed effects) is dense, and its term-0 correction
Σ_j B_j' A_j⁻¹ B_j is accumulated over the pairs of other-term columns that share a
level of term 0 (for InstEval-size data 2.6M pairs instead of a 2,972 × 1,158 dense
product).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import smallmat
from .crossed import MultiStructure, spd_inverse, spd_log_det
from .laplace import LOG_2PI

MAX_DENSE = 4000  # largest Schur complement (other terms' effects, + p under REML)
MAX_PAIRS = 30_000_000  # largest number of column pairs sharing a level of term 0


class LmmData(NamedTuple):
    """θ-free cross products. Index 0: term 0 by level; r: the other terms' effects."""

    n: jax.Array  # number of observations
    ZtZ0: jax.Array  # [J0, q0, q0]
    Zty0: jax.Array  # [J0, q0]
    ZtX0: jax.Array  # [J0, q0, p]
    ent_j: jax.Array  # [E] level of term 0 of each nonzero (j, r) of Z0'Zr
    ent_r: jax.Array  # [E] its column r
    ent_c: jax.Array  # [E, q0] its values
    pair_j: jax.Array  # [P] level of term 0 shared by a pair of columns r1 <= r2
    pair_rr: jax.Array  # [P] r1 * R + r2
    pair_c: jax.Array  # [P, q0, q0] outer product of the two columns' values (half if r1 = r2)
    ZtZr: jax.Array  # [R, R]
    ZtXr: jax.Array  # [R, p]
    Ztyr: jax.Array  # [R]
    XtX: jax.Array
    Xty: jax.Array
    yty: jax.Array
    half_log_w: jax.Array  # ½ Σ log w of the precision weights (0 without)
    fixed_pad: jax.Array  # padded fixed-effect columns (lmmpad.py; REML: not counted)


@dataclass(frozen=True)
class LmmStructure(MultiStructure):
    """A Gaussian model fitted from cross products (the terms as in MultiStructure)."""

    @property
    def r_z(self) -> int:
        """Effects of terms 1.. with a prior (the dense part, without REML's beta)."""
        return sum(q * J for q, J in zip(self.qs[1:self.n_prior], self.Js[1:self.n_prior],
                                         strict=True))

    @property
    def scale_indices(self) -> np.ndarray:
        """Positions in theta of the factors of terms 1.. (they enter S through Λ_z)."""
        start = self.p_theta + self.qs[0] * (self.qs[0] + 1) // 2
        return np.arange(start, self.p_theta + self.n_cov)


def _term_matrix(Z, codes, J):
    """Sparse [n, J q] random-effects design of one term (level-major columns)."""
    import scipy.sparse as sp  # (imported when needed: 0.06 s)

    n, q = Z.shape
    cols = codes[:, None] * q + np.arange(q)[None, :]
    return sp.csr_matrix((Z.ravel(), (np.repeat(np.arange(n), q), cols.ravel())),
                         shape=(n, J * q))


def _rest_matrix(terms, Js):
    import scipy.sparse as sp

    mats = [_term_matrix(Z, c, J) for (Z, c), J in zip(terms[1:], Js[1:], strict=True)]
    return sp.hstack(mats, format="csr")


def cross_products(X, y, terms, Js, weights=None) -> LmmData | None:
    """The θ-free statistics of a model; ``terms`` = [(Z_k, codes_k)] for the terms with
    a prior, term 0 (eliminated blockwise) first; ``weights``: precision weights (rows
    scaled by their square roots, as lmer does). None when the other terms' columns
    sharing a level of term 0 make more than ``MAX_PAIRS`` pairs."""
    half_log_w = 0.0
    if weights is not None and np.any(weights != 1.0):
        sw = np.sqrt(weights)
        X, y = X * sw[:, None], y * sw
        terms = [(Z * sw[:, None], c) for Z, c in terms]
        half_log_w = 0.5 * float(np.sum(np.log(weights)))
    Z0, c0 = terms[0]
    n, q0 = Z0.shape
    J0, p = Js[0], X.shape[1]

    def by_level(v):  # sum over the rows of each level of term 0
        return np.bincount(c0, v, J0)

    ZtZ0 = np.stack([np.stack([by_level(Z0[:, a] * Z0[:, b]) for b in range(q0)], -1)
                     for a in range(q0)], 1)
    Zty0 = np.stack([by_level(Z0[:, a] * y) for a in range(q0)], -1)
    ZtX0 = np.zeros((J0, q0, p))  # (no fixed effects: p = 0)
    for a in range(q0):
        for k in range(p):
            ZtX0[:, a, k] = by_level(Z0[:, a] * X[:, k])
    if len(terms) > 1:
        Zr = _rest_matrix(terms, Js)
        R = Zr.shape[1]
        ZtZr = (Zr.T @ Zr).toarray()
        ZtXr = np.asarray(Zr.T @ X).reshape(R, p)
        Ztyr = np.asarray(Zr.T @ y).reshape(R)
        # nonzeros of Z0'Zr, one entry per (level j, column r) with its q0 values
        Z0s = _term_matrix(Z0, c0, J0)
        C = [(Z0s[:, a::q0].T @ Zr).tocoo() for a in range(q0)]
        key = np.concatenate([c.row.astype(np.int64) * R + c.col for c in C])
        uniq, inv = np.unique(key, return_inverse=True)
        ent_c = np.zeros((len(uniq), q0))
        np.add.at(ent_c, (inv, np.repeat(np.arange(q0), [c.nnz for c in C])),
                  np.concatenate([c.data for c in C]))
        ent_j, ent_r = (uniq // R).astype(np.int32), (uniq % R).astype(np.int32)
        n_j = np.bincount(ent_j, minlength=J0)
        if np.sum(n_j * (n_j + 1) // 2) > MAX_PAIRS:
            return None
        first, count, e2 = _pairs(ent_j, ent_r, n_j)
        pair_j = np.repeat(ent_j[first], count)
        pair_rr = np.repeat(ent_r[first] * np.int32(R), count) + ent_r[e2]
        pair_c = (np.repeat(ent_c[first, 0], count) * ent_c[e2, 0]).reshape(-1, 1, 1) \
            if q0 == 1 else np.repeat(ent_c[first], count, axis=0)[:, :, None] * \
            ent_c[e2, None, :]
        pair_c[np.cumsum(count) - count] *= 0.5  # a column with itself (each run's first
        # pair): half, as it is summed twice
    else:
        R = 0
        ZtZr, ZtXr, Ztyr = np.zeros((0, 0)), np.zeros((0, p)), np.zeros(0)
        ent_j = ent_r = pair_j = pair_rr = np.zeros(0, np.int64)
        ent_c, pair_c = np.zeros((0, q0)), np.zeros((0, q0, q0))
    i32 = np.int32
    return LmmData(
        np.asarray(float(n)), ZtZ0, Zty0, ZtX0, ent_j.astype(i32, copy=False),
        ent_r.astype(i32, copy=False), ent_c, pair_j.astype(i32, copy=False),
        pair_rr.astype(i32, copy=False), pair_c, ZtZr, ZtXr, Ztyr, X.T @ X, X.T @ y,
        np.asarray(y @ y), np.asarray(half_log_w), np.asarray(0.0))


def response_products(X, y, terms, Js, weights=None) -> dict:
    """The fields of :func:`cross_products` that depend on the response: Z'y by level
    of term 0, the other terms' Z'y, X'y and y'y (rows scaled by sqrt(weights))."""
    if weights is not None and np.any(weights != 1.0):
        sw = np.sqrt(weights)
        X, y = X * sw[:, None], y * sw
        terms = [(Z * sw[:, None], c) for Z, c in terms]
    Z0, c0 = terms[0]
    Zty0 = np.stack([np.bincount(c0, Z0[:, a] * y, Js[0]) for a in range(Z0.shape[1])], -1)
    Ztyr = np.asarray(_rest_matrix(terms, Js).T @ y).reshape(-1) if len(terms) > 1 else \
        np.zeros(0)
    return {"Zty0": Zty0, "Ztyr": Ztyr, "Xty": X.T @ y, "yty": np.asarray(y @ y)}


def _pairs(ent_j, ent_r, n_j):
    """Index pairs e1 <= e2 of entries (sorted by level j, then column r; ``n_j`` entries
    at level j) that share a level, grouped by the column of e1 in increasing order (so
    that the scatter-add of the pairs into S writes one row at a time): (first, count,
    e2), with e1 = repeat(first, count); each run's first pair is e2 = e1."""
    start = np.cumsum(n_j) - n_j
    first = np.argsort(ent_r, kind="stable").astype(np.int32)
    count = (start[ent_j] + n_j[ent_j] - np.arange(len(ent_j)))[first]  # e2 = e1, ..., last
    runs = (np.cumsum(count) - count).astype(np.int32)
    e2 = np.arange(int(count.sum()), dtype=np.int32) + np.repeat(first - runs, count)
    return first, count, e2


def _scale(M, Ls, s: LmmStructure, axis: int, trans: bool = False):
    """M with its first ``s.r_z`` indices along ``axis`` transformed by
    Λ_z = blockdiag(L_k per level): v -> Λ_z' v (or Λ_z v if ``trans``) for each vector v
    along that axis; so _scale(_scale(M, 1), 0) = Λ_z' M Λ_z."""
    shape = [1] * M.ndim
    shape[axis] = M.shape[axis]
    qs, Js, Lr = s.qs[1:s.n_prior], s.Js[1:s.n_prior], Ls[1:s.n_prior]
    if all(q == 1 for q in qs):  # Λ_z is diagonal: one elementwise product
        lam = [jnp.full(J, L[0, 0]) for J, L in zip(Js, Lr, strict=True)]
        lam.append(jnp.ones(M.shape[axis] - s.r_z, M.dtype))
        return M * jnp.concatenate(lam).reshape(shape)
    M = jnp.moveaxis(M, axis, -1)
    parts, i = [], 0
    for q, J, L in zip(qs, Js, Lr, strict=True):
        block = M[..., i:i + q * J].reshape(M.shape[:-1] + (J, q))
        Lq = L.T if trans else L
        parts.append(sum(block[..., b:b + 1] * Lq[b] for b in range(q)).reshape(
            M.shape[:-1] + (J * q,)))
        i += q * J
    parts.append(M[..., i:])
    return jnp.moveaxis(jnp.concatenate(parts, axis=-1), -1, axis)


class _Parts(NamedTuple):
    CA: list  # Cholesky factors of the term-0 blocks A_j
    M: jax.Array  # [J0, q0, q0] L0 A_j^{-1} L0'
    h: jax.Array  # [J0, q0] Z0'e
    G_zz: jax.Array  # [R, R] Zr'Zr - sum_j B_j' A_j^{-1} B_j before Λ_z (pairs=False: Zr'Zr)
    G_zx: jax.Array  # [R, p] the same for Zr'X (REML; else [R, 0])
    S_xx: jax.Array  # [p, p] (REML; else [0, 0])
    g: jax.Array  # [R'] T'e of the dense part, less B' A^{-1} g0
    ee: jax.Array
    phi: jax.Array


def _pair_sums(M, d: LmmData, R: int, both: bool = False):
    """sym K(M): Σ over the pairs of columns sharing a level j of term 0 of
    <M_j, c_r1 c_r2'>, as an [R, R] symmetric matrix (both orders of a pair; a column
    with itself once, its pair_c halved). ``both``: each pair added at (r1, r2) and at
    (r2, r1), not K + K': a second (unsorted) scatter instead of a transpose, which XLA
    repeats in every product that reads the sum (value_grad_hess: InstEval's Hessian
    ~5% faster; the value alone is faster with the transpose)."""
    v = jnp.einsum("pab,pab->p", M[d.pair_j], d.pair_c)
    K = jax.ops.segment_sum(v, d.pair_rr, num_segments=R * R)
    if both:
        return K.at[(d.pair_rr % R) * R + d.pair_rr // R].add(v).reshape(R, R)
    K = K.reshape(R, R)
    return K + K.T


def _pair_weights(Wp, d: LmmData, s: LmmStructure):
    """The adjoint of :func:`_pair_sums`: for each level j of term 0, the derivative of
    <Wp, sym K(M)> in M_j (Wp symmetric), [J0, q0, q0]."""
    w = 2.0 * Wp.reshape(-1)[d.pair_rr]
    return jax.ops.segment_sum(w[:, None, None] * d.pair_c, d.pair_j, num_segments=s.Js[0])


def _wprime(Wz, Ls, s: LmmStructure):
    """Λz Wz Λz': <Wz, Λz' G Λz> = <_wprime(Wz), G>."""
    return _scale(_scale(Wz, Ls, s, 1, True), Ls, s, 0, True)


def _factor_hessian(Wz, G, theta, s: LmmStructure, unpack):
    """The Hessian in the factors' entries tb of terms 1.. of <Λz Wz Λz', G> ([R, R]
    matrices): a quadratic form in tb (Λz is linear in it), so it equals ½ tb' Q tb
    and its gradient is Q tb. With scalar terms only, Q = B + B' for B the sums of
    Wz ⊙ G over the blocks of two terms' columns."""
    b_idx = s.scale_indices
    qs, Js = s.qs[1:s.n_prior], s.Js[1:s.n_prior]
    if all(q == 1 for q in qs):
        ends = np.cumsum(Js)
        blocks = list(zip(ends - np.asarray(Js), ends, strict=True))
        cols = [jnp.sum(Wz[:, lo:hi] * G[:, lo:hi], axis=1) for lo, hi in blocks]
        B = jnp.stack([jnp.stack([jnp.sum(c[lo:hi]) for c in cols]) for lo, hi in blocks])
        return B + B.T

    def form(tb):
        return jnp.sum(_wprime(Wz, unpack(theta.at[b_idx].set(tb), s)[1], s) * G)

    return jax.hessian(form)(theta[b_idx])


def _parts(theta_parts, d: LmmData, s: LmmStructure, pairs: bool = True,
           both: bool = False) -> _Parts:
    """The pieces of -log L; with ``pairs=False`` G_zz is Zr'Zr alone (the pair sums
    left out: value_grad_hess adds their derivatives itself; ``both``: see
    :func:`_pair_sums`)."""
    beta, Ls, log_phi = theta_parts
    phi = jnp.exp(2.0 * log_phi)
    L0, q0 = Ls[0], s.qs[0]
    A = jnp.einsum("ba,jbc,cd->jad", L0, d.ZtZ0, L0) + phi * jnp.eye(q0)
    CA = smallmat.cholesky(A)
    M = L0 @ smallmat.cho_solve_matrix(CA, jnp.broadcast_to(L0.T, A.shape))
    if s.reml:
        h, ee = d.Zty0, d.yty
        rz = d.Ztyr
    else:
        h = d.Zty0 - d.ZtX0 @ beta
        ee = d.yty - 2.0 * beta @ d.Xty + beta @ d.XtX @ beta
        rz = d.Ztyr - d.ZtXr @ beta
    R = s.r_z
    G_zz = d.ZtZr - _pair_sums(M, d, R, both) if pairs and R else d.ZtZr
    Mh = jnp.einsum("jab,jb->ja", M, h)
    g_z = rz - jax.ops.segment_sum(jnp.einsum("ea,ea->e", d.ent_c, Mh[d.ent_j]), d.ent_r,
                                   num_segments=R)
    g = _scale(g_z[None, :], Ls, s, 1)[0]
    p = s.p if s.reml else 0
    G_zx, S_xx = jnp.zeros((R, p)), jnp.zeros((p, p))
    if s.reml:
        Mc = jnp.einsum("eab,eb->ea", M[d.ent_j], d.ent_c)  # M_j c_{j,r} per entry
        G_zx = d.ZtXr - jax.ops.segment_sum(jnp.einsum("ea,eak->ek", Mc, d.ZtX0[d.ent_j]),
                                            d.ent_r, num_segments=R)
        S_xx = d.XtX - jnp.einsum("jak,jab,jbl->kl", d.ZtX0, M, d.ZtX0)
        g = jnp.concatenate([g, d.Xty - jnp.einsum("jak,ja->k", d.ZtX0, Mh)])
    return _Parts(CA, M, h, G_zz, G_zx, S_xx, g, ee, phi)


def _schur(pt: _Parts, Ls, s: LmmStructure):
    """S = [[Λz' G_zz Λz + φ I, Λz' G_zx], [., S_xx]]."""
    S = _scale(_scale(pt.G_zz, Ls, s, 1), Ls, s, 0) + pt.phi * jnp.eye(s.r_z)
    if s.reml:
        S_zx = _scale(pt.G_zx, Ls, s, 0)
        S = jnp.block([[S, S_zx], [S_zx.T, pt.S_xx]])
    return S


def _schur_dot_rest(W, trace_W, pt: _Parts, Ls, s: LmmStructure):
    """<W, S> less its term <Λz W_zz Λz', G_zz> (value_grad_hess forms that one as a
    quadratic form in the factors of terms 1..); ``trace_W`` = tr W_zz."""
    R = s.r_z
    out = pt.phi * trace_W
    if s.reml:
        out = out + 2.0 * jnp.sum(_scale(W[:R, R:], Ls, s, 0, True) * pt.G_zx) + jnp.sum(
            W[R:, R:] * pt.S_xx)
    return out


@jax.custom_jvp
def schur_terms(S, g):
    """½ log det S - ½ g'S^{-1}g for symmetric positive definite S: one Cholesky
    factorization; the derivative tr(S^{-1}dS)/2 - x'dg + x'dS x/2 (x = S^{-1}g) by
    matrix products (crossed.spd_inverse), so that derivatives of any order are too."""
    C = jax.scipy.linalg.cho_factor(S, lower=True)
    return jnp.sum(jnp.log(jnp.diagonal(C[0]))) - 0.5 * g @ jax.scipy.linalg.cho_solve(C, g)


@schur_terms.defjvp
def _schur_terms_jvp(primals, tangents):
    (S, g), (dS, dg) = primals, tangents
    X = spd_inverse(S)
    x = X @ g
    return (0.5 * spd_log_det(S) - 0.5 * g @ x,
            0.5 * jnp.sum(X * dS) - x @ dg + 0.5 * x @ dS @ x)


def split(theta_parts, d: LmmData, s: LmmStructure):
    """(S, g/σ, rest) with -log L = rest + ½ log det S - ½ (g/σ)' S^{-1} (g/σ)."""
    pt = _parts(theta_parts, d, s)
    return _schur(pt, theta_parts[1], s), pt.g * jnp.exp(-theta_parts[2]), _rest(
        pt, theta_parts[2], d, s)


def _rest(pt: _Parts, log_phi, d: LmmData, s: LmmStructure):
    """The terms of -log L outside the Schur complement."""
    quad0 = jnp.sum(pt.h * jnp.einsum("jab,jb->ja", pt.M, pt.h))
    N = s.qs[0] * s.Js[0] + pt.g.shape[0] - (d.fixed_pad if s.reml else 0.0)
    rest = ((pt.ee - quad0) / (2.0 * pt.phi) + d.n * (log_phi + 0.5 * LOG_2PI)
            + 0.5 * jnp.sum(smallmat.log_det(pt.CA)) - N * log_phi - d.half_log_w)
    return rest - 0.5 * (s.p - d.fixed_pad) * LOG_2PI if s.reml else rest


def negloglik(theta_parts, d: LmmData, s: LmmStructure):
    """Exact -log L (restricted under REML) at (beta, Ls, log_phi)."""
    S, gs, rest = split(theta_parts, d, s)
    if not S.shape[0]:
        return rest
    return rest + schur_terms(S, gs)


def value_grad_hess(theta, d: LmmData, s: LmmStructure, unpack, aux: bool = False):
    """-log L, its gradient and exact Hessian at ``theta`` (``unpack(theta, s)`` gives
    (beta, Ls, log_phi)); with ``aux``, also S^{-1} (for :func:`conditional` at the same
    theta). S does not depend on the fixed effects, and depends on the factors of terms
    1.. only through Λ_z.

    With F(S, g) = ½ log det S - ½ g'S^{-1}g, the chain rule gives
    H = hess[rest + <∇_S F, S(θ)> + <∇_g F, g(θ)>] (gradients frozen) + F''[dΦ_a, dΦ_b],
    F''[a, b] = -½ tr(S^{-1}dS_a S^{-1}dS_b) - r_a' S^{-1} r_b,  r_a = dg_a - dS_a S^{-1}g:
    one R x R product per covariance parameter, where autodiff through S^{-1} takes two.

    The pair sums (the costly part: millions of pairs for InstEval) enter S only through
    G_zz = Zr'Zr - sym K(M), M a function of L0 and σ, and enter the first term as
    <W', G_zz>, W' = Λz W Λz' (a function of the other factors): bilinear in (M, W'),
    so its derivatives are those of <Wbar, M> + <W', G_zz> at the current M and W'
    (Wbar = the pair sums' adjoint at W') plus the cross terms <dW'_b, dG_a>. The pair
    sums are formed once for S and once per entry of L0 (dG_a for dS_a), and gathered
    once for Wbar. ``unpack`` must place the factors' entries linearly (no constant):
    <W', G_zz> is then exactly the quadratic form ½ tb' Q tb in them.
    """
    m, n_beta, R = theta.shape[0], s.p_theta, s.r_z
    b_idx = s.scale_indices
    n0 = s.qs[0] * (s.qs[0] + 1) // 2
    l0_idx = np.arange(n_beta, n_beta + n0)  # L0's entries; log σ is last
    parts = unpack(theta, s)
    pt = _parts(parts, d, s, both=True)
    S, gs, v = _schur(pt, parts[1], s), pt.g * jnp.exp(-parts[2]), _rest(pt, parts[2], d, s)
    dense = S.shape[0] > 0
    if dense:
        C = jax.scipy.linalg.cho_factor(S, lower=True)
        X = jax.scipy.linalg.cho_solve(C, jnp.eye(S.shape[0], dtype=S.dtype))
        X = 0.5 * (X + X.T)  # (so that W and its blocks are symmetric too)
        x = X @ gs
        W = 0.5 * X + 0.5 * jnp.outer(x, x)
        v = v + jnp.sum(jnp.log(jnp.diagonal(C[0]))) - 0.5 * gs @ x
        Wz = W[:R, :R]
        if R:
            Wbar = _pair_weights(_wprime(Wz, parts[1], s), d, s)
            Q = _factor_hessian(Wz, pt.G_zz, theta, s, unpack)  # <Λz W_zz Λz', G_zz>
        trace_W = jnp.sum(Wz.reshape(-1)[::R + 1])

    def linear(t):  # rest + F linearized in (S, g) at theta, the pair sums as above
        parts = unpack(t, s)
        pt = _parts(parts, d, s, pairs=False)
        g_t = pt.g * jnp.exp(-parts[2])
        out = _rest(pt, parts[2], d, s)
        if dense:
            out = out + _schur_dot_rest(W, trace_W, pt, parts[1], s) - x @ g_t
            if R:
                tb = t[b_idx]
                out = out + 0.5 * tb @ Q @ tb - jnp.sum(Wbar * pt.M)
        return out, g_t

    # the Hessian of the linearized objective and dg/σ, one linearization
    (g, _), lin = jax.linearize(lambda t: jax.grad(linear, has_aux=True)(t), theta)
    eye = jnp.eye(m, dtype=theta.dtype)
    H, dg = jax.vmap(lin)(eye)  # rows: directions
    if not dense:
        return (v, g, 0.5 * (H + H.T)) + ((S,) if aux else ())
    # dS in L0 (through M, the pair sums of dM once each) and in the factors of terms 1..
    # (through Λz alone); 0 in beta; log σ follows below
    e0, eb = eye[l0_idx], eye[b_idx]

    def M_of(t):
        return _parts(unpack(t, s), d, s, pairs=False).M

    def S_of(t, G_zz):
        parts = unpack(t, s)
        return _schur(_parts(parts, d, s, pairs=False)._replace(G_zz=G_zz), parts[1], s)

    dM_0 = jax.vmap(lambda e: jax.jvp(M_of, (theta,), (e,))[1])(e0)
    dG_0 = (-jax.vmap(lambda dM: _pair_sums(dM, d, R, both=True))(dM_0) if R
            else jnp.zeros((n0, 0, 0), theta.dtype))
    dS_0 = jax.vmap(lambda e, dG: jax.jvp(S_of, (theta, pt.G_zz), (e, dG))[1])(e0, dG_0)
    dS_b = jax.vmap(lambda e: jax.jvp(S_of, (theta, pt.G_zz),
                                      (e, jnp.zeros_like(pt.G_zz)))[1])(eb)
    # L0 A_j^{-1} L0' is unchanged when L0 and σ are scaled together, so in log σ
    # dM = -Σ_e L0_e dM/dL0_e, dS = 2φ diag(prior) - Σ_e L0_e dS/dL0_e, and likewise
    # for S^{-1} dS (no product)
    L0e, phi = theta[l0_idx], pt.phi
    if R and len(b_idx):  # the cross terms of the pair sums: <dW'_b, dG_a>
        cross = jnp.stack([_factor_hessian(Wz, dG, theta, s, unpack) @ theta[b_idx]
                           for dG in dG_0])
        cross = jnp.concatenate([cross, -(L0e @ cross)[None]])  # log σ: dM = -Σ_e L0_e dM_e
        a_cov = np.append(l0_idx, m - 1)
        H = H.at[a_cov[:, None], b_idx].add(cross).at[b_idx[:, None], a_cov].add(cross.T)
    prior = (jnp.arange(S.shape[0]) < R).astype(S.dtype)
    Y_0 = jnp.einsum("ij,ajk->aik", X, dS_0)
    Y_b = _products_b(X, S, dS_b, theta[b_idx], phi, prior, s)
    # tr(Y_a Y_c) over L0's entries and b; in log σ, Y_s = 2φ X D + Σ_e w_e Y_0e (the
    # scaling identity, w = -L0), so its traces follow from those and tr(X D Y_a) = u_a
    # (X symmetric: no transpose), no R x R matrix formed for it
    n_b = len(b_idx)
    T_0b = _traces(Y_0, Y_b)
    T = jnp.block([[_traces(Y_0, Y_0), T_0b], [T_0b.T, _traces(Y_b, Y_b)]])
    u = jnp.einsum("ji,aji,j->a", X, jnp.concatenate([Y_0, Y_b]), prior)
    w = jnp.concatenate([-L0e, jnp.zeros(n_b, theta.dtype)])
    T_s = 2.0 * phi * u + w @ T
    T_ss = 4.0 * phi**2 * jnp.sum(prior[:, None] * prior[None, :] * X * X) + 4.0 * phi * (
        w @ u) + w @ T @ w
    T = jnp.block([[T[:n0, :n0], T_s[:n0, None], T[:n0, n0:]],
                   [T_s[None, :n0], T_ss[None, None], T_s[None, n0:]],
                   [T[n0:, :n0], T_s[n0:, None], T[n0:, n0:]]])
    cov = np.concatenate([l0_idx, [m - 1], b_idx])  # L0, log σ, then b
    dSx_0, dSx_b = dS_0 @ x, dS_b @ x
    dSx_s = 2.0 * phi * prior * x - L0e @ dSx_0
    H = H.at[cov[:, None], cov].add(-0.5 * T)
    r = dg.at[cov].add(-jnp.concatenate([dSx_0, dSx_s[None], dSx_b]))  # [m, R]
    H = H - r @ X @ r.T
    return (v, g, 0.5 * (H + H.T)) + ((X,) if aux else ())


def _traces(A, B):
    """tr(A_a B_c) for stacks of square matrices, [a, c]."""
    return jnp.einsum("aij,cji->ac", A, B)


def _entry_columns(s: LmmStructure) -> list[tuple[int, int]]:
    """For each entry of the factors of terms 1.. (theta's order): the columns of S
    of its term (its dS is 0 outside these rows and columns)."""
    out, i = [], 0
    for q, J in zip(s.qs[1:s.n_prior], s.Js[1:s.n_prior], strict=True):
        out += [(i, i + q * J)] * (q * (q + 1) // 2)
        i += q * J
    return out


def _product(X, dS, lo: int, hi: int):
    """X @ dS for dS zero outside rows and columns lo:hi (4 N² (hi - lo) flops, not 2 N³,
    where those are fewer than half)."""
    N = X.shape[0]
    if 2 * (hi - lo) >= N:
        return X @ dS
    Y = X[:, lo:hi] @ dS[lo:hi, :]
    return Y.at[:, lo:hi].add(X[:, :lo] @ dS[:lo, lo:hi] + X[:, hi:] @ dS[hi:, lo:hi])


def _products_b(X, S, dS, tb, phi, prior, s: LmmStructure):
    """S^{-1} dS_e for the factors' entries e of terms 1.. (tb), each in the rows and
    columns of its term (:func:`_product`); one entry of the largest term solved.

    Scaling every such factor by c scales S̃ = S - φ diag(prior) by c on both sides of
    its prior block, so Σ_e L_e dS_e = D S̃ + S̃ D (D = diag(prior)), and
    S^{-1} Σ_e L_e dS_e = I + D - S^{-1}[:, beta] S[beta, :] - 2φ S^{-1} D costs no
    R x R product: the entry of the largest term with the largest |L_e| is solved from
    it, where that term's products are dense (all are formed when its every |L_e| is
    below 1e-3 σ, where the solution would lose digits).
    """
    cols = _entry_columns(s)
    n, N, R = dS.shape[0], S.shape[0], s.r_z
    size = [hi - lo for lo, hi in cols]
    cands = [e for e in range(n) if size[e] == max(size)] if n > 1 else []
    if not cands or 2 * size[cands[0]] < N:
        return jnp.stack([_product(X, dS[e], *cols[e]) for e in range(n)]) if n else dS

    def products(skip=None):
        Y = [None if e == skip else _product(X, dS[e], *cols[e]) for e in range(n)]
        if skip is not None:
            total = (jnp.eye(N, dtype=S.dtype) + jnp.diag(prior) - X[:, R:] @ S[R:, :]
                     - 2.0 * phi * X * prior)
            Y[skip] = (total - sum(tb[e] * Y[e] for e in range(n) if e != skip)) / tb[skip]
        return jnp.stack(Y)

    sizes = jnp.abs(tb[np.array(cands)])
    pick = jnp.argmax(sizes)  # (and not small against the other entries)
    ok = (sizes[pick] > 1e-3 * jnp.sqrt(phi)) & (sizes[pick] >= 0.1 * jnp.max(jnp.abs(tb)))
    branches = [lambda k=k: products(k) for k in cands] + [products]
    return jax.lax.switch(jnp.where(ok, pick, len(cands)), branches)


def gls_beta(theta_parts, d: LmmData, s: LmmStructure):
    """ML: the fixed effects that maximize the likelihood at the covariance parameters of
    ``theta_parts`` (generalized least squares; -log L is quadratic in beta), from the
    REML form of the Schur complement, where beta is eliminated with the random effects."""
    beta, Ls, log_phi = theta_parts
    s_r = replace(s, reml=True, qs=s.qs + (s.p,), Js=s.Js + (1,))
    Ls = list(Ls) + [jnp.eye(s.p, dtype=beta.dtype)]
    pt = _parts((beta, Ls, log_phi), d, s_r)
    C = jax.scipy.linalg.cho_factor(_schur(pt, Ls, s_r), lower=True)
    return jax.scipy.linalg.cho_solve(C, pt.g)[s_r.r_z:]


def fixed_cov(theta_parts, d: LmmData, s: LmmStructure):
    """Under REML: the fixed effects' covariance φ (X'V⁻¹X)⁻¹, the last p rows and
    columns of φ S⁻¹ (the block :func:`conditional` reports for them), as a smooth
    function of the covariance parameters (satterthwaite.py differentiates it)."""
    pt = _parts(theta_parts, d, s)
    return pt.phi * spd_inverse(_schur(pt, theta_parts[1], s))[s.r_z:, s.r_z:]


def conditional(theta_parts, d: LmmData, s: LmmStructure, Sinv=None):
    """Conditional modes of u (list per term; REML: beta as a last [1, p] term) and the
    diagonal blocks of their conditional covariance φ A^{-1}: of the random effects
    given beta (lme4's condVar, also under REML), of beta given the variances.
    ``Sinv``: S^{-1} at this theta, where known (:func:`value_grad_hess`'s ``aux``)."""
    Ls = theta_parts[1]
    pt = _parts(theta_parts, d, s)
    L0, R = Ls[0], s.r_z
    if Sinv is None:
        S = _schur(pt, Ls, s)
        Sinv = spd_inverse(S) if S.shape[0] else S
    x = Sinv @ pt.g
    # term 0: u_j = A_j^{-1} (L0' h_j - B_j x), B_j x = L0' (sum_r c_{j,r} (Λz x_z)_r + Z0'X_j x_x)
    xz = _scale(x[None, :R], Ls, s, 1, trans=True)[0]
    Bx = jax.ops.segment_sum(d.ent_c * xz[d.ent_r][:, None], d.ent_j, num_segments=s.Js[0])
    if s.reml:
        Bx = Bx + d.ZtX0 @ x[R:]
    u0 = smallmat.cho_solve(pt.CA, (pt.h - Bx) @ L0)
    Ainv = smallmat.cho_inverse(pt.CA)
    # cov of u_j: φ (A_j^{-1} + A_j^{-1} L0' W_j L0 A_j^{-1}), W_j = c_j Λz Sinv Λz' c_j' + ...
    # given beta: the random effects' block of the precision (S without beta's rows)
    Sinv_z = Sinv[:R, :R]
    if s.reml and R:  # (S_zz)^{-1} = Sinv_zz - Sinv_zx Sinv_xx^{-1} Sinv_xz (one factorization)
        Sinv_z = Sinv_z - Sinv[:R, R:] @ jnp.linalg.solve(Sinv[R:, R:], Sinv[R:, :R])
        Sinv_z = 0.5 * (Sinv_z + Sinv_z.T)
    # each pair r1 < r2 counts in both orders (a pair r1 = r2: its c c' halved)
    W = _pair_weights(_wprime(Sinv_z, Ls, s), d, s)
    W = 0.5 * (W + jnp.swapaxes(W, 1, 2))
    AL = Ainv @ L0.T
    covs = [pt.phi * (Ainv + AL @ W @ jnp.swapaxes(AL, 1, 2))]
    us, i = [u0], 0
    for q, J in zip(s.qs[1:], s.Js[1:], strict=True):
        idx = i + np.arange(J)[:, None] * q + np.arange(q)[None, :]
        us.append(x[idx])
        block = Sinv_z if i < R else Sinv[R:, R:]  # (REML's beta: the last pseudo-term)
        idx_b = idx if i < R else idx - R
        covs.append(pt.phi * block[idx_b[:, :, None], idx_b[:, None, :]])
        i += q * J
    return us, covs
