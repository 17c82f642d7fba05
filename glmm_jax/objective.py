"""The objective: theta <-> (beta, L, log dispersion), and -log L(theta) as a pure function.

theta = [beta (p), lower triangle of L row by row (q(q+1)/2), log dispersion (0 or 1)].
The random-effects covariance is G = L L^T; L's diagonal may take either sign (the
likelihood is unchanged when a column of L flips sign), so theta is unconstrained and a
variance can reach exactly 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .laplace import ClusterData, Structure, fixed_eta, solve_modes, total_loglik


def unpack(theta, s: Structure):
    """Split theta into beta [p], L [q, q] (lower triangular) and log dispersion."""
    beta = theta[: s.p]
    rows, cols = np.tril_indices(s.q)
    L = jnp.zeros((s.q, s.q), theta.dtype).at[rows, cols].set(theta[s.p : s.p + s.n_cov])
    log_phi = theta[s.p + s.n_cov] if s.family.has_dispersion else jnp.zeros((), theta.dtype)
    return beta, L, log_phi


def unpack_np(theta: np.ndarray, s: Structure):
    """:func:`unpack` in NumPy (for results, without dispatching JAX operations)."""
    L = np.zeros((s.q, s.q))
    L[np.tril_indices(s.q)] = theta[s.p : s.p + s.n_cov]
    log_phi = theta[s.p + s.n_cov] if s.family.has_dispersion else 0.0
    return theta[: s.p].copy(), L, float(log_phi)


def pack(beta, L, log_phi, s: Structure) -> np.ndarray:
    """Inverse of :func:`unpack` (NumPy)."""
    parts = [np.asarray(beta, float), np.asarray(L, float)[np.tril_indices(s.q)]]
    if s.family.has_dispersion:
        parts.append(np.atleast_1d(float(log_phi)))
    return np.concatenate(parts)


def modes(theta, u0, data: ClusterData, s: Structure):
    """Conditional modes u_hat(theta) [J, q], started from u0; and the Newton iterations used."""
    beta, L, log_phi = unpack(theta, s)
    return solve_modes(u0, fixed_eta(beta, data), L, log_phi, data, s)


def negloglik(theta, u_hat, data: ClusterData, s: Structure):
    """-log L(theta) by Laplace/AGHQ, given converged modes u_hat (exact derivatives)."""
    beta, L, log_phi = unpack(theta, s)
    return -total_loglik(beta, L, log_phi, u_hat, data, s)
