"""Satterthwaite degrees of freedom against lmerTest (tests/data/r_satterthwaite/)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import glmm_jax as gj
from glmm_jax.satterthwaite import satterthwaite

REFS = json.loads((Path(__file__).parent / "data" / "r_satterthwaite" / "refs.json").read_text())
CASES = {
    "slope_reml": ("Reaction ~ Days + (Days | Subject)", True),
    "slope_ml": ("Reaction ~ Days + (Days | Subject)", False),
    "intercept_reml": ("Reaction ~ Days + (1 | Subject)", True),
    "uncorrelated_reml": ("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", True),
    "singular_reml": ("Reaction ~ Days + (1 | Subject) + (1 | g)", True),
    "weighted_reml": ("Reaction ~ Days + (Days | Subject)", True),
}
# p of |t| ~ 7-37 with 17-18 df moves 1e-3 to 3e-3 relative per 1e-4 of t; where lme4's
# optimum is below ours (log-likelihood 1e-8 lower for slope_ml, 1.4e-7 for weighted_reml)
# the t differ by 2e-5 / 8e-5
P_RTOL = {"slope_ml": 5e-3, "weighted_reml": 5e-3}


@pytest.fixture(scope="module")
def sleep():
    df = gj.datasets.load("sleepstudy")
    return df.assign(g=(np.arange(len(df)) % 6).astype(str))  # as make_refs.R


@pytest.fixture(scope="module")
def fits(sleep):
    out = {}
    for name, (formula, reml) in CASES.items():
        w = 1.0 + 0.1 * sleep["Days"].to_numpy() if name == "weighted_reml" else None
        with pytest.warns(gj.SingularFitWarning) if "singular" in name else nullcontext():
            out[name] = gj.fit(formula, sleep, family="gaussian", reml=reml, weights=w)
    return out


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) / np.asarray(b) - 1.0))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_lmertest(fits, name):
    """df to 1e-3 relative (lmerTest's numerical derivatives); estimates, SEs and t to
    1e-4 (lme4's optimum is 1e-9 to 1e-7 below ours in log-likelihood)."""
    tab, ref = satterthwaite(fits[name]), REFS[name]
    assert list(tab.index) == ref["rows"]
    assert list(tab.columns) == ["estimate", "se", "df", "t", "p"]
    assert _rel(tab["df"], ref["df"]) < 1e-3
    for col in ("estimate", "se", "t"):
        assert _rel(tab[col], ref[col]) < 1e-4, col
    # R's p at R's (t, df) checks the test's formula; ours against R's (see P_RTOL)
    assert _rel(2.0 * stats.t.sf(np.abs(ref["t"]), ref["df"]), ref["p"]) < 1e-9
    assert _rel(tab["p"], ref["p"]) < P_RTOL.get(name, 1e-3)


def test_reference_case_of_the_issue(fits):
    """The shared reference (reference_inference.json): df and p to 1e-3 relative."""
    tab = satterthwaite(fits["slope_reml"])
    assert _rel(tab["df"], [16.9997262884927, 16.9999837255917]) < 1e-3
    assert _rel(tab["p"], [1.17155811120826e-17, 3.26382446992738e-06]) < 1e-3


def test_covariance_is_dense_gls(fits):
    """C(psi) at the estimates = sigma^2 (X'V^-1 X)^-1 with V = Z G Z' + I written out
    densely; under REML it is res.beta_cov."""
    res = fits["uncorrelated_reml"]
    f = res.frame
    n = len(f.y)
    V = np.eye(n) * res.sigma**2
    for g, t in zip(f.groups, res.terms, strict=True):
        Zfull = np.zeros((n, len(g.levels) * g.Z.shape[1]))
        for a in range(g.Z.shape[1]):
            Zfull[np.arange(n), g.codes * g.Z.shape[1] + a] = g.Z[:, a]
        V += Zfull @ np.kron(np.eye(len(g.levels)), t.G) @ Zfull.T
    C = np.linalg.inv(f.X.T @ np.linalg.solve(V, f.X))
    tab = satterthwaite(res)
    np.testing.assert_allclose(tab["se"] ** 2, np.diag(C), rtol=1e-10)
    np.testing.assert_allclose(tab["se"] ** 2, np.diag(res.beta_cov), rtol=1e-10)


def test_coef_table_of_gaussian_fits(fits):
    res = fits["slope_reml"]
    assert res.coef_table.equals(satterthwaite(res))
    assert "t value" in res.summary() and " df " not in res.summary()


def test_no_random_terms_gives_lm_df(sleep):
    """Without random terms (REML): the df of lm, n - p, and lm's standard errors."""
    res = gj.fit("Reaction ~ Days", sleep, family="gaussian")
    tab = satterthwaite(res)
    np.testing.assert_allclose(tab["df"], [178.0, 178.0], rtol=1e-8)
    X = np.column_stack([np.ones(len(sleep)), sleep["Days"]])
    y = sleep["Reaction"].to_numpy()
    beta, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ X)) * rss[0] / 178.0)
    np.testing.assert_allclose(tab["se"], se, rtol=1e-6)


def test_non_gaussian_is_an_error(fits):
    from dataclasses import replace

    res = replace(fits["slope_reml"], family=gj.families.Binomial())
    with pytest.raises(gj.GLMMInputError, match="Gaussian fits; this fit is binomial"):
        satterthwaite(res)


def test_hessian_not_positive_definite_warns(fits):
    """As lmerTest: a psi Hessian with a non-positive eigenvalue is inverted on the
    positive ones, with a warning (here its smallest eigenvalue is made -1)."""
    from dataclasses import replace

    res = fits["slope_reml"]
    ev, V = np.linalg.eigh(res.hessian)
    H = (V * np.r_[-1.0, ev[1:]]) @ V.T
    with pytest.warns(gj.ConvergenceWarning, match="1 eigenvalue"):
        tab = satterthwaite(replace(res, hessian=H))
    # the dropped direction's (positive) share of the df's denominator is gone
    assert np.all(np.isfinite(tab["df"]))
    assert np.all(tab["df"] >= satterthwaite(res)["df"] * (1 - 1e-12))
