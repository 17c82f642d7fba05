"""Singular fits, convergence messages, and check_convergence (refits from dispersed starts).

References: tests/data/r_convergence/make_refs.R (lme4 1.1-31 / glmmTMB 1.1.5 fits of the
boundary cases and of a crossed Poisson model), reference_fits.json (cbpp, sleepstudy).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj
from glmm_jax.fitresult import Run, _convergence, boundary_parts, issue_warnings
from glmm_jax.objective import engine
from glmm_jax.optimize import NewtonResult

DATA = Path(__file__).parent / "data" / "r_convergence"
L0 = "L_g[(Intercept),(Intercept)]"


@pytest.fixture(scope="module")
def refs() -> dict:
    return json.loads((DATA / "refs.json").read_text())


@pytest.fixture(scope="module")
def corr_sim() -> pd.DataFrame:
    return pd.read_csv(DATA / "corr_sim.csv")


def same_rows() -> pd.DataFrame:
    """A binary response in which every cluster holds the same 12 rows: no between-cluster
    variation (each cluster's residuals sum to 0 at the GLM fit, so the score of the
    random-intercept variance at 0 is -1/2 sum_j sum_i p_i (1 - p_i) < 0: the ML SD is 0)."""
    x = [-1.2, -0.8, -0.5, -0.3, -0.1, 0, 0.2, 0.4, 0.6, 0.9, 1.1, 1.5]
    y = [0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1]
    return pd.DataFrame({"g": np.repeat([f"c{k:02d}" for k in range(1, 26)], 12),
                         "x": np.tile(x, 25), "y": np.tile(y, 25)})


def fit_warn(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = gj.fit(*args, **kw)
    return res, [w for w in caught if issubclass(w.category, gj.GLMMWarning)]


# ---------------------------------------------------------------------------------------
# singular fits


def test_no_between_cluster_variation_is_singular(refs):
    res, caught = fit_warn("y ~ x + (1 | g)", same_rows(), "binomial")
    assert res.converged and res.singular
    assert res.varcorr["sd"].iloc[0] < 1e-3
    ref = refs["same_rows"]  # glmer: theta 0, isSingular TRUE: the GLM's likelihood
    assert ref["singular"] and ref["theta"] == 0
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-6)
    np.testing.assert_allclose(res.beta, ref["fixef"], atol=1e-5)
    (w,) = [w for w in caught if w.category is gj.SingularFitWarning]
    assert "g: the SD of (Intercept) is ~0" in str(w.message)
    assert any("the SD of (Intercept) is ~0" in m for m in res.messages)
    assert not any(w.category is gj.ConvergenceWarning for w in caught)


@pytest.mark.parametrize("key, formula, family, kw", [
    ("corr_gauss", "y_gauss ~ x + (x | g)", "gaussian", {"reml": False}),
    ("corr_pois", "y_pois ~ x + (x | g)", "poisson", {}),
])
def test_correlation_at_one_is_singular(refs, corr_sim, key, formula, family, kw):
    # intercepts and slopes simulated perfectly correlated: lme4 puts the correlation at +1
    res, caught = fit_warn(formula, corr_sim, family, **kw)
    ref = refs[key]
    assert ref["singular"] and ref["corr"] == pytest.approx(1.0, abs=1e-6)
    assert res.converged and res.singular
    corr = res.varcorr["corr"].dropna().iloc[0]
    assert corr == pytest.approx(1.0, abs=1e-6)
    assert res.terms[0].L[1, 1] < 1e-4 * res.sigma
    # the same optimum as lmer (exact); glmer stops ~1e-4 short of it
    assert res.loglik >= ref["logLik"] - 1e-8
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-8 if family == "gaussian" else 3e-4)
    sds = res.varcorr["sd"].dropna().to_numpy()
    np.testing.assert_allclose(sds[:2], ref["sd"][:2], rtol=1e-5 if family == "gaussian" else 2e-3)
    (w,) = [w for w in caught if w.category is gj.SingularFitWarning]
    msg = str(w.message)
    assert "g: the correlation of (Intercept) and x is ~+1 (1.000000)" in msg
    assert "(x || g)" in msg  # what to try
    assert any("correlation of (Intercept) and x" in m for m in res.messages)
    # refits from dispersed starts (the boundary SD moved off 0) come back to it
    check = gj.check_convergence(res, n_starts=3, seed=0, batched=False)
    assert check.same_optimum and check.table["d_loglik"].abs().max() < 1e-6


def test_singular_rule_is_lme4s_relative_to_sigma_for_gaussian(corr_sim):
    # lme4's isSingular: a diagonal of the relative factor (L / sigma for lmer, L for glmer)
    # below 1e-4. An SD held at 5e-3 with sigma ~1e3 is singular; an SD of 5e-5 with
    # sigma ~1e-3 is not (an absolute rule would say the opposite of both)
    big = gj.build_model("y ~ x + (1 | g)", corr_sim.assign(y=corr_sim.y_gauss * 1e3),
                         "gaussian", reml=False)
    small = gj.build_model("y ~ x + (1 | g)", corr_sim.assign(y=corr_sim.y_gauss * 1e-3),
                           "gaussian", reml=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.SingularFitWarning)
        r_big = big.fit(fixed={L0: 5e-3})
        r_small = small.fit(fixed={L0: 5e-5})
    assert r_big.sigma > 500 and r_small.sigma < 2e-3
    assert r_big.singular and not r_small.singular
    # a fit with fixed entries: refitted one by one, those entries held
    check = gj.check_convergence(r_big, n_starts=2, seed=0)
    np.testing.assert_allclose(check.starts[:, big.theta_names.index(L0)], 5e-3, rtol=1e-12)
    assert check.same_optimum and check.table["converged"].all()
    # non-Gaussian: absolute
    m = gj.build_model("y ~ x + (1 | g)", same_rows(), "binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.SingularFitWarning)
        assert m.fit(fixed={L0: 5e-5}).singular
        assert not m.fit(fixed={L0: 2e-4}).singular


def test_boundary_parts_name_the_term_and_parameter():
    T = type("T", (), {})

    def term(L, z=("(Intercept)", "x", "w"), group="site"):
        t = T()
        t.L, t.z_names, t.group = np.asarray(L, float), z[: len(L)], group
        return t

    assert boundary_parts([term([[0.5, 0], [0.3, 0.2]])]) == []
    assert boundary_parts([term([[3e-5]])]) == ["site: the SD of (Intercept) is ~0 (3e-05)"]
    assert boundary_parts([term([[3e-5]])], scale=0.1) == []  # relative to sigma
    (neg,) = boundary_parts([term([[0.5, 0], [-0.3, 1e-6]])])
    assert neg.startswith("site: the correlation of (Intercept) and x is ~-1 (-1.000000")
    # three effects, the third a combination of the other two (no pairwise +-1)
    (comb,) = boundary_parts([term([[1.0, 0, 0], [0.0, 1.0, 0], [0.6, 0.6, 0.0]])])
    assert "w is ~a linear combination of (Intercept), x" in comb


# ---------------------------------------------------------------------------------------
# convergence messages


@pytest.fixture(scope="module")
def cbpp_iter1(cbpp):
    res, caught = fit_warn("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                           max_iter=1)
    return res, caught


def test_iteration_limit_message_has_the_numbers(cbpp_iter1):
    res, caught = cbpp_iter1
    c = res.convergence
    assert not res.converged and c.status == "iteration_limit"
    (w,) = [w for w in caught if w.category is gj.ConvergenceWarning]
    msg = str(w.message)
    assert f"no convergence in {c.n_iter} Newton and {c.n_lbfgs} L-BFGS iterations" in msg
    assert "(max_iter=1 per Newton run)" in msg
    assert f"max|gradient| = {c.max_abs_grad:.2e}" in msg
    assert f"max|H^-1 g| = {c.grad_norm:.2e}" in msg
    # the tolerance the decrement is compared with: 1e-12 (1 + |f|)
    assert f"(tolerance {1e-12 * (1 + abs(c.objective_final)):.2e})" in msg
    assert "raise max_iter (it was 1)" in msg and "gj.check_convergence" in msg
    assert c.message in res.messages


def test_hessian_not_positive_definite_message():
    # a stand-in optimizer record: the line search failed where H has eigenvalue -0.5
    out = NewtonResult(theta=np.array([0.1, 0.2]), u=None, f=np.asarray(10.0),
                       grad=np.array([0.3, -0.01]), hess=np.array([[2.0, 0.0], [0.0, -0.5]]),
                       u_cov=None, n_iter=np.asarray(7), converged=np.asarray(False),
                       line_search_failed=np.asarray(True), inner_converged=np.asarray(True),
                       f0=np.asarray(12.0), n_eval=np.asarray(9), theta0=np.zeros(2))
    run = Run(np.zeros(2), 100)
    run.newton(out)
    c = _convergence(out, run, np.ones(2, bool), np.full((2, 2), np.nan), ["b", "L"])
    assert c.status == "line_search_failed" and c.min_eigenvalue == -0.5
    assert c.message.startswith("the line search failed after 7 Newton iterations: "
                                "max|gradient| = 3.00e-01 (at b)")
    assert "not positive definite (smallest eigenvalue -0.5)" in c.message
    assert c.grad_norm == np.inf


def test_warning_names_badly_scaled_columns(cbpp_iter1):
    res, _ = cbpp_iter1
    X = res.frame.X.copy()
    X[:, 1] *= 1e4  # period2 with an SD of ~4e3
    stand_in = replace(res, frame=replace(res.frame, X=X))
    with pytest.warns(gj.ConvergenceWarning, match=r"rescale covariates.*period2 has SD 4"):
        issue_warnings(stand_in)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.ConvergenceWarning)
        issue_warnings(replace(res, converged=True))  # converged: no ConvergenceWarning


# ---------------------------------------------------------------------------------------
# check_convergence


@pytest.fixture(scope="module")
def cbpp_check(ref_fit):
    res = ref_fit("cbpp_laplace")
    return res, gj.check_convergence(res, n_starts=5, seed=1, batched=True)


def test_cbpp_vmapped_equals_one_by_one(cbpp_check):
    res, check = cbpp_check
    loop = gj.check_convergence(res, n_starts=5, seed=1, batched=False)
    np.testing.assert_array_equal(loop.starts, check.starts)
    np.testing.assert_allclose(loop.table["loglik"], check.table["loglik"], atol=1e-9)


def test_cbpp_all_starts_reach_the_optimum(cbpp_check, reference):
    res, check = cbpp_check
    t = check.table
    assert check.same_optimum and not check.better_found
    assert len(t) == 6 and list(t["kind"]) == ["default"] + ["perturbed"] * 5
    assert t["converged"].all() and t["same"].all()
    assert t["d_loglik"].abs().max() < 1e-6
    assert t["d_fixef"].max() < 1e-4 and t["d_varcomp"].max() < 1e-4
    # the optimum is glmmTMB's
    assert check.best_loglik == pytest.approx(reference["cbpp_laplace"]["glmmTMB"]["logLik"],
                                              abs=1e-6)
    assert "all 6 starts reached the fit's optimum" in check.message
    assert "same optimum: True" in repr(check) and "d_loglik" in str(check)


def test_starts_are_dispersed_and_reproducible(cbpp_check):
    res, check = cbpp_check
    S = check.starts
    np.testing.assert_array_equal(S[0], res.model.start())
    spread = S[1:].std(axis=0)
    se = np.sqrt(np.diag(res.cov_theta))
    assert np.all(spread[:4] > 0.5 * se[:4])  # fixed effects moved by ~2 SEs
    L = S[1:, 4]
    assert L.max() / L.min() > 1.5  # the herd SD multiplied by exp(N(0, 1)) factors
    again = gj.check_convergence(res, n_starts=5, seed=1, batched=True)
    np.testing.assert_array_equal(again.starts, S)
    pd.testing.assert_frame_equal(again.table, check.table)
    other = gj.check_convergence(res, n_starts=5, seed=2)
    assert not np.allclose(other.starts[1:], S[1:])


def test_not_converged_fit_the_check_finds_a_better_optimum(cbpp_iter1, reference):
    res, _ = cbpp_iter1
    check = gj.check_convergence(res, n_starts=5, seed=0)
    assert not check.same_optimum and check.better_found
    assert check.table["converged"].all()
    best = reference["cbpp_laplace"]["glmmTMB"]["logLik"]
    assert check.best_loglik == pytest.approx(best, abs=1e-6)
    assert check.best_loglik - res.loglik > 1e-5
    assert check.best.converged and check.best.loglik == check.best_loglik
    assert "the fit was not at the global optimum" in check.message
    assert "the fit itself did not converge" in check.message


def test_gaussian_sleepstudy(ref_fit, reference):
    res = ref_fit("sleepstudy_reml")  # the cross-product engine, REML (no beta in theta)
    check = gj.check_convergence(res, n_starts=5, seed=0)
    t = check.table
    assert check.same_optimum and t["converged"].all()
    assert t["d_loglik"].abs().max() < 1e-6 and t["d_fixef"].max() < 1e-4
    assert check.best_loglik == pytest.approx(reference["sleepstudy_reml"]["lme4"]["logLik"],
                                              abs=1e-6)
    # the starts moved sigma and the Subject covariance factor
    assert np.all(check.starts[1:].std(axis=0) > 0.05)


@pytest.fixture(scope="module")
def crossed():
    df = pd.read_csv(DATA / "crossed_sim.csv")
    return gj.fit("y ~ x + (1 | a) + (1 | b)", df, "poisson")


def test_crossed_terms(crossed, refs):
    check = gj.check_convergence(crossed, n_starts=5, seed=3, batched=False)
    assert engine(crossed.model.structure).name == "multi"  # the joint Laplace engine
    assert check.same_optimum and check.table["converged"].all()
    assert check.table["d_loglik"].abs().max() < 1e-6
    assert check.best_loglik == pytest.approx(refs["crossed"]["logLik"], abs=1e-6)
    # both terms' SDs were perturbed
    assert np.all(check.starts[1:, 2:4].std(axis=0) > 0.05)


@pytest.mark.slow
def test_crossed_terms_vmapped_equals_one_by_one(crossed):
    a = gj.check_convergence(crossed, n_starts=5, seed=3, batched=False)
    b = gj.check_convergence(crossed, n_starts=5, seed=3, batched=True)
    np.testing.assert_allclose(a.table["loglik"], b.table["loglik"], atol=1e-9)


@pytest.mark.parametrize("kw, match", [
    ({"n_starts": 0}, "n_starts must be a positive integer"),
    ({"n_starts": 2.5}, "n_starts must be a positive integer"),
    ({"n_starts": True}, "n_starts must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": 1.5}, "seed must be"),
    ({"scale": 0.0}, "scale must be a positive number"),
    ({"scale": float("nan")}, "scale must be"),
    ({"max_iter": 0}, "max_iter must be"),
])
def test_bad_input(cbpp_check, kw, match):
    res, _ = cbpp_check
    with pytest.raises(gj.GLMMInputError, match=match):
        gj.check_convergence(res, **kw)


def test_not_a_result():
    with pytest.raises(gj.GLMMInputError, match="needs a fitted GLMMResult"):
        gj.check_convergence(pd.DataFrame())


@pytest.mark.parametrize("formula, family", [
    ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial"),
    ("y ~ age + sex + (1 + age | hospital)", "binomial"),
])
def test_loose_first_modes_reach_the_same_optimum(formula, family):
    # from start values the first point's modes are solved to FIRST_TOL_INNER only:
    # the same optimum as with every point's modes to TOL_INNER, and no convergence
    # declared at a point whose modes were loose (from the optimum: one more point)
    data = gj.datasets.load("cbpp") if "herd" in formula else \
        gj.datasets.simulate_registry(3000, 60, slope_sd=0.4, seed=3)
    m = gj.build_model(formula, data, family=family)
    theta0 = np.asarray(m.start(), float)
    loose, exact = m.newton(theta0, cold=True), m.newton(theta0)
    assert bool(loose.converged) and bool(exact.converged)
    assert float(loose.f) == pytest.approx(float(exact.f), abs=1e-9)
    np.testing.assert_allclose(loose.theta, exact.theta, atol=1e-7)
    again = m.newton(exact.theta, cold=True)
    assert int(again.n_iter) >= 2 and int(m.newton(exact.theta).n_iter) == 1
    # (one more Newton step from a point within Newton's tolerance of the optimum)
    assert float(again.f) == pytest.approx(float(exact.f), abs=1e-9)
    np.testing.assert_allclose(again.theta, exact.theta, atol=1e-5)
