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

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

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
    pair_c: jax.Array  # [P, q0, q0] outer product of the two columns' values
    ZtZr: jax.Array  # [R, R]
    ZtXr: jax.Array  # [R, p]
    Ztyr: jax.Array  # [R]
    XtX: jax.Array
    Xty: jax.Array
    yty: jax.Array
    half_log_w: jax.Array  # ½ Σ log w of the precision weights (0 without)


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
    n, q = Z.shape
    cols = codes[:, None] * q + np.arange(q)[None, :]
    return sp.csr_matrix((Z.ravel(), (np.repeat(np.arange(n), q), cols.ravel())),
                         shape=(n, J * q))


def _rest_matrix(terms, Js):
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
    ZtX0 = np.stack([np.stack([by_level(Z0[:, a] * X[:, k]) for k in range(p)], -1)
                     for a in range(q0)], 1).reshape(J0, q0, p)
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
        e1, e2 = _pairs(ent_j, ent_r, n_j)
        pair_j, pair_rr = ent_j[e1], ent_r[e1] * np.int32(R) + ent_r[e2]
        pair_c = (ent_c[e1, 0] * ent_c[e2, 0]).reshape(-1, 1, 1) if q0 == 1 else \
            ent_c[e1, :, None] * ent_c[e2, None, :]
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
        np.asarray(y @ y), np.asarray(half_log_w))


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
    that the scatter-add of the pairs into S writes one row at a time)."""
    start = np.cumsum(n_j) - n_j
    first = np.argsort(ent_r, kind="stable")
    count = (start[ent_j] + n_j[ent_j] - np.arange(len(ent_j)))[first]  # e2 = e1, ..., last
    e1 = np.repeat(first.astype(np.int32), count)
    e2 = e1 + (np.arange(len(e1), dtype=np.int32)
               - np.repeat((np.cumsum(count) - count).astype(np.int32), count))
    return e1, e2


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
    G_zz: jax.Array  # [R, R] Zr'Zr - sum_j B_j' A_j^{-1} B_j before scaling by Λ_z
    G_zx: jax.Array  # [R, p] the same for Zr'X (REML; else [R, 0])
    S_xx: jax.Array  # [p, p] (REML; else [0, 0])
    g: jax.Array  # [R'] T'e of the dense part, less B' A^{-1} g0
    ee: jax.Array
    phi: jax.Array


def _parts(theta_parts, d: LmmData, s: LmmStructure) -> _Parts:
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
    K = jax.ops.segment_sum(jnp.einsum("pab,pab->p", M[d.pair_j], d.pair_c), d.pair_rr,
                            num_segments=R * R).reshape(R, R)
    G_zz = d.ZtZr - (K + K.T - jnp.diag(jnp.diagonal(K)))
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


def _schur_dot(W, pt: _Parts, Ls, s: LmmStructure):
    """<W, S> without forming S: Λz moves onto W (so that derivatives in the factors of
    terms 1.. do not carry R x R tangents through the pair sums)."""
    R = s.r_z
    W_zz = W[:R, :R]
    out = (jnp.sum(_scale(_scale(W_zz, Ls, s, 1, True), Ls, s, 0, True) * pt.G_zz)
           + pt.phi * jnp.trace(W_zz))
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
    N = s.qs[0] * s.Js[0] + pt.g.shape[0]
    rest = ((pt.ee - quad0) / (2.0 * pt.phi) + d.n * (log_phi + 0.5 * LOG_2PI)
            + 0.5 * jnp.sum(smallmat.log_det(pt.CA)) - N * log_phi - d.half_log_w)
    return rest - 0.5 * s.p * LOG_2PI if s.reml else rest


def negloglik(theta_parts, d: LmmData, s: LmmStructure):
    """Exact -log L (restricted under REML) at (beta, Ls, log_phi)."""
    S, gs, rest = split(theta_parts, d, s)
    if not S.shape[0]:
        return rest
    return rest + schur_terms(S, gs)


def value_grad_hess(theta, d: LmmData, s: LmmStructure, unpack):
    """-log L, its gradient and exact Hessian at ``theta`` (``unpack(theta, s)`` gives
    (beta, Ls, log_phi)). S does not depend on the fixed effects, and depends on the
    factors of terms 1.. only through Λ_z.

    With F(S, g) = ½ log det S - ½ g'S^{-1}g, the chain rule gives
    H = hess[rest + <∇_S F, S(θ)> + <∇_g F, g(θ)>] (gradients frozen) + F''[dΦ_a, dΦ_b],
    F''[a, b] = -½ tr(S^{-1}dS_a S^{-1}dS_b) - r_a' S^{-1} r_b,  r_a = dg_a - dS_a S^{-1}g:
    one R x R product per covariance parameter, where autodiff through S^{-1} takes two.
    Derivatives are taken separately in the parameters of term 0 (and σ, β) and in
    those of the other terms, so that the pair sums (lmm._parts) are differentiated only
    in the first, with fixed weights.
    """
    m, n_beta = theta.shape[0], s.p_theta
    b_idx = s.scale_indices
    a_idx = np.setdiff1d(np.arange(m), b_idx)
    ta, tb = theta[a_idx], theta[b_idx]

    def parts_ab(ta, tb):  # (beta, Ls, log_phi); Ls[1:] depend on tb only, the rest on ta
        pa = unpack(theta.at[a_idx].set(ta).at[b_idx].set(jax.lax.stop_gradient(tb)), s)
        pb = unpack(theta.at[a_idx].set(jax.lax.stop_gradient(ta)).at[b_idx].set(tb), s)
        return pa[0], [pa[1][0], *pb[1][1:]], pa[2]

    S, gs, rest0 = split(parts_ab(ta, tb), d, s)
    if S.shape[0]:
        C = jax.scipy.linalg.cho_factor(S, lower=True)
        X = jax.scipy.linalg.cho_solve(C, jnp.eye(S.shape[0], dtype=S.dtype))
        x = X @ gs
        W = jax.lax.stop_gradient(0.5 * X + 0.5 * jnp.outer(x, x))
        xs = jax.lax.stop_gradient(x)
        v = rest0 + jnp.sum(jnp.log(jnp.diagonal(C[0]))) - 0.5 * gs @ x

    def linear(ta, tb):  # rest + F linearized in (S, g) at theta; and (S, g/σ)
        parts = parts_ab(ta, tb)
        pt = _parts(parts, d, s)
        g_t = pt.g * jnp.exp(-parts[2])
        out = _rest(pt, parts[2], d, s)
        if S.shape[0]:
            out = out + _schur_dot(W, pt, parts[1], s) - xs @ g_t
        return out, (_schur(pt, parts[1], s), g_t)

    def outputs(ta, tb):  # its gradient, S and g/σ, from one evaluation of _parts
        grads, (S_t, g_t) = jax.grad(linear, argnums=(0, 1), has_aux=True)(ta, tb)
        return grads, S_t, g_t

    # one linearization per parameter group: the Hessian of the linearized objective,
    # and dS, dg/σ (dS only in L0 and b: it is 0 in beta, and log σ follows below)
    ((g_a, g_b), _, _), lin_a = jax.linearize(lambda u: outputs(u, tb), ta)
    lin_b = jax.linearize(lambda u: outputs(ta, u), tb)[1]
    eye_a, eye_b = jnp.eye(len(a_idx), dtype=theta.dtype), jnp.eye(len(b_idx), dtype=theta.dtype)
    (H_aa, H_ba), _, dg_a = jax.vmap(lin_a)(eye_a)  # rows: directions
    (_, H_bb), dS_b, dg_b = jax.vmap(lin_b)(eye_b)
    H = (jnp.zeros((m, m), theta.dtype).at[a_idx[:, None], a_idx].set(H_aa)
         .at[b_idx[:, None], b_idx].set(H_bb).at[a_idx[:, None], b_idx].set(H_ba)
         .at[b_idx[:, None], a_idx].set(H_ba.T))
    g = jnp.zeros(m, theta.dtype).at[a_idx].set(g_a).at[b_idx].set(g_b)
    if not S.shape[0]:
        return rest0, g, 0.5 * (H + H.T)
    n0 = s.qs[0] * (s.qs[0] + 1) // 2
    dS_0 = jax.vmap(lin_a)(eye_a[n_beta:n_beta + n0])[1]
    # L0 A_j^{-1} L0' is unchanged when L0 and σ are scaled together, so in log σ
    # dS = 2φ diag(prior) - Σ_e L0_e dS/dL0_e, and likewise for S^{-1} dS (no product)
    L0e, phi = ta[n_beta:n_beta + n0], jnp.exp(2.0 * ta[-1])
    prior = (jnp.arange(S.shape[0]) < s.r_z).astype(S.dtype)
    Y_0 = jnp.einsum("ij,ajk->aik", X, dS_0)
    Y_b = _products_b(X, S, dS_b, tb, phi, prior, s)
    dS_s = 2.0 * phi * jnp.diag(prior) - jnp.einsum("e,eij->ij", L0e, dS_0)
    Y_s = 2.0 * phi * X * prior - jnp.einsum("e,eij->ij", L0e, Y_0)
    cov = np.concatenate([a_idx[n_beta:], b_idx])  # L0, log σ, then b
    dS = jnp.concatenate([dS_0, dS_s[None], dS_b])
    Y = jnp.concatenate([Y_0, Y_s[None], Y_b])
    dg = jnp.zeros((m, S.shape[0]), theta.dtype).at[a_idx].set(dg_a).at[b_idx].set(dg_b)
    H = H.at[cov[:, None], cov].add(-0.5 * jnp.einsum("aij,bji->ab", Y, Y))
    r = dg.at[cov].add(-(dS @ x))  # [m, R]
    H = H - r @ X @ r.T
    return v, g, 0.5 * (H + H.T)


def _products_b(X, S, dS, tb, phi, prior, s: LmmStructure):
    """S^{-1} dS_e for the factors' entries e of terms 1.. (tb), one product fewer.

    Scaling every such factor by c scales S̃ = S - φ diag(prior) by c on both sides of
    its prior block, so Σ_e L_e dS_e = D S̃ + S̃ D (D = diag(prior)), and
    S^{-1} Σ_e L_e dS_e = I + D - S^{-1}[:, beta] S[beta, :] - 2φ S^{-1} D costs no
    R x R product: the entry with the largest |L_e| is solved from it (its products
    are all formed when every |L_e| is below 1e-3 σ, where the solution would lose
    digits).
    """
    n = dS.shape[0]
    if n < 2:
        return jnp.einsum("ij,ajk->aik", X, dS)
    R = s.r_z
    total = (jnp.eye(S.shape[0], dtype=S.dtype) + jnp.diag(prior)
             - X[:, R:] @ S[R:, :] - 2.0 * phi * X * prior)
    k = jnp.argmax(jnp.abs(tb))
    others = jnp.arange(n - 1)
    others = others + (others >= k).astype(others.dtype)

    def solved():
        Y = jnp.einsum("ij,ajk->aik", X, dS[others])
        Yk = (total - jnp.einsum("a,aij->ij", tb[others], Y)) / tb[k]
        return jnp.zeros_like(dS).at[others].set(Y).at[k].set(Yk)

    return jax.lax.cond(jnp.abs(tb[k]) > 1e-3 * jnp.sqrt(phi), solved,
                        lambda: jnp.einsum("ij,ajk->aik", X, dS))


def fixed_cov(theta_parts, d: LmmData, s: LmmStructure):
    """Under REML: the fixed effects' covariance φ (X'V⁻¹X)⁻¹, the last p rows and
    columns of φ S⁻¹ (the block :func:`conditional` reports for them), as a smooth
    function of the covariance parameters (satterthwaite.py differentiates it)."""
    pt = _parts(theta_parts, d, s)
    return pt.phi * spd_inverse(_schur(pt, theta_parts[1], s))[s.r_z:, s.r_z:]


def conditional(theta_parts, d: LmmData, s: LmmStructure):
    """Conditional modes of u (list per term; REML: beta as a last [1, p] term) and the
    diagonal blocks of their conditional covariance φ A^{-1}: of the random effects
    given beta (lme4's condVar, also under REML), of beta given the variances."""
    Ls = theta_parts[1]
    pt = _parts(theta_parts, d, s)
    L0, R = Ls[0], s.r_z
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
    Sinv_z = spd_inverse(S[:R, :R]) if s.reml and R else Sinv[:R, :R]
    W_zz = _scale(_scale(Sinv_z, Ls, s, 1, True), Ls, s, 0, True)
    # each pair r1 < r2 counts in both orders; a pair r1 = r2 (symmetric c c') once
    same = (d.pair_rr // jnp.maximum(R, 1)) == (d.pair_rr % jnp.maximum(R, 1))
    pw = (W_zz.reshape(-1)[d.pair_rr] * jnp.where(same, 0.5, 1.0))[:, None, None] * d.pair_c
    W = jax.ops.segment_sum(pw + jnp.swapaxes(pw, 1, 2), d.pair_j, num_segments=s.Js[0])
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
