"""Simulation recovery: seeded data from known parameters, one fit per family/link.

Each data set has 20,000 rows in 500 clusters of unequal size with a correlated random
intercept and slope, ``y ~ x + z + (1 + x | g)``. Fixed effects must lie within 3 of
glmm_jax's standard errors of the truth; the random-effect SDs, their correlation and the
dispersion parameter within 3 approximate standard errors (delta method on the inverse of
the model's Hessian at the estimates), and those standard errors must be small enough for
the check to mean something.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from helpers import inverse_link, theta_from_result

import glmm_jax as gj

N_ROWS = 20_000
N_CLUSTERS = 500
FORMULA = "y ~ x + z + (1 + x | g)"


@dataclass(frozen=True)
class Truth:
    family: str
    link: str
    beta: tuple[float, float, float]  # intercept, x, z
    sd: tuple[float, float]  # random intercept and slope SDs
    corr: float
    dispersion: float | None = None  # sigma, gamma shape, NB theta
    seed: int = 0


TRUTHS = {
    "binomial_logit": Truth("binomial", "logit", (-0.5, 0.8, -0.4), (0.8, 0.4), 0.4, seed=101),
    "binomial_probit": Truth("binomial", "probit", (-0.3, 0.5, -0.25), (0.5, 0.25), 0.4,
                             seed=102),
    "poisson": Truth("poisson", "log", (0.5, 0.3, -0.2), (0.5, 0.25), 0.4, seed=103),
    "gaussian": Truth("gaussian", "identity", (2.0, 1.0, -0.5), (1.0, 0.5), 0.4, 1.5, seed=104),
    "gamma": Truth("gamma", "log", (1.0, 0.3, -0.2), (0.5, 0.25), 0.4, 3.0, seed=105),
    "negative_binomial": Truth("negative_binomial", "log", (1.0, 0.3, -0.2), (0.5, 0.25), 0.4,
                               2.0, seed=106),
}


def simulate(t: Truth) -> tuple[pd.DataFrame, np.ndarray]:
    """The data set and the simulated random effects [N_CLUSTERS, 2] of cluster cl<k>."""
    rng = np.random.default_rng(t.seed)
    # unequal cluster sizes, at least 10 rows each
    sizes = 10 + rng.multinomial(N_ROWS - 10 * N_CLUSTERS,
                                 rng.dirichlet(np.full(N_CLUSTERS, 5.0)))
    g = np.repeat(np.arange(N_CLUSTERS), sizes)
    n = g.size
    x = rng.normal(0.0, 1.0, n)
    z = rng.integers(0, 2, n).astype(float)
    s0, s1 = t.sd
    G = np.array([[s0**2, t.corr * s0 * s1], [t.corr * s0 * s1, s1**2]])
    b = rng.multivariate_normal(np.zeros(2), G, size=N_CLUSTERS)
    eta = t.beta[0] + t.beta[1] * x + t.beta[2] * z + b[g, 0] + b[g, 1] * x
    mu = inverse_link(t.link, eta)
    if t.family == "binomial":
        y = (rng.random(n) < mu).astype(int)
    elif t.family == "poisson":
        y = rng.poisson(mu)
    elif t.family == "gaussian":
        y = rng.normal(mu, t.dispersion)
    elif t.family == "gamma":
        y = rng.gamma(t.dispersion, mu / t.dispersion)
    elif t.family == "negative_binomial":
        y = rng.negative_binomial(t.dispersion, t.dispersion / (t.dispersion + mu))
    else:  # pragma: no cover
        raise ValueError(t.family)
    perm = rng.permutation(n)  # rows not grouped by cluster
    df = pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"cl{k}" for k in g]})
    return df.iloc[perm].reset_index(drop=True), b


def _derived(theta: np.ndarray, p: int, has_disp: bool) -> np.ndarray:
    """(sd0, sd1, corr[, dispersion]) from theta = [beta, L00, L10, L11, log_phi]."""
    a, c, d = theta[p:p + 3]
    sd0, sd1 = abs(a), np.hypot(c, d)
    out = [sd0, sd1, a * c / (sd0 * sd1)]
    if has_disp:
        out.append(np.exp(theta[p + 3]))
    return np.asarray(out)


def _delta_se(theta, cov, p, has_disp):
    f0 = _derived(theta, p, has_disp)
    J = np.zeros((f0.size, theta.size))
    for i in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[i]))
        e = np.zeros_like(theta)
        e[i] = h
        J[:, i] = (_derived(theta + e, p, has_disp) - _derived(theta - e, p, has_disp)) / (2 * h)
    return f0, np.sqrt(np.diag(J @ cov @ J.T))


@pytest.fixture(scope="module", params=list(TRUTHS))
def recovered(request):
    t = TRUTHS[request.param]
    df, b = simulate(t)
    assert len(df) >= N_ROWS and df["g"].nunique() == N_CLUSTERS
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.GLMMWarning)  # no convergence/singular warnings
        # ML throughout (theta_from_result rebuilds the ML parameter vector, beta included)
        res = gj.fit(FORMULA, df, family=t.family, link=t.link, reml=False)
    model = gj.build_model(FORMULA, df, t.family, t.link, reml=False)
    return request.param, t, res, model, b


def test_converged(recovered):
    name, t, res, *_ = recovered
    assert res.converged, (name, res.messages)
    assert not res.singular
    assert res.nobs == N_ROWS
    assert res.family.name == t.family and res.family.link == t.link
    assert len(res.ranef["g"]) == N_CLUSTERS


def test_fixed_effects_within_3_se(recovered):
    name, t, res, *_ = recovered
    assert list(res.fixef.index) == ["(Intercept)", "x", "z"]
    se = res.se.to_numpy()
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    z = (res.fixef.to_numpy() - np.asarray(t.beta)) / se
    assert np.all(np.abs(z) < 3), (name, dict(zip(res.fixef.index, z, strict=True)))


def test_covariance_and_dispersion_within_3_se(recovered):
    name, t, res, model, _ = recovered
    theta = theta_from_result(res)
    _, g, H = model.value_grad_hess(theta)
    cov = np.linalg.inv(H)
    # the reported estimates are the model's optimum: the Newton decrement g' H^-1 g is
    # the squared distance to it in standard-error units (here < 1% of an SE)
    assert g @ cov @ g < 1e-4
    est, se = _delta_se(theta, cov, 3, t.dispersion is not None)
    truth = [*t.sd, t.corr] + ([t.dispersion] if t.dispersion is not None else [])
    labels = ["sd(Intercept)", "sd(x)", "corr"] + (["dispersion"] if t.dispersion else [])
    # the estimates agree with the public tables
    vc = res.varcorr
    np.testing.assert_allclose(
        est[:3], [vc.sd.iloc[0], vc.sd.iloc[1], vc["corr"].iloc[2]], rtol=1e-8, atol=1e-10)
    # informative: SEs are small relative to the quantities (corr: absolute)
    assert np.all(se[[0, 1]] < 0.2 * np.asarray(t.sd)), (name, se)
    assert se[2] < 0.2, (name, se)
    z = (est - np.asarray(truth)) / se
    assert np.all(np.abs(z) < 3), (name, dict(zip(labels, np.round(z, 2), strict=True)),
                                   dict(zip(labels, est, strict=True)))
    if t.family == "gaussian":
        assert res.sigma == pytest.approx(est[3], rel=1e-10)


def test_conditional_modes_track_the_truth(recovered):
    # the conditional modes of the random intercepts correlate with the simulated ones
    name, t, res, _, b = recovered
    modes = res.ranef["g"].loc[[f"cl{k}" for k in range(N_CLUSTERS)], "(Intercept)"]
    r = np.corrcoef(modes.to_numpy(), b[:, 0])[0, 1]
    assert r > 0.7, (name, r)
