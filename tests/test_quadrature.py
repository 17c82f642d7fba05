"""Laplace and adaptive Gauss-Hermite log-likelihoods against brute-force integration.

The expected values are computed here with NumPy/SciPy: dense trapezoid rules over each
cluster's random effect (exponentially accurate for these smooth, Gaussian-tailed
integrands) and a SciPy Laplace approximation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import (
    CBPP_FORMULA,
    binomial_logpmf,
    bruteforce_2d_loglik,
    bruteforce_ri_loglik,
    cbpp_arrays,
    expit,
    laplace_ri_loglik,
    poisson_logpmf,
    theta_from_result,
    theta_vector,
)

import glmm_jax as gj


@pytest.fixture(scope="module")
def cbpp_ref_params(reference):
    """lme4's nAGQ=25 cbpp estimates (beta, sd) and the JSON's exact logLik there."""
    ref = reference["cbpp_agq25"]
    beta = np.array(list(ref["lme4"]["fixef"].values()))
    sd = ref["lme4"]["varcorr"][0]["sdcor"]
    return beta, sd, ref["exact_logLik_at_reference_estimates"]


@pytest.fixture(scope="module")
def cbpp_bruteforce(cbpp):
    y, n, X, codes = cbpp_arrays(cbpp)

    def loglik(beta, sd):
        eta0 = X @ beta
        return bruteforce_ri_loglik(
            lambda b: binomial_logpmf(y[:, None], n[:, None], eta0[:, None] + b[None, :]),
            codes, sd, n_grid=4001, width=10.0)

    return loglik


@pytest.fixture(scope="module")
def cbpp_models(cbpp):
    return {k: gj.build_model(CBPP_FORMULA, cbpp, "binomial", nagq=k) for k in (1, 3, 25)}


def test_bruteforce_reproduces_reference_exact_loglik(cbpp_ref_params, cbpp_bruteforce):
    # checks the test's own integrator against the independently computed JSON value
    beta, sd, exact = cbpp_ref_params
    assert cbpp_bruteforce(beta, sd) == pytest.approx(exact, abs=1e-8)


def test_theta_names_layout(cbpp_models):
    m = cbpp_models[25]
    assert m.theta_names[:4] == ["(Intercept)", "period2", "period3", "period4"]
    assert len(m.theta_names) == 5  # four betas and the intercept SD; no dispersion


@pytest.mark.parametrize("where", ["reference", "perturbed"])
def test_agq25_equals_bruteforce(cbpp_models, cbpp_ref_params, cbpp_bruteforce, where):
    beta, sd, _ = cbpp_ref_params
    if where == "perturbed":  # away from any optimum, with a larger variance
        beta, sd = beta + np.array([0.3, -0.2, 0.1, 0.25]), 1.3 * sd
    expected = cbpp_bruteforce(beta, sd)
    model = cbpp_models[25]
    assert model.loglik(theta_vector(beta, [[sd]])) == pytest.approx(expected, abs=1e-6)
    # the random-intercept SD enters only through its square: its sign is irrelevant
    assert model.loglik(theta_vector(beta, [[-sd]])) == pytest.approx(expected, abs=1e-6)


def test_laplace_equals_scipy_laplace(cbpp, cbpp_models, cbpp_ref_params):
    y, n, X, codes = cbpp_arrays(cbpp)
    beta, sd, _ = cbpp_ref_params
    eta0 = X @ beta

    def row_logpdf(b, idx):
        return binomial_logpmf(y[idx], n[idx], eta0[idx] + b)

    def row_d2(b, idx):
        p = expit(eta0[idx] + b)
        return -n[idx] * p * (1 - p)

    expected = laplace_ri_loglik(row_logpdf, row_d2, codes, sd)
    assert cbpp_models[1].loglik(theta_vector(beta, [[sd]])) == pytest.approx(expected, abs=1e-6)


def test_laplace_model_equals_laplace_fit(cbpp_models, ref_fit):
    res = ref_fit("cbpp_laplace")
    theta = theta_from_result(res)
    assert cbpp_models[1].loglik(theta) == pytest.approx(res.loglik, abs=1e-8)
    f, g, _ = cbpp_models[1].value_grad_hess(theta)
    assert f == pytest.approx(-res.loglik, abs=1e-8)
    assert np.max(np.abs(g)) < 1e-4  # the fit is a stationary point of the model's objective


def test_agq_fit_objective_equals_model(cbpp_models, ref_fit):
    res = ref_fit("cbpp_agq25")
    assert cbpp_models[25].loglik(theta_from_result(res)) == pytest.approx(res.loglik, abs=1e-8)


def test_more_nodes_approach_bruteforce_1d(cbpp_models, cbpp_ref_params, cbpp_bruteforce):
    beta, sd, _ = cbpp_ref_params
    beta, sd = beta + 0.2, 2.0 * sd  # a larger variance makes the Laplace error visible
    exact = cbpp_bruteforce(beta, sd)
    theta = theta_vector(beta, [[sd]])
    err = {k: abs(m.loglik(theta) - exact) for k, m in cbpp_models.items()}
    assert err[1] > 1e-3  # Laplace is visibly approximate here ...
    assert err[3] < err[1]
    assert err[25] < err[3]
    assert err[25] < 1e-6


# ---------------------------------------------------------------------------------------
# two-dimensional random effects: (1 + x | g)

N_CLUSTERS_2D = 30
L_TRUE_2D = np.array([[0.7, 0.0], [0.25, 0.45]])
BETA_2D = np.array([0.4, -0.3])


@pytest.fixture(scope="module")
def poisson_2d():
    rng = np.random.default_rng(20240607)
    sizes = rng.integers(4, 14, N_CLUSTERS_2D)
    g = np.repeat(np.arange(N_CLUSTERS_2D), sizes)
    x = rng.normal(0, 1, g.size)
    b = rng.normal(size=(N_CLUSTERS_2D, 2)) @ L_TRUE_2D.T
    eta = BETA_2D[0] + BETA_2D[1] * x + b[g, 0] + b[g, 1] * x
    y = rng.poisson(np.exp(eta))
    # cluster labels deliberately not in sorted order of appearance
    labels = np.array([f"c{k:02d}" for k in rng.permutation(N_CLUSTERS_2D)])
    return pd.DataFrame({"y": y, "x": x, "g": labels[g]})


@pytest.fixture(scope="module")
def poisson_2d_bruteforce(poisson_2d):
    df = poisson_2d
    y, x = df["y"].to_numpy(float), df["x"].to_numpy()
    codes = pd.factorize(df["g"])[0]
    X = np.column_stack([np.ones(len(df)), x])

    def loglik(beta, L, n_grid=201):
        return bruteforce_2d_loglik(lambda idx, eta: poisson_logpmf(y[idx, None], eta),
                                    X @ beta, X, codes, L, n_grid=n_grid, width=8.0)

    return loglik


@pytest.fixture(scope="module")
def poisson_2d_models(poisson_2d):
    return {k: gj.build_model("y ~ x + (1 + x | g)", poisson_2d, "poisson", nagq=k)
            for k in (1, 9, 15, 31)}


def test_2d_bruteforce_grid_is_converged(poisson_2d_bruteforce):
    # self-check of the reference integrator: a finer grid changes nothing at 1e-8
    a = poisson_2d_bruteforce(BETA_2D, L_TRUE_2D, n_grid=201)
    b = poisson_2d_bruteforce(BETA_2D, L_TRUE_2D, n_grid=321)
    assert a == pytest.approx(b, abs=1e-8)


@pytest.mark.parametrize("where", ["truth", "perturbed"])
def test_agq9_2d_equals_bruteforce(poisson_2d_models, poisson_2d_bruteforce, where):
    beta, L = BETA_2D, L_TRUE_2D
    if where == "perturbed":  # away from the truth, negative correlation
        beta = beta + np.array([0.1, -0.1])
        L = np.array([[0.8, 0.0], [-0.2, 0.5]])
    expected = poisson_2d_bruteforce(beta, L)
    got = poisson_2d_models[9].loglik(theta_vector(beta, L))
    assert got == pytest.approx(expected, abs=1e-4)


def test_more_nodes_approach_bruteforce_2d(poisson_2d_models, poisson_2d_bruteforce):
    # Large random-effect variances with small counts: the integrands are far from
    # Gaussian, so Laplace and 9-node AGHQ are visibly approximate. (Gauss-Hermite errors
    # need not shrink at every single step of nagq, e.g. 3 nodes can be worse than 1, so
    # the rule is checked along a sequence of node counts that ends at 31**2 = 961 nodes.)
    beta, L = BETA_2D + np.array([-0.2, 0.15]), np.array([[1.0, 0.0], [-0.4, 0.6]])
    exact = poisson_2d_bruteforce(beta, L)
    theta = theta_vector(beta, L)
    err = {k: abs(m.loglik(theta) - exact) for k, m in poisson_2d_models.items()}
    assert err[1] > 1e-2
    assert err[9] < err[1]
    assert err[15] < err[9]
    assert err[31] < err[15]
    assert err[15] < 1e-5
    assert err[31] < 1e-8


def test_2d_sign_of_L_columns_is_irrelevant(poisson_2d_models, poisson_2d_bruteforce):
    # G = L L^T is unchanged when a column of L flips sign
    beta, L = BETA_2D, L_TRUE_2D
    flipped = L * np.array([-1.0, 1.0])
    m = poisson_2d_models[9]
    assert m.loglik(theta_vector(beta, flipped)) == pytest.approx(
        m.loglik(theta_vector(beta, L)), abs=1e-9)


# ---------------------------------------------------------------------------------------
# the quadrature node budget


def test_node_budget_2d(poisson_2d):
    # 32**2 = 1024 nodes per cluster is over the limit of 1000
    with pytest.raises(gj.GLMMInputError, match="1000"):
        gj.build_model("y ~ x + (1 + x | g)", poisson_2d, "poisson", nagq=32)
    with pytest.raises(gj.GLMMInputError, match="nagq"):
        gj.fit("y ~ x + (1 + x | g)", poisson_2d, "poisson", nagq=32)
    # 31**2 = 961 is allowed (only built here, not evaluated)
    gj.build_model("y ~ x + (1 + x | g)", poisson_2d, "poisson", nagq=31)


def test_node_budget_1d(cbpp):
    with pytest.raises(gj.GLMMInputError, match="1000"):
        gj.build_model(CBPP_FORMULA, cbpp, "binomial", nagq=1001)
    gj.build_model(CBPP_FORMULA, cbpp, "binomial", nagq=1000)
