"""The objective: theta <-> (beta, L, log dispersion), and -log L(theta) as a pure function.

theta = [beta (p), lower triangle of L row by row (q(q+1)/2), log dispersion (0 or 1)].
The random-effects covariance is G = L L^T; L's diagonal may take either sign (the
likelihood is unchanged when a column of L flips sign), so theta is unconstrained and a
variance can reach exactly 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import crossed, lmm, smallmat
from .crossed import MultiStructure
from .laplace import fixed_eta, grad_negHess, solve_modes, total_loglik
from .lmm import LmmStructure


def _Ls(flat, qs, dtype=None, xp=jnp):
    """Lower-triangular factors from their concatenated row-wise lower triangles."""
    out, i = [], 0
    for q in qs:
        rows, cols = np.tril_indices(q)
        k = q * (q + 1) // 2
        if xp is jnp:  # a 0/1 placement as a broadcast and a sum: no scatter kernels
            place = np.zeros((q * q, k))
            place[rows * q + cols, np.arange(k)] = 1.0
            out.append(jnp.sum(place * flat[i : i + k], axis=1).reshape(q, q))
        else:
            L = np.zeros((q, q))
            L[rows, cols] = flat[i : i + k]
            out.append(L)
        i += k
    return out


def _qs(s):
    """q of each term whose covariance factor is a parameter."""
    return s.qs[: s.n_prior] if isinstance(s, MultiStructure) else (s.q,)


def _p_theta(s):
    return s.p_theta if isinstance(s, MultiStructure) else s.p


def unpack(theta, s):
    """Split theta into beta [p], L (one [q, q] factor, or a list for several terms) and
    the log dispersion."""
    p = _p_theta(s)
    beta = theta[:p]
    Ls = _Ls(theta[p : p + s.n_cov], _qs(s), theta.dtype)
    log_phi = theta[p + s.n_cov] if s.family.has_dispersion else jnp.zeros((), theta.dtype)
    if not isinstance(s, MultiStructure):
        return beta, Ls[0], log_phi
    return beta, Ls + [jnp.eye(s.p, dtype=theta.dtype)] * int(s.reml), log_phi


def unpack_np(theta: np.ndarray, s):
    """:func:`unpack` in NumPy (for results, without dispatching JAX operations)."""
    p = _p_theta(s)
    Ls = _Ls(theta[p : p + s.n_cov], _qs(s), xp=np)
    log_phi = theta[p + s.n_cov] if s.family.has_dispersion else 0.0
    if not isinstance(s, MultiStructure):
        return theta[:p].copy(), Ls[0], float(log_phi)
    return theta[:p].copy(), Ls + [np.eye(s.p)] * int(s.reml), float(log_phi)


def pack(beta, L, log_phi, s) -> np.ndarray:
    """Inverse of :func:`unpack` (NumPy)."""
    Ls = L if isinstance(s, MultiStructure) else [L]
    parts = [np.asarray(beta, float)[: _p_theta(s)]]
    parts += [np.asarray(Lk, float)[np.tril_indices(len(Lk))] for Lk in Ls]
    if s.family.has_dispersion:
        parts.append(np.atleast_1d(float(log_phi)))
    return np.concatenate(parts)


def modes(theta, u0, data, s):
    """Conditional modes u_hat(theta), started from u0; and the Newton iterations used.

    One grouping factor: u0 and the modes are [B, J, q], solved block by block. A linear
    mixed model from cross products has no inner problem: u0 is returned.
    """
    if isinstance(s, LmmStructure):
        return u0, jnp.asarray(0)
    beta, L, log_phi = unpack(theta, s)
    if isinstance(s, MultiStructure):
        return crossed.solve_modes(u0, crossed.fixed_eta(beta, data, s), L, log_phi, data, s)

    def block(args):
        u, d = args
        return solve_modes(u, fixed_eta(beta, d), L, log_phi, d, s)

    u, its = jax.lax.map(block, (u0, data))
    return u, jnp.max(its)


def block_negloglik(theta, u_hat, data, s):
    """-log L of one block of a single-term model (arrays without the block axis)."""
    beta, L, log_phi = unpack(theta, s)
    return -total_loglik(beta, L, log_phi, u_hat, data, s)


def negloglik(theta, u_hat, data, s):
    """-log L(theta) by Laplace/AGHQ, given converged modes u_hat (exact derivatives)."""
    if isinstance(s, LmmStructure):
        return lmm.negloglik(unpack(theta, s), data, s)
    if isinstance(s, MultiStructure):
        beta, L, log_phi = unpack(theta, s)
        return -crossed.loglik(beta, L, log_phi, u_hat, data, s)
    per_block = jax.vmap(block_negloglik, in_axes=(None, 0, 0, None))
    return jnp.sum(per_block(theta, u_hat, data, s))


def conditional(theta, u_hat, data, s):
    """Conditional modes of u given y at theta (u_hat, or computed for a linear mixed
    model) and their conditional covariances, the diagonal blocks of (-H)^{-1}:
    [B, J, q, q] (a list of [J_k, q_k, q_k] per term for several terms)."""
    if isinstance(s, LmmStructure):
        return lmm.conditional(unpack(theta, s), data, s)
    beta, L, log_phi = unpack(theta, s)
    if isinstance(s, MultiStructure):
        _, _, nh = crossed.grad_negHess(u_hat, crossed.fixed_eta(beta, data, s), L, log_phi,
                                        data, s)
        return u_hat, crossed.inverse_blocks(nh, data, s)

    def block(u, d):
        return smallmat.inverse(grad_negHess(u, fixed_eta(beta, d), L, log_phi, d, s)[2])

    return u_hat, jax.vmap(block)(u_hat, data)
