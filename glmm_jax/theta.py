"""The optimizer's parameter vector theta: its layout, names, packing and unpacking.

theta = [beta (p), each covariance factor's lower triangle row by row (q(q+1)/2 per
term), log dispersion (0 or 1)]. The random-effects covariance of a term is G = L L^T;
L's diagonal may take either sign (the likelihood is unchanged when a column of L flips
sign), so theta is unconstrained and a variance can reach exactly 0. Under REML the fixed
effects are not in theta (p = 0).

>>> lay = ThetaLayout(p=2, qs=(2,), dispersion=False)
>>> lay.size, lay.names(["a", "b"], [("g", ("(Intercept)", "x"))], None)[2:]
(5, ['L_g[(Intercept),(Intercept)]', 'L_g[x,(Intercept)]', 'L_g[x,x]'])
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class ThetaLayout:
    p: int  # fixed effects in theta
    qs: tuple[int, ...]  # size of each covariance factor
    dispersion: bool  # a log dispersion parameter last

    @property
    def n_cov(self) -> int:
        return sum(q * (q + 1) // 2 for q in self.qs)

    @property
    def size(self) -> int:
        return self.p + self.n_cov + int(self.dispersion)

    def factor_slices(self) -> list[slice]:
        out, i = [], self.p
        for q in self.qs:
            out.append(slice(i, i + q * (q + 1) // 2))
            i += q * (q + 1) // 2
        return out

    def scalar_mask(self) -> np.ndarray:
        """1.0 at the factors of the scalar terms (q = 1, a standard deviation), else 0.0.

        >>> ThetaLayout(p=1, qs=(2, 1), dispersion=True).scalar_mask().tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        """
        mask = np.zeros(self.size)
        for q, sl in zip(self.qs, self.factor_slices(), strict=True):
            mask[sl] = float(q == 1)
        return mask

    def unpack(self, theta):
        """(beta, [L_k], log dispersion) in JAX; L_k placed by a constant 0/1 broadcast and
        a sum (no scatter kernels)."""
        Ls = []
        for q, sl in zip(self.qs, self.factor_slices(), strict=True):
            rows, cols = np.tril_indices(q)
            k = q * (q + 1) // 2
            place = np.zeros((q * q, k))
            place[rows * q + cols, np.arange(k)] = 1.0
            Ls.append(jnp.sum(place * theta[sl], axis=1).reshape(q, q))
        log_phi = theta[self.size - 1] if self.dispersion else jnp.zeros((), theta.dtype)
        return theta[: self.p], Ls, log_phi

    def unpack_np(self, theta: np.ndarray):
        """:meth:`unpack` in NumPy (for results, without dispatching JAX operations)."""
        theta = np.asarray(theta, dtype=float)
        Ls = []
        for q, sl in zip(self.qs, self.factor_slices(), strict=True):
            L = np.zeros((q, q))
            L[np.tril_indices(q)] = theta[sl]
            Ls.append(L)
        log_phi = float(theta[self.size - 1]) if self.dispersion else 0.0
        return theta[: self.p].copy(), Ls, log_phi

    def pack(self, beta, Ls, log_phi) -> np.ndarray:
        """Inverse of :meth:`unpack` (NumPy)."""
        parts = [np.asarray(beta, float)[: self.p]]
        parts += [np.asarray(L, float)[np.tril_indices(len(L))] for L in Ls]
        if self.dispersion:
            parts.append(np.atleast_1d(float(log_phi)))
        return np.concatenate(parts)

    def of_model(self, n_fixed: int, qs) -> ThetaLayout:
        """This (a program's) layout with a model's ``n_fixed`` fixed effects and terms
        of sizes ``qs`` (its padding, see :class:`Padding`, left out); REML's fixed
        effects (not in theta) stay out."""
        return ThetaLayout(min(self.p, n_fixed), tuple(qs), self.dispersion)

    def names(self, x_names, terms, dispersion_name: str | None) -> list[str]:
        """Names of theta's entries; ``terms``: (group name, z names) per factor."""
        names = list(x_names)[: self.p]
        for (group, z), q in zip(terms, self.qs, strict=True):
            names += [f"L_{group}[{z[i]},{z[j]}]" for i, j in zip(*np.tril_indices(q),
                                                                  strict=True)]
        if self.dispersion:
            names.append(f"log({dispersion_name})")
        return names


@dataclass(frozen=True)
class Padding:
    """A compiled program's theta holding more than its model's: fixed effects of zero
    columns of X, and (a random intercept in a program for vector terms) covariance
    entries of a zero column of Z, all held at 0, so that models of nearby sizes share
    one program (sizes.py). ``at`` is where each entry of the model's theta sits in the
    program's (of ``size`` entries); the padding never leaves the engine.

    >>> pad = Padding.between(ThetaLayout(2, (1,), True), ThetaLayout(4, (2,), True))
    >>> pad.embed(np.array([1.0, 2.0, 0.5, -1.0])).tolist()
    [1.0, 2.0, 0.0, 0.0, 0.5, 0.0, 0.0, -1.0]
    >>> pad.strip(np.arange(8.0)).tolist()
    [0.0, 1.0, 4.0, 7.0]
    >>> Padding.between(ThetaLayout(1, (2, 1), False), ThetaLayout(8, (3, 2), False))
    Padding(at=(0, 8, 9, 10, 14), size=17)
    """

    at: tuple[int, ...]
    size: int

    @classmethod
    def between(cls, model: ThetaLayout, program: ThetaLayout) -> Padding | None:
        """The padding of ``program``'s layout around ``model``'s (None if they are one)."""
        if model == program:
            return None
        at = list(range(model.p))
        for q, sl in zip(model.qs, program.factor_slices(), strict=True):
            at += [int(sl.start + i * (i + 1) // 2 + j)
                   for i, j in zip(*np.tril_indices(q), strict=True)]
        if model.dispersion:
            at.append(program.size - 1)
        return cls(tuple(at), program.size)

    def embed(self, theta, fill: float = 0.0) -> np.ndarray:
        out = np.full(self.size, fill)
        out[list(self.at)] = np.asarray(theta, dtype=float)
        return out

    def strip(self, a) -> np.ndarray:
        """A program's vector (a gradient) or matrix (a Hessian) in the model's theta."""
        a, at = np.asarray(a), list(self.at)
        return a[np.ix_(at, at)] if a.ndim == 2 else a[at]
