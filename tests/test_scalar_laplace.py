"""The one-scalar-term Laplace derivatives from the rows' Taylor coefficients
(scalar_laplace.py) against autodiff through every row (the joint engine, crossed.py):
value, gradient and Hessian at points away from the optimum, for every family and link
it serves, offsets, prior weights, a term on a covariate, a negative factor and several
blocks. Small models run in padded programs (a random intercept in a program for two
effects: sizes.py), so the models here are built unpadded."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import glmm_jax as gj
from glmm_jax import scalar_laplace


@pytest.fixture(autouse=True)
def _unpadded(monkeypatch):
    monkeypatch.setattr(gj.sizes, "SMALL_ROWS", 0)


def _registry(n_rows=900, n_hospitals=40, seed=3):
    df = gj.datasets.simulate_registry(n_rows=n_rows, n_hospitals=n_hospitals, seed=seed)
    rng = np.random.default_rng(seed)
    return df.assign(count=rng.poisson(np.exp(0.3 + 0.4 * df["age"])),
                     expo=rng.uniform(0.5, 2.0, len(df)), w=rng.uniform(0.2, 3.0, len(df)))


CASES = {
    "logit": ("y ~ age + sex + comorb + teaching + (1 | hospital)", "binomial", {}),
    "probit": ("y ~ age + comorb + (1 | hospital)", gj.families.Binomial("probit"), {}),
    "cloglog, trials": ("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                        gj.families.Binomial("cloglog"), {}),
    "logit, trials": ("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                      "binomial", {}),
    "poisson, offset and weights": ("count ~ age + sex + (1 | hospital)", "poisson",
                                    {"offset": "expo", "weights": "w"}),
    "slope only": ("y ~ age + sex + (0 + age | hospital)", "binomial", {}),
}


def _data(formula):
    return gj.datasets.load("cbpp") if formula.startswith("cbind") else _registry()


def _assert_same(a, b):
    for x, y, what in zip(a, b, ("value", "gradient", "Hessian"), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        scale = 1.0 + np.max(np.abs(y))
        assert np.max(np.abs(x - y)) <= 1e-10 * scale, what


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_autodiff_through_rows(name):
    formula, family, kw = CASES[name]
    df = _data(formula)
    single = gj.build_model(formula, df, family=family, **kw)
    joint = gj.build_model(formula, df, family=family, engine="multi", **kw)
    assert scalar_laplace.applies(single.structure)
    start = single.start()
    rng = np.random.default_rng(0)
    for theta in (start, start + 0.2 * rng.normal(size=start.size),
                  np.r_[start[:-1] - 0.1, -0.8],  # (a negative factor: the same model)
                  np.r_[start[:-1], 0.0]):  # (a zero SD, as at a singular fit)
        _assert_same(single.value_grad_hess(theta), joint.value_grad_hess(theta))


def test_several_blocks(monkeypatch):
    formula, family, _ = CASES["logit"]
    df = _registry(n_rows=2000, n_hospitals=80)
    monkeypatch.setattr(gj.laplace, "BLOCK_ROWS", 256)
    monkeypatch.setattr(gj.laplace, "ACCELERATOR_BLOCK_ROWS", 256)
    single = gj.build_model(formula, df, family=family)
    assert single.data.y.shape[0] >= 5
    joint = gj.build_model(formula, df, family=family, engine="multi")
    theta = single.start() + 0.1
    _assert_same(single.value_grad_hess(theta), joint.value_grad_hess(theta))


def test_single_engine_takes_this_path(monkeypatch):
    # the engine's Hessian is this module's (it would also match the joint engine by the
    # autodiff path): count the calls while a program of a new shape is traced
    calls = []
    inner = scalar_laplace.block_value_grad_hess

    def counted(*args):
        calls.append(1)
        return inner(*args)

    monkeypatch.setattr(scalar_laplace, "block_value_grad_hess", counted)
    model = gj.build_model(CASES["logit"][0], _registry(n_rows=777, n_hospitals=33))
    model.value_grad_hess(model.start())
    assert calls


@pytest.mark.parametrize("formula, family, nagq", [
    ("y ~ age + (1 + age | hospital)", "binomial", 1),  # a vector term
    ("y ~ age + (1 | hospital)", "binomial", 5),  # quadrature
    ("count ~ age + (1 | hospital)", "negative_binomial", 1),  # a dispersion parameter
])
def test_applies_only_where_exact(formula, family, nagq):
    model = gj.build_model(formula, _registry(), family=family, nagq=nagq)
    assert not scalar_laplace.applies(model.structure)


def test_small_models_take_a_two_effect_program_after_a_slope(monkeypatch):
    # up to sizes.SMALL_ROWS rows, a random intercept runs in its own (padded) program,
    # by this module, unless the process already laid out a program for two effects (a
    # random slope) that holds it: then it reuses that one, where the rows' autodiff stays
    monkeypatch.undo()
    gj.sizes.forget()
    df = _registry()
    model = gj.build_model(CASES["logit"][0], df)
    assert model.padding is not None and model.structure.q == 1
    assert scalar_laplace.applies(model.structure)
    gj.build_model("y ~ age + sex + comorb + teaching + (age | hospital)", df)
    model = gj.build_model(CASES["logit"][0], df)
    assert model.structure.q == 2 and not scalar_laplace.applies(model.structure)
    gj.sizes.forget()


def test_fit_unchanged_against_the_joint_engine():
    # the fit this serves most (logistic random intercept): the same optimum either way
    df = _registry(n_rows=3000, n_hospitals=60, seed=5)
    formula = CASES["logit"][0]
    single, joint = gj.fit(formula, df), gj.fit(formula, df, engine="multi")
    assert single.converged and joint.converged
    assert single.loglik == pytest.approx(joint.loglik, abs=1e-9)
    np.testing.assert_allclose(single.theta, joint.theta, atol=1e-7)
    np.testing.assert_allclose(single.se, joint.se, rtol=1e-6)


@pytest.mark.parametrize("name", ["logit", "poisson, offset and weights", "slope only"])
def test_modes_derivatives_and_conditional_variances(name):
    # what the Hessian's pass also hands Newton (objective.SingleEngine's aux): the modes'
    # derivatives in theta (to start the next modes: predict_modes) against central
    # differences of the solved modes, and the conditional variances against the
    # inverse of -d2h/du2 from the modes' own pass (laplace.grad_negHess)
    formula, family, kw = CASES[name]
    model = gj.build_model(formula, _registry(), family=family, **kw)
    s, data = model.structure, model.data
    theta = model.start() + 0.05
    u = model.modes(theta)
    *_, (cov, du) = gj.objective.value_grad_hess_aux(jnp.asarray(theta), u, data, s)
    _, cov_rows = gj.objective.SingleEngine.conditional(jnp.asarray(theta), u, data, s)
    np.testing.assert_allclose(cov, cov_rows, rtol=1e-12)
    h = 1e-5
    for k in range(theta.size):
        e = np.eye(theta.size)[k] * h
        fd = (np.asarray(model.modes(theta + e)) - np.asarray(model.modes(theta - e))) / (2 * h)
        np.testing.assert_allclose(np.asarray(du)[..., k], fd[..., 0], atol=1e-6)
    step = 0.01 * np.ones(theta.size)
    guess = gj.objective.SingleEngine.predict_modes(u, (cov, du), jnp.asarray(step))
    solved = np.asarray(model.modes(theta + step))
    assert np.max(np.abs(guess - solved)) < 0.1 * np.max(np.abs(np.asarray(u) - solved))
