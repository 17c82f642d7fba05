"""glmm_jax against lme4 and glmmTMB on the R reference datasets.

All expected numbers come from tests/data/reference_fits.json (fits by lme4 1.1.31 and
glmmTMB 1.1.5, and exact log-likelihoods at the reference estimates by brute-force
quadrature).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import r_sorted

import glmm_jax as gj

CASE_NAMES = ["cbpp_laplace", "cbpp_agq25", "owls_poisson", "owls_nbinom2",
              "salamanders_poisson", "toenail_laplace", "sleepstudy_ml", "sleepstudy_reml"]

LOGLIK_BELOW = 1e-4  # glmm_jax may not be worse than the best reference by more than this
LOGLIK_ABOVE = 0.05  # ... nor better by more than this (same objective, near-optimal peers)
BETA_ATOL = 2e-3
SD_RTOL = 0.01
SE_RTOL = 0.02


def _refs(ref: dict) -> dict:
    return {k: ref[k] for k in ("lme4", "glmmTMB") if k in ref}


def _better(ref: dict) -> dict:
    """The reference fit (lme4 or glmmTMB) with the higher log-likelihood.

    For nAGQ > 1 lme4's binomial logLik is on another scale (see the JSON's
    logLik_note), so only lme4 is available there and is taken as it is.
    """
    refs = _refs(ref)
    if ref.get("nAGQ", 1) > 1:
        return refs["lme4"]
    return max(refs.values(), key=lambda r: r["logLik"])


def _ref_sds(ref: dict) -> dict[tuple[str, str | None], float]:
    """Reference random-effect SDs (and correlations) keyed by (term1, term2)."""
    if "lme4" in ref:
        return {(r["var1"], r["var2"]): r["sdcor"] for r in ref["lme4"]["varcorr"]
                if r["grp"] != "Residual"}
    return {("(Intercept)", None): ref["glmmTMB"]["re_sd"]}


@pytest.fixture(scope="module", params=CASE_NAMES)
def case(request, reference, ref_fit):
    name = request.param
    return name, reference[name], ref_fit(name)


def test_converged_without_warnings(case, ref_fit):
    name, _, res = case
    assert res.converged, res.messages
    assert not res.singular
    caught = ref_fit.with_warnings(name)[1]
    assert not caught, [str(w.message) for w in caught]
    assert np.isfinite(res.loglik)


def test_loglik(case):
    name, ref, res = case
    if ref.get("nAGQ", 1) > 1:
        # lme4's nAGQ>1 logLik omits constants; the JSON's exact log-likelihood at lme4's
        # nAGQ=25 estimates is the comparable number. 25-node AGHQ is exact to ~1e-10 here,
        # so glmm_jax's maximum may exceed it only by the distance between the optima.
        best = ref["exact_logLik_at_reference_estimates"]
        assert res.loglik >= best - LOGLIK_BELOW
        assert res.loglik <= best + 1e-3
    else:
        best = max(r["logLik"] for r in _refs(ref).values())
        assert res.loglik >= best - LOGLIK_BELOW, (res.loglik, best)
        assert res.loglik <= best + LOGLIK_ABOVE, (res.loglik, best)


def test_fixed_effects(case):
    _, ref, res = case
    better = _better(ref)
    expected = pd.Series(better["fixef"])
    assert list(res.fixef.index) == list(expected.index)
    np.testing.assert_allclose(res.fixef.to_numpy(), expected.to_numpy(), rtol=0, atol=BETA_ATOL)


def test_random_effect_sds(case):
    _, ref, res = case
    vc = res.varcorr
    for (t1, t2), value in _ref_sds(ref).items():
        if t2 is None:
            row = vc[(vc.group != "Residual") & (vc.term1 == t1) & vc.term2.isna()]
            assert len(row) == 1, (t1, vc)
            assert row["sd"].iloc[0] == pytest.approx(value, rel=SD_RTOL), t1
            assert row["variance"].iloc[0] == pytest.approx(row["sd"].iloc[0] ** 2, rel=1e-10)
        else:
            row = vc[(vc.term1 == t1) & (vc.term2 == t2)]
            assert len(row) == 1, (t1, t2, vc)
            assert row["corr"].iloc[0] == pytest.approx(value, abs=5e-3), (t1, t2)
    if "dispersion" in ref.get("glmmTMB", {}):  # NB2 theta (glmmTMB's sigma(fit))
        assert res.dispersion == pytest.approx(ref["glmmTMB"]["dispersion"], rel=SD_RTOL)


def test_standard_errors(case):
    name, ref, res = case
    if "glmmTMB" in ref:
        expected = pd.Series(ref["glmmTMB"]["se"])
    elif name == "cbpp_agq25":
        # lme4 computes nAGQ>1 standard errors from a finite-difference Hessian of the
        # full AGHQ deviance (beta and theta jointly): the same quantity as glmm_jax's.
        expected = pd.Series(ref["lme4"]["se"])
    elif name == "sleepstudy_ml":
        # lme4's LMM standard errors are (X' V^-1 X)^-1 at fixed covariance parameters.
        # sleepstudy is balanced with the same Z = X in every subject, so GLS = OLS for
        # every covariance and d beta_hat / d theta = 0, i.e. the beta-theta block of the
        # Hessian vanishes: the full-Hessian SEs of glmm_jax must agree.
        expected = pd.Series(ref["lme4"]["se"])
    elif name == "sleepstudy_reml":
        # REML integrates the fixed effects out; their covariance given the covariance
        # parameters is lme4's sigma^2 (X' V^-1 X)^-1
        expected = pd.Series(ref["lme4"]["se"])
    else:  # pragma: no cover - every case has one of the above
        pytest.fail(f"no reference SEs for {name}")
    np.testing.assert_allclose(res.se[expected.index].to_numpy(), expected.to_numpy(),
                               rtol=SE_RTOL)
    # vcov is the covariance of the fixed effects: its diagonal holds the squared SEs
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov.to_numpy())), res.se.to_numpy(),
                               rtol=1e-12)
    assert list(res.vcov.index) == list(res.fixef.index) == list(res.vcov.columns)


@pytest.mark.parametrize("name", [n for n in CASE_NAMES
                                  if n not in ("owls_nbinom2", "sleepstudy_ml",
                                               "sleepstudy_reml")])
def test_ranef_head(name, reference, ref_fit):
    # (owls_nbinom2 has no lme4 fit and sleepstudy no ranef_head in the reference)
    ref, res = reference[name], ref_fit(name)
    (group, head), = ref["lme4"]["ranef_head"].items()
    table = res.ranef[group]
    levels = list(table.index)
    # R orders factor levels numerically for numbers and by its (case-insensitive) locale
    # collation for strings; lme4's ranef_head holds the first five levels in that order.
    if pd.api.types.is_numeric_dtype(table.index):
        first = sorted(levels)[:5]
    else:
        first = r_sorted(levels)[:5]
    got = table.loc[first, "(Intercept)"].to_numpy()
    expected = np.asarray(head, dtype=float)[:, 0]
    # lme4's conditional modes are evaluated at lme4's own optimum, which differs slightly
    # from the maximum likelihood estimates (e.g. toenail: lme4's SD is 4.732 where the
    # higher-likelihood glmmTMB/glmm_jax optimum is ~4.76, lme4's logLik is 0.009 lower);
    # conditional modes move with those parameters (roughly in proportion to the SD), so
    # compare loosely: 2e-2 absolute plus 2% of the mode's size.
    np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-2)
    # conditional SDs are positive and smaller than the marginal SD of the effect
    sd = res.varcorr.query("term1 == '(Intercept)' and term2.isna()")["sd"].iloc[0]
    condsd = table["condsd (Intercept)"].to_numpy()
    assert np.all(condsd > 0) and np.all(condsd < sd)


def test_information_criteria(case):
    name, ref, res = case
    fixef = ref.get("lme4", ref.get("glmmTMB"))["fixef"]
    n_cov = len(_ref_sds(ref))  # variances and correlations
    n_disp = 1 if name in ("owls_nbinom2", "sleepstudy_ml", "sleepstudy_reml") else 0
    df = len(fixef) + n_cov + n_disp
    if "lme4" in ref and "df" in ref["lme4"]:
        assert ref["lme4"]["df"] == df  # the parameter count above is lme4's
    assert res.df_model == df
    assert res.nobs == ref["n"]
    assert res.aic == pytest.approx(-2 * res.loglik + 2 * df, rel=1e-12)
    assert res.bic == pytest.approx(-2 * res.loglik + np.log(ref["n"]) * df, rel=1e-12)
    assert res.deviance == pytest.approx(-2 * res.loglik, rel=1e-12)
    assert res.df_resid == ref["n"] - df
    if "lme4" in ref and "AIC" in ref["lme4"] and ref.get("nAGQ", 1) == 1:
        # same AIC/BIC formulas as lme4: the difference is only the logLik difference
        lme4 = ref["lme4"]
        shift = -2 * (res.loglik - lme4["logLik"])
        assert res.aic == pytest.approx(lme4["AIC"] + shift, abs=1e-6)
        assert res.bic == pytest.approx(lme4["BIC"] + shift, abs=1e-6)


def test_sleepstudy_residual_sd(reference, ref_fit):
    res = ref_fit("sleepstudy_ml")
    lme4 = reference["sleepstudy_ml"]["lme4"]
    assert res.sigma == pytest.approx(lme4["sigma"], rel=SD_RTOL)
    assert res.dispersion == pytest.approx(res.sigma, rel=1e-12)
    vc = res.varcorr
    resid = vc[vc.group == "Residual"]
    assert len(resid) == 1
    assert resid["sd"].iloc[0] == pytest.approx(lme4["sigma"], rel=SD_RTOL)
    assert resid["variance"].iloc[0] == pytest.approx(lme4["sigma"] ** 2, rel=2 * SD_RTOL)
    cov = vc[(vc.term1 == "(Intercept)") & (vc.term2 == "Days")]["variance"].iloc[0]
    ref_cov = [r for r in lme4["varcorr"] if r["var2"] == "Days"][0]["vcov"]
    assert cov == pytest.approx(ref_cov, rel=0.05)


def test_sigma_is_one_without_gaussian(ref_fit):
    res = ref_fit("cbpp_laplace")
    assert res.sigma == 1.0
    assert res.dispersion is None
    assert "Residual" not in set(res.varcorr.group)


def test_summary_mentions_estimates(ref_fit):
    res = ref_fit("owls_nbinom2")
    text = res.summary()
    assert isinstance(text, str)
    for name in res.fixef.index:
        assert name in text
    assert "Nest" in text
    theta = f"{round(res.dispersion, 4):g}"  # MASS's format(round(theta, 4))
    assert f" Family: Negative Binomial({theta})  ( log )" in text  # as glmer.nb
    agq = ref_fit("cbpp_agq25").summary()
    assert "nAGQ = 25" in agq


def test_result_tables_are_copies(ref_fit):
    res = ref_fit("cbpp_laplace")
    before = res.fixef.copy()
    f = res.fixef
    f.iloc[0] = 1e6
    pd.testing.assert_series_equal(res.fixef, before)
    r = res.ranef["herd"]
    r.iloc[0, 0] = 1e6
    assert res.ranef["herd"].iloc[0, 0] != 1e6
    assert isinstance(res, gj.GLMMResult)


def test_flags_are_python_bools(ref_fit):
    res = ref_fit("cbpp_laplace")
    assert type(res.converged) is bool and type(res.singular) is bool
