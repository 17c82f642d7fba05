"""Per-row quantities of a fitted model, shared by prediction, the posterior of the random
effects, marginal effects and simulation: the linear predictor for given random effects,
and the mean integrated over the random effects.

The rows are those of ``res.frame`` (the rows of the fit, in the fit's order). Functions
taking ``beta``/``bs`` are plain JAX, so autodiff gives delta-method derivatives.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def log_dispersion(res) -> float:
    """log of the dispersion (sigma, shape or theta), 0 for families without one."""
    return float(np.log(res.dispersion)) if res.dispersion is not None else 0.0


def random_part(groups, bs, codes=None, Zs=None, xp=np):
    """sum_k z_ik' b_k[level of row i in term k]: ``bs`` the [J_k, q_k] effects per term
    (in the frame's order), ``codes``/``Zs`` per term (default: the fit's rows)."""
    codes = [g.codes for g in groups] if codes is None else codes
    Zs = [g.Z for g in groups] if Zs is None else Zs
    out = 0.0  # (a model without random terms)
    for c, Z, b in zip(codes, Zs, bs, strict=True):
        out = out + xp.sum(Z * b[c], axis=1)
    return out


def linear_predictor(res, random_effects: bool = True) -> np.ndarray:
    """eta = X beta + offset (+ Z b at the conditional modes) for the fit's rows."""
    f = res.frame
    eta = f.X @ res.beta + f.offset
    if random_effects:
        eta = eta + random_part(f.groups, [t.b for t in res.terms])
    return eta


GH_NODES = 100  # Gauss-Hermite nodes of the one-dimensional marginal means


def marginal_mean(family, eta, s2, n_nodes: int = GH_NODES):
    """E[linkinv(eta + z'b)] with z'b ~ N(0, s2) per row: the mean integrated over the
    random effects, by Gauss-Hermite quadrature with ``n_nodes`` nodes (JAX; exact for
    the identity link). ``eta`` and ``s2`` broadcast.

    >>> import numpy as np
    >>> from glmm_jax.families import Poisson
    >>> m = marginal_mean(Poisson(), np.array([0.0, 1.0]), 0.5)
    >>> np.allclose(m, np.exp(np.array([0.0, 1.0]) + 0.25))
    True
    """
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    t, w = np.sqrt(2.0) * x, w / np.sqrt(np.pi)
    eta, sd = jnp.asarray(eta, dtype=float), jnp.sqrt(jnp.asarray(s2, dtype=float))
    return jnp.sum(w * family.linkinv(eta[..., None] + sd[..., None] * t), axis=-1)


def integrated_mean(family, eta, Zs, Ls, n_nodes: int = GH_NODES):
    """The mean of each row integrated over its random part z'b, z'b ~ N(0, sum_k
    |z_k' L_k|^2) (JAX; ``Ls`` the covariance factors), and where that variance is
    positive. Rows without random variation get linkinv(eta): their variance is
    replaced by 1 inside, so sqrt's infinite derivative at 0 stays out of Jacobians."""
    s2 = sum((jnp.sum((Z @ L) ** 2, axis=1) for Z, L in zip(Zs, Ls, strict=True)),
             jnp.zeros(jnp.shape(eta)))
    positive = s2 > 0.0
    mu = marginal_mean(family, eta, jnp.where(positive, s2, 1.0), n_nodes)
    return jnp.where(positive, mu, family.linkinv(eta)), positive
