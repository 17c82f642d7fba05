"""Families and links: conditional log densities against scipy.stats, and family lookup."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CBPP_FORMULA, cbpp_arrays, laplace_ri_loglik
from scipy import special, stats

import glmm_jax as gj
from glmm_jax import families

ETA = np.linspace(-4.0, 3.0, 29)


def full_logpdf(fam, y, eta, trials=None, log_phi=0.0):
    """glmm_jax's complete conditional log density: logpdf + log_const."""
    y = np.asarray(y, dtype=float)
    trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    eta = np.asarray(eta, dtype=float)
    lp = np.asarray(fam.logpdf(y, eta, trials, log_phi))
    return lp + np.asarray(fam.log_const(y, trials))


def _grid(y_values, eta=ETA):
    Y, E = np.meshgrid(np.asarray(y_values, dtype=float), eta, indexing="ij")
    return Y.ravel(), E.ravel()


INV_LINK = {"logit": special.expit, "probit": special.ndtr,
            "cloglog": lambda e: -np.expm1(-np.exp(e))}


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
@pytest.mark.parametrize("trials", [1, 5, 20])
def test_binomial_matches_scipy(link, trials):
    fam = families.Binomial(link=link)
    # above eta = 2 the cloglog's 1 - p = exp(-exp(eta)) < 6e-4 and scipy, which gets p
    # rather than log(1 - p), loses digits; large |eta| is checked in closed form below
    y, eta = _grid(np.arange(trials + 1), ETA[ETA <= 2.0] if link == "cloglog" else ETA)
    n = np.full_like(y, trials)
    expected = stats.binom.logpmf(y, n, INV_LINK[link](eta))
    got = full_logpdf(fam, y, eta, n)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binomial_is_finite_and_accurate_at_extreme_eta(link):
    # where scipy's binom.logpmf loses log(1 - p) to rounding, compare with the exact
    # log probabilities written in stable closed form
    fam = families.Binomial(link=link)
    eta = np.array([-40.0, -25.0, -10.0, 10.0, 25.0, 40.0])
    n = np.full(eta.size, 7.0)
    for yv in (0.0, 3.0, 7.0):
        y = np.full(eta.size, yv)
        if link == "logit":
            log_p, log_q = -np.logaddexp(0, -eta), -np.logaddexp(0, eta)
        elif link == "probit":
            log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
        else:  # cloglog: 1 - p = exp(-exp(eta)); log p = log(-expm1(-exp(eta)))
            log_q = -np.exp(eta)
            log_p = np.log(-np.expm1(-np.exp(eta)))
        with np.errstate(invalid="ignore"):
            expected = (special.gammaln(n + 1) - special.gammaln(y + 1)
                        - special.gammaln(n - y + 1)
                        + np.where(y > 0, y * log_p, 0.0) + np.where(n > y, (n - y) * log_q, 0.0))
        got = full_logpdf(fam, y, eta, n)
        assert np.all(np.isfinite(got)), (link, yv, got)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13,
                                   err_msg=f"{link} y={yv}")


def test_poisson_matches_scipy():
    fam = families.Poisson()
    y, eta = _grid(np.arange(0, 40))
    np.testing.assert_allclose(full_logpdf(fam, y, eta), stats.poisson.logpmf(y, np.exp(eta)),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("log_sigma", [-1.0, 0.0, 1.5])
def test_gaussian_matches_scipy(log_sigma):
    fam = families.Gaussian()
    y, eta = _grid(np.linspace(-10, 10, 21), eta=np.linspace(-8, 8, 17))
    expected = stats.norm.logpdf(y, loc=eta, scale=np.exp(log_sigma))
    np.testing.assert_allclose(full_logpdf(fam, y, eta, log_phi=log_sigma), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [0.5, 1.0, 3.0, 40.0])
def test_gamma_matches_scipy(shape):
    fam = families.Gamma()
    y, eta = _grid(np.geomspace(1e-3, 50, 23))
    mu = np.exp(eta)
    expected = stats.gamma.logpdf(y, a=shape, scale=mu / shape)
    np.testing.assert_allclose(full_logpdf(fam, y, eta, log_phi=np.log(shape)), expected,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("theta", [0.2, 1.0, 5.0, 500.0])
def test_negative_binomial_matches_scipy(theta):
    fam = families.NegativeBinomial()
    y, eta = _grid(np.arange(0, 60))
    mu = np.exp(eta)
    expected = stats.nbinom.logpmf(y, theta, theta / (theta + mu))
    np.testing.assert_allclose(full_logpdf(fam, y, eta, log_phi=np.log(theta)), expected,
                               rtol=1e-9, atol=1e-9)


def test_family_attributes():
    assert families.Gaussian().dispersion_name == "sigma"
    assert families.Gamma().dispersion_name == "shape"
    assert families.NegativeBinomial().dispersion_name == "theta"
    assert not families.Binomial().has_dispersion and not families.Poisson().has_dispersion
    # default links
    assert families.Binomial().link == "logit"
    assert families.Poisson().link == families.Gamma().link == "log"
    assert families.NegativeBinomial().link == "log"
    assert families.Gaussian().link == "identity"
    # inverse links
    eta = np.array([-2.0, 0.0, 1.5])
    np.testing.assert_allclose(np.asarray(families.Binomial("probit").linkinv(eta)),
                               stats.norm.cdf(eta), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(families.Binomial("cloglog").linkinv(eta)),
                               1 - np.exp(-np.exp(eta)), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# get_family


@pytest.mark.parametrize("name, cls", [
    ("binomial", families.Binomial), ("Poisson", families.Poisson),
    ("gaussian", families.Gaussian), ("normal", families.Gaussian),
    ("gamma", families.Gamma), ("negative_binomial", families.NegativeBinomial),
    ("nbinom2", families.NegativeBinomial),
])
def test_get_family_names(name, cls):
    fam = families.get_family(name)
    assert isinstance(fam, cls)


def test_get_family_with_link_and_object():
    assert families.get_family("binomial", "cloglog") == families.Binomial(link="cloglog")
    obj = families.Binomial(link="probit")
    assert families.get_family(obj) is obj
    assert families.get_family(obj, "probit") is obj


def test_get_family_errors():
    with pytest.raises(gj.GLMMInputError, match=r"unknown family 'tweedie'.*'binomial'"):
        families.get_family("tweedie")
    with pytest.raises(gj.GLMMInputError, match=r"'identity'.*'logit', 'probit', 'cloglog'"):
        families.get_family("binomial", "identity")
    with pytest.raises(gj.GLMMInputError, match="link"):
        families.get_family(families.Binomial(link="probit"), "logit")
    with pytest.raises(gj.GLMMInputError, match="family"):
        families.get_family(3)
    with pytest.raises(gj.GLMMInputError, match=r"'sqrt'"):
        families.Poisson(link="sqrt")


# ---------------------------------------------------------------------------------------
# non-default links through fit()


def _numpy_laplace(cbpp, link, beta, sd):
    """SciPy Laplace log-likelihood of the cbpp model under ``link`` (FD curvature)."""
    y, n, X, codes = cbpp_arrays(cbpp)
    eta0 = X @ beta
    sd = float(np.squeeze(sd))
    inv = INV_LINK[link]

    def row_logpdf(b, idx):
        return stats.binom.logpmf(y[idx], n[idx], inv(eta0[idx] + b))

    def row_d2(b, idx, h=1e-2):  # fourth-order central difference
        f = [row_logpdf(b + k * h, idx) for k in (-2, -1, 0, 1, 2)]
        return (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h**2)

    return laplace_ri_loglik(row_logpdf, row_d2, codes, sd)


@pytest.fixture(scope="module")
def probit_fit(cbpp):
    return gj.fit(CBPP_FORMULA, cbpp, family=families.Binomial(link="probit"))


def test_probit_family_object_in_fit(cbpp, probit_fit):
    res = probit_fit
    assert res.family.name == "binomial" and res.family.link == "probit"
    assert res.converged
    assert "probit" in res.summary()
    by_name = gj.fit(CBPP_FORMULA, cbpp, family="binomial", link="probit")
    assert by_name.loglik == pytest.approx(res.loglik, abs=1e-10)
    np.testing.assert_allclose(by_name.fixef, res.fixef, atol=1e-10)


def test_probit_fit_maximizes_the_probit_laplace_likelihood(cbpp, probit_fit):
    res = probit_fit
    beta, sd = res.fixef.to_numpy(), res.varcorr["sd"].iloc[0]
    # the reported logLik is the probit Laplace likelihood at the reported estimates ...
    assert res.loglik == pytest.approx(_numpy_laplace(cbpp, "probit", beta, sd), abs=1e-6)

    # ... and is its maximum: the SciPy Laplace likelihood is flat there (central
    # differences; a stationary point up to the fit's convergence tolerance)
    start = np.r_[beta, sd]
    grad = np.empty(5)
    for i in range(5):
        e = np.zeros(5)
        e[i] = 1e-4
        grad[i] = (_numpy_laplace(cbpp, "probit", *np.split(start + e, [4]))
                   - _numpy_laplace(cbpp, "probit", *np.split(start - e, [4]))) / 2e-4
    assert np.max(np.abs(grad)) < 1e-3, grad
    # and a logit fit of the same data is a different model
    assert np.all(np.abs(beta) < np.abs(np.array([-1.398, -0.992, -1.128, -1.580])))


def test_cloglog_fit_loglik_is_the_cloglog_laplace_likelihood(cbpp):
    res = gj.fit(CBPP_FORMULA, cbpp, family="binomial", link="cloglog")
    assert res.converged and res.family.link == "cloglog"
    beta, sd = res.fixef.to_numpy(), res.varcorr["sd"].iloc[0]
    assert res.loglik == pytest.approx(_numpy_laplace(cbpp, "cloglog", beta, sd), abs=1e-6)


# ---- links, variance, sampling and CDFs as JAX functions, against scipy.stats ------------
LINK_CASES = [families.Binomial("logit"), families.Binomial("probit"),
              families.Binomial("cloglog"), families.Poisson(), families.Gaussian()]


@pytest.mark.parametrize("fam", LINK_CASES, ids=lambda f: f"{f.name}-{f.link}")
def test_links_are_jax_and_numpy_alike(fam):
    import jax
    import jax.numpy as jnp

    eta = np.linspace(-3.0, 2.0, 11)
    mu = fam.linkinv(eta)
    assert isinstance(mu, np.ndarray)  # NumPy in, NumPy out
    np.testing.assert_allclose(np.asarray(fam.linkinv(jnp.asarray(eta))), mu, rtol=1e-12)
    np.testing.assert_allclose(fam.linkfun(mu), eta, rtol=1e-9, atol=1e-9)
    grad = jax.vmap(jax.grad(lambda e: fam.linkinv(e)))(jnp.asarray(eta))  # autodiff
    np.testing.assert_allclose(np.asarray(grad), fam.mu_eta(eta), rtol=1e-10)
    h = 1e-6
    np.testing.assert_allclose((fam.linkinv(eta + h) - fam.linkinv(eta - h)) / (2 * h),
                               fam.mu_eta(eta), rtol=1e-6)


CDF_CASES = [
    (families.Binomial(), np.arange(0, 8.0), 0.3, 0.0, 7.0,
     lambda y, mu, phi, n: stats.binom.cdf(y, n, mu)),
    (families.Poisson(), np.arange(0, 12.0), 3.5, 0.0, 1.0,
     lambda y, mu, phi, n: stats.poisson.cdf(y, mu)),
    (families.Gaussian(), np.linspace(-2, 4, 9), 1.0, np.log(1.5), 2.0,
     lambda y, mu, phi, n: stats.norm.cdf(y, mu, np.exp(phi) / np.sqrt(n))),
    (families.Gamma(), np.linspace(0.1, 6, 9), 2.0, np.log(3.0), 1.0,
     lambda y, mu, phi, n: stats.gamma.cdf(y, np.exp(phi), scale=mu / np.exp(phi))),
    (families.NegativeBinomial(), np.arange(0, 15.0), 4.0, np.log(2.5), 1.0,
     lambda y, mu, phi, n: stats.nbinom.cdf(y, np.exp(phi), np.exp(phi) / (np.exp(phi) + mu))),
]


@pytest.mark.parametrize("fam, y, mu, log_phi, trials, ref", CDF_CASES, ids=lambda v: getattr(
    v, "name", None))
def test_cdf_equals_scipy(fam, y, mu, log_phi, trials, ref):
    got = np.asarray(fam.cdf(y, mu, log_phi, trials))
    np.testing.assert_allclose(got, ref(y, mu, log_phi, trials), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fam, y, mu, log_phi, trials, ref", CDF_CASES, ids=lambda v: getattr(
    v, "name", None))
def test_samples_have_the_family_distribution(fam, y, mu, log_phi, trials, ref):
    """200k draws: their empirical CDF at the grid equals scipy's within 4 binomial SEs
    (a fixed key: deterministic), and their mean and variance match."""
    import jax

    n = 200_000
    draws = np.asarray(fam.sample(jax.random.PRNGKey(7), np.full(n, mu), log_phi, trials))
    p = ref(y, mu, log_phi, trials)
    emp = (draws[:, None] <= y[None, :]).mean(axis=0)
    assert np.all(np.abs(emp - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12)
    mean = mu * trials if fam.name == "binomial" else mu
    var = fam.variance(np.asarray(mu), log_phi) * (trials if fam.name == "binomial" else 1.0)
    if fam.name == "gaussian":
        var = var / trials
    assert abs(draws.mean() - mean) < 4 * np.sqrt(var / n)
    assert draws.var() == pytest.approx(var, rel=0.03)
