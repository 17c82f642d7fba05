"""Start values: moment estimates put Newton near the optimum (independent check: the
log-likelihood gap to the fitted optimum, against the generic start)."""

import numpy as np
import pytest

import glmm_jax as gj

SLOPE = "y ~ age + sex + comorb + teaching + (1 + age | hospital)"


@pytest.mark.parametrize("family,seed", [("binomial", 4), ("poisson", 5)])
def test_random_slope_start_from_moments(family, seed):
    df = gj.datasets.simulate_registry(20_000, 500, family=family, slope_sd=0.5, seed=seed)
    model = gj.build_model(SLOPE, df, family=family)
    res = gj.fit(SLOPE, df, family=family)
    theta = np.asarray(model.start())
    beta, (L,), log_phi = model.layout.unpack_np(theta)
    G, G_fit = L @ L.T, res.varcorr
    # the moment estimate has the fitted correlation's sign and SDs within a factor 1.5
    sd = np.sqrt(np.diag(G))
    np.testing.assert_array_less(np.abs(np.log(sd / G_fit["sd"].to_numpy()[:2])), np.log(1.5))
    assert np.sign(G[0, 1]) == np.sign(G_fit["corr"].dropna().iloc[0])
    # and starts Newton less than half as far (in log-likelihood) as the generic
    # L = diag(0.5 / rms(Z)) start with the same fixed effects
    rms = np.sqrt(np.mean(model.frame.groups[0].Z ** 2, axis=0))
    generic = model.layout.pack(beta, [np.diag(0.5 / rms)], log_phi)
    gap = res.loglik - model.loglik(theta)
    assert 0 <= gap < 0.5 * (res.loglik - model.loglik(generic))


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_random_intercept_start_on_the_conditional_scale(family):
    # the moment SD, moved off the marginal scale (logit attenuation; log link:
    # var = log(1 + var of the linearized cluster effects)), is within 10% of the fitted
    # SD, and the row-level fixed effects within 10% after the IRLS step and rescaling
    # (not `teaching`, a hospital-level covariate: its marginal GLM estimate also absorbs
    # the simulated hospital effects)
    df = gj.datasets.simulate_registry(20_000, 500, family=family, seed=7)
    formula = "y ~ age + sex + comorb + teaching + (1 | hospital)"
    model = gj.build_model(formula, df, family=family)
    res = gj.fit(formula, df, family=family)
    beta, (L,), _ = model.layout.unpack_np(np.asarray(model.start()))
    assert abs(L[0, 0] / res.varcorr["sd"].iloc[0] - 1) < 0.1
    np.testing.assert_allclose(beta[:4], res.fixef.to_numpy()[:4], rtol=0.1, atol=0.02)


def test_large_data_start_from_a_strided_sample(monkeypatch):
    formula = "y ~ age + sex + comorb + teaching + site + (1 | hospital)"
    df = gj.datasets.simulate_registry(20_000, 500, seed=8)
    df["site"] = np.where(np.arange(len(df)) == 5, "rare", "common")  # one row, off-stride
    common = gj.build_model(formula.replace(" + site", ""), df)
    # (the one "rare" row has y = 0, so siterare is separated: the check is not the point)
    rare = gj.build_model(formula, df, on_separation="ignore")
    full_common, full_rare = common.start(), rare.start()
    monkeypatch.setattr(gj.start, "START_ROWS", 5_000)  # every 4th row: 0, 4, 8, ...
    sub = common.start()
    assert not np.array_equal(sub, full_common)  # taken from the sample ...
    np.testing.assert_allclose(sub, full_common, atol=0.15)  # ... within its noise
    # the sample misses the one "rare" row (its column would be all zero): all rows
    np.testing.assert_array_equal(rare.start(), full_rare)
