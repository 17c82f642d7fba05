"""Intervals (Wald, profile, bootstrap), odds/rate ratios, simulation and the bootstrap.

References: lme4 1.1-31's ``confint`` (tests/data/r_inference/make_refs.R), closed forms
and brute-force integrals written here.
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
from scipy import integrate, special, stats

import glmm_jax as gj

REFS = json.loads((Path(__file__).parent / "data" / "r_inference" / "refs.json").read_text())
SAL_FORMULA = "count ~ spp + mined + (1 | site)"
SLEEP_FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def cbpp_fit():
    return gj.fit(CBPP_FORMULA, gj.datasets.load("cbpp"))


@pytest.fixture(scope="module")
def sal_fit():
    return gj.fit(SAL_FORMULA, gj.datasets.load("salamanders"), family="poisson")


@pytest.fixture(scope="module")
def sleep_ml():
    return gj.fit(SLEEP_FORMULA, gj.datasets.load("sleepstudy"), family="gaussian",
                  reml=False)


def _r_interval(ref: dict) -> np.ndarray:
    return np.c_[ref["lower"], ref["upper"]]


def test_profile_cbpp_equals_lme4(cbpp_fit):
    ci = cbpp_fit.conf_int("profile")
    ref = REFS["cbpp_confint_profile"]
    assert list(ci.index) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3",
                              "period4"]  # lme4's .sig01, then the fixed effects
    np.testing.assert_allclose(ci[["lower", "upper"]].to_numpy(), _r_interval(ref), atol=2e-3)
    assert ci.attrs["notes"] == [] and ci.attrs["n_refits"] > 0


def test_profile_salamanders_equals_lme4(sal_fit):
    ci = sal_fit.conf_int("profile")
    np.testing.assert_allclose(ci[["lower", "upper"]].to_numpy(),
                               _r_interval(REFS["sal_confint_profile"]), atol=2e-3)


def test_profile_vector_term_and_sigma_equal_lme4(sleep_ml):
    """SDs and the correlation of (Days | Subject) by the SD/correlation coordinates."""
    ci = sleep_ml.conf_int("profile")
    assert list(ci.index) == ["sd_(Intercept)|Subject", "sd_Days|Subject",
                              "cor_Days.(Intercept)|Subject", "sigma", "(Intercept)", "Days"]
    ref = REFS["sleep_confint_profile_ML"]  # rows .sig01 .sig02 (cor) .sig03 .sigma ...
    r = _r_interval(ref)[[0, 2, 1, 3, 4, 5]]
    np.testing.assert_allclose(ci[["lower", "upper"]].to_numpy(), r, rtol=2e-4, atol=2e-4)


def test_profile_of_reml_fit_is_the_ml_profile_as_lme4():
    res = gj.fit(SLEEP_FORMULA, gj.datasets.load("sleepstudy"), family="gaussian")
    ci = res.conf_int("profile")
    r = _r_interval(REFS["sleep_confint_profile_REML"])[[0, 2, 1, 3, 4, 5]]
    np.testing.assert_allclose(ci[["lower", "upper"]].to_numpy(), r, rtol=2e-4, atol=2e-4)
    assert "maximum likelihood fit" in ci.attrs["notes"][0]
    np.testing.assert_allclose(ci["estimate"].iloc[-2:], res.beta)  # the REML estimates


def test_profile_zeta_at_the_ends(cbpp_fit):
    """At each end, 2 (logLik_hat - max logLik with the parameter held there) = z^2."""
    ci = cbpp_fit.conf_int("profile", level=0.9)
    m = cbpp_fit.model
    z = stats.norm.ppf(0.95)
    for name in ("period2", "(Intercept)"):
        for end in ci.loc[name, ["lower", "upper"]]:
            refit = m.fit(start=cbpp_fit.theta, fixed={name: end})
            assert 2 * (cbpp_fit.loglik - refit.loglik) == pytest.approx(z**2, abs=1e-4)


def test_profile_sd_lower_end_is_zero_at_the_boundary():
    """A variance estimated near 0: the profile reaches the boundary first (lme4: 0)."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 8), "x": rng.normal(size=240)})
    df["y"] = rng.binomial(1, special.expit(-0.3 + 0.5 * df["x"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.SingularFitWarning)
        res = gj.fit("y ~ x + (1 | g)", df)
        ci = res.conf_int("profile")
    assert ci.loc["sd_(Intercept)|g", "lower"] == 0.0
    assert ci.loc["sd_(Intercept)|g", "upper"] > 0.1


def test_wald_is_estimate_pm_z_se(cbpp_fit):
    ci = cbpp_fit.conf_int("wald", level=0.9)
    z = stats.norm.ppf(0.95)
    fe = ci.loc[list(cbpp_fit.x_names)]
    np.testing.assert_array_equal(fe["lower"], cbpp_fit.beta - z * cbpp_fit.se.to_numpy())
    np.testing.assert_array_equal(fe["upper"], cbpp_fit.beta + z * cbpp_fit.se.to_numpy())
    assert np.isnan(ci.loc["sd_(Intercept)|herd", ["lower", "upper"]]).all()  # as lme4


def test_odds_ratios_exponentiate(cbpp_fit):
    orat = cbpp_fit.odds_ratios()
    ci = cbpp_fit.conf_int()
    np.testing.assert_allclose(orat.to_numpy(), np.exp(ci.loc[list(cbpp_fit.x_names)]))
    # the primer's worked example: beta = 0.35, SE 0.18 -> OR 1.42 (0.997, 2.02)
    p = len(cbpp_fit.x_names)
    example = replace(cbpp_fit, beta=np.full(p, 0.35), beta_cov=np.eye(p) * 0.18**2)
    assert example.odds_ratios().loc["period2"].round(3).tolist() == [1.419, 0.997, 2.019]
    prof = cbpp_fit.odds_ratios("profile")
    np.testing.assert_allclose(prof["lower"], np.exp(cbpp_fit.conf_int("profile")
                                                     ["lower"].iloc[1:]))


def test_ratio_links_are_checked(cbpp_fit, sal_fit):
    with pytest.raises(gj.GLMMInputError, match="log link.*'logit'"):
        cbpp_fit.rate_ratios()
    with pytest.raises(gj.GLMMInputError, match="logit link.*'log'"):
        sal_fit.odds_ratios()
    assert (sal_fit.rate_ratios()["estimate"] == np.exp(sal_fit.beta)).all()
    with pytest.raises(gj.GLMMInputError, match="method"):
        cbpp_fit.conf_int("exact")
    with pytest.raises(gj.GLMMInputError, match="level"):
        cbpp_fit.conf_int(level=95)


# ---- simulation ----------------------------------------------------------------------


def test_simulate_new_effects_has_the_marginal_mean(cbpp_fit):
    """Mean over simulations = trials x the marginal probability (a 1-D integral)."""
    Y = cbpp_fit.simulate(4000, seed=2)
    f = cbpp_fit.frame
    sd = cbpp_fit.terms[0].L[0, 0]
    eta = f.X @ cbpp_fit.beta
    p = [integrate.quad(lambda b, e=e: special.expit(e + b) * stats.norm.pdf(b, 0, abs(sd)),
                        -10, 10)[0] for e in eta]
    mean = Y.mean(axis=1) / f.trials
    se = np.sqrt(np.maximum(Y.var(axis=1), 1e-12) / 4000) / f.trials
    assert np.all(np.abs(mean - p) < 5 * se + 1e-9)
    assert np.all(Y <= f.trials[:, None]) and np.all(Y == np.round(Y))


def test_simulate_conditional_uses_the_modes(cbpp_fit):
    Y = cbpp_fit.simulate(4000, seed=5, random_effects="conditional")
    f = cbpp_fit.frame
    p = special.expit(f.X @ cbpp_fit.beta + cbpp_fit.terms[0].b[f.groups[0].codes, 0])
    se = np.sqrt(f.trials * p * (1 - p) / 4000)
    assert np.all(np.abs(Y.mean(axis=1) - f.trials * p) < 5 * se + 1e-9)


def test_simulate_gaussian_variance_and_seeds(sleep_ml):
    Y = sleep_ml.simulate(3000, seed=1, random_effects="conditional")
    resid = Y - Y.mean(axis=1, keepdims=True)
    assert resid.var() == pytest.approx(sleep_ml.sigma**2, rel=0.03)
    np.testing.assert_array_equal(sleep_ml.simulate(2, seed=7), sleep_ml.simulate(2, seed=7))
    assert not np.array_equal(sleep_ml.simulate(2, seed=7), sleep_ml.simulate(2, seed=8))
    with pytest.raises(gj.GLMMInputError, match="random_effects"):
        sleep_ml.simulate(2, random_effects="marginal")
    with pytest.raises(gj.GLMMInputError, match="nsim"):
        sleep_ml.simulate(0)


# ---- bootstrap -----------------------------------------------------------------------


def test_bootstrap_replicates_and_intervals(cbpp_fit):
    boot = gj.bootstrap(cbpp_fit, n=200, seed=1)
    assert boot.n == 200 and boot.replicates.shape[0] == 200 - boot.n_failed
    assert list(boot.replicates.columns) == list(cbpp_fit.conf_int().index)
    ci = boot.conf_int()
    q = boot.replicates.quantile([0.025, 0.975])
    np.testing.assert_allclose(ci["lower"], q.iloc[0], rtol=1e-14)
    # the replicates' spread is the sampling spread: SDs near the Wald SEs, and near
    # lme4's bootMer SDs (200 refits each: Monte Carlo error ~ 10% of each SD)
    sd = boot.replicates[list(cbpp_fit.x_names)].std()
    np.testing.assert_allclose(sd / cbpp_fit.se, 1.0, atol=0.3)
    r_sd = pd.Series(REFS["cbpp_bootMer"]["boot_sd"])[list(cbpp_fit.x_names)]
    np.testing.assert_allclose(sd / r_sd, 1.0, atol=0.25)
    again = cbpp_fit.conf_int("bootstrap", n=200, seed=1)
    pd.testing.assert_frame_equal(again, ci)


def test_bootstrap_statistic_and_errors(cbpp_fit, monkeypatch):
    boot = gj.bootstrap(cbpp_fit, n=16, seed=3, statistic=lambda r: r.loglik)
    assert list(boot.replicates.columns) == ["t1"] and boot.estimate["t1"] == cbpp_fit.loglik
    with pytest.raises(gj.GLMMInputError, match="positive integer"):
        gj.bootstrap(cbpp_fit, n=0)
    module = importlib.import_module("glmm_jax.bootstrap")  # (gj.bootstrap: the function)
    monkeypatch.setattr(module, "_status", lambda one: "line_search_failed")
    with pytest.raises(gj.GLMMFitError, match="none of the 8 refits.*line_search_failed: 8"):
        gj.bootstrap(cbpp_fit, n=8)


@pytest.mark.slow
def test_bootstrap_coverage_small():
    """Percentile intervals cover the truth about 95% of the time (small version: 24
    simulated datasets; the benchmark-sized run is in benchmarks/bench_inference.py)."""
    rng = np.random.default_rng(11)
    J, n_j, beta, sd = 30, 10, np.array([-0.5, 1.0]), 0.8
    df = pd.DataFrame({"g": np.repeat(np.arange(J), n_j), "x": rng.normal(size=J * n_j)})

    def draw():
        b = rng.normal(0, sd, J)[df["g"]]
        return rng.binomial(1, special.expit(beta[0] + beta[1] * df["x"] + b))

    model = gj.build_model("y ~ x + (1 | g)", df.assign(y=draw()))
    covered, total = 0, 0
    truth = np.r_[sd, beta]
    for _ in range(24):
        y = draw()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gj.GLMMWarning)
            res = model.with_response(y).fit()
        if not res.converged:
            continue
        ci = gj.bootstrap(res, n=100, seed=int(rng.integers(1 << 30))).conf_int()
        covered += int(np.sum((ci["lower"] <= truth) & (truth <= ci["upper"])))
        total += 3
    assert total >= 60
    assert 0.8 <= covered / total <= 0.99  # (too wide intervals would cover every time)


def test_predict_matches_levels_given_as_text(cbpp_fit):
    """herd "3" is herd 3 (R's levels are strings), not a new level predicted at b = 0."""
    df = gj.datasets.load("cbpp").head(4)
    as_text = df.assign(herd=df["herd"].astype(str))
    np.testing.assert_array_equal(cbpp_fit.predict(as_text), cbpp_fit.predict(df))
    assert not np.allclose(cbpp_fit.predict(as_text),
                           cbpp_fit.predict(df, random_effects=False))
