"""The parameters intervals are reported for, as functions of theta: the fixed effects,
each term's standard deviations and correlations, and the residual SD (Gaussian) or the
dispersion (Gamma shape, negative binomial theta).

Rows are named as lme4's ``confint(..., oldNames = FALSE)``: ``sd_(Intercept)|herd``,
``cor_Days.(Intercept)|Subject``, ``sigma``; then the fixed effects by name.

>>> import glmm_jax as gj
>>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
...              gj.datasets.load("cbpp"))
>>> names(res)
['sd_(Intercept)|herd', '(Intercept)', 'period2', 'period3', 'period4']
>>> bool(abs(values(res.theta, res)[0] - res.varcorr["sd"][0]) < 1e-12)
True
"""

from __future__ import annotations

import numpy as np


def names(res) -> list[str]:
    """The reported parameters: variance components first (as lme4), then fixed effects."""
    out = []
    for label, t in zip(res._term_labels(), res.terms, strict=True):
        z = t.z_names
        out += [f"sd_{n}|{label}" for n in z]
        out += [f"cor_{z[j]}.{z[i]}|{label}" for i in range(len(z)) for j in range(i + 1, len(z))]
    if res.family.has_dispersion:
        out.append("sigma" if res.family.name == "gaussian" else res.family.dispersion_name)
    return out + list(res.x_names)


def values(theta, res, beta=None, xp=np):
    """The parameters of :func:`names` at ``theta`` (``beta``: the fixed effects where
    theta does not hold them, REML). ``xp=jax.numpy`` for autodiff."""
    lay = res.model.layout
    out = []
    for sl, q in zip(lay.factor_slices(), lay.qs, strict=True):
        rows, cols = np.tril_indices(q)
        L = xp.zeros((q, q))
        for k, (i, j) in enumerate(zip(rows, cols, strict=True)):
            L = _set(L, i, j, theta[sl.start + k], xp)
        G = L @ L.T
        sd = xp.sqrt(xp.diagonal(G))
        out += [sd[i] for i in range(q)]
        out += [G[i, j] / (sd[i] * sd[j]) for i in range(q) for j in range(i + 1, q)]
    if lay.dispersion:
        out.append(xp.exp(theta[lay.size - 1]))
    beta = theta[: lay.p] if beta is None else beta
    out += [beta[k] for k in range(len(res.x_names))]
    return xp.stack(out) if out else xp.zeros(0)


def _set(L, i, j, v, xp):
    if xp is np:
        L = L.copy()
        L[i, j] = v
        return L
    return L.at[i, j].set(v)
