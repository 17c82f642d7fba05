"""Influence diagnostics (lme4's ``influence.merMod``): the model refitted without each
cluster of a grouping factor (or each row), the fixed effects and variance components
of each refit, Cook's distance and DFBETAS.

A cluster is left out by giving its rows prior weight 0: a cluster whose rows all have
weight 0 adds exactly 0 to the Laplace/AGHQ log-likelihood (its mode is 0 and its
integrand the N(0, I) density), so the refit is the fit without it. All refits run in
one vmapped, compiled program per batch (``Model.fit_batches``), from the full fit's
estimates. The cross-product engine of Gaussian models (``engine="lmm"``) folds rows
into its statistics: there each refit is fitted one by one from the statistics of the
rows kept (a cost free of the number of rows; every level is kept, so the fit's
compiled program serves), or, where that changes the statistics' shapes (several
terms), on the joint Laplace engine (exact for Gaussian models) with weights, batched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial

import jax
import numpy as np
import pandas as pd

from . import lmm, varpar
from .errors import ConvergenceWarning, GLMMInputError, warn
from .fitresult import make_result
from .model import fit_model, model_from_frame


@dataclass(frozen=True)
class InfluenceResult:
    """Leave-one-cluster-out refits: one row per left-out level of ``group``.

    ``fixef`` and ``varcomp`` (named as :mod:`glmm_jax.varpar`: ``sd_(Intercept)|herd``,
    ``cor_...``, ``sigma``) hold the estimates without each level, ``se`` the refits'
    standard errors and ``vcov_without`` their covariance matrices [K, p, p];
    ``estimate``, ``varcomp_estimate`` and ``vcov`` are the full fit's. ``converged``
    flags each refit; the rows of refits that did not converge are NaN.
    """

    group: str
    fixef: pd.DataFrame
    varcomp: pd.DataFrame
    se: pd.DataFrame
    vcov_without: np.ndarray
    converged: pd.Series
    estimate: pd.Series
    varcomp_estimate: pd.Series
    vcov: pd.DataFrame
    seconds: float = 0.0

    @property
    def dfbeta(self) -> pd.DataFrame:
        """Fixed effects without each level minus the full fit's (lme4's ``dfbeta``)."""
        return self.fixef - self.estimate

    @property
    def dfbetas(self) -> pd.DataFrame:
        """``dfbeta`` over the refit's standard errors (lme4's ``dfbetas``)."""
        return self.dfbeta / self.se

    @property
    def cooks_distance(self) -> pd.Series:
        """lme4's ``cooks.distance``: d' V^-1 d (K - p) / (K p), with d the ``dfbeta`` row,
        V the full fit's ``vcov``, K the number of refits and p of fixed effects."""
        d = self.dfbeta.to_numpy()
        K, p = d.shape
        Vinv = np.linalg.inv(self.vcov.to_numpy()) * (K - p) / (K * p)
        out = pd.Series(np.einsum("ka,ab,kb->k", d, Vinv, d), index=self.fixef.index,
                        name=self.group)
        return out

    def __repr__(self) -> str:
        cd = self.cooks_distance
        top = (f", max Cook's distance {cd.max():.3g} ({self.group} {cd.idxmax()})"
               if cd.notna().any() else "")
        return (f"<InfluenceResult {self.group}: {len(self.fixef)} refits "
                f"({int(self.converged.sum())} converged), {self.fixef.shape[1]} fixed "
                f"effects{top}, {self.seconds:.2f} s>")


def influence(res, group: str | None = None, max_iter: int = 100,
              batch_size: int = 64) -> InfluenceResult:
    """Refit ``res`` without each level of the grouping factor ``group`` (any one of the
    model's grouping factors, e.g. ``"herd"``, or ``"ward:hospital"`` of a nested term;
    ``None``: without each row, lme4's default), as lme4's ``influence(m, groups =)``.

    The refits start from the fit's estimates and run ``batch_size`` at a time in one
    vmapped program (Newton, then the L-BFGS fallback where it stops early); for the
    Gaussian cross-product engine they run one by one. Refits that do not converge are
    flagged in ``converged``, NaN in the tables, and warned about.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> infl = gj.influence(res, group="herd")
    >>> infl.fixef.shape, bool(infl.converged.all())
    ((15, 4), True)
    >>> int(infl.cooks_distance.idxmax())  # the most influential herd
    11
    """
    t0 = time.perf_counter()
    model = getattr(res, "model", None)
    if model is None:
        raise GLMMInputError("influence needs a fitted GLMMResult (with its model)")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or \
            max_iter < 1:
        raise GLMMInputError(f"max_iter must be a positive integer, not {max_iter!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
            batch_size < 1:
        raise GLMMInputError(f"batch_size must be a positive integer, not {batch_size!r}")
    if not res.converged:
        warn(f"influence: the fit of {res.formula!r} did not converge; the refits are "
             "compared with its estimates", ConvergenceWarning)
    frame = model.frame
    codes, levels, name = _clusters(frame, group)
    K, p = len(levels), len(res.x_names)
    if isinstance(model.data, lmm.LmmData):
        fits = _refit_lmm(res, codes, K, max_iter, batch_size)
    else:
        fits = _refit_batched(model, res, codes, K, max_iter, batch_size)
    beta = np.full((K, p), np.nan)
    V = np.full((K, p, p), np.nan)
    vc_names = varpar.names(res)[: len(varpar.names(res)) - p]
    vc = np.full((K, len(vc_names)), np.nan)
    ok = np.zeros(K, bool)
    for k, (r, theta) in enumerate(fits):
        ok[k] = bool(r.converged)
        if ok[k]:
            beta[k], V[k] = r.beta, r.beta_cov
            vc[k] = varpar.values(theta, res, beta=r.beta)[: len(vc_names)]
    index = pd.Index(levels, name=name)
    x = list(res.x_names)
    if not ok.all():
        bad = [str(v) for v in index[~ok]]
        warn(f"influence: {len(bad)} of {K} refits without a level of {name} did not "
             f"converge ({', '.join(bad[:10])}{', ...' if len(bad) > 10 else ''}); "
             "their rows are NaN (see .converged)", ConvergenceWarning)
    full_vc = varpar.values(res.theta, res, beta=res.beta)[: len(vc_names)]
    return InfluenceResult(
        group=name,
        fixef=pd.DataFrame(beta, index=index, columns=x),
        varcomp=pd.DataFrame(vc, index=index, columns=vc_names),
        se=pd.DataFrame(np.sqrt(np.diagonal(V, axis1=1, axis2=2)), index=index, columns=x),
        vcov_without=V, converged=pd.Series(ok, index=index, name="converged"),
        estimate=pd.Series(np.asarray(res.beta, float), index=x, name="estimate"),
        varcomp_estimate=pd.Series(np.asarray(full_vc, float), index=vc_names,
                                   name="estimate"),
        vcov=res.vcov, seconds=time.perf_counter() - t0)


def _clusters(frame, group):
    """(code of each row, the levels, the name) of the units left out one at a time."""
    if group is None:
        return np.arange(len(frame.y)), frame.row_index, "case"
    names = list(dict.fromkeys(g.name for g in frame.groups))
    if not isinstance(group, str) or group not in names:
        have = ", ".join(repr(n) for n in names) or "none (the model has no random terms)"
        raise GLMMInputError(f"influence: group={group!r} is not a grouping factor of the "
                             f"model; its grouping factors: {have}")
    g = next(g for g in frame.groups if g.name == group)
    return np.asarray(g.codes), g.levels, group


def _refit_batched(model, res, codes, K, max_iter, batch_size):
    """Each refit as (GLMMResult, theta in the fit's order), from one vmapped program per
    batch: the rows of the level left out get prior weight 0."""
    f = model.frame
    order = _order(res.model.theta_names, model.theta_names)
    size = min(batch_size, K)
    out = []
    for k0 in range(0, K, size):  # the weights of one batch at a time ([size, n])
        levels = np.arange(k0, min(k0 + size, K))
        W = f.weights[None, :] * (codes[None, :] != levels[:, None])
        for _, one, fitted, run, notes in model.fit_batches(
                np.broadcast_to(f.y, W.shape), start=np.asarray(res.theta)[order],
                max_iter=max_iter, batch_size=size, weights=W):
            m = fitted()  # (the frame: the fit's, with its own prior weights)
            r = make_result(model.formula, f, m.structure.family, m.structure, one, run,
                            notes, m.clusters, model=m)
            out.append((r, _back(r.theta, order)))
    return out


def _refit_lmm(res, codes, K, max_iter, batch_size):
    """The Gaussian cross-product engine: each refit from the statistics of the rows
    kept (with every level, so the fit's compiled program serves), one by one; where
    that changes the statistics' shapes (several terms), the model on the joint
    Laplace engine (exact for Gaussian models) with weights, batched. The model is
    laid out without the padding of small models (its statistics are those of its own)."""
    model = res.model.unpadded
    f = model.frame
    terms = [(g.Z, g.codes) for g in f.groups]
    Js = tuple(len(g.levels) for g in f.groups)
    shapes = [np.shape(a) for a in model.data]
    stats = []
    for k in range(K):
        keep = codes != k
        st = lmm.cross_products(f.X[keep], (f.y - f.offset)[keep],
                                [(Z[keep], c[keep]) for Z, c in terms], Js, f.trials[keep])
        if st is None or [np.shape(a) for a in st] != shapes:
            multi = model_from_frame(model.formula, f, res.family, res.nagq,
                                     reml=res.reml, engine="multi")
            return _refit_batched(multi, res, codes, K, max_iter, batch_size)
        stats.append(st)
    place = partial(jax.tree.map, lambda new, old: jax.device_put(new, old.sharding))
    return [(r, r.theta) for r in (
        fit_model(replace(model, data=place(st, model.data)), max_iter, start=res.theta)
        for st in stats)]


def _order(names, new_names) -> list[int]:
    """Positions in ``names`` of each of ``new_names`` (the terms of a model laid out
    anew may come in another order)."""
    return [names.index(n) for n in new_names]


def _back(theta, order) -> np.ndarray:
    out = np.empty(len(order))
    out[order] = theta
    return out
