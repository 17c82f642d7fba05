"""Exact autodiff gradients and Hessians of -loglik against finite differences.

``Model.value_grad_hess`` claims the exact gradient and Hessian of -loglik(theta)
(implicit differentiation through the conditional modes). The references are central
differences of ``Model.loglik`` (gradient) and of the autodiff gradient (Hessian), taken
away from the optimum so that the gradient is not ~0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP_FORMULA, OWLS_FORMULA, theta_from_result

import glmm_jax as gj

RTOL = 1e-5


def _poisson_slope_data() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    J = 25
    sizes = rng.integers(5, 15, J)
    g = np.repeat(np.arange(J), sizes)
    x = rng.uniform(-1, 1, g.size)
    b = rng.normal(size=(J, 2)) @ np.array([[0.5, 0.0], [0.2, 0.3]]).T
    y = rng.poisson(np.exp(0.8 + 0.5 * x + b[g, 0] + b[g, 1] * x))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g]})


MODELS = {
    "binomial_logit_ri": lambda: gj.build_model(CBPP_FORMULA, gj.datasets.load("cbpp"),
                                                "binomial"),
    "poisson_random_slope": lambda: gj.build_model("y ~ x + (1 + x | g)", _poisson_slope_data(),
                                                   "poisson"),
    "gaussian_random_slope": lambda: gj.build_model("Reaction ~ Days + (Days | Subject)",
                                                    gj.datasets.load("sleepstudy"), "gaussian",
                                                    reml=False),
    "gaussian_reml": lambda: gj.build_model("Reaction ~ Days + (Days | Subject)",
                                            gj.datasets.load("sleepstudy"), "gaussian"),
    "negative_binomial": lambda: gj.build_model(OWLS_FORMULA, gj.datasets.load("owls"),
                                                "negative_binomial"),
    "binomial_agq5": lambda: gj.build_model(CBPP_FORMULA, gj.datasets.load("cbpp"),
                                            "binomial", nagq=5),
    "poisson_slope_agq5": lambda: gj.build_model("y ~ x + (1 + x | g)", _poisson_slope_data(),
                                                 "poisson", nagq=5),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return request.param, MODELS[request.param]()


def _point(model, where: str) -> np.ndarray:
    theta = np.asarray(model.start(), dtype=float)
    if where == "perturbed":
        # a deterministic, scale-aware shift of every component (L's off-diagonal
        # included), so no gradient component sits at a symmetry point
        k = np.arange(theta.size)
        theta = theta + 0.1 * np.cos(1.0 + 2.0 * k) * np.maximum(1.0, 0.2 * np.abs(theta))
    return theta


def _steps(theta: np.ndarray) -> np.ndarray:
    return 1e-5 * np.maximum(1.0, np.abs(theta))


@pytest.mark.parametrize("where", ["start", "perturbed"])
def test_gradient_matches_finite_differences(model, where):
    name, m = model
    theta = _point(m, where)
    f, g, _ = m.value_grad_hess(theta)
    assert f == pytest.approx(-m.loglik(theta), rel=1e-13)
    assert g.shape == theta.shape
    fd = np.empty_like(theta)
    for i, h in enumerate(_steps(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        fd[i] = -(m.loglik(theta + e) - m.loglik(theta - e)) / (2 * h)
    assert np.max(np.abs(g)) > 1e-2, "evaluation point is too close to a stationary point"
    # relative 1e-5 per component, with a floor (1e-7 of the largest component) for
    # components that happen to be ~0 at this point
    np.testing.assert_allclose(g, fd, rtol=RTOL, atol=1e-7 * np.max(np.abs(g)),
                               err_msg=f"{name} at {where}: {m.theta_names}")


@pytest.mark.parametrize("where", ["start", "perturbed"])
def test_hessian_matches_finite_differences(model, where):
    name, m = model
    theta = _point(m, where)
    _, _, H = m.value_grad_hess(theta)
    n = theta.size
    assert H.shape == (n, n)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * np.max(np.abs(H)))
    fd = np.empty((n, n))
    for i, h in enumerate(_steps(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        fd[:, i] = (m.value_grad_hess(theta + e)[1] - m.value_grad_hess(theta - e)[1]) / (2 * h)
    # relative 1e-5 on the scale of each parameter: |dH_ij| <= 1e-5 sqrt(|H_ii H_jj|)
    # (some cross terms are exactly 0, e.g. beta x covariance in balanced Gaussian data,
    # so an entrywise relative error is meaningless for them)
    scale = np.sqrt(np.outer(np.abs(np.diag(H)), np.abs(np.diag(H))))
    err = np.abs(fd - H) / scale
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() < RTOL, (name, where, [m.theta_names[k] for k in worst], err.max())
    # the finite-difference Hessian is itself symmetric to FD accuracy
    assert np.max(np.abs(fd - fd.T) / scale) < RTOL


def test_hessian_is_positive_definite_at_the_optimum(ref_fit):
    # at the maximum likelihood estimates -loglik is locally convex
    res = ref_fit("owls_nbinom2")
    m = gj.build_model(OWLS_FORMULA, gj.datasets.load("owls"), "negative_binomial")
    _, g, H = m.value_grad_hess(theta_from_result(res))
    assert np.min(np.linalg.eigvalsh(H)) > 0
    assert g @ np.linalg.solve(H, g) < 1e-6  # Newton decrement: at the optimum
