"""Sparse algebra for nested random-effect terms (observations in wards in hospitals).

When the terms form a nested chain -- every level of term k lies in exactly one level of
term k+1 -- the negative Hessian of the log-integrand in u couples a level only with its
own ancestors: a row touches level j of term 0 and the ancestors of j. Eliminating the
terms from the finest up then creates no fill beyond the blocks that exist already:

    A_k [J_k, q_k, q_k]      level j of term k with itself
    B_km [J_k, q_k, q_m]     level j of term k with its ancestor in term m > k

so factorization, solves, log-determinants and the diagonal blocks of the inverse all cost
O(sum_k J_k q_k^3 K^2) -- linear in the data, where a dense Schur complement over the
coarser terms would be cubic in their levels. Everything is plain JAX (segment sums and
unrolled q x q algebra), so derivatives of any order come from autodiff.

``anc[k][m - k - 1]`` is the [J_k] level, in term m, of the ancestor of each level of term k.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import smallmat


class TreeHess(NamedTuple):
    A: tuple  # per term k: [J_k, q_k, q_k]
    B: tuple  # per term k: tuple over m > k of [J_k, q_k, q_m]


def parent(codes: np.ndarray, n_levels: int, outer: np.ndarray) -> np.ndarray | None:
    """[n_levels] level of ``outer`` that holds each level of ``codes`` (0 for a level
    with no rows), or None when some level spans several levels of ``outer``."""
    lo = np.full(n_levels, np.iinfo(np.int64).max)
    hi = np.full(n_levels, -1)
    np.minimum.at(lo, codes, outer)
    np.maximum.at(hi, codes, outer)
    used = hi >= 0
    if np.any(lo[used] != hi[used]):
        return None
    return np.where(used, hi, 0)


def ancestors(codes: list[np.ndarray], Js: list[int]) -> tuple | None:
    """Ancestor maps of a nested chain of grouping codes (finest first), or None when some
    level of a term spans several levels of the next (the terms are not nested)."""
    K = len(codes)
    parents = []
    for k in range(K - 1):
        p = parent(codes[k], Js[k], codes[k + 1])
        if p is None:
            return None
        parents.append(p)
    anc = []
    for k in range(K):
        row, cur = [], np.arange(Js[k])
        for m in range(k + 1, K):
            cur = parents[m - 1][cur]
            row.append(cur.astype(np.int32))
        anc.append(tuple(row))
    return tuple(anc)


def _segsum(v, idx, n):
    return jax.ops.segment_sum(v, idx, num_segments=n)


def factor(th: TreeHess, anc):
    """Eliminate the terms finest first: Cholesky factors of the updated A_k and
    X_km = A_k^{-1} B_km (with B_km updated by the finer terms)."""
    K = len(th.A)
    A, B = list(th.A), [list(b) for b in th.B]
    Cs, Xs = [], []
    for k in range(K):
        C = smallmat.cholesky(A[k])
        X = [smallmat.cho_solve_matrix(C, b) for b in B[k]]
        Cs.append(C)
        Xs.append(X)
        for i, m in enumerate(range(k + 1, K)):
            J = A[m].shape[0]
            for m2 in range(m, K):
                upd = _segsum(jnp.einsum("jam,jan->jmn", B[k][i], X[m2 - k - 1]),
                              anc[k][i], J)
                if m2 == m:
                    A[m] = A[m] - upd
                else:
                    B[m][m2 - m - 1] = B[m][m2 - m - 1] - upd
    return Cs, Xs


def solve(th: TreeHess, g: list, anc) -> list:
    """Solve (-H) x = g; g and x are lists of [J_k, q_k]."""
    Cs, Xs = factor(th, anc)
    K = len(g)
    z = list(g)
    for k in range(K):
        for i, m in enumerate(range(k + 1, K)):
            z[m] = z[m] - _segsum(jnp.einsum("jam,ja->jm", Xs[k][i], z[k]), anc[k][i],
                                  z[m].shape[0])
    x = [None] * K
    for k in reversed(range(K)):
        xk = smallmat.cho_solve(Cs[k], z[k])
        for i, m in enumerate(range(k + 1, K)):
            xk = xk - jnp.einsum("jam,jm->ja", Xs[k][i], x[m][anc[k][i]])
        x[k] = xk
    return x


def log_det(th: TreeHess, anc):
    """log det(-H): the sum of the log-determinants of the eliminated blocks."""
    Cs, _ = factor(th, anc)
    return sum(jnp.sum(smallmat.log_det(C)) for C in Cs)


def inverse_blocks(th: TreeHess, anc, given_last: bool = False) -> list:
    """Diagonal blocks of (-H)^{-1}, [J_k, q_k, q_k] per term, coarsest first by the
    recursion Sigma_{k,anc} = -X_k Sigma_{anc,anc}, Sigma_kk = A_k^{-1} - Sigma_{k,anc} X_k^T.
    ``given_last``: the other terms' blocks given the last (coarsest) term (REML's fixed
    effects), whose own block stays its marginal one."""
    Cs, Xs = factor(th, anc)
    K = len(Cs)
    top = K - 1 if given_last else K  # terms whose covariances enter the recursion
    S = [dict() for _ in range(K)]  # S[k][m]: cov of level j of k with its ancestor in m
    for k in reversed(range(K)):
        Sk = smallmat.cho_inverse(Cs[k])
        for m in range(k + 1, top):
            acc = 0.0
            for m2 in range(k + 1, top):
                if m2 == m:
                    sig = S[m][m][anc[k][m - k - 1]]
                elif m2 < m:
                    sig = S[m2][m][anc[k][m2 - k - 1]]
                else:
                    sig = jnp.swapaxes(S[m][m2][anc[k][m - k - 1]], 1, 2)
                acc = acc + jnp.einsum("jab,jbc->jac", Xs[k][m2 - k - 1], sig)
            S[k][m] = -acc
            Sk = Sk - jnp.einsum("jab,jcb->jac", S[k][m], Xs[k][m - k - 1])
        S[k][k] = Sk
    return [S[k][k] for k in range(K)]
