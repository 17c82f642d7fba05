"""Tidy tables (glmm_jax/tidy.py) against R's broom.mixed 0.2.9.4 on lme4 and glmmTMB fits
(tests/data/r_tidy/make_refs.R -> refs.json).

Structure (columns, rows, their order, terms and groups) must match exactly. Numbers
are compared at glmm_jax's own estimates to the optimizers' gap (glmer stops ~2e-4 from
the Laplace optimum on cbpp; lmer's REML fit agrees to ~1e-6), glmer's fixed-effect SEs
to glmmTMB's (the same full-Hessian convention; lme4's glmer differs by ~1%), and the
per-row and per-level quantities at exactly lme4's estimates (a fit with every
parameter held there) to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import glmm_jax as gj

REFS = json.loads((Path(__file__).parent / "data" / "r_tidy" / "refs.json").read_text())
TO_SNAKE = {"std.error": "std_error", "p.value": "p_value", "conf.low": "conf_low",
            "conf.high": "conf_high", "logLik": "log_lik", "AIC": "aic", "BIC": "bic",
            "REMLcrit": "reml_crit", "df.residual": "df_residual", ".fitted": "fitted",
            ".resid": "resid", ".fixed": "fixed", ".mu": "mu", ".offset": "offset",
            ".sqrtXwt": "sqrt_xwt", ".sqrtrwt": "sqrt_rwt", ".weights": "weights",
            ".wtres": "wtres"}
TEXT = ("effect", "component", "group", "level", "term")


def r_table(entry: dict) -> pd.DataFrame:
    """An R table of refs.json with glmm_jax's column names (NA as NaN / None)."""
    cols = {TO_SNAKE.get(k, k): v if isinstance(v, list) else [v] for k, v in entry.items()}
    return pd.DataFrame({k: np.array(v, dtype=object if k in TEXT else float)
                         for k, v in cols.items()})


def same_structure(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(ours.columns) == list(ref.columns)
    for c in TEXT:
        if c in ref:
            assert [None if pd.isna(v) else str(v) for v in ours[c]] == \
                [None if pd.isna(v) else v for v in ref[c]], c
    for c in ref.columns:  # NA exactly where broom.mixed has NA
        if c not in TEXT:
            np.testing.assert_array_equal(ours[c].isna().to_numpy(), ref[c].isna().to_numpy(),
                                          err_msg=c)


def close(ours, ref, rtol=0.0, atol=0.0):
    np.testing.assert_allclose(np.asarray(ours, float), np.asarray(ref, float), rtol=rtol,
                               atol=atol, equal_nan=True)


def held_at(res, theta):
    """The fit with every parameter held at ``theta`` (its modes solved there)."""
    theta = np.asarray(theta, dtype=float)
    return res.model.fit(start=theta, fixed=dict(zip(res.theta_names, theta, strict=True)))


@pytest.fixture(scope="module")
def cbpp_res(ref_fit):
    return ref_fit("cbpp_laplace")


@pytest.fixture(scope="module")
def cbpp_lme4(cbpp_res):
    r = REFS["cbpp_glmer"]
    return held_at(cbpp_res, np.r_[r["fixef"], r["theta"]])


@pytest.fixture(scope="module")
def sleep_res(ref_fit):
    return ref_fit("sleepstudy_reml")


# ---- tidy ------------------------------------------------------------------------------
def test_tidy_cbpp_matches_broom(cbpp_res):
    r, tmb = r_table(REFS["cbpp_glmer"]["tidy"]), r_table(REFS["cbpp_glmmTMB"]["tidy"])
    ours = gj.tidy(cbpp_res)
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], atol=1e-3)
    close(ours["estimate"], tmb["estimate"], atol=2e-4)
    close(ours["std_error"], tmb["std_error"], rtol=1e-5)  # glmmTMB's SE convention
    close(ours["std_error"], r["std_error"], rtol=0.02)  # lme4's: ~1% smaller
    close(ours["p_value"], tmb["p_value"], rtol=5e-3)
    close(ours["statistic"], ours["estimate"] / ours["std_error"], rtol=1e-14)


def test_tidy_cbpp_wald_intervals(cbpp_res):
    tmb = r_table(REFS["cbpp_glmmTMB"]["tidy"])
    ours = gj.tidy(cbpp_res, conf_int=True)
    close(ours["conf_low"][:4], tmb["conf_low"][:4], atol=1e-3)
    close(ours["conf_high"][:4], tmb["conf_high"][:4], atol=1e-3)
    r90 = r_table(REFS["cbpp_glmer"]["tidy_wald"])  # 90%: NaN for ran_pars, as broom.mixed
    ours90 = gj.tidy(cbpp_res, conf_int=True, conf_level=0.9)
    same_structure(ours90, r90)
    z = stats.norm.ppf(0.95)
    close(ours90["conf_high"] - ours90["conf_low"], 2 * z * ours90["std_error"], rtol=1e-12)
    close(ours90["conf_low"], r90["conf_low"], atol=0.01)


def test_tidy_cbpp_profile_intervals(cbpp_res):
    r = r_table(REFS["cbpp_glmer"]["tidy_profile"])
    ours = gj.tidy(cbpp_res, conf_int=True, conf_method="profile")
    same_structure(ours, r)
    close(ours["conf_low"], r["conf_low"], atol=2e-4)  # measured: 5e-5
    close(ours["conf_high"], r["conf_high"], atol=2e-4)


def test_tidy_exponentiate(cbpp_res, ref_fit):
    r = r_table(REFS["cbpp_glmer"]["tidy_exp"])
    ours = gj.tidy(cbpp_res, effects="fixed", conf_int=True, exponentiate=True)
    same_structure(ours, r)
    plain = gj.tidy(cbpp_res, effects="fixed", conf_int=True)
    close(ours["estimate"], np.exp(plain["estimate"]), rtol=1e-14)
    close(ours["std_error"], plain["std_error"] * np.exp(plain["estimate"]), rtol=1e-14)
    close(ours["conf_low"], np.exp(plain["conf_low"]), rtol=1e-14)
    close(ours["statistic"], plain["statistic"], rtol=0)
    close(ours["estimate"], r["estimate"], rtol=1e-3)
    close(ours["std_error"], r["std_error"], rtol=0.03)
    # a Poisson model with 8 coefficients: rate ratios, the ran_pars row not exponentiated
    sal = ref_fit("salamanders_poisson")
    r = r_table(REFS["salamanders_glmer"]["tidy_exp"])
    ours = gj.tidy(sal, conf_int=True, exponentiate=True)
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], rtol=2e-3)
    close(ours["std_error"], r["std_error"], rtol=0.03)
    close(ours["conf_low"], r["conf_low"], rtol=0.03)
    close(ours["conf_high"], r["conf_high"], rtol=0.03)


def test_tidy_ran_vals_and_ran_coefs_cbpp(cbpp_lme4, cbpp_res):
    r = r_table(REFS["cbpp_glmer"]["ran_vals"])
    ours = gj.tidy(cbpp_lme4, effects="ran_vals", conf_int=True)
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], atol=1e-6)  # the modes at lme4's estimates
    close(ours["std_error"], r["std_error"], rtol=1e-4)  # condVar: 3e-5 apart
    close(ours["conf_low"], r["conf_low"], atol=5e-5)
    close(gj.tidy(cbpp_res, effects="ran_vals")["estimate"], r["estimate"], atol=2e-3)
    r = r_table(REFS["cbpp_glmer"]["ran_coefs"])
    ours = gj.tidy(cbpp_lme4, effects="ran_coefs")
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], atol=1e-6)


def test_tidy_sleepstudy_matches_broom(sleep_res):
    entry = REFS["sleep_lmer"]
    r = r_table(entry["tidy"])
    ours = gj.tidy(sleep_res)
    same_structure(ours, r)  # no p_value column: broom.mixed's for a plain lmer fit
    close(ours["estimate"], r["estimate"], rtol=2e-5)
    close(ours["std_error"], r["std_error"], rtol=2e-5)
    r = r_table(entry["tidy_vcov"])  # broom.mixed's effects order is (ran_pars, fixed)
    ours = gj.tidy(sleep_res, effects=("fixed", "ran_pars"), scales=(None, "vcov"))
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], rtol=2e-5)
    r = r_table(entry["ran_vals"])
    ours = gj.tidy(sleep_res, effects="ran_vals")
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], rtol=1e-5, atol=1e-4)  # the optimizers' gap
    close(ours["std_error"], r["std_error"], rtol=1e-5)
    r = r_table(entry["ran_coefs"])
    ours = gj.tidy(sleep_res, effects="ran_coefs")
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], rtol=1e-5, atol=1e-4)
    both = gj.tidy(sleep_res, effects=("ran_vals", "fixed"))  # blocks in broom's order
    assert both["effect"].unique().tolist() == ["fixed", "ran_vals"]
    assert list(both.columns) == ["effect", "group", "level", "term", "estimate",
                                  "std_error", "statistic"]


def test_tidy_sleepstudy_profile(sleep_res):
    r = r_table(REFS["sleep_lmer"]["tidy_profile"])
    ours = gj.tidy(sleep_res, conf_int=True, conf_method="profile")
    same_structure(ours, r)
    close(ours["conf_low"], r["conf_low"], rtol=2e-4, atol=1e-4)  # measured: 5e-5
    close(ours["conf_high"], r["conf_high"], rtol=2e-4, atol=1e-4)
    # vcov scale: a variance's ends are the SD's squared; a covariance has none
    v = gj.tidy(sleep_res, scales=(None, "vcov"), conf_int=True, conf_method="profile")
    close(v["conf_low"][[2, 4, 5]], ours["conf_low"][[2, 4, 5]] ** 2, rtol=1e-12)
    assert np.isnan(v["conf_low"][3])


def test_tidy_satterthwaite_as_lmerTest(sleep_res):
    r = r_table(REFS["sleep_lmerTest"]["tidy"])
    ours = gj.tidy(sleep_res, effects="fixed", conf_int=True, ddf_method="satterthwaite")
    same_structure(ours, r)
    close(ours["df"], r["df"], rtol=1e-4)
    close(ours["p_value"], r["p_value"], rtol=1e-3)
    close(ours["conf_low"], r["conf_low"], rtol=1e-5)
    close(ours["conf_high"], r["conf_high"], rtol=1e-5)


def test_tidy_uncorrelated_terms_groups():
    entry = REFS["sleep_uncorrelated"]
    res = gj.fit(entry["formula"], gj.datasets.load("sleepstudy"), family="gaussian")
    r = r_table(entry["tidy"])
    ours = gj.tidy(res)
    same_structure(ours, r)  # groups Subject, Subject.1, Residual
    close(ours["estimate"], r["estimate"], rtol=1e-5)
    r = r_table(entry["ran_vals"])  # the two terms of Subject in one group, as lme4's ranef
    ours = gj.tidy(res, effects="ran_vals")
    same_structure(ours, r)
    close(ours["estimate"], r["estimate"], rtol=1e-4, atol=1e-4)
    close(ours["std_error"], r["std_error"], rtol=1e-4)


# ---- glance ------------------------------------------------------------------------------
def test_glance_matches_broom(cbpp_res, cbpp_lme4, sleep_res, ref_fit):
    r = r_table(REFS["cbpp_glmer"]["glance"])
    ours = gj.glance(cbpp_res)
    assert list(ours.columns) == list(r.columns)
    close(ours.iloc[0], r.iloc[0], rtol=2e-4)
    # lme4's deviance of a GLMM is the conditional deviance, not -2 logLik
    close(gj.glance(cbpp_lme4)["deviance"], r["deviance"], rtol=1e-8)
    assert abs(cbpp_res.deviance - ours["deviance"][0]) > 100
    r = r_table(REFS["sleep_lmer"]["glance"])  # REML: reml_crit instead of deviance
    ours = gj.glance(sleep_res)
    assert list(ours.columns) == list(r.columns)
    close(ours.iloc[0], r.iloc[0], rtol=1e-6)
    r = r_table(REFS["sleep_lmer_ml"]["glance"])
    ours = gj.glance(ref_fit("sleepstudy_ml"))
    assert list(ours.columns) == list(r.columns)
    close(ours.iloc[0], r.iloc[0], rtol=1e-5)  # lmer's ML sigma: 3.6e-6 off the optimum
    r = r_table(REFS["salamanders_glmer"]["glance"])
    close(gj.glance(ref_fit("salamanders_poisson")).iloc[0], r.iloc[0], rtol=2e-4)


# ---- augment -----------------------------------------------------------------------------
def test_augment_cbpp_matches_broom(cbpp_lme4, cbpp_res, cbpp):
    r = r_table(REFS["cbpp_glmer"]["augment"])
    ours = gj.augment(cbpp_lme4)
    base = [c for c in r.columns if c != ".eta"]
    assert list(ours.columns) == base + ["ranef_herd_(Intercept)"]
    for c in base:
        close(ours[c], r[c], rtol=1e-6, atol=1e-7)
    close(ours["fitted"], r[".eta"], rtol=1e-6)
    ranef = r_table(REFS["cbpp_glmer"]["ran_vals"]).set_index("level")["estimate"]
    close(ours["ranef_herd_(Intercept)"], ranef[cbpp["herd"].astype(str)], atol=1e-6)
    close(ours["fitted"] - ours["fixed"], ours["ranef_herd_(Intercept)"], atol=1e-12)
    # with the caller's data: its columns first, the caller's frame untouched
    before = cbpp.copy()
    a = gj.augment(cbpp_res, cbpp)
    pd.testing.assert_frame_equal(cbpp, before)
    assert list(a.columns) == list(cbpp.columns) + list(ours.columns)
    pd.testing.assert_frame_equal(a[list(cbpp.columns)], cbpp)
    close(a["mu"], cbpp_res.fitted(), rtol=1e-12)


def test_augment_sleepstudy_matches_broom(sleep_res):
    entry = REFS["sleep_lmer"]
    r = r_table(entry["augment"])
    ours = gj.augment(held_at(sleep_res, entry["theta"]))  # at lmer's estimates
    assert list(ours.columns) == list(r.columns) + ["ranef_Subject_(Intercept)",
                                                    "ranef_Subject_Days"]
    for c in r.columns:
        close(ours[c], r[c], rtol=1e-7, atol=1e-7)
    close(gj.augment(sleep_res)["resid"], r["resid"], atol=5e-4)  # at glmm_jax's own


def test_augment_dropped_rows_and_mismatched_data(cbpp_res, cbpp):
    df = cbpp.copy()
    df.loc[[2, 9], "incidence"] = np.nan
    with pytest.warns(gj.DataWarning):
        res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", df)
    omit = gj.augment(res, df)
    assert len(omit) == 54 and 2 not in omit.index
    pd.testing.assert_frame_equal(omit.drop(columns=df.columns),
                                  gj.augment(res).loc[omit.index])
    exclude = gj.augment(res, df, na_action="exclude")
    assert exclude.index.equals(df.index) and exclude.loc[[2, 9], "mu"].isna().all()
    with pytest.raises(gj.GLMMInputError, match="response 'incidence' differs"):
        gj.augment(cbpp_res, cbpp.assign(incidence=cbpp["incidence"][::-1].to_numpy()))
    with pytest.raises(gj.GLMMInputError, match="does not match the fit.*56 of 56.*50 rows"):
        gj.augment(cbpp_res, cbpp.iloc[:50])
    with pytest.raises(gj.GLMMInputError, match="does not match the fit"):
        gj.augment(cbpp_res, cbpp.set_index(cbpp.index + 1))
    shuffled = cbpp.assign(period=cbpp["period"].sample(frac=1, random_state=1).to_numpy())
    with pytest.raises(gj.GLMMInputError, match="different fixed- or random-effects design"):
        gj.augment(cbpp_res, shuffled)
    with pytest.raises(gj.GLMMInputError, match="does not match the fit.*period"):
        gj.augment(cbpp_res, cbpp.drop(columns="period"))
    with pytest.raises(gj.GLMMInputError, match="already has column.*mu"):
        gj.augment(cbpp_res, cbpp.assign(mu=1.0))
    with pytest.raises(gj.GLMMInputError, match="na_action"):
        gj.augment(cbpp_res, cbpp, na_action="pass")
    with pytest.raises(gj.GLMMInputError, match="must be a DataFrame"):
        gj.augment(cbpp_res, cbpp.to_dict())


def test_tidy_bad_input(cbpp_res):
    for kwargs, what in [({"effects": ("fixed", "ran_modes")}, "unknown effect.*ran_modes"),
                         ({"effects": ()}, "unknown effect"),
                         ({"conf_level": 1.5}, "conf_level"),
                         ({"conf_level": 0}, "conf_level"),
                         ({"conf_method": "boot"}, "conf_method"),
                         ({"ddf_method": "satterthwaite"}, "Gaussian"),
                         ({"ddf_method": "kenward-roger"}, "ddf_method"),
                         ({"scales": ("vcov",)}, "one value.*per entry"),
                         ({"scales": (None, "sd")}, "unrecognized ran_pars scale"),
                         ({"scales": ("vcov", None)}, "only 'ran_pars'")]:
        with pytest.raises(gj.GLMMInputError, match=what):
            gj.tidy(cbpp_res, **kwargs)
    with pytest.raises(gj.GLMMInputError, match="only Wald"):
        gj.tidy(cbpp_res, effects="ran_vals", conf_int=True, conf_method="profile")


def test_result_methods_are_the_functions(cbpp_res, cbpp):
    pd.testing.assert_frame_equal(cbpp_res.tidy(), gj.tidy(cbpp_res))
    pd.testing.assert_frame_equal(cbpp_res.tidy(effects=("fixed",), conf_int=True,
                                                exponentiate=True),
                                  gj.tidy(cbpp_res, effects=("fixed",), conf_int=True,
                                          exponentiate=True))
    pd.testing.assert_frame_equal(cbpp_res.glance(), gj.glance(cbpp_res))
    pd.testing.assert_frame_equal(cbpp_res.augment(cbpp), gj.augment(cbpp_res, cbpp))
