"""Influence diagnostics (glmm_jax.influence) against lme4's influence.merMod,
cooks.distance and dfbetas (tests/data/r_influence/make_refs.R), and the identity they
rest on: a cluster whose prior weights are all 0 is a deleted cluster.

Tolerances. Fixed effects and variance components without each cluster: 3e-3, lme4's
optimizer gap (glmer stops ~6e-4 from the optimum on the full cbpp fit; lmer's fits
are exact, 1e-6). Cook's distance and DFBETAS are built from vcov matrices, and glmer's
vcov (its finite-difference Hessian) differs from glmm_jax's exact-Hessian vcov by up
to 2.6% on cbpp (measured below): so 6% relative, or 0.01 absolute for small values.
Their definitions are checked exactly by feeding lme4's own numbers to InfluenceResult.
"""

from __future__ import annotations

import importlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP_FORMULA

import glmm_jax as gj
from glmm_jax.design import subset_frame
from glmm_jax.model import model_from_frame

influence_module = importlib.import_module("glmm_jax.influence")  # gj.influence: the function
REFS = json.loads((Path(__file__).parent / "data" / "r_influence" / "refs.json").read_text())


def _r_table(case: dict, key: str, levels, columns) -> np.ndarray:
    return np.array([[case[key][str(lev)][c] for c in columns] for lev in levels])


def _r_series(case: dict, key: str, levels) -> np.ndarray:
    return np.array([case[key][str(lev)] for lev in levels])


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return gj.fit(CBPP_FORMULA, cbpp)


@pytest.fixture(scope="module")
def cbpp_infl(cbpp_fit):
    return gj.influence(cbpp_fit, group="herd")


def test_cbpp_fixed_effects_without_each_herd_match_lme4(cbpp_fit, cbpp_infl):
    c = REFS["cbpp"]
    infl = cbpp_infl
    assert list(infl.fixef.index.astype(str)) == c["levels"]
    assert list(infl.fixef.columns) == c["x_names"]
    R = _r_table(c, "fixef_without", infl.fixef.index, c["x_names"])
    assert np.abs(infl.fixef.to_numpy() - R).max() < 3e-3  # measured 7.1e-4
    # variances without each herd (lme4's v[(Intercept)]; glmm_jax reports the SD)
    v = np.array([c["var_cov_comps_without"][str(k)]["v[(Intercept)]"]
                  for k in infl.varcomp.index])
    assert list(infl.varcomp.columns) == ["sd_(Intercept)|herd"]
    assert np.abs(infl.varcomp.iloc[:, 0].to_numpy() ** 2 - v).max() < 3e-3  # 2.9e-4
    assert infl.converged.all() and all(c["converged"].values())
    # the estimates moved: the refits are not the full fit
    assert np.abs(infl.dfbeta.to_numpy()).max() > 0.1
    np.testing.assert_allclose(infl.estimate, cbpp_fit.beta)


def test_cbpp_cooks_distance_and_dfbetas_match_lme4(cbpp_fit, cbpp_infl):
    c = REFS["cbpp"]
    infl = cbpp_infl
    gap = np.abs(cbpp_fit.vcov.to_numpy() / np.array(c["vcov"]) - 1).max()
    assert gap < 0.03  # glmer's vcov against the exact Hessian's: 2.6%
    cd = infl.cooks_distance
    assert isinstance(cd, pd.Series) and cd.name == "herd" and cd.index.name == "herd"
    np.testing.assert_allclose(cd, _r_series(c, "cooks_distance", cd.index), rtol=0.06,
                               atol=1e-3)
    assert cd.idxmax() == 11  # herd 11 is the most influential, as in lme4
    np.testing.assert_allclose(infl.dfbetas, _r_table(c, "dfbetas", cd.index, c["x_names"]),
                               rtol=0.06, atol=0.01)


def test_definitions_are_lme4s_on_lme4s_numbers():
    """InfluenceResult fed lme4's refits gives lme4's cooks.distance and dfbetas."""
    c = REFS["cbpp"]
    lev, x = c["levels"], c["x_names"]
    V = np.array([c["vcov_without"][k] for k in lev])
    idx = pd.Index(lev, name="herd")
    fixef = pd.DataFrame(_r_table(c, "fixef_without", lev, x), index=idx, columns=x)
    se = pd.DataFrame(np.sqrt(np.diagonal(V, axis1=1, axis2=2)), index=idx, columns=x)
    infl = gj.InfluenceResult(
        group="herd", fixef=fixef, varcomp=pd.DataFrame(index=idx), se=se, vcov_without=V,
        converged=pd.Series(True, index=idx), estimate=pd.Series(c["fixef"])[x],
        varcomp_estimate=pd.Series(dtype=float),
        vcov=pd.DataFrame(c["vcov"], index=x, columns=x))
    np.testing.assert_allclose(infl.cooks_distance, _r_series(c, "cooks_distance", lev),
                               rtol=1e-10)
    np.testing.assert_allclose(infl.dfbetas, _r_table(c, "dfbetas", lev, x), rtol=1e-10)


def test_zero_weights_delete_the_cluster(cbpp_fit):
    """A herd with all weights 0 is the herd deleted: the same -log L at any theta (the
    data-only constants too), and the same fit."""
    m = cbpp_fit.model
    g = m.frame.groups[0]
    K, k = len(g.levels), 3
    W = m.frame.weights[None, :] * (g.codes[None, :] != np.arange(K)[:, None])
    one, zeroed = next((o, f) for i, o, f, _, _ in m.fit_batches(
        np.tile(m.frame.y, (K, 1)), start=cbpp_fit.theta, batch_size=K, weights=W) if i == k)
    zeroed = zeroed()
    sub = model_from_frame(m.formula, subset_frame(m.frame, np.flatnonzero(g.codes != k)),
                           m.structure.family)
    assert len(sub.frame.groups[0].levels) == K - 1
    for theta in (cbpp_fit.theta, cbpp_fit.theta + np.array([0.3, -0.2, 0.1, 0.4, 0.5])):
        assert abs(zeroed.negloglik(theta) - sub.negloglik(theta)) < 1e-8
    alone = sub.fit(start=cbpp_fit.theta)
    assert bool(one.converged) and alone.converged
    np.testing.assert_allclose(one.theta, alone.theta, atol=2e-6)  # Newton's tolerance
    assert abs(float(one.f) + alone.loglik) < 1e-8


def test_cbpp_without_each_row_matches_lme4(cbpp_fit):
    """group=None: lme4's default, one refit without each row (batch_size 15 reuses the
    per-herd program)."""
    c = REFS["cbpp_case"]
    infl = gj.influence(cbpp_fit, batch_size=15)
    assert infl.group == "case" and len(infl.fixef) == 56
    lev = [str(i + 1) for i in infl.fixef.index]  # R's rownames count from 1
    R = np.array([[c["fixef_without"][k][x] for x in c["x_names"]] for k in lev])
    assert np.abs(infl.fixef.to_numpy() - R).max() < 3e-3  # measured 7.3e-4
    np.testing.assert_allclose(infl.cooks_distance, [c["cooks_distance"][k] for k in lev],
                               rtol=0.06, atol=0.01)


def test_sleepstudy_lmer_influence_is_exact():
    """Gaussian, REML, a correlated vector term: the cross-product engine's refits (all
    levels kept, the fit's program reused) equal lmer's."""
    c = REFS["sleepstudy"]
    res = gj.fit("Reaction ~ Days + (Days | Subject)", gj.datasets.load("sleepstudy"),
                 family="gaussian")
    infl = gj.influence(res, group="Subject")
    lev = infl.fixef.index
    np.testing.assert_allclose(infl.fixef, _r_table(c, "fixef_without", lev, c["x_names"]),
                               rtol=1e-6)
    vc = infl.varcomp
    R = _r_table(c, "var_cov_comps_without", lev,
                 ["sigma^2", "v[(Intercept)]", "C[Days,(Intercept)]", "v[Days]"])
    sd0, sd1 = vc["sd_(Intercept)|Subject"], vc["sd_Days|Subject"]
    mine = np.column_stack([vc["sigma"] ** 2, sd0 ** 2,
                            vc["cor_Days.(Intercept)|Subject"] * sd0 * sd1, sd1 ** 2])
    # lmer's refits (bobyqa from the full estimates) stop within ~0.3% of the optimum in
    # the covariance, while the fixed effects agree to 1e-11
    np.testing.assert_allclose(mine, R, rtol=1e-2)
    np.testing.assert_allclose(infl.cooks_distance, _r_series(c, "cooks_distance", lev),
                               rtol=1e-3)
    np.testing.assert_allclose(infl.dfbetas, _r_table(c, "dfbetas", lev, c["x_names"]),
                               rtol=1e-3, atol=1e-6)


def test_nested_model_either_grouping_factor(cbpp):
    """Two grouping factors (obs nested in herd, joint Laplace engine): group="herd"
    leaves out every row of a herd, as lme4's influence(m, groups = "herd")."""
    c = REFS["cbpp_obs"]
    df = cbpp.assign(obs=np.arange(1, len(cbpp) + 1))
    res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.SingularFitWarning)
        infl = gj.influence(res, group="herd")
    lev = infl.fixef.index
    assert infl.converged.all()
    R = _r_table(c, "fixef_without", lev, c["x_names"])
    assert np.abs(infl.fixef.to_numpy() - R).max() < 3e-3  # measured 8.2e-5
    v = _r_table(c, "var_cov_comps_without", lev, ["obs:v[(Intercept)]",
                                                   "herd:v[(Intercept)]"])
    mine = infl.varcomp[["sd_(Intercept)|obs", "sd_(Intercept)|herd"]].to_numpy() ** 2
    assert np.abs(mine - v).max() < 3e-3
    np.testing.assert_allclose(infl.cooks_distance, _r_series(c, "cooks_distance", lev),
                               rtol=0.06, atol=1e-3)


@pytest.mark.slow
def test_salamanders_poisson_matches_lme4():
    """Poisson: where lme4 says its refit converged, the fixed effects agree to 3e-3;
    where it differs more (site R-3, a refit lme4 flags as not converged) glmm_jax's
    refit has the higher log-likelihood."""
    c = REFS["salamanders"]
    res = gj.fit("count ~ spp + mined + (1 | site)", gj.datasets.load("Salamanders"),
                 family="poisson")
    infl = gj.influence(res, group="site")
    assert infl.converged.all()
    lev = list(infl.fixef.index)
    R = _r_table(c, "fixef_without", lev, c["x_names"])
    gap = np.abs(infl.fixef.to_numpy() - R).max(axis=1)
    ok = np.array([c["converged"][k] for k in lev])
    assert gap[ok].max() < 3e-3
    m = res.model
    g = m.frame.groups[0]
    for k in np.flatnonzero(gap > 3e-3):
        assert not ok[k]
        sub = model_from_frame(m.formula, subset_frame(m.frame, np.flatnonzero(g.codes != k)),
                               m.structure.family)
        theta_r = np.r_[R[k], np.sqrt(c["var_cov_comps_without"][lev[k]]["v[(Intercept)]"])]
        theta = np.r_[infl.fixef.iloc[k], infl.varcomp.iloc[k]]
        assert sub.loglik(theta) > sub.loglik(theta_r) + 1e-3  # by 0.015


@pytest.mark.slow
def test_uncorrelated_terms_on_the_cross_product_engine():
    """(Days || Subject): two terms of one factor; the cross-product statistics change
    shape without a subject, so the refits run batched on the joint Laplace engine."""
    c = REFS["sleepstudy_uncorrelated"]
    res = gj.fit("Reaction ~ Days + (Days || Subject)", gj.datasets.load("sleepstudy"),
                 family="gaussian")
    infl = gj.influence(res, group="Subject")
    lev = infl.fixef.index
    np.testing.assert_allclose(infl.fixef, _r_table(c, "fixef_without", lev, c["x_names"]),
                               rtol=1e-6)
    np.testing.assert_allclose(infl.cooks_distance, _r_series(c, "cooks_distance", lev),
                               rtol=1e-3)


def test_a_refit_that_does_not_converge_is_flagged_not_used(cbpp_fit, monkeypatch):
    real = influence_module._refit_batched

    def one_fails(*args, **kwargs):
        out = real(*args, **kwargs)
        r, theta = out[2]
        out[2] = (replace(r, converged=False), theta)
        return out

    monkeypatch.setattr(influence_module, "_refit_batched", one_fails)
    with pytest.warns(gj.ConvergenceWarning, match="1 of 15 refits without a level of herd"):
        infl = gj.influence(cbpp_fit, group="herd")
    assert not infl.converged[3] and infl.converged.drop(3).all()
    assert infl.fixef.loc[3].isna().all() and np.isnan(infl.cooks_distance[3])
    assert infl.cooks_distance.drop(3).notna().all()
    assert "14 converged" in repr(infl)


def test_group_not_in_the_model_is_an_error_naming_it(cbpp_fit):
    with pytest.raises(gj.GLMMInputError, match=r"group='period' .*'herd'"):
        gj.influence(cbpp_fit, group="period")
    with pytest.raises(gj.GLMMInputError, match="group='hospital'"):
        gj.influence(cbpp_fit, group="hospital")
    with pytest.raises(gj.GLMMInputError, match="batch_size"):
        gj.influence(cbpp_fit, group="herd", batch_size=0)
    with pytest.raises(gj.GLMMInputError, match="GLMMResult"):
        gj.influence(object(), group="herd")


def test_fit_batches_weights_are_checked(cbpp_fit):
    m = cbpp_fit.model
    Y = m.frame.y[None, :]
    with pytest.raises(gj.GLMMInputError, match="non-negative"):
        next(m.fit_batches(Y, weights=-np.ones(len(m.frame.y))))
    with pytest.raises(gj.GLMMInputError, match="weights need shape"):
        next(m.fit_batches(Y, weights=np.ones(3)))
    lmm = gj.build_model("Reaction ~ Days + (1 | Subject)", gj.datasets.load("sleepstudy"),
                         family="gaussian")
    with pytest.raises(gj.GLMMInputError, match="engine='multi'"):
        next(lmm.fit_batches(lmm.frame.y[None, :], weights=np.ones(len(lmm.frame.y))))
