"""Cholesky algebra for batches of small (q x q) positive definite matrices.

Unrolled over the static size q with elementwise operations only, so it vectorizes over
thousands of clusters, differentiates cleanly to any order, and compiles far faster than
the general LAPACK-backed routines (which dominate compile time at q = 1..4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mat_vec(A, v):
    """A v for each row of v [..., q] (A [q, q]), as a broadcast and a sum: q is small, and
    a dot (with its autodiff tangents and transposes) would be a kernel of its own, about
    20 ms of XLA:CPU compile time apiece."""
    return jnp.sum(A * v[..., None, :], axis=-1)


def cholesky(A):
    """Lower Cholesky factor of A [..., q, q] as a nested list C[i][j] (j <= i) of [...] arrays."""
    q = A.shape[-1]
    C = [[None] * q for _ in range(q)]
    for j in range(q):
        d = A[..., j, j] - sum(C[j][k] ** 2 for k in range(j))
        C[j][j] = jnp.sqrt(d)
        for i in range(j + 1, q):
            C[i][j] = (A[..., i, j] - sum(C[i][k] * C[j][k] for k in range(j))) / C[j][j]
    return C


def log_det(C):
    """log det A from its Cholesky factor."""
    return 2.0 * sum(jnp.log(C[j][j]) for j in range(len(C)))


def solve_lower(C, b):
    """Solve C x = b for x; b [..., q]."""
    q = len(C)
    x = [None] * q
    for i in range(q):
        x[i] = (b[..., i] - sum(C[i][k] * x[k] for k in range(i))) / C[i][i]
    return jnp.stack(x, axis=-1)


def solve_upper_t(C, b):
    """Solve C^T x = b for x (C lower triangular); b [..., q]."""
    q = len(C)
    x = [None] * q
    for i in reversed(range(q)):
        x[i] = (b[..., i] - sum(C[k][i] * x[k] for k in range(i + 1, q))) / C[i][i]
    return jnp.stack(x, axis=-1)


def cho_solve(C, b):
    """Solve A x = b given the Cholesky factor C of A (from :func:`cholesky`)."""
    return solve_upper_t(C, solve_lower(C, b))


def cho_solve_matrix(C, B):
    """Solve A X = B for X [..., q, r] given the Cholesky factor C of A (r may be 0)."""
    if B.shape[-1] == 0:
        return B
    return jnp.moveaxis(jax.vmap(lambda b: cho_solve(C, b))(jnp.moveaxis(B, -1, 0)), 0, -1)


def chol_solve(A, b):
    """Solve A x = b for positive definite A [..., q, q], b [..., q]."""
    return cho_solve(cholesky(A), b)


def cho_inverse(C):
    """A^{-1} [..., q, q] given the Cholesky factor C of A."""
    q = len(C)
    eye = jnp.broadcast_to(jnp.eye(q, dtype=C[0][0].dtype), C[0][0].shape + (q, q))
    return jnp.stack([cho_solve(C, eye[..., k]) for k in range(q)], axis=-1)


def inverse(A):
    """A^{-1} for positive definite A [..., q, q]."""
    return cho_inverse(cholesky(A))
