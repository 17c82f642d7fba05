"""Conditional vs marginal (glmm_jax.marginal) against closed forms, brute-force integrals
written here with NumPy/SciPy, finite differences, and R's performance::icc /
performance::r2_nakagawa / insight::get_variance (tests/data/r_marginal/make_refs.R ->
refs.json, from glmmTMB and lme4 fits of the same models)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import glmm_jax as gj
from glmm_jax import marginal

DATA = Path(__file__).parent / "data" / "r_marginal"
REFS = json.loads((DATA / "refs.json").read_text())
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
L_HERD = "L_herd[(Intercept),(Intercept)]"

# b-grid for brute-force integrals over b ~ N(0, sigma^2): the trapezoid rule on a wide,
# fine grid is accurate to rounding for these smooth, Gaussian-tailed integrands
GRID = np.linspace(-12.0, 12.0, 24001)
GRID_W = stats.norm.pdf(GRID) * (GRID[1] - GRID[0])


def normal_expectation(fun, sd):
    """E[fun(sd * x)] for x ~ N(0, 1), fun vectorized over a trailing grid axis."""
    return fun(sd * GRID) @ GRID_W


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.GLMMWarning)
        return gj.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def fits(ref_fit):
    """Every fit these tests use, by the names of refs.json where it has one."""
    out = {
        "cbpp_logit": ref_fit("cbpp_laplace"),
        "salamanders_poisson": ref_fit("salamanders_poisson"),
        "owls_nbinom2": ref_fit("owls_nbinom2"),
        "sleepstudy_slopes": ref_fit("sleepstudy_reml"),
        "cbpp_probit": quiet_fit(CBPP, gj.datasets.load("cbpp"), link="probit"),
        "sleepstudy_intercept": quiet_fit("Reaction ~ Days + (1 | Subject)",
                                          gj.datasets.load("sleepstudy"), family="gaussian",
                                          reml=False),
        "gamma_sim": quiet_fit("y ~ x + (1 | g)", pd.read_csv(DATA / "gamma_sim.csv"),
                               family="gamma"),
    }
    return out


def at_estimates(res, ref):
    """``res``'s model with every parameter held at the reference fit's estimates
    (fixef, the Cholesky factor of each G, sigma)."""
    values = dict(ref["fixef"])
    for t, G in zip(res.terms, ref["G"].values(), strict=True):
        L = np.linalg.cholesky(np.array(G, dtype=float))
        for i, a in enumerate(t.z_names):
            for j, b in enumerate(t.z_names[: i + 1]):
                values[f"L_{t.group}[{a},{b}]"] = L[i, j]
    sigma = ref["sigma"]  # residual SD, NB theta, or the Gamma CV 1/sqrt(shape)
    values["log(sigma)"] = values["log(theta)"] = np.log(sigma)
    values["log(shape)"] = -2.0 * np.log(sigma)
    fixed = {n: values[n] for n in res.theta_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.GLMMWarning)
        return res.model.fit(start=list(fixed.values()), fixed=fixed)


# ---------------------------------------------------------------------------------------
# the one-dimensional marginal mean


def test_marginal_means_closed_forms(fits):
    """Per row: log link exp(eta + s2/2), probit Phi(eta / sqrt(1 + s2)), identity eta,
    logit by SciPy's adaptive quadrature."""
    for name, closed in [("salamanders_poisson", lambda e, s2: np.exp(e + s2 / 2)),
                         ("cbpp_probit", lambda e, s2: stats.norm.cdf(e / np.sqrt(1 + s2))),
                         ("sleepstudy_intercept", lambda e, s2: e)]:
        res = fits[name]
        eta = res.frame.X @ res.beta + res.frame.offset
        np.testing.assert_allclose(marginal.marginal_means(res),
                                   closed(eta, res.terms[0].G[0, 0]), rtol=1e-12)
    res = fits["cbpp_logit"]
    eta, sd = res.frame.X @ res.beta, float(np.sqrt(res.terms[0].G[0, 0]))
    logit = [integrate.quad(lambda x, e=e: special.expit(e + sd * x) * stats.norm.pdf(x),
                            -np.inf, np.inf, epsabs=1e-14)[0] for e in eta[:4]]
    np.testing.assert_allclose(marginal.marginal_means(res)[:4], logit, rtol=1e-10)
    # JAX theta: JAX out, the same numbers; rows without random variation are
    # linkinv(eta), with finite derivatives
    theta = jnp.asarray(res.theta)
    np.testing.assert_allclose(np.asarray(marginal.marginal_means(res, theta))[:4], logit,
                               rtol=1e-10)
    X, Z = res.frame.X[:4], np.array([[0.0], [1.0], [0.0], [1.0]])
    np.testing.assert_allclose(marginal.marginal_means(res, X=X, Zs=[Z])[[0, 2]],
                               special.expit(eta[[0, 2]]), rtol=1e-14)
    J = jax.jacfwd(lambda th: marginal.marginal_means(res, th, X=X, Zs=[Z]))(theta)
    assert np.all(np.isfinite(np.asarray(J)))
    np.testing.assert_array_equal(np.asarray(J)[[0, 2], -1], 0.0)


def test_marginal_means_of_new_rows(fits):
    res = fits["cbpp_logit"]
    X, Zs = res.model.design(gj.datasets.load("cbpp").iloc[:3])
    np.testing.assert_allclose(marginal.marginal_means(res, X=X, Zs=Zs),
                               marginal.marginal_means(res)[:3], rtol=1e-14)


# ---------------------------------------------------------------------------------------
# marginal coefficients


def brute_force_beta_m(theta, X, link_inverse, link, offset, n_nodes=200):
    """beta_M = (X'X)^-1 X' (g(mu_M) - offset) for a random intercept with SD |theta[-1]|
    (theta = [beta, L]), mu_M by a 200-node Gauss-Hermite rule written here."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    eta = X @ theta[:-1] + offset
    mu = link_inverse(eta[:, None] + np.sqrt(2.0) * abs(theta[-1]) * x) @ (w / np.sqrt(np.pi))
    return np.linalg.lstsq(X, link(mu) - offset, rcond=None)[0]


def test_marginal_coefficients_equal_brute_force_integral(fits):
    res = fits["cbpp_logit"]
    f, sd = res.frame, float(np.sqrt(res.terms[0].G[0, 0]))
    eta = f.X @ res.beta
    mu = np.array([normal_expectation(lambda b, e=e: special.expit(e + b), sd) for e in eta])
    expected = np.linalg.lstsq(f.X, special.logit(mu), rcond=None)[0]
    table = gj.marginal.marginal_coefficients(res)
    assert list(table.columns) == ["estimate", "se", "lower", "upper", "conditional",
                                   "attenuation"]
    np.testing.assert_allclose(table["estimate"], expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(table["conditional"], res.beta, rtol=0, atol=0)
    np.testing.assert_allclose(table["attenuation"], expected / res.beta, rtol=1e-9)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(table["lower"], table["estimate"] - z * table["se"], rtol=1e-14)
    np.testing.assert_allclose(table["upper"], table["estimate"] + z * table["se"], rtol=1e-14)
    assert np.all(np.abs(table["estimate"]) < np.abs(res.beta))  # attenuated


def test_delta_method_se_equals_finite_differences(fits):
    res = fits["cbpp_logit"]
    f = res.frame

    def beta_m(theta):
        return brute_force_beta_m(theta, f.X, special.expit, special.logit, f.offset)

    h = 1e-5
    J = np.column_stack([(beta_m(res.theta + h * e) - beta_m(res.theta - h * e)) / (2 * h)
                         for e in np.eye(len(res.theta))])
    se = np.sqrt(np.diag(J @ res.cov_theta @ J.T))
    table = marginal.marginal_coefficients(res)
    np.testing.assert_allclose(table["estimate"], beta_m(res.theta), rtol=0, atol=1e-10)
    np.testing.assert_allclose(table["se"], se, rtol=1e-7)


def test_probit_marginal_coefficients_closed_form(fits):
    """Probit random intercept: mu_M = Phi(eta / sqrt(1 + s^2)), so beta_M = beta c with
    c = (1 + L^2)^(-1/2), exactly; its Jacobian in (beta, L) is [c I, -beta L c^3]."""
    res = fits["cbpp_probit"]
    L = res.theta[-1]
    c = 1.0 / np.sqrt(1.0 + L * L)
    J = np.column_stack([c * np.eye(len(res.beta)), -res.beta * L * c**3])
    table = marginal.marginal_coefficients(res, level=0.9)
    np.testing.assert_allclose(table["estimate"], res.beta * c, rtol=1e-12)
    np.testing.assert_allclose(table["attenuation"], c, rtol=1e-12)
    np.testing.assert_allclose(table["se"], np.sqrt(np.diag(J @ res.cov_theta @ J.T)),
                               rtol=1e-10)
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(table["upper"] - table["lower"], 2 * z * table["se"],
                               rtol=1e-12)


def test_log_link_marginal_coefficients_closed_form_with_offset(fits):
    """Log link, random intercept: g(mu_M) - offset = X beta + s^2 / 2, so only the
    intercept moves, by L^2 / 2; its Jacobian row is [1, 0, ..., L, 0 (log theta)]."""
    res = fits["owls_nbinom2"]
    names = res.theta_names
    L = res.theta[names.index("L_Nest[(Intercept),(Intercept)]")]
    table = marginal.marginal_coefficients(res)
    expected = res.beta.copy()
    expected[0] += L * L / 2
    np.testing.assert_allclose(table["estimate"], expected, rtol=1e-12)
    J = np.zeros((len(res.beta), len(names)))
    J[:, : len(res.beta)] = np.eye(len(res.beta))
    J[0, names.index("L_Nest[(Intercept),(Intercept)]")] = L
    np.testing.assert_allclose(table["se"], np.sqrt(np.diag(J @ res.cov_theta @ J.T)),
                               rtol=1e-10)
    np.testing.assert_allclose(table["attenuation"].iloc[1:], 1.0, rtol=1e-12)


def test_identity_link_marginal_equals_conditional(fits):
    ml = fits["sleepstudy_intercept"]  # ML: beta in theta, the quadrature and autodiff path
    table = marginal.marginal_coefficients(ml)
    np.testing.assert_allclose(table["estimate"], ml.beta, rtol=1e-12)
    np.testing.assert_allclose(table["se"], ml.se, rtol=1e-10)
    np.testing.assert_allclose(marginal.marginal_means(ml), ml.frame.X @ ml.beta, rtol=1e-12)
    reml = fits["sleepstudy_slopes"]  # REML: beta is not in theta; exactly conditional
    table = marginal.marginal_coefficients(reml)
    np.testing.assert_array_equal(table["estimate"], reml.beta)
    np.testing.assert_array_equal(table["se"], reml.se)
    np.testing.assert_array_equal(table["attenuation"], 1.0)


def test_logit_attenuation_grows_with_sigma(fits):
    """cbpp refitted with the herd SD held at 0.25 ... 3: the marginal slopes shrink
    towards 0 as sigma_b grows, close to Zeger et al.'s (1988) approximation
    1 / sqrt(1 + c^2 sigma^2), c = 16 sqrt(3) / (15 pi)."""
    model = fits["cbpp_logit"].model
    c = 16 * np.sqrt(3) / (15 * np.pi)
    previous = np.ones(3)
    for sd in (0.25, 0.75, 1.5, 3.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gj.GLMMWarning)
            res = model.fit(fixed={L_HERD: sd})
        slopes = marginal.marginal_coefficients(res)["attenuation"].to_numpy()[1:]
        assert np.all(slopes < previous)
        np.testing.assert_allclose(slopes, 1 / np.sqrt(1 + c * c * sd * sd), atol=0.03)
        previous = slopes


def test_marginal_coefficients_bad_level(fits):
    for level in (0.0, 1.0, 95, "0.95", True):
        with pytest.raises(gj.GLMMInputError, match="level"):
            marginal.marginal_coefficients(fits["cbpp_logit"], level=level)


# ---------------------------------------------------------------------------------------
# marginal covariance of a cluster


def test_poisson_marginal_covariance_closed_form(fits):
    """The seed's formula: mu_i = exp(eta_i + sigma^2 / 2), Cov(y_i, y_k) =
    mu_i mu_k (exp(sigma^2) - 1) + delta_ik mu_i."""
    res = fits["salamanders_poisson"]
    f = res.frame
    site = res.terms[0].levels[3]
    rows = np.flatnonzero(f.groups[0].codes == 3)
    s2 = res.terms[0].G[0, 0]
    mu = np.exp(f.X[rows] @ res.beta + s2 / 2)
    cov = np.outer(mu, mu) * np.expm1(s2) + np.diag(mu)
    out = marginal.marginal_covariance(res, site)
    assert list(out.cov.index) == list(f.row_index[rows])
    np.testing.assert_allclose(out.mean, mu, rtol=1e-10)
    np.testing.assert_allclose(out.cov, cov, rtol=1e-8)
    np.testing.assert_allclose(out.corr, cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))),
                               rtol=1e-8)


def test_gaussian_marginal_covariance_is_zgz_plus_sigma2(fits):
    res = fits["sleepstudy_slopes"]
    f = res.frame
    rows = np.flatnonzero(f.groups[0].codes == res.terms[0].levels.get_loc(308))
    Z = f.groups[0].Z[rows]
    expected = Z @ res.terms[0].G @ Z.T + res.sigma**2 * np.eye(len(rows))
    out = marginal.marginal_covariance(res, 308, group="Subject")
    np.testing.assert_allclose(out.cov, expected, rtol=1e-10)
    np.testing.assert_allclose(out.mean, f.X[rows] @ res.beta, rtol=1e-12)


def test_binomial_marginal_covariance_brute_force(fits):
    """Successes out of n_i trials: Cov = n_i n_k Cov_b(p_i, p_k) + delta_ik n_i E[p(1-p)]."""
    res = fits["cbpp_logit"]
    f = res.frame
    rows = np.flatnonzero(f.groups[0].codes == 0)
    sd = float(np.sqrt(res.terms[0].G[0, 0]))
    n, eta = f.trials[rows], f.X[rows] @ res.beta
    p = special.expit(eta[:, None] + sd * GRID)  # [m, grid]
    ep = p @ GRID_W
    cov = n[:, None] * n[None, :] * (((p - ep[:, None]) * GRID_W) @ (p - ep[:, None]).T)
    cov += np.diag(n * ((p * (1 - p)) @ GRID_W))
    out = marginal.marginal_covariance(res, 1)
    np.testing.assert_allclose(out.mean, n * ep, rtol=1e-10)
    np.testing.assert_allclose(out.cov, cov, rtol=1e-9)


def test_marginal_covariance_bad_input(fits):
    res = fits["cbpp_logit"]
    with pytest.raises(gj.GLMMInputError, match="'no-such-herd'.*herd"):
        marginal.marginal_covariance(res, "no-such-herd")
    with pytest.raises(gj.GLMMInputError, match="'site'.*'herd'"):
        marginal.marginal_covariance(res, 1, group="site")
    with pytest.raises(gj.GLMMInputError, match="n_nodes"):
        marginal.marginal_covariance(res, 1, n_nodes=0)


# ---------------------------------------------------------------------------------------
# ICC and Nakagawa's R² against R


R_CASES = [(name, "glmmTMB") for name in ("cbpp_logit", "cbpp_probit", "salamanders_poisson",
                                          "owls_nbinom2", "gamma_sim", "sleepstudy_intercept",
                                          "sleepstudy_slopes")]
# lme4's numbers without a null model (Poisson/NB refit it, and lme4's null fit is off)
R_CASES += [(name, "lme4") for name in ("cbpp_logit", "cbpp_probit", "sleepstudy_intercept",
                                        "sleepstudy_slopes")]


@pytest.mark.parametrize(("name", "source"), R_CASES)
def test_icc_r2_equal_performance_at_r_estimates(fits, name, source):
    """performance::icc and r2_nakagawa of R's fit, with glmm_jax's formulas evaluated at
    R's estimates. Poisson/NB: the null model is refitted by each side (to ~1e-7)."""
    ref = REFS[name][source]
    res = at_estimates(fits[name], ref)
    icc, r2 = gj.marginal.icc(res), gj.marginal.r2(res)
    tol = 1e-6 if name in ("salamanders_poisson", "owls_nbinom2") else 1e-12
    assert icc["adjusted"] == pytest.approx(ref["icc_adjusted"], rel=tol, abs=tol)
    assert icc["conditional"] == pytest.approx(ref["icc_conditional"], rel=tol, abs=tol)
    assert r2["marginal"] == pytest.approx(ref["r2_marginal"], rel=tol, abs=tol)
    assert r2["conditional"] == pytest.approx(ref["r2_conditional"], rel=tol, abs=tol)


@pytest.mark.parametrize("name", [n for n, s in R_CASES if s == "glmmTMB"])
def test_icc_r2_of_own_fit_match_glmmtmb_fit(fits, name):
    """Two optimizers at the same optimum (glmmTMB stops within ~3e-5 of ours)."""
    ref = REFS[name]["glmmTMB"]
    icc, r2 = gj.marginal.icc(fits[name]), gj.marginal.r2(fits[name])
    got = [icc["adjusted"], icc["conditional"], r2["marginal"], r2["conditional"]]
    want = [ref["icc_adjusted"], ref["icc_conditional"], ref["r2_marginal"],
            ref["r2_conditional"]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_cbpp_icc_vs_lme4_reference(fits):
    """performance::icc of lme4's glmer fit (the shared reference values). lme4's
    optimizer stops at theta = 0.64207 where the Laplace optimum (ours, glmmTMB's) is
    0.64226; at lme4's estimates the numbers agree to rounding (test above), at ours
    they differ by 6e-5."""
    icc = gj.marginal.icc(fits["cbpp_logit"])
    assert REFS["cbpp_logit"]["lme4"]["icc_adjusted"] == 0.111356081824916
    assert icc["adjusted"] == pytest.approx(0.111356081824916, abs=1e-4)
    assert icc["conditional"] == pytest.approx(0.101850373824738, abs=1e-4)


def test_response_scale_icc(fits):
    res = fits["cbpp_logit"]
    sd = float(np.sqrt(res.terms[0].G[0, 0]))
    eta = float(np.mean(res.frame.X @ res.beta))
    p = special.expit(eta + sd * GRID)
    between = ((p - p @ GRID_W) ** 2) @ GRID_W
    within = (p * (1 - p)) @ GRID_W
    assert gj.marginal.icc(res)["response"] == pytest.approx(between / (between + within),
                                                             rel=1e-10)
    assert gj.marginal.icc(res, eta=0.5)["response"] < gj.marginal.icc(res)["adjusted"]
    # Poisson closed form: E mu = e^(eta + s2/2), Var mu = e^(2 eta + s2) (e^s2 - 1)
    res = fits["salamanders_poisson"]
    s2 = res.terms[0].G[0, 0]
    eta = float(np.mean(res.frame.X @ res.beta))
    var_mu, e_mu = np.exp(2 * eta + s2) * np.expm1(s2), np.exp(eta + s2 / 2)
    assert gj.marginal.icc(res)["response"] == pytest.approx(var_mu / (var_mu + e_mu),
                                                             rel=1e-10)
    gaussian = gj.marginal.icc(fits["sleepstudy_intercept"])
    assert gaussian["response"] == pytest.approx(gaussian["adjusted"], rel=1e-12)
    assert "response" not in gj.marginal.icc(fits["sleepstudy_slopes"]).index
