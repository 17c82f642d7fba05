"""Models without random terms (GLMs) against R's glm / MASS::glm.nb.

The reference numbers are made by ``Rscript tests/data/r_glm/make_refs.R`` (the R call
sits beside each number in ``refs.json``). Each model is fitted once per module.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import glmm_jax as gj

REFS = json.loads((Path(__file__).parent / "data" / "r_glm" / "refs.json").read_text())


def _toenail():
    df = gj.datasets.load("toenail")
    return df.assign(y=(df["outcome"] == "moderate or severe").astype(int))


def _salamanders():
    return gj.datasets.load("salamanders")


# name in refs.json: (formula, data, family, link, keyword arguments of gj.fit)
CASES = {
    "cbpp_logit": ("cbind(incidence, size - incidence) ~ period",
                   lambda: gj.datasets.load("cbpp"), "binomial", None, {}),
    "cbpp_cloglog": ("cbind(incidence, size - incidence) ~ period + size",
                     lambda: gj.datasets.load("cbpp"), "binomial", "cloglog", {}),
    "toenail_probit": ("y ~ treatment * visit", _toenail, "binomial", "probit", {}),
    "salamanders_poisson": ("count ~ spp + mined", _salamanders, "poisson", None, {}),
    "salamanders_weights_offset": (
        "count ~ spp + mined + offset(log(sample))", _salamanders, "poisson", None,
        {"weights": lambda d: d["cover"] + 2, "offset": lambda d: d["Wtemp"] / 5}),
    "sleepstudy_gaussian": ("Reaction ~ Days", lambda: gj.datasets.load("sleepstudy"),
                            "gaussian", None, {"reml": False}),
    "sleepstudy_gaussian_reml": ("Reaction ~ Days", lambda: gj.datasets.load("sleepstudy"),
                                 "gaussian", None, {"reml": True}),
    "sleepstudy_gamma": ("Reaction ~ Days", lambda: gj.datasets.load("sleepstudy"),
                         "gamma", "log", {}),
    "salamanders_nb": ("count ~ spp + mined", _salamanders, "negative_binomial", None, {}),
}


@pytest.fixture(scope="module")
def fits():
    """Every case fitted once (on first use), with the warnings it raised."""
    cache = {}

    def get(name):
        if name not in cache:
            formula, data, family, link, kw = CASES[name]
            df = data()
            kw = {k: (v(df) if callable(v) else v) for k, v in kw.items()}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = gj.fit(formula, df, family=family, link=link, **kw)
            cache[name] = res, [w for w in caught if issubclass(w.category, gj.GLMMWarning)]
        return cache[name][0]

    get.warnings = lambda name: (get(name), cache[name][1])[1]
    return get


@pytest.mark.parametrize("name", list(CASES))
def test_loglik_and_coefficients_match_r(fits, name):
    ref, res = REFS[name], fits(name)
    assert res.converged and not res.singular and fits.warnings(name) == []
    # logLik(glm) / logLik(glm.nb); Gamma: at the ML shape; REML: lme4's criterion
    # without random terms (= nlme::gls's REML logLik)
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-6)
    assert list(res.fixef.index) == list(ref["coef"])
    np.testing.assert_allclose(res.fixef.to_numpy(), list(ref["coef"].values()),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_standard_errors_match_r(fits, name):
    ref, res = REFS[name], fits(name)
    se = res.se.to_numpy()
    if "se_vcov" in ref:
        # R's vcov() where it is glmm_jax's inverse observed information: canonical
        # links (logit, log-Poisson), Gaussian with the ML sigma (vcov(fit, dispersion
        # = sigma_ML^2)), REML with R's own (REML) sigma
        np.testing.assert_allclose(se, list(ref["se_vcov"].values()), rtol=1e-4)
    if "se_observed" in ref:
        # every ML case (probit, cloglog, Gamma and NB only here): numDeriv's Hessian of
        # R's -logLik in (coefficients, log dispersion); vcov() there is the expected
        # information of the coefficients alone (Gamma: with the Pearson dispersion)
        np.testing.assert_allclose(se, list(ref["se_observed"].values()), rtol=1e-4)


@pytest.mark.parametrize("name, key", [("sleepstudy_gaussian", "sigma"),
                                       ("sleepstudy_gaussian_reml", "sigma"),
                                       ("sleepstudy_gamma", "shape"),
                                       ("salamanders_nb", "theta")])
def test_dispersion_matches_r(fits, name, key):
    assert fits(name).dispersion == pytest.approx(REFS[name][key], rel=1e-5)


def test_result_is_a_glmm_result_without_terms(fits):
    res = fits("cbpp_logit")
    assert res.terms == () and res.ranef == {} and not res.singular
    assert res.theta_names == ["(Intercept)", "period2", "period3", "period4"]
    assert res.hessian.shape == res.cov_theta.shape == (4, 4)
    assert res.convergence.status == "converged" and res.df_model == 4
    assert res.varcorr.empty and list(res.varcorr.columns) == [
        "group", "term1", "term2", "variance", "sd", "corr"]
    m = res.model
    assert m.frame.groups == () and res.loglik == pytest.approx(-m.negloglik(res.theta))


def test_theta_has_the_log_dispersion(fits):
    res = fits("salamanders_nb")
    assert res.theta_names[-1] == "log(theta)" and len(res.theta) == 9
    assert fits("sleepstudy_gamma").theta_names == ["(Intercept)", "Days", "log(shape)"]


def test_gaussian_varcorr_is_the_residual_row(fits):
    for name in ("sleepstudy_gaussian", "sleepstudy_gaussian_reml"):
        res = fits(name)
        vc = res.varcorr
        assert list(vc["group"]) == ["Residual"]
        assert vc["sd"].iloc[0] == pytest.approx(res.sigma)


def test_reml_integrates_out_the_fixed_effects(fits):
    res = fits("sleepstudy_gaussian_reml")
    assert res.reml and res.theta_names == ["log(sigma)"]
    # R's vcov(glm): sigma^2 (X'X)^-1 with the REML sigma
    assert res.sigma == pytest.approx(REFS["sleepstudy_gaussian_reml"]["sigma"], rel=1e-6)


def test_summary_has_no_random_effects_block(fits):
    text = fits("cbpp_logit").summary()
    lines = text.splitlines()
    assert lines[0] == "Generalized linear model fit by maximum likelihood [glmm_jax]"
    assert "Random effects:" not in text and "groups" not in text
    assert "Number of obs: 56" in lines
    assert "Fixed effects:" in lines
    gauss = fits("sleepstudy_gaussian").summary().splitlines()
    assert gauss[0].startswith("Linear model fit by maximum likelihood")
    assert "Number of obs: 180" in gauss and "Residual Std.Dev.: 47.45" in gauss
    assert "Dispersion parameter (shape): 41.3" in fits("sleepstudy_gamma").summary()


def test_engines_that_need_random_terms_refuse():
    df = gj.datasets.load("cbpp")
    for engine in ("single", "lmm"):
        with pytest.raises(gj.GLMMInputError, match="without random terms"):
            gj.build_model("cbind(incidence, size - incidence) ~ period", df,
                           engine=engine)
