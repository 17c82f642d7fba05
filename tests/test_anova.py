"""anova(): likelihood-ratio tables against lme4 / glmmTMB (tests/data/r_anova/)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import glmm_jax as gj
from glmm_jax.anova import CHIBAR, REFIT_MESSAGE, anova, format_anova

REFS = json.loads((Path(__file__).parent / "data" / "r_anova" / "refs.json").read_text())
COLUMNS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
CBIND = "cbind(incidence, size - incidence) ~ "


@pytest.fixture(scope="module")
def cbpp_fits():
    cbpp = gj.datasets.load("cbpp")
    return {"m0": gj.fit(CBIND + "1 + (1 | herd)", cbpp),
            "m": gj.fit(CBIND + "period + (1 | herd)", cbpp)}


@pytest.fixture(scope="module")
def cbpp_glm():
    return gj.fit(CBIND + "period", gj.datasets.load("cbpp"))


@pytest.fixture(scope="module")
def sleep_fits():
    sl = gj.datasets.load("sleepstudy")
    out = {name: gj.fit(f, sl, family="gaussian", reml=False) for name, f in [
        ("s0", "Reaction ~ Days"), ("s1", "Reaction ~ Days + (1 | Subject)"),
        ("s3", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)")]}
    out["s1_reml"] = gj.fit("Reaction ~ Days + (1 | Subject)", sl, family="gaussian")
    out["s2_reml"] = gj.fit("Reaction ~ Days + (Days | Subject)", sl, family="gaussian")
    return out


def _check(tab, ref, rtol=1e-6, columns=COLUMNS):
    assert list(tab.index) == ref["rows"]
    for c in columns:
        want = np.array([np.nan if v is None else v for v in ref[c]], dtype=float)
        np.testing.assert_allclose(tab[c].to_numpy(dtype=float), want, rtol=rtol, err_msg=c)


def _printed(tab):
    return [line.rstrip() for line in format_anova(tab).splitlines()]


def _r_print(ref):  # R's print without its "Data:" line
    assert ref["print"][0].startswith("Data: ")
    return [line.rstrip() for line in ref["print"][1:]]


def test_cbpp(cbpp_fits):
    """glmmTMB's numbers (the optimum, as ours) to 1e-6; lme4's glmer Laplace
    log-likelihoods are 2e-4 to 3e-4 lower; R's print of the table with glmmTMB's
    numbers exactly."""
    tab = anova(cbpp_fits["m0"], cbpp_fits["m"], names=["m0", "m"])
    _check(tab, REFS["cbpp_glmmTMB"])
    _check(tab, REFS["cbpp"], columns=["npar", "Df"])
    np.testing.assert_allclose(tab["logLik"], REFS["cbpp"]["logLik"], atol=4e-4)
    assert CHIBAR not in tab and tab.attrs["note"] is None  # fixed effects differ
    assert _printed(tab) == _r_print(REFS["cbpp_glmmTMB"])


def test_sorted_by_npar_and_default_names(cbpp_fits):
    tab = anova(cbpp_fits["m"], cbpp_fits["m0"])
    assert list(tab.index) == ["MODEL2", "MODEL1"]
    assert list(tab["npar"]) == [2, 5]


def test_glm_vs_glmm_chibar(cbpp_fits, cbpp_glm):
    ref = REFS["cbpp_glm_glmmTMB"]
    tab = anova(cbpp_fits["m"], cbpp_glm, names=["m", "g"])
    _check(tab, ref)
    chisq = tab["Chisq"].iloc[1]
    assert tab[CHIBAR].iloc[1] == pytest.approx(0.5 * stats.chi2.sf(chisq, 1), rel=1e-12)
    assert tab[CHIBAR].iloc[1] == pytest.approx(ref["chibar_p"][1], rel=1e-5)
    assert np.isnan(tab[CHIBAR].iloc[0])
    assert "m vs g" in tab.attrs["note"] and "chi-bar-square" in tab.attrs["note"]
    lines = _printed(tab)
    assert lines[:len(_r_print(ref))] == _r_print(ref)
    assert lines[len(_r_print(ref)):][:3] == ["", "  Pr(>Chibarsq)", "m     9.112e-05 ***"]


def test_sleepstudy_refits_reml_by_ml(sleep_fits):
    """REML fits refitted by ML with lme4's message; lme4's table and print."""
    ref = REFS["sleep"]
    with pytest.warns(gj.GLMMWarning) as rec:
        tab = anova(sleep_fits["s2_reml"], sleep_fits["s1_reml"], names=["s2", "s1"])
    assert [str(w.message) for w in rec if w.category is gj.GLMMWarning] == ref["messages"]
    assert ref["messages"] == [REFIT_MESSAGE]
    _check(tab, ref)
    assert CHIBAR not in tab  # a variance and a covariance: not the 50:50 case
    assert _printed(tab) == _r_print(ref)


def test_three_models_one_variance_each(sleep_fits):
    ref = REFS["sleep_three"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ML fits: no refit message
        tab = anova(sleep_fits["s3"], sleep_fits["s1"], sleep_fits["s0"],
                    names=["s3", "s1", "s0"])
    _check(tab, ref)
    np.testing.assert_allclose(tab[CHIBAR].iloc[1:], 0.5 * stats.chi2.sf(tab["Chisq"].iloc[1:], 1),
                               rtol=1e-12)
    np.testing.assert_allclose(tab[CHIBAR].iloc[1:], ref["chibar_p"][1:], rtol=1e-6)
    assert tab.attrs["note"].startswith("s1 vs s0, s3 vs s1:")
    lines = _printed(tab)
    assert lines[:len(_r_print(ref))] == _r_print(ref)


def test_chibar_is_one_at_zero_statistic(cbpp_fits, cbpp_glm):
    flat = replace(cbpp_fits["m"], loglik=cbpp_glm.loglik)  # no gain from the variance
    tab = anova(cbpp_glm, flat)
    assert tab["Chisq"].iloc[1] == 0.0 and tab[CHIBAR].iloc[1] == 1.0


def test_errors(cbpp_fits, sleep_fits):
    m0, m = cbpp_fits["m0"], cbpp_fits["m"]
    f = m.frame
    with pytest.raises(gj.GLMMInputError, match="two or more"):
        anova(m)
    with pytest.raises(gj.GLMMInputError, match="argument 2 is a str"):
        anova(m, "m0")
    with pytest.raises(gj.GLMMInputError, match="names= has 1 entries for 2 models"):
        anova(m0, m, names=["a"])
    with pytest.raises(gj.GLMMInputError, match="duplicates"):
        anova(m0, m, names=["a", "a"])
    with pytest.raises(gj.GLMMInputError, match="different families"):
        anova(m, sleep_fits["s1"])
    fewer = replace(m, nobs=50, frame=replace(f, y=f.y[:50], trials=f.trials[:50],
                                              row_index=f.row_index[:50]))
    with pytest.raises(gj.GLMMInputError, match="different numbers of rows"):
        anova(m0, fewer)
    moved = replace(m, frame=replace(f, row_index=f.row_index + 1000))
    with pytest.raises(gj.GLMMInputError, match="different rows"):
        anova(m0, moved)
    other_y = replace(m, frame=replace(f, y=f.trials - f.y))
    with pytest.raises(gj.GLMMInputError, match="different responses"):
        anova(m0, other_y)
    other_x = replace(m0, x_names=("(Intercept)x",))
    with pytest.raises(gj.GLMMInputError, match=r"fixed effects of .* not in .*: \(Intercept\)x"):
        anova(other_x, m)
    s1, s3 = sleep_fits["s1"], sleep_fits["s3"]
    other_group = replace(s1, terms=(replace(s1.terms[0], group="Days"),))
    with pytest.raises(gj.GLMMInputError, match=r"random term \(\(Intercept\) \| Days\)"):
        anova(other_group, s3)
