"""Predictions, fitted values and residuals (glmm_jax/predict.py) against lme4's
(tests/data/r_predict/make_refs.R -> refs.json), finite differences and quadrature.

lme4's Laplace log-likelihood for cbpp differs from ours by 3e-4 at its own estimates, so
its estimates differ from ours by ~2e-4; the lme4 comparisons are therefore made at lme4's
estimates (a fit with every parameter ``fixed=`` there): predictions there depend only on
the conditional modes, which are unique.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP_FORMULA
from scipy import integrate, linalg, special, stats

import glmm_jax as gj
from glmm_jax.predict import _level_codes, fitted, predict, residuals

REFS = json.loads((Path(__file__).parent / "data" / "r_predict" / "refs.json").read_text())
SLEEP = "Reaction ~ Days + (Days | Subject)"


def _at(res, theta):
    """The fit with every parameter held at ``theta`` (its modes solved there)."""
    theta = np.asarray(theta, dtype=float)
    return res.model.fit(start=theta, fixed=dict(zip(res.theta_names, theta, strict=True)))


@pytest.fixture(scope="module")
def cbpp_res(cbpp):
    return gj.fit(CBPP_FORMULA, cbpp)


@pytest.fixture(scope="module")
def cbpp_lme4(cbpp_res):
    r = REFS["cbpp_laplace"]
    return _at(cbpp_res, np.r_[r["fixef"], r["theta"]])


@pytest.fixture(scope="module")
def sleep_data():
    return gj.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_res(sleep_data):
    return gj.fit(SLEEP, sleep_data, family="gaussian")


@pytest.fixture(scope="module")
def sleep_lme4(sleep_res):
    r = REFS["sleepstudy_reml"]  # lme4's theta is relative to sigma; ours is not
    return _at(sleep_res, np.r_[np.asarray(r["theta"]) * r["sigma"], np.log(r["sigma"])])


@pytest.fixture(scope="module")
def sleep_new():
    nd = REFS["sleepstudy_reml"]["newdata"]
    return pd.DataFrame({"Subject": [int(s) for s in nd["Subject"]], "Days": nd["Days"]},
                        index=[10, 11, 12, 13, 14])


# ---- lme4 -----------------------------------------------------------------------------
def test_cbpp_matches_lme4(cbpp_lme4, cbpp_res):
    r = REFS["cbpp_laplace"]
    got = {
        "fitted": fitted(cbpp_lme4),
        "predict_link": predict(cbpp_lme4),
        "predict_response": predict(cbpp_lme4, type="response"),
        "predict_link_re_na": predict(cbpp_lme4, random_effects=False),
        "predict_response_re_na": predict(cbpp_lme4, type="response", random_effects=False),
    }
    got.update({f"resid_{t}": residuals(cbpp_lme4, t)
                for t in ("response", "pearson", "deviance", "working")})
    for name, value in got.items():
        assert isinstance(value, pd.Series)
        assert value.index.equals(cbpp_lme4.frame.row_index)
        np.testing.assert_allclose(value.to_numpy(), r[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    # our own estimates: within the two fits' difference
    np.testing.assert_allclose(fitted(cbpp_res), r["fitted"], atol=2e-4)


def test_sleepstudy_matches_lme4(sleep_lme4, sleep_new):
    r = REFS["sleepstudy_reml"]
    np.testing.assert_allclose(sleep_lme4.beta, r["fixef"], rtol=1e-9)
    p = predict(sleep_lme4, sleep_new, allow_new_levels=True)
    assert p.index.equals(sleep_new.index) and p.name == "fit"
    np.testing.assert_allclose(p, r["predict_newdata"], rtol=1e-9)
    np.testing.assert_allclose(predict(sleep_lme4, sleep_new, random_effects=False),
                               r["predict_newdata_re_na"], rtol=1e-9)
    np.testing.assert_allclose(fitted(sleep_lme4), r["fitted"], rtol=1e-9)
    for t in ("response", "deviance"):
        np.testing.assert_allclose(residuals(sleep_lme4, t), r[f"resid_{t}"], atol=1e-8)
    # ours are scaled (lme4's scaled = TRUE), lme4's default is not: they differ by sigma
    np.testing.assert_allclose(residuals(sleep_lme4, "pearson") * sleep_lme4.sigma,
                               r["resid_pearson"], atol=1e-8)


def test_newdata_rows_equal_fit_rows(cbpp_res, cbpp):
    p = predict(cbpp_res, cbpp, type="response", se_fit=True)
    q = predict(cbpp_res, type="response", se_fit=True)
    np.testing.assert_allclose(p.to_numpy(), q.to_numpy(), rtol=1e-12)


def test_interaction_levels_as_the_fit():
    df = gj.datasets.load("cbpp")
    m = gj.build_model("cbind(incidence, size - incidence) ~ period + (1 | herd/period)", df)
    for g in m.frame.groups:  # herd and the interaction period:herd
        codes, Z = _level_codes(g, df.iloc[::-1], g.Z[::-1], False)
        np.testing.assert_array_equal(codes, g.codes[::-1])
        np.testing.assert_array_equal(Z, g.Z[::-1])


# ---- standard errors ------------------------------------------------------------------
def _fd_se(pred, phi, cov, h=1e-5):
    """sqrt(diag(J cov J')) with J by central differences of ``pred`` in phi."""
    cols = []
    for j in range(len(phi)):
        e = np.zeros(len(phi))
        e[j] = h
        cols.append((pred(phi + e) - pred(phi - e)) / (2.0 * h))
    J = np.stack(cols, axis=1)
    return np.sqrt(np.einsum("it,ts,is->i", J, cov, J))


def test_se_fit_is_finite_differences_of_refits(cbpp_res):
    f = cbpp_res.frame
    (g,) = f.groups

    def link(theta):  # the modes re-solved at theta
        at = _at(cbpp_res, theta)
        return f.X @ at.beta + g.Z[:, 0] * at.terms[0].b[g.codes, 0]

    fd = _fd_se(link, cbpp_res.theta, cbpp_res.cov_theta)
    p = predict(cbpp_res, se_fit=True)
    assert list(p.columns) == ["fit", "se"]
    np.testing.assert_allclose(p["se"], fd, rtol=1e-6)
    fd_mu = _fd_se(lambda th: special.expit(link(th)), cbpp_res.theta, cbpp_res.cov_theta)
    p = predict(cbpp_res, type="response", level=0.9)
    np.testing.assert_allclose(p["se"], fd_mu, rtol=1e-6)
    # the interval is formed on the link scale
    z = stats.norm.ppf(0.95)
    se_link = predict(cbpp_res, se_fit=True)["se"]
    eta = special.logit(p["fit"])
    np.testing.assert_allclose(p["lower"], special.expit(eta - z * se_link), rtol=1e-10)
    np.testing.assert_allclose(p["upper"], special.expit(eta + z * se_link), rtol=1e-10)


def _blup_link(phi, data, new):
    """x'beta + z'b_j with the Gaussian BLUP b_j = G Z_j' V_j^-1 (y_j - X_j beta) given
    (beta, L, log sigma) = phi; b = 0 for a Subject not in the data."""
    beta, L = phi[:2], np.array([[phi[2], 0.0], [phi[3], phi[4]]])
    G, s2 = L @ L.T, np.exp(2.0 * phi[5])
    b = {}
    for subject, d in data.groupby("Subject"):
        Z = np.column_stack([np.ones(len(d)), d["Days"]])
        V = Z @ G @ Z.T + s2 * np.eye(len(d))
        b[subject] = G @ Z.T @ np.linalg.solve(V, d["Reaction"] - Z @ beta)
    Zn = np.column_stack([np.ones(len(new)), new["Days"]])
    bn = np.array([b.get(s, np.zeros(2)) for s in new["Subject"]])
    return Zn @ beta + np.sum(Zn * bn, axis=1)


def test_reml_se_is_finite_differences_in_beta_and_theta(sleep_res, sleep_data, sleep_new):
    phi = np.r_[sleep_res.beta, sleep_res.theta]
    cov = linalg.block_diag(sleep_res.beta_cov, sleep_res.cov_theta)
    p = predict(sleep_res, sleep_new, allow_new_levels=True, level=0.95)
    np.testing.assert_allclose(p["fit"], _blup_link(phi, sleep_data, sleep_new), rtol=1e-9)
    fd = _fd_se(lambda ph: _blup_link(ph, sleep_data, sleep_new), phi, cov)
    np.testing.assert_allclose(p["se"], fd, rtol=1e-6)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(p["upper"] - p["lower"], 2 * z * p["se"], rtol=1e-12)
    # at b = 0 (and marginally: identity link) only beta varies, with its REML covariance
    X = np.column_stack([np.ones(len(sleep_new)), sleep_new["Days"]])
    se = np.sqrt(np.einsum("ia,ab,ib->i", X, sleep_res.beta_cov, X))
    for kw in ({"random_effects": False}, {"marginal": True}):
        q = predict(sleep_res, sleep_new, se_fit=True, **kw)
        np.testing.assert_allclose(q["fit"], X @ sleep_res.beta, rtol=1e-12)
        np.testing.assert_allclose(q["se"], se, rtol=1e-10)


# ---- marginal predictions -------------------------------------------------------------
def _quad_marginal(eta, sd):
    """E[expit(eta + b)], b ~ N(0, sd^2), by adaptive quadrature."""
    return np.array([integrate.quad(lambda b, e=e: special.expit(e + b) *
                                    stats.norm.pdf(b, scale=sd), -np.inf, np.inf,
                                    epsabs=1e-13, epsrel=1e-13)[0] for e in eta])


def test_marginal_equals_quadrature(cbpp_res):
    new = pd.DataFrame({"period": ["1", "2", "3", "4"], "herd": [1, 5, 99, 100]})
    X = np.column_stack([np.ones(4), np.eye(4)[:, 1:]])

    def marginal(theta):
        return _quad_marginal(X @ theta[:4], abs(theta[4]))

    m = predict(cbpp_res, new, type="response", marginal=True, se_fit=True)
    np.testing.assert_allclose(m["fit"], marginal(cbpp_res.theta), atol=1e-6, rtol=0)
    fd = _fd_se(marginal, cbpp_res.theta, cbpp_res.cov_theta)
    np.testing.assert_allclose(m["se"], fd, rtol=1e-5)
    link = predict(cbpp_res, new, marginal=True)
    np.testing.assert_allclose(link, special.logit(marginal(cbpp_res.theta)), atol=1e-6)
    # attenuated towards 0 relative to the conditional prediction at b = 0
    fixed = predict(cbpp_res, new, random_effects=False)
    assert np.all(np.abs(link) < np.abs(fixed))


# ---- bad input ------------------------------------------------------------------------
def test_new_levels_need_allow_new_levels(sleep_res, sleep_new):
    with pytest.raises(gj.GLMMInputError, match=r"'Subject'.*999.*allow_new_levels"):
        predict(sleep_res, sleep_new)
    many = pd.DataFrame({"Subject": np.arange(1000, 1008), "Days": np.zeros(8)})
    with pytest.raises(gj.GLMMInputError, match="1000, 1001, 1002, 1003, 1004 and 3 more"):
        predict(sleep_res, many)
    # at b = 0 (or marginally) the grouping factor is not needed
    p = predict(sleep_res, many.drop(columns="Subject"), random_effects=False)
    np.testing.assert_allclose(p, sleep_res.beta[0], rtol=1e-12)


def test_missing_columns_and_values(sleep_res, sleep_new, cbpp_res):
    with pytest.raises(gj.GLMMInputError, match="'Days'"):
        predict(sleep_res, sleep_new.drop(columns="Days"), allow_new_levels=True)
    with pytest.raises(gj.GLMMInputError, match="no column 'Subject'"):
        predict(sleep_res, sleep_new.drop(columns="Subject"))
    with pytest.raises(gj.GLMMInputError, match="missing .* in 1 rows"):
        predict(sleep_res, sleep_new.assign(Days=[0.0, np.nan, 1.0, 2.0, 3.0]),
                allow_new_levels=True)
    with pytest.raises(gj.GLMMInputError, match="'Subject' has missing values in 2 rows"):
        predict(sleep_res, sleep_new.assign(Subject=[308, None, 372, None, 308]))
    with pytest.raises(gj.GLMMInputError, match="'period' has levels not seen .*: 5"):
        predict(cbpp_res, pd.DataFrame({"period": ["1", "5"], "herd": [1, 2]}))


def test_bad_arguments(cbpp_res):
    with pytest.raises(gj.GLMMInputError, match="type must be one of 'link', 'response'"):
        predict(cbpp_res, type="mean")
    with pytest.raises(gj.GLMMInputError, match="level must be a number between 0 and 1"):
        predict(cbpp_res, level=95)
    with pytest.raises(gj.GLMMInputError, match="newdata must be a DataFrame"):
        predict(cbpp_res, {"period": ["1"]})
    with pytest.raises(gj.GLMMInputError, match="'response', 'pearson', 'deviance'"):
        residuals(cbpp_res, "raw")


def test_caller_data_not_modified(sleep_res, sleep_new, cbpp_res):
    before = sleep_new.copy()
    predict(sleep_res, sleep_new, allow_new_levels=True, level=0.9, type="response")
    predict(sleep_res, sleep_new, marginal=True, se_fit=True)
    pd.testing.assert_frame_equal(sleep_new, before)
    new = pd.DataFrame({"period": pd.Categorical(["2", "4"]), "herd": [3, 7]})
    before = new.copy()
    predict(cbpp_res, new, allow_new_levels=True, se_fit=True)
    pd.testing.assert_frame_equal(new, before)


def test_result_methods(cbpp_res, cbpp):
    pd.testing.assert_series_equal(cbpp_res.fitted(), fitted(cbpp_res))
    pd.testing.assert_series_equal(cbpp_res.residuals("working"),
                                   residuals(cbpp_res, "working"))
    pd.testing.assert_frame_equal(cbpp_res.predict(cbpp, type="response", level=0.8),
                                  predict(cbpp_res, cbpp, type="response", level=0.8))
