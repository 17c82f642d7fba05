"""The random effects' posterior (glmm_jax.posterior) against brute-force grid integrals
written here, lme4's ``ranef(condVar = TRUE)`` (tests/data/r_posterior/make_refs.R ->
refs.json) and the closed forms of a Gaussian random intercept."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP_FORMULA
from scipy import optimize, stats

import glmm_jax as gj
from glmm_jax.posterior import random_effects, shrinkage

REFS = json.loads((Path(__file__).parent / "data" / "r_posterior" / "refs.json").read_text())
NAME = "(Intercept)"


def _fit(formula, df, family, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.GLMMWarning)
        return gj.fit(formula, df, family=family, **kw)


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return _fit(CBPP_FORMULA, cbpp, "binomial")


@pytest.fixture(scope="module")
def sleep_fit():
    return _fit("Reaction ~ Days + (1 | Subject)", gj.datasets.load("sleepstudy"), "gaussian")


@pytest.fixture(scope="module")
def slope_fit():
    """A Poisson random-slope model (q = 2) on data simulated here."""
    rng = np.random.default_rng(3)
    J, m = 12, 10
    g, x = np.repeat(np.arange(J), m), rng.uniform(-1.0, 1.0, J * m)
    b = rng.multivariate_normal([0.0, 0.0], [[0.36, 0.072], [0.072, 0.16]], J)
    y = rng.poisson(np.exp(1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x))
    df = pd.DataFrame({"y": y, "x": x, "g": [f"c{j}" for j in g]})
    return _fit("y ~ x + (x | g)", df, "poisson")


# ---- brute force: the posterior of each cluster on a fine grid, from the data alone ----

def _cluster_rows(res, j):
    f, g = res.frame, res.frame.groups[0]
    rows = g.codes == j
    return f.X[rows] @ res.beta + f.offset[rows], f.y[rows], f.trials[rows], g.Z[rows]


def _grid_1d(res, j, probs=(0.5, 0.025, 0.975)):
    """Mean, SD and quantiles of b_j for a binomial-logit random intercept, by the
    trapezoid rule on 200,001 points over the mode +- 14 conditional SDs."""
    eta0, y, n, _ = _cluster_rows(res, j)
    t = res.terms[0]
    m, sd = t.b[j, 0], np.sqrt(t.b_cov[j, 0, 0])
    b = np.linspace(m - 14 * sd, m + 14 * sd, 200_001)
    e = eta0[:, None] + b[None, :]
    logp = (y[:, None] * e - n[:, None] * np.logaddexp(0.0, e)).sum(0) - 0.5 * b * b / t.G[0, 0]
    w = np.exp(logp - logp.max())
    Z = np.trapezoid(w, b)
    mean = np.trapezoid(w * b, b) / Z
    sdv = np.sqrt(np.trapezoid(w * (b - mean) ** 2, b) / Z)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(b))]) / Z
    return mean, sdv, np.interp(probs, cdf, b)


def _grid_2d(res, j):
    """Posterior mean and SDs of (b_j0, b_j1) for a Poisson-log random slope, by the
    trapezoid rule on a 301 x 301 grid over the mode +- 8 conditional SDs."""
    eta0, y, _, Z = _cluster_rows(res, j)
    t = res.terms[0]
    m, sd = t.b[j], np.sqrt(np.diag(t.b_cov[j]))
    axes = [np.linspace(m[k] - 8 * sd[k], m[k] + 8 * sd[k], 301) for k in range(2)]
    B0, B1 = np.meshgrid(*axes, indexing="ij")
    e = eta0[:, None, None] + Z[:, 0, None, None] * B0 + Z[:, 1, None, None] * B1
    Gi = np.linalg.inv(t.G)
    logp = (y[:, None, None] * e - np.exp(e)).sum(0) - 0.5 * (
        Gi[0, 0] * B0**2 + 2 * Gi[0, 1] * B0 * B1 + Gi[1, 1] * B1**2)
    w = np.exp(logp - logp.max())

    def integral(v):
        return np.trapezoid(np.trapezoid(v, axes[1], axis=1), axes[0])

    Z_ = integral(w)
    mean = np.array([integral(w * B0), integral(w * B1)]) / Z_
    var = np.array([integral(w * (B0 - mean[0]) ** 2), integral(w * (B1 - mean[1]) ** 2)]) / Z_
    return mean, np.sqrt(var)


# ---- references ------------------------------------------------------------------------

def test_cbpp_modes_and_sds_equal_lme4_ranef(cbpp_fit):
    ref = REFS["cbpp"]  # ranef(glmer(...), condVar = TRUE)
    tab = random_effects(cbpp_fit, kind="mode")["herd"]
    assert list(tab.index.astype(str)) == ref["levels"]
    np.testing.assert_allclose(tab[NAME], ref["mode"], atol=1e-3)
    np.testing.assert_allclose(tab[f"condsd {NAME}"], ref["condsd"], atol=1e-3)
    # the same modes and SDs as res.ranef (computed there by the fit's engine)
    pd.testing.assert_frame_equal(tab, cbpp_fit.ranef["herd"], rtol=1e-7)


def test_cbpp_posterior_mean_sd_median_and_interval_equal_grid(cbpp_fit):
    grid = [_grid_1d(cbpp_fit, j) for j in range(15)]
    mean = random_effects(cbpp_fit, kind="mean")["herd"]
    np.testing.assert_allclose(mean[NAME], [g[0] for g in grid], atol=1e-6)
    np.testing.assert_allclose(mean[f"condsd {NAME}"], [g[1] for g in grid], atol=1e-6)
    med = random_effects(cbpp_fit, kind="median")["herd"]
    q = np.array([g[2] for g in grid])
    np.testing.assert_allclose(med[NAME], q[:, 0], atol=1e-6)
    np.testing.assert_allclose(med[f"lower {NAME}"], q[:, 1], atol=1e-6)
    np.testing.assert_allclose(med[f"upper {NAME}"], q[:, 2], atol=1e-6)
    # left-skewed posteriors (few cases: the likelihood flattens as the risk goes to 0)
    assert np.all(mean[NAME] < med[NAME]) and np.all(med[NAME] < cbpp_fit.terms[0].b[:, 0])
    # another level: the 80% interval by the grid
    med80 = random_effects(cbpp_fit, kind="median", level=0.8)["herd"]
    q80 = np.array([_grid_1d(cbpp_fit, j, (0.1, 0.9))[2] for j in (0, 8)])
    np.testing.assert_allclose(med80.iloc[[0, 8], 1:].to_numpy(), q80, atol=1e-6)


def test_vector_effect_means_and_sds_equal_2d_grid(slope_fit):
    mean = random_effects(slope_fit, kind="mean")["g"]
    assert list(mean.columns) == [NAME, "x", f"condsd {NAME}", "condsd x"]
    grid = [_grid_2d(slope_fit, j) for j in range(12)]
    np.testing.assert_allclose(mean[[NAME, "x"]], [g[0] for g in grid], atol=1e-6)
    np.testing.assert_allclose(mean[[f"condsd {NAME}", "condsd x"]], [g[1] for g in grid],
                               atol=1e-6)
    with pytest.raises(gj.GLMMInputError, match=r"scalar.*\(\(Intercept\) \+ x \| g\) has 2"):
        random_effects(slope_fit, kind="median")


# ---- shrinkage -------------------------------------------------------------------------

def test_gaussian_reliability_is_the_lmm_shrinkage_factor(sleep_fit):
    """sigma_b^2 / (sigma_b^2 + sigma^2 / n_j), given the (REML) estimates; the mode is
    that factor times the cluster's mean residual (its own estimate)."""
    res, ref = sleep_fit, REFS["sleepstudy_reml"]
    tab = shrinkage(res)
    s2b, s2 = res.terms[0].G[0, 0], res.sigma**2
    np.testing.assert_array_equal(tab["n"], 10)
    np.testing.assert_allclose(tab["reliability"], s2b / (s2b + s2 / tab["n"]), rtol=1e-10)
    df = gj.datasets.load("sleepstudy")
    resid = df["Reaction"] - res.beta[0] - res.beta[1] * df["Days"]
    own = resid.groupby(df["Subject"]).mean()
    np.testing.assert_allclose(tab["own_estimate"], own.loc[res.terms[0].levels], rtol=1e-9)
    np.testing.assert_allclose(tab["mode"], tab["reliability"] * tab["own_estimate"],
                               rtol=1e-9)
    np.testing.assert_allclose(tab["posterior_sd"], np.sqrt(s2b * s2 / 10 / (s2b + s2 / 10)),
                               rtol=1e-10)
    # lme4's condVar (given the fixed effects) for the REML fit
    np.testing.assert_allclose(tab["posterior_sd"], ref["condsd"], rtol=1e-3)
    np.testing.assert_allclose(tab["mode"], ref["mode"], rtol=1e-3)


def test_gaussian_posterior_is_normal(sleep_fit):
    mode = random_effects(sleep_fit, kind="mode")["Subject"]
    pd.testing.assert_frame_equal(random_effects(sleep_fit, kind="mean")["Subject"], mode)
    med = random_effects(sleep_fit, kind="median", level=0.9)["Subject"]
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(med[NAME], mode[NAME])
    np.testing.assert_allclose(med[f"upper {NAME}"] - med[f"lower {NAME}"],
                               2 * z * mode[f"condsd {NAME}"], rtol=1e-12)


def test_cbpp_shrinkage_and_own_estimates(cbpp_fit, cbpp):
    tab = shrinkage(cbpp_fit)
    assert list(tab.columns) == ["n", "trials", "mode", "posterior_sd", "reliability",
                                 "own_estimate"]
    counts = cbpp.groupby("herd")["size"].agg(["count", "sum"])
    np.testing.assert_array_equal(tab["n"], counts["count"])
    np.testing.assert_array_equal(tab["trials"], counts["sum"])
    t = cbpp_fit.terms[0]
    np.testing.assert_allclose(tab["reliability"],
                               1 - tab["posterior_sd"] ** 2 / t.G[0, 0], rtol=1e-12)
    # the no-pooling estimate: each herd's own binomial likelihood, maximized by scipy
    for j in range(15):
        eta0, y, n, _ = _cluster_rows(cbpp_fit, j)
        own = optimize.minimize_scalar(
            lambda b, eta0=eta0, y=y, n=n: -np.sum(y * (eta0 + b)
                                                   - n * np.logaddexp(0.0, eta0 + b)),
            bracket=(-1.0, 1.0), tol=1e-12).x
        assert tab["own_estimate"].iloc[j] == pytest.approx(own, abs=1e-6)
    # shrinkage towards 0
    assert np.all(np.abs(tab["mode"]) < np.abs(tab["own_estimate"]))


def test_own_estimate_is_nan_where_the_cluster_maximum_is_infinite(cbpp):
    """A herd without cases (own estimate -inf) and one where every animal is a case
    (+inf): NaN, the other herds finite."""
    df = cbpp.copy()
    df.loc[df["herd"] == 1, "incidence"] = 0
    df.loc[df["herd"] == 2, "incidence"] = df.loc[df["herd"] == 2, "size"]
    res = _fit(CBPP_FORMULA, df, "binomial")
    own = shrinkage(res)["own_estimate"]
    assert np.isnan(own.iloc[0]) and np.isnan(own.iloc[1])
    assert np.all(np.isfinite(own.iloc[2:]))


def test_vector_effect_shrinkage_columns(slope_fit):
    tab = shrinkage(slope_fit, term="g")
    assert list(tab.columns) == ["n", "mode (Intercept)", "mode x", "posterior_sd (Intercept)",
                                 "posterior_sd x", "reliability (Intercept)",
                                 "reliability x", "own_estimate (Intercept)",
                                 "own_estimate x"]
    t = slope_fit.terms[0]
    np.testing.assert_allclose(tab["reliability x"],
                               1 - tab["posterior_sd x"] ** 2 / t.G[1, 1], rtol=1e-12)
    assert np.all((tab.filter(like="reliability") > 0) & (tab.filter(like="reliability") < 1))
    # the own estimates are the maxima of each cluster's Poisson likelihood
    for j in (0, 5):
        eta0, y, _, Z = _cluster_rows(slope_fit, j)
        own = optimize.minimize(lambda b, eta0=eta0, y=y, Z=Z: -np.sum(
            y * (eta0 + Z @ b) - np.exp(eta0 + Z @ b)), np.zeros(2), method="BFGS",
            options={"gtol": 1e-10}).x
        np.testing.assert_allclose(tab.filter(like="own_estimate").iloc[j], own, atol=1e-5)


# ---- several random terms, bad input ---------------------------------------------------

@pytest.fixture(scope="module")
def sleep_two_terms():
    return _fit("Reaction ~ Days + (Days || Subject)", gj.datasets.load("sleepstudy"),
                "gaussian", reml=False)


def test_several_terms(sleep_two_terms, cbpp_fit):
    res = sleep_two_terms
    # Gaussian: the posterior is normal, mean = mode; the terms of one factor are joined
    mean = random_effects(res, kind="mean")
    pd.testing.assert_frame_equal(mean["Subject"], res.ranef["Subject"])
    med = random_effects(res, kind="median")["Subject"]
    assert list(med.columns) == [NAME, f"lower {NAME}", f"upper {NAME}", "Days", "lower Days",
                                 "upper Days"]
    np.testing.assert_allclose(med["upper Days"], res.ranef["Subject"]["Days"]
                               + stats.norm.ppf(0.975) * res.ranef["Subject"]["condsd Days"])
    tab = shrinkage(res, term=1)
    assert tab.columns[1] == "mode"
    np.testing.assert_allclose(tab["mode"], res.terms[1].b[:, 0])
    with pytest.raises(gj.GLMMInputError, match="term='Subject' names no single"):
        shrinkage(res, term="Subject")
    with pytest.raises(gj.GLMMInputError, match="2 random terms: choose one with term="):
        shrinkage(res)
    # other families: the levels' posteriors are not independent (a binomial result with
    # two terms; the refusal comes before any computation)
    two = dataclasses.replace(cbpp_fit, terms=cbpp_fit.terms * 2)
    for kind in ("mean", "median"):
        with pytest.raises(gj.GLMMInputError, match="one random term.*not independent"):
            random_effects(two, kind=kind)


@pytest.mark.parametrize("kw, match", [
    ({"kind": "posterior"}, "kind must be one of 'mode', 'mean', 'median', not 'posterior'"),
    ({"level": 1.5}, "level must be a probability"),
    ({"kind": "mean", "nagq": 1}, "nagq must be an integer of at least 2, not 1"),
    ({"kind": "mean", "nagq": 2000}, "nagq\\*\\*q = 2000\\*\\*1 exceeds 1000"),
])
def test_bad_arguments(cbpp_fit, kw, match):
    with pytest.raises(gj.GLMMInputError, match=match):
        random_effects(cbpp_fit, **kw)


def test_bad_term(cbpp_fit):
    with pytest.raises(gj.GLMMInputError, match="no random effects"):
        shrinkage(dataclasses.replace(cbpp_fit, terms=()))  # (as a GLM's result)
    with pytest.raises(gj.GLMMInputError, match=r"term='site'.*0: \(\(Intercept\) \| herd\)"):
        shrinkage(cbpp_fit, term="site")
    with pytest.raises(gj.GLMMInputError, match="term=3"):
        shrinkage(cbpp_fit, term=3)


def test_reml_conditional_sds_are_lme4s():
    """res.ranef's SDs of a REML fit are given the fixed effects, as lme4's condVar, on
    both Gaussian engines (tests/data/r_inference: sleep_ranef_f1, condvar_two_terms.R)."""
    df = gj.datasets.load("sleepstudy")
    ref = json.loads((Path(__file__).parent / "data" / "r_inference" / "refs.json")
                     .read_text())["sleep_ranef_f1"]
    for engine in ("lmm", "multi"):
        res = gj.fit("Reaction ~ Days + (1 | Subject)", df, family="gaussian", engine=engine)
        np.testing.assert_allclose(res.ranef["Subject"]["condsd (Intercept)"],
                                   ref["cond_sd"]["(Intercept)"], rtol=1e-5)
    res = gj.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", df,
                 family="gaussian")
    tab = res.ranef["Subject"]
    np.testing.assert_allclose(tab[["condsd (Intercept)", "condsd Days"]].iloc[0],
                               [12.23894, 2.335464], rtol=1e-5)
