"""Several random-effect terms: crossed, nested and observation-level random effects.

Expected numbers: tests/data/reference_fits.json (lme4 1.1.31 / glmmTMB 1.1.5), finite
differences of the objective, the single-term engine, and simulation truth.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj
from glmm_jax import build_model

REF = json.loads((Path(__file__).parent / "data" / "reference_fits.json").read_text())
GROUSE = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"
VERBAGG = "y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"


def grouseticks():
    df = gj.datasets.load("grouseticks")
    return df.assign(**{c: df[c].astype(str) for c in ("BROOD", "INDEX", "LOCATION")})


def verbagg():
    df = gj.datasets.load("verbagg")
    return df.assign(
        y=(df.r2 == "Y").astype(int),
        Gender=pd.Categorical(df.Gender, ["F", "M"]),
        btype=pd.Categorical(df.btype, ["curse", "scold", "shout"]),
        situ=pd.Categorical(df.situ, ["other", "self"]),
    )


@pytest.fixture(scope="module")
def fits():
    return {
        "grouseticks_olre": gj.fit(GROUSE, grouseticks(), family="poisson"),
        "verbagg_crossed": gj.fit(VERBAGG, verbagg(), family="binomial"),
    }


@pytest.mark.parametrize("name", ["grouseticks_olre", "verbagg_crossed"])
def test_against_lme4_and_glmmtmb(fits, name):
    res, ref = fits[name], REF[name]
    assert res.converged and not res.singular
    best = max(ref["lme4"]["logLik"], ref["glmmTMB"]["logLik"])
    assert best - 1e-4 <= res.loglik <= best + 0.05
    better = max((ref["lme4"], ref["glmmTMB"]), key=lambda r: r["logLik"])
    for term, value in better["fixef"].items():
        assert res.fixef[term] == pytest.approx(value, abs=2e-3), term
    for term, value in ref["glmmTMB"]["se"].items():
        assert res.se[term] == pytest.approx(value, rel=0.02), term
    vc = res.varcorr.set_index("group")
    for row in ref["lme4"]["varcorr"]:
        assert vc.loc[row["grp"], "sd"] == pytest.approx(row["sdcor"], rel=0.01), row["grp"]
    assert res.aic == pytest.approx(-2 * res.loglik + 2 * ref["lme4"]["df"])


def test_ranef_and_summary_cover_every_term(fits):
    res = fits["grouseticks_olre"]
    assert set(res.ranef) == {"INDEX", "BROOD", "LOCATION"}
    assert len(res.ranef["INDEX"]) == 403 and len(res.ranef["LOCATION"]) == 63
    text = res.summary()
    assert "INDEX, 403" in text and "BROOD, 118" in text and "LOCATION, 63" in text
    # lme4's conditional modes of the first LOCATION levels (sorted level order); lme4's
    # optimum differs from ours in the 5th digit, hence the tolerance
    ref_head = np.ravel(REF["grouseticks_olre"]["lme4"]["ranef_head"]["LOCATION"])
    levels = sorted(res.ranef["LOCATION"].index, key=int)[:5]
    got = res.ranef["LOCATION"].loc[levels, "(Intercept)"].to_numpy()
    np.testing.assert_allclose(got, ref_head, atol=2e-3)


def test_general_path_equals_single_term_path():
    df = gj.datasets.load("cbpp")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    one = build_model(formula, df)
    general = build_model(formula, df, engine="multi")
    theta = one.start() + 0.1
    f1, g1, H1 = one.value_grad_hess(theta)
    f2, g2, H2 = general.value_grad_hess(theta)
    assert f1 == pytest.approx(f2, abs=1e-8)
    np.testing.assert_allclose(g1, g2, atol=1e-7)
    np.testing.assert_allclose(H1, H2, atol=1e-6)


def test_derivatives_match_finite_differences():
    model = build_model(GROUSE, grouseticks(), family="poisson")
    theta = model.start()
    f, g, H = model.value_grad_hess(theta)
    h = 1e-5
    eye = np.eye(len(theta))
    fd_g = np.array([(model.loglik(theta - h * e) - model.loglik(theta + h * e)) / (2 * h)
                     for e in eye])
    np.testing.assert_allclose(g, fd_g, rtol=1e-5, atol=1e-5 * np.abs(g).max())
    fd_H = np.array([(model.value_grad_hess(theta + h * e)[1]
                      - model.value_grad_hess(theta - h * e)[1]) / (2 * h) for e in eye])
    np.testing.assert_allclose(H, fd_H, rtol=1e-5, atol=1e-5 * np.abs(H).max())


def _nested_data(seed=5):
    rng = np.random.default_rng(seed)
    hosp = np.repeat(np.arange(40), 6)  # 40 hospitals x 6 wards
    ward = np.arange(hosp.size)
    n_per = rng.integers(8, 25, ward.size)
    h_row, w_row = np.repeat(hosp, n_per), np.repeat(ward, n_per)
    x = rng.normal(size=h_row.size)
    sd_h, sd_w = 0.7, 0.4
    eta = 0.5 + 0.3 * x + rng.normal(0, sd_h, 40)[h_row] + rng.normal(0, sd_w, ward.size)[w_row]
    y = rng.poisson(np.exp(eta))
    df = pd.DataFrame({"y": y, "x": x, "hospital": h_row, "ward": w_row % 6})
    return df, {"(Intercept)": 0.5, "x": 0.3}, {"hospital": sd_h, "ward:hospital": sd_w}


def test_nested_slash_equals_explicit_terms_and_recovers_truth():
    df, beta, sds = _nested_data()
    res = gj.fit("y ~ x + (1 | hospital/ward)", df, family="poisson")
    explicit = gj.fit("y ~ x + (1 | hospital) + (1 | ward:hospital)", df, family="poisson")
    assert res.loglik == pytest.approx(explicit.loglik, abs=1e-8)
    vc = res.varcorr.set_index("group")
    assert set(vc.index) == {"hospital", "ward:hospital"}
    assert len(res.ranef["ward:hospital"]) == 240
    for term, value in beta.items():
        assert abs(res.fixef[term] - value) < 3 * res.se[term], term
    for group, sd in sds.items():
        assert vc.loc[group, "sd"] == pytest.approx(sd, rel=0.35), group


def test_crossed_binary_recovers_truth():
    rng = np.random.default_rng(11)
    n_subj, n_item = 300, 40
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    x = rng.normal(size=subj.size)
    eta = -0.3 + 0.6 * x + rng.normal(0, 1.0, n_subj)[subj] + rng.normal(0, 0.5, n_item)[item]
    y = (rng.random(subj.size) < 1 / (1 + np.exp(-eta))).astype(int)
    df = pd.DataFrame({"y": y, "x": x, "subj": subj, "item": item})
    res = gj.fit("y ~ x + (1 | subj) + (1 | item)", df)
    assert res.converged
    for term, value in {"(Intercept)": -0.3, "x": 0.6}.items():
        assert abs(res.fixef[term] - value) < 3 * res.se[term], term
    vc = res.varcorr.set_index("group")
    assert vc.loc["subj", "sd"] == pytest.approx(1.0, rel=0.15)
    assert vc.loc["item", "sd"] == pytest.approx(0.5, rel=0.35)


def test_uncorrelated_double_bar_equals_separate_terms():
    df, _, _ = _nested_data(seed=8)  # no random slope in truth: the slope SD is estimated 0
    with pytest.warns(gj.SingularFitWarning):
        a = gj.fit("y ~ x + (1 + x || hospital)", df, family="poisson")
    with pytest.warns(gj.SingularFitWarning):
        b = gj.fit("y ~ x + (1 | hospital) + (0 + x | hospital)", df, family="poisson")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    assert list(a.varcorr.group) == ["hospital", "hospital.1"]
    assert list(a.ranef["hospital"].columns[:2]) == ["(Intercept)", "condsd (Intercept)"]
    assert "x" in a.ranef["hospital"].columns


def test_agq_with_several_terms_is_refused():
    with pytest.raises(gj.GLMMInputError, match="single random term"):
        gj.fit(VERBAGG, verbagg(), nagq=5)


def test_too_many_random_effects_for_gaussian():
    df = pd.DataFrame({"y": np.arange(20.0), "g": np.arange(20), "h": np.arange(20) % 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(gj.GLMMInputError, match=r"\(1 \| g\).*not identifiable"):
            gj.fit("y ~ 1 + (1 | g) + (1 | h)", df, family="gaussian")


def test_slope_constant_within_groups_is_refused_by_name():
    df, _, _ = _nested_data()
    df = df.assign(size=df.hospital % 3)  # a hospital-level covariate
    with pytest.raises(gj.GLMMInputError, match=r"'size' is constant within every level"):
        gj.fit("y ~ x + (1 + size | hospital)", df, family="poisson")


def _three_level_data(seed=8):
    # patients' visits (one row each, with an observation-level effect) in wards in
    # hospitals, and a random age slope per hospital
    rng = np.random.default_rng(seed)
    n_h, n_w = 60, 5
    ward = np.arange(n_h * n_w)
    hosp = ward // n_w
    n_per = rng.integers(6, 20, ward.size)
    w_row = np.repeat(ward, n_per)
    h_row = hosp[w_row]
    x = rng.normal(size=w_row.size)
    sd = {"hospital": 0.6, "ward:hospital": 0.35, "obs": 0.3, "slope": 0.25}
    b_h = rng.normal(0, sd["hospital"], n_h)
    s_h = rng.normal(0, sd["slope"], n_h)
    eta = (0.4 + 0.3 * x + b_h[h_row] + s_h[h_row] * x
           + rng.normal(0, sd["ward:hospital"], ward.size)[w_row]
           + rng.normal(0, sd["obs"], w_row.size))
    df = pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "hospital": h_row,
                       "ward": w_row % n_w, "obs": np.arange(w_row.size)})
    return df, {"(Intercept)": 0.4, "x": 0.3}, sd


def test_three_level_nested_recovers_truth():
    df, beta, sd = _three_level_data()
    formula = "y ~ x + (1 + x | hospital) + (1 | ward:hospital) + (1 | obs)"
    assert build_model(formula, df, family="poisson").structure.nested
    res = gj.fit(formula, df, family="poisson")
    assert res.converged
    vc = res.varcorr.set_index("group")
    for term, value in beta.items():
        assert abs(res.fixef[term] - value) < 3 * res.se[term], term
    # intercept SDs within 3 SEs of the truth: theta holds them directly (the first
    # diagonal entry of each factor L), with SEs from the inverse Hessian
    names = build_model(formula, df, family="poisson").theta_names
    se = np.sqrt(np.diag(res.cov_theta))
    for group in ("hospital", "ward:hospital", "obs"):
        k = names.index(f"L_{group}[(Intercept),(Intercept)]")
        rows = vc.loc[[group]]
        got = rows[(rows.term1 == "(Intercept)") & rows.term2.isna()].sd.iloc[0]
        assert abs(got - sd[group]) < 3 * se[k], group
    slope = vc.loc[["hospital"]].query("term1 == 'x' and term2 != term2").sd.iloc[0]
    assert slope == pytest.approx(sd["slope"], abs=0.1)


def test_nested_elimination_equals_dense_schur(monkeypatch):
    # a random slope at the top level makes the blocks q x q with different q per term
    df, _, _ = _three_level_data(seed=9)
    df = df.iloc[:1500]
    formula = "y ~ x + (1 + x | hospital) + (1 | ward:hospital) + (1 | obs)"
    tree = gj.fit(formula, df, family="poisson")
    monkeypatch.setattr(gj.nested, "ancestors", lambda codes, Js: None)
    assert not build_model(formula, df, family="poisson").structure.nested
    dense = gj.fit(formula, df, family="poisson")
    assert tree.loglik == pytest.approx(dense.loglik, abs=1e-8)
    np.testing.assert_allclose(tree.theta, dense.theta, atol=1e-7)
    np.testing.assert_allclose(tree.se, dense.se, rtol=1e-6)
    for group in ("hospital", "ward:hospital", "obs"):
        a, b = tree.ranef[group], dense.ranef[group]
        np.testing.assert_allclose(a.to_numpy(), b.loc[a.index].to_numpy(), atol=1e-7)


def test_grouseticks_uses_nested_elimination():
    gj.sizes.forget()  # (its own sizes, not those of a program laid out before)
    model = build_model(GROUSE, grouseticks(), family="poisson")
    assert model.structure.nested  # (obs in broods in locations: finest first)
    assert [len(g.levels) for g in model.frame.groups] == [403, 118, 63]
    assert model.structure.Js == (431, 129, 65)  # a small model's levels padded (sizes.py)
    assert not build_model(VERBAGG, verbagg(), family="binomial").structure.nested
