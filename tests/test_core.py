"""The analysis-ready core: a result that carries its model, the convergence record, the
value-only objective, refits from a start and with fixed parameters, engine choice."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import compilations

import glmm_jax as gj
from glmm_jax import model as model_module

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
SIGMA = "L_herd[(Intercept),(Intercept)]"


@pytest.fixture(scope="module")
def cbpp_fit():
    return gj.fit(CBPP, gj.datasets.load("cbpp"))


def test_result_carries_its_model(cbpp_fit):
    res = cbpp_fit
    assert isinstance(res.model, gj.Model)
    assert res.theta_names == res.model.theta_names
    assert res.theta_names == ["(Intercept)", "period2", "period3", "period4", SIGMA]
    assert res.hessian.shape == (5, 5) and res.gradient.shape == (5,)
    np.testing.assert_allclose(res.hessian, res.hessian.T)
    np.testing.assert_allclose(np.linalg.inv(res.hessian), res.cov_theta, rtol=1e-10)
    f, g, H = res.model.value_grad_hess(res.theta)
    assert -f == pytest.approx(res.loglik, abs=1e-10)
    np.testing.assert_allclose(g, res.gradient, atol=1e-8)
    np.testing.assert_allclose(H, res.hessian, rtol=1e-8, atol=1e-8)


def test_convergence_record(cbpp_fit):
    c = cbpp_fit.convergence
    assert c.status == "converged" and c.message == "converged"
    assert c.methods == ("newton",)
    assert c.n_iter == cbpp_fit.n_iter >= 1 and c.n_eval >= c.n_iter
    assert c.objective_final == pytest.approx(-cbpp_fit.loglik)
    assert c.objective_start > c.objective_final  # the start is worse than the optimum
    assert c.objective_start == pytest.approx(cbpp_fit.model.negloglik(c.theta_start))
    np.testing.assert_array_equal(c.theta_final, cbpp_fit.theta)
    np.testing.assert_allclose(c.theta_start, cbpp_fit.model.start())
    assert c.min_eigenvalue == pytest.approx(np.linalg.eigvalsh(cbpp_fit.hessian)[0])
    assert 0 <= c.grad_norm < 1e-6 and c.max_abs_grad < 1e-6
    assert c.tolerances["max_iter"] == 100 and c.fixed == () and c.time_s > 0


def test_iteration_limit_is_recorded():
    df = gj.datasets.load("sleepstudy")
    with pytest.warns(gj.ConvergenceWarning, match="raise max_iter") as rec:
        res = gj.fit("Reaction ~ Days + (Days | Subject)", df, family="gaussian", max_iter=1)
    assert len([w for w in rec if w.category is gj.ConvergenceWarning]) == 1  # once
    assert not res.converged
    assert res.convergence.status in ("iteration_limit", "line_search_failed")
    assert res.convergence.methods == ("newton", "lbfgs", "newton")
    assert res.convergence.message in res.messages


def test_negloglik_is_the_value_of_value_grad_hess(cbpp_fit):
    m = cbpp_fit.model
    theta = m.start() + 0.05
    assert m.negloglik(theta) == pytest.approx(m.value_grad_hess(theta)[0], abs=1e-10)
    assert m.loglik(theta) == -m.negloglik(theta)
    with pytest.raises(gj.GLMMInputError, match="5 entries"):
        m.negloglik(theta[:3])


def test_negloglik_compiles_once(cbpp_fit):
    m = cbpp_fit.model
    m.negloglik(m.start())
    n = model_module._nll._cache_size()
    for k in range(3):
        m.negloglik(m.start() + 0.01 * k)
    assert model_module._nll._cache_size() == n


def test_fit_from_a_start_reaches_the_same_optimum(cbpp_fit):
    res = cbpp_fit.model.fit(start=cbpp_fit.theta + 0.2)
    assert res.loglik == pytest.approx(cbpp_fit.loglik, abs=1e-9)
    np.testing.assert_allclose(res.theta, cbpp_fit.theta, atol=1e-6)


def test_fixed_at_the_optimum_reproduces_the_fit(cbpp_fit):
    k = cbpp_fit.theta_names.index(SIGMA)
    res = cbpp_fit.model.fit(fixed={SIGMA: cbpp_fit.theta[k]})
    assert res.converged and res.convergence.fixed == (SIGMA,)
    assert res.loglik == pytest.approx(cbpp_fit.loglik, abs=1e-9)
    np.testing.assert_allclose(res.theta, cbpp_fit.theta, atol=1e-6)


def test_fixed_elsewhere_is_the_profile(cbpp_fit):
    """Held at sigma = 1: the fit maximizes over the rest (a profile point), lower than
    the optimum, with a zero gradient in the free entries only."""
    res = cbpp_fit.model.fit(fixed={SIGMA: 1.0})
    k = res.theta_names.index(SIGMA)
    assert res.converged and res.theta[k] == 1.0
    assert res.loglik < cbpp_fit.loglik - 0.1
    free = np.arange(5) != k
    assert np.max(np.abs(res.gradient[free])) < 1e-6
    assert abs(res.gradient[k]) > 1e-3
    # a brute check of the profile: nudging a free entry lowers the log-likelihood
    for j in np.flatnonzero(free):
        t = res.theta.copy()
        t[j] += 1e-3
        assert res.model.loglik(t) < res.loglik


def test_fixed_names_must_be_parameters(cbpp_fit):
    with pytest.raises(gj.GLMMInputError, match=r"'sigma'.*parameters: \(Intercept\)"):
        cbpp_fit.model.fit(fixed={"sigma": 1.0})


def test_hessian_is_finite_at_a_singular_fit():
    rng = np.random.default_rng(3)
    df = gj.datasets.simulate_registry(n_rows=600, n_hospitals=30, seed=4)
    df = df.assign(y=rng.integers(0, 2, len(df)))  # no between-hospital variation
    with pytest.warns(gj.SingularFitWarning):
        res = gj.fit("y ~ age + (1 | hospital)", df)
    assert res.singular and np.all(np.isfinite(res.hessian))


def test_engine_option():
    df = gj.datasets.load("cbpp")
    single = gj.build_model(CBPP, df)
    multi = gj.build_model(CBPP, df, engine="multi")
    assert "engine multi" in repr(multi) and "engine single" not in repr(multi)
    theta = single.start()
    assert single.negloglik(theta) == pytest.approx(multi.negloglik(theta), abs=1e-9)
    with pytest.raises(gj.GLMMInputError, match="engine must be one of"):
        gj.build_model(CBPP, df, engine="fast")
    with pytest.raises(gj.GLMMInputError, match="Gaussian"):
        gj.build_model(CBPP, df, engine="lmm")


def test_model_repr_is_short(cbpp_fit):
    text = repr(cbpp_fit.model)
    assert len(text) < 300 and "56 rows" in text and "herd (15)" in text


def test_fit_many_results_build_their_model_when_asked():
    df = gj.datasets.load("cbpp").assign(half=lambda d: (d.herd.astype(int) > 7).astype(int))
    mr = gj.fit_many(CBPP, df, by="half")
    res = mr.results[0]
    t = time.perf_counter()
    m = res.model
    assert isinstance(m, gj.Model) and time.perf_counter() - t < 60
    assert m.loglik(res.theta) == pytest.approx(res.loglik, abs=1e-8)
    assert res.convergence.status == "converged"


# ---- the kept encoding and new responses -----------------------------------------------
DESIGNS = [
    (CBPP, "cbpp", "binomial"),
    ("Reaction ~ poly(Days, 2) + I(Days > 4) + (1 + Days || Subject)", "sleepstudy",
     "gaussian"),
    ("y ~ Anger + Gender + btype + (1 | id) + (1 | item)", "verbagg", "binomial"),
]


@pytest.mark.parametrize("formula, ds, family", DESIGNS)
def test_design_of_the_training_data_is_the_fit_design(formula, ds, family):
    df = gj.datasets.load(ds)
    if ds == "verbagg":
        df = df.assign(y=(df.r2 == "Y").astype(int))
    m = gj.build_model(formula, df, family=family)
    X, Zs = m.design(df)
    np.testing.assert_array_equal(X, m.frame.X)
    for Z, g in zip(Zs, m.frame.groups, strict=True):
        np.testing.assert_array_equal(Z, g.Z)


def test_design_of_new_data_with_an_unseen_level():
    df = gj.datasets.load("cbpp")
    m = gj.build_model(CBPP, df)
    with pytest.raises(gj.GLMMInputError, match=r"'period' has levels not seen.*7"):
        m.design(df.iloc[:3].assign(period=["1", "2", "7"]))
    with pytest.raises(gj.GLMMInputError, match=r"'period'.*not in the data"):
        m.design(df.drop(columns="period"))


@pytest.mark.parametrize("formula, ds, family, reml", [
    (CBPP, "cbpp", "binomial", None),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian", True),
    ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", "grouseticks", "poisson", None),
])
def test_with_the_same_response_is_the_same_fit_and_compiles_nothing(formula, ds, family,
                                                                     reml):
    m = gj.build_model(formula, gj.datasets.load(ds), family=family, reml=reml)
    a = m.fit()
    compiled = compilations()
    b = m.with_response(m.frame.y).fit()
    assert compilations() == compiled
    assert b.loglik == pytest.approx(a.loglik, abs=1e-10)
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-10)


def test_with_a_new_response_refits_it():
    df = gj.datasets.load("cbpp")
    m = gj.build_model(CBPP, df)
    y = np.minimum(m.frame.y + 1, m.frame.trials)
    res = m.with_response(y).fit()
    direct = gj.fit("cbind(inc1, size - inc1) ~ period + (1 | herd)",
                    df.assign(inc1=np.minimum(df.incidence + 1, df["size"])))
    assert res.loglik == pytest.approx(direct.loglik, abs=1e-9)
    with pytest.raises(gj.GLMMInputError, match="56 values"):
        m.with_response(y[:5])
    with pytest.raises(gj.GLMMInputError, match="binomial response must be integer"):
        m.with_response(y + 0.5)


def test_float64_stays_float64(cbpp_fit):
    """Every array a fit returns is float64 (the suite also runs with JAX's strict dtype
    promotion: see conftest.py)."""
    res = cbpp_fit
    for a in (res.theta, res.beta, res.beta_cov, res.hessian, res.gradient, res.cov_theta,
              res.terms[0].b, res.terms[0].b_cov, res.terms[0].L):
        assert a.dtype == np.float64
    f, g, H = res.model.value_grad_hess(res.theta.astype(np.float32))
    assert g.dtype == H.dtype == np.float64
    import jax.numpy as jnp

    fam = res.family
    assert fam.linkinv(jnp.asarray([0.1])).dtype == jnp.float64


@pytest.mark.parametrize("formula, ds, family, reml", [
    (CBPP, "cbpp", "binomial", None),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian", False),
    ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", "grouseticks", "poisson", None),
])
def test_fit_responses_equals_one_fit_per_response(formula, ds, family, reml):
    """Responses simulated from the fit, fitted in one vmapped program (a batch of 4,
    the last one padded), equal fitting each with_response model on its own."""
    import jax

    from glmm_jax.optimize import newton_fit_many

    m = gj.build_model(formula, gj.datasets.load(ds), family=family, reml=reml)
    res = m.fit()
    f = m.frame
    eta = f.X @ res.beta + f.offset + sum(
        np.sum(g.Z * t.b[g.codes], axis=1) for g, t in zip(f.groups, res.terms, strict=True))
    log_phi = np.log(res.dispersion) if res.dispersion is not None else 0.0
    keys = jax.random.split(jax.random.PRNGKey(1), 6)
    Y = np.stack([np.asarray(res.family.sample(k, res.family.linkinv(eta), log_phi, f.trials))
                  for k in keys])
    batch = m.fit_responses(Y, batch_size=4)
    compiled = newton_fit_many._cache_size()
    m.fit_responses(Y[:3], batch_size=4)
    assert newton_fit_many._cache_size() == compiled  # one program for every batch
    assert len(batch) == 6
    for k in (0, 5):
        one = m.with_response(Y[k]).fit(start=m.start())
        assert batch[k].converged and one.converged
        assert batch[k].loglik == pytest.approx(one.loglik, abs=1e-8)
        np.testing.assert_allclose(batch[k].theta, one.theta, atol=1e-6)
        np.testing.assert_array_equal(batch[k].frame.y, Y[k])


def test_modes_warm_start_the_value(cbpp_fit):
    m = cbpp_fit.model
    theta = cbpp_fit.theta + 0.02
    u = m.modes(cbpp_fit.theta)
    assert m.negloglik(theta, u0=u) == pytest.approx(m.negloglik(theta), abs=1e-10)
    f, g, _ = m.value_grad_hess(theta, u0=u)
    np.testing.assert_allclose(g, m.value_grad_hess(theta)[1], atol=1e-8)
