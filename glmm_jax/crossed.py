"""Joint Laplace approximation for several random-effect terms (nested, crossed, OLRE).

Term k has J_k levels with q_k effects each, b_k = u_k L_k^T with spherical u_k. All
u are found jointly; the negative Hessian of the log-integrand in u,

    -H = I + sum_i (-w_i d2_i) v_i v_i^T,   v_i = (L_k^T z_ik placed at level c_k(i))_k,

is sparse. When the terms are nested (obs in broods in locations), it is eliminated level
by level with no fill (nested.py). Otherwise (crossed terms) the term with the most
effects (term 0 here) has a block-diagonal block A; it is eliminated, leaving a dense
Schur complement S = D - B^T A^{-1} B over the other terms' effects (24 for VerbAgg's
items), so that solves cost O(J_0 q_0^3 + Q_r^3) and log det(-H) = sum_j log det A_j +
log det S. Derivatives in theta go exactly through the joint mode (implicit
differentiation).

REML (Gaussian): the fixed effects join the random effects as a last pseudo-term with a
flat prior (Z = X, one level, L = I), so the Laplace approximation integrates them out,
exactly for a Gaussian response: log L_R = h(u, beta) + (p/2) log 2 pi - log det(-H)/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import nested, smallmat
from .families import Family
from .laplace import LOG_2PI, row_derivs
from .modes import MAX_INNER_ITER, TOL_INNER, damped_newton, implicit_mode_rule
from .theta import ThetaLayout


class TermData(NamedTuple):
    Z: jax.Array  # [n, q_k]
    codes: jax.Array  # [n] int32 level of each row


class MultiData(NamedTuple):
    """Row-level arrays of a model with several random terms (term 0 is eliminated)."""

    X: jax.Array  # [n, p]
    y: jax.Array
    trials: jax.Array
    offset: jax.Array
    weights: jax.Array
    terms: tuple  # TermData per term
    rest_cols: jax.Array  # [n, R] column of each row's effects among the other terms
    log_const: jax.Array
    anc: tuple = ()  # nested terms: ancestor maps (nested.ancestors); () otherwise


@dataclass(frozen=True)
class MultiStructure:
    """Static description: family, p, and (q_k, J_k) of each term (term 0 eliminated)."""

    family: Family
    p: int
    qs: tuple[int, ...]
    Js: tuple[int, ...]
    nagq: int = 1
    reml: bool = False  # the last term is then the fixed effects, with a flat prior
    nested: bool = False  # the terms form a nested chain: sparse elimination (nested.py)

    @property
    def n_prior(self) -> int:
        """Number of terms with a N(0, I) prior on u (all but the REML pseudo-term)."""
        return len(self.qs) - int(self.reml)

    @property
    def p_theta(self) -> int:
        """Fixed effects among the optimizer's parameters (none under REML)."""
        return 0 if self.reml else self.p

    @property
    def theta(self) -> ThetaLayout:
        return ThetaLayout(self.p_theta, self.qs[: self.n_prior], self.family.has_dispersion)

    @property
    def n_cov(self) -> int:
        return self.theta.n_cov

    def prior_mask(self) -> np.ndarray:
        """[Qr] 1 for the columns of the remaining terms that have a prior, 0 for beta."""
        sizes = [q * J for q, J in zip(self.qs[1:], self.Js[1:], strict=True)]
        flags = [1.0] * (len(sizes) - int(self.reml)) + [0.0] * int(self.reml)
        return np.repeat(flags, sizes) if sizes else np.zeros(0)

    @property
    def q_rest(self) -> int:
        return sum(q * J for q, J in zip(self.qs[1:], self.Js[1:], strict=True))


def rest_columns(codes: list[np.ndarray], qs: tuple[int, ...], Js: tuple[int, ...]) -> np.ndarray:
    """[n, R] column index, among terms 1..K-1, of each row's effects (data only)."""
    cols, offset = [], 0
    for c, q, J in zip(codes[1:], qs[1:], Js[1:], strict=True):
        cols.append(offset + c[:, None] * q + np.arange(q)[None, :])
        offset += q * J
    n = len(codes[0])
    return np.concatenate(cols, axis=1).astype(np.int32) if cols else np.zeros((n, 0), np.int32)


def _row_vectors(Ls, data: MultiData):
    """v_ik = L_k^T z_ik for every term: list of [n, q_k]."""
    return [smallmat.mat_vec(L.T, t.Z) for t, L in zip(data.terms, Ls, strict=True)]


def _eta(u, eta0, Ls, data: MultiData):
    eta = eta0
    for uk, t, L in zip(u, data.terms, Ls, strict=True):
        eta = eta + jnp.sum(t.Z * smallmat.mat_vec(L, uk)[t.codes], axis=1)
    return eta


def fixed_eta(beta, data: MultiData, s: MultiStructure):
    """x beta + offset (the offset alone under REML, where beta is among the modes)."""
    return data.offset if s.reml else data.X @ beta + data.offset


def _prior(u, s: MultiStructure):
    return -0.5 * sum(jnp.sum(uk * uk) for uk in u[: s.n_prior])


def log_integrand(u, eta0, Ls, log_phi, data: MultiData, s: MultiStructure):
    """h(u): sum of row log densities minus |u|^2/2 (a scalar; constants as in laplace.py)."""
    ll = data.weights * s.family.logpdf(data.y, _eta(u, eta0, Ls, data), data.trials, log_phi)
    return jnp.sum(ll) + _prior(u, s)


class NegHess(NamedTuple):
    A: jax.Array  # [J0, q0, q0] blocks of the eliminated term
    B: jax.Array  # [J0, q0, Qr] coupling to the other terms
    D: jax.Array  # [Qr, Qr] the other terms


def grad_negHess(u, eta0, Ls, log_phi, data: MultiData, s: MultiStructure):
    """h, its gradient (list per term) and the blocks of -Hessian, at u."""
    ll, d1, d2 = row_derivs(_eta(u, eta0, Ls, data), data, log_phi, s.family)
    h = jnp.sum(ll) + _prior(u, s)
    v = _row_vectors(Ls, data)
    g = [jax.ops.segment_sum(d1[:, None] * vk, t.codes, num_segments=J)
         - float(k < s.n_prior) * uk
         for k, (vk, t, J, uk) in enumerate(zip(v, data.terms, s.Js, u, strict=True))]
    w = -d2
    if s.nested:
        return h, g, _tree_hess(w, v, data, s)
    c0 = data.terms[0].codes
    A = jnp.eye(s.qs[0]) + jax.ops.segment_sum(
        w[:, None, None] * v[0][:, :, None] * v[0][:, None, :], c0, num_segments=s.Js[0])
    Qr = s.q_rest
    if Qr:
        vr = jnp.concatenate(v[1:], axis=1)  # [n, R]
        rc = data.rest_cols
        B = jnp.zeros((s.Js[0], s.qs[0], Qr), eta0.dtype).at[
            c0[:, None, None], jnp.arange(s.qs[0])[None, :, None], rc[:, None, :]
        ].add(w[:, None, None] * v[0][:, :, None] * vr[:, None, :])
        D = jnp.diag(jnp.asarray(s.prior_mask())).at[rc[:, :, None], rc[:, None, :]].add(
            w[:, None, None] * vr[:, :, None] * vr[:, None, :])
    else:
        B = jnp.zeros((s.Js[0], s.qs[0], 0), eta0.dtype)
        D = jnp.zeros((0, 0), eta0.dtype)
    return h, g, NegHess(A, B, D)


def _tree_hess(w, v, data: MultiData, s: MultiStructure) -> nested.TreeHess:
    """-H of nested terms: each level with itself and with its ancestors."""
    K = len(s.qs)
    A, B = [], []
    for k in range(K):
        c, J = data.terms[k].codes, s.Js[k]
        wv = w[:, None] * v[k]
        prior = jnp.eye(s.qs[k]) * float(k < s.n_prior)
        A.append(prior + jax.ops.segment_sum(wv[:, :, None] * v[k][:, None, :], c,
                                             num_segments=J))
        B.append(tuple(jax.ops.segment_sum(wv[:, :, None] * v[m][:, None, :], c, num_segments=J)
                       for m in range(k + 1, K)))
    return nested.TreeHess(tuple(A), tuple(B))


@jax.custom_jvp
def spd_inverse(S):
    """S^{-1} for symmetric positive definite S, by Cholesky.

    Its derivative, -S^{-1} dS S^{-1}, is written with matrix products, so derivatives of
    any order are products too (differentiating the factorization itself would go through
    many triangular solves, which are slow here).
    """
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(S, lower=True),
                                      jnp.eye(S.shape[0], dtype=S.dtype))


@spd_inverse.defjvp
def _spd_inverse_jvp(primals, tangents):
    (S,), (dS,) = primals, tangents
    X = spd_inverse(S)
    return X, -X @ dS @ X


@jax.custom_jvp
def spd_log_det(S):
    """log det S for symmetric positive definite S; d log det S = tr(S^{-1} dS)."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(S))))


@spd_log_det.defjvp
def _spd_log_det_jvp(primals, tangents):
    (S,), (dS,) = primals, tangents
    return spd_log_det(S), jnp.sum(spd_inverse(S) * dS)


def _schur(nh: NegHess):
    """Cholesky of the A blocks, A^{-1} B, and S = D - B^T A^{-1} B."""
    CA = smallmat.cholesky(nh.A)
    AiB = smallmat.cho_solve_matrix(CA, nh.B)
    return CA, AiB, nh.D - jnp.einsum("jaq,jar->qr", nh.B, AiB)


def solve(nh, g: list, data: MultiData, s: MultiStructure):
    """Solve (-H) x = g; g and x are lists of [J_k, q_k] per term."""
    if s.nested:
        return nested.solve(nh, g, data.anc)
    CA, AiB, S = _schur(nh)
    Aig0 = smallmat.cho_solve(CA, g[0])
    if not S.shape[0]:
        return [Aig0]
    gr = jnp.concatenate([gk.reshape(-1) for gk in g[1:]])
    rhs = gr - jnp.einsum("jaq,ja->q", nh.B, Aig0)
    xr = spd_inverse(S) @ rhs
    out, i = [Aig0 - jnp.einsum("jaq,q->ja", AiB, xr)], 0
    for gk in g[1:]:
        out.append(xr[i : i + gk.size].reshape(gk.shape))
        i += gk.size
    return out


def log_det(nh, data: MultiData, s: MultiStructure):
    """log det(-H) = sum_j log det A_j + log det S (nested terms: nested.log_det)."""
    if s.nested:
        return nested.log_det(nh, data.anc)
    CA, _, S = _schur(nh)
    ld = jnp.sum(smallmat.log_det(CA))
    if S.shape[0]:
        ld = ld + spd_log_det(S)
    return ld


def solve_modes(u0, eta0, Ls, log_phi, data: MultiData, s: MultiStructure,
                tol: float = TOL_INNER, max_iter: int = MAX_INNER_ITER):
    """Joint conditional modes (a list per term; h strictly concave) by
    :func:`modes.damped_newton` with step halving; and the iterations used."""
    return damped_newton(u0, lambda u: grad_negHess(u, eta0, Ls, log_phi, data, s),
                         lambda nh, g: solve(nh, g, data, s), per_cluster=False, tol=tol,
                         max_iter=max_iter)


implicit_mode = implicit_mode_rule(lambda u, e0, L, lp, data, s: grad_negHess(
    u, e0, L, lp, data, s), lambda nh, v, data, s: solve(nh, v, data, s), canon=list)
"""The converged joint modes (a list per term), differentiable in (eta0, Ls, log_phi)."""


def loglik(beta, Ls, log_phi, u_hat, data: MultiData, s: MultiStructure):
    """Laplace log marginal likelihood with all constants (restricted likelihood if REML)."""
    eta0 = fixed_eta(beta, data, s)
    u = implicit_mode(u_hat, eta0, Ls, log_phi, data, s)
    h, _, nh = grad_negHess(u, eta0, Ls, log_phi, data, s)
    # h holds -|u|^2/2 but not the prior's -(Q/2) log 2 pi, which cancels the Laplace
    # approximation's +(Q/2) log 2 pi
    flat = 0.5 * s.p * LOG_2PI if s.reml else 0.0  # the flat prior has no normalizer
    return h - 0.5 * log_det(nh, data, s) + data.log_const + flat


def inverse_blocks(nh, data: MultiData, s: MultiStructure):
    """Diagonal blocks of (-H)^{-1}, a list of [J_k, q_k, q_k] (conditional covariances):
    under REML those of the random effects given the fixed effects (lme4's condVar),
    and the fixed effects' own (their covariance)."""
    if s.nested:
        return nested.inverse_blocks(nh, data.anc, given_last=s.reml)
    CA, AiB, S = _schur(nh)
    Ainv = smallmat.inverse(nh.A)
    if not S.shape[0]:
        return [Ainv]
    Sinv = spd_inverse(S)
    R = S.shape[0] - s.p * int(s.reml)  # the random effects after the first term
    Sinv_z = spd_inverse(S[:R, :R]) if s.reml and R else Sinv[:R, :R]  # given beta
    out = [Ainv + jnp.einsum("jaq,qr,jbr->jab", AiB[..., :R], Sinv_z, AiB[..., :R])]
    i = 0
    for q, J in zip(s.qs[1:], s.Js[1:], strict=True):
        idx = i + np.arange(J)[:, None] * q + np.arange(q)[None, :]  # [J, q]
        block, at = (Sinv_z, idx) if i < R else (Sinv, idx)
        out.append(block[at[:, :, None], at[:, None, :]])
        i += q * J
    return out
