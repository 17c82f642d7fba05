"""A random term's covariance in standard-deviation/correlation coordinates, so that one
SD or one correlation is a coordinate that a profile can hold fixed.

With the term's effects permuted by ``order`` (the identity serves each SD and each
correlation with the first effect; a correlation of two later effects puts them first),
G = P' D C C' D P with D = diag(sd) and C the Cholesky
factor of the correlation matrix built from canonical partial correlations w (LKJ's
construction): C[i, 0] = w[i, 0], C[i, j] = w[i, j] sqrt(1 - sum_{k<j} C[i, k]^2), so
that sd are coordinates and corr(effect i, first) = w[i, 0] exactly; each w is the tanh
of an unconstrained coordinate. The map ends with a
lower-triangular factor of G, as theta holds it (the likelihood depends on G only).

>>> import numpy as np
>>> G = np.array([[4.0, 1.2], [1.2, 9.0]])
>>> phi = from_cov(G, order=(1, 0))
>>> bool(np.allclose(np.asarray(to_factor(phi, (1, 0))) @ np.asarray(to_factor(phi, (1, 0))).T, G))
True
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

W_MAX = 1.0 - 1e-9  # partial correlations are kept inside (-1, 1)


def pairs(q: int) -> list[tuple[int, int]]:
    """The partial correlations' positions (i, j), j < i, in coordinate order."""
    return [(i, j) for i in range(1, q) for j in range(i)]


def from_cov(G: np.ndarray, order) -> np.ndarray:
    """phi = (sd in ``order``, then arctanh of the partial correlations w in the order
    of :func:`pairs`)."""
    P = np.asarray(order)
    Gp = np.asarray(G, dtype=float)[np.ix_(P, P)]
    sd = np.sqrt(np.diag(Gp))
    R = Gp / np.outer(sd, sd)
    q = len(P)
    C = np.linalg.cholesky(R + 1e-12 * np.eye(q))
    w = []
    for i, j in pairs(q):
        rest = np.sqrt(max(1.0 - np.sum(C[i, :j] ** 2), 1e-300))
        w.append(np.clip(C[i, j] / rest, -W_MAX, W_MAX))
    return np.concatenate([sd, np.arctanh(np.asarray(w))])


def to_factor(phi, order):
    """The lower Cholesky factor of G in the term's own order (JAX)."""
    q = len(order)
    sd = phi[:q]
    w = jnp.tanh(phi[q:])
    rows = []
    for i in range(q):
        row, used = [], jnp.zeros(())
        for j in range(i):
            c = w[pairs(q).index((i, j))] * (1.0 if j == 0 else jnp.sqrt(1.0 - used))
            row.append(c)
            used = used + c * c
        row.append(jnp.sqrt(jnp.maximum(1.0 - used, 0.0)))
        rows.append(jnp.stack(row + [jnp.zeros(())] * (q - i - 1)))
    C = jnp.stack(rows)
    A = sd[:, None] * C  # G_perm = A A', A lower triangular
    if tuple(order) == tuple(range(q)):
        return A
    B = A[np.argsort(np.asarray(order))]  # G = B B' = R' R for B' = Q R
    R = jnp.linalg.qr(B.T, mode="r")
    return (R * jnp.sign(jnp.diagonal(R))[:, None]).T
