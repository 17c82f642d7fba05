"""Saved fits: ``res.save(path)`` / ``gj.load(path)`` round trips are exact (every array
and table, the convergence record and the formula encoding), a loaded fit predicts,
profiles and simulates as the original, and bad files say what is wrong."""

from __future__ import annotations

import json
import zipfile
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj
from glmm_jax.results import Convergence


def _gamma_data():
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(12), 8)
    x = rng.normal(size=g.size)
    mu = np.exp(0.5 + 0.3 * x + rng.normal(scale=0.4, size=12)[g])
    return pd.DataFrame({"y": rng.gamma(3.0, mu / 3.0), "x": x, "g": g.astype(str)})


def _crossed_data():
    rng = np.random.default_rng(5)
    s, i = np.meshgrid(np.arange(15), np.arange(10), indexing="ij")
    s, i = s.ravel(), i.ravel()
    x = rng.normal(size=s.size)
    eta = -0.3 + 0.6 * x + rng.normal(scale=0.8, size=15)[s] + rng.normal(size=10)[i]
    return pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x,
                         "subj": s, "item": [f"i{k}" for k in i]})


FITS = {  # one per family, one and several terms, stateful transforms and a factor
    "binomial": lambda: gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                               gj.datasets.load("cbpp")),
    "poisson": lambda: gj.fit("count ~ mined + scale(DOY) + (1 | site)",
                              gj.datasets.load("salamanders"), family="poisson"),
    "gaussian": lambda: gj.fit("Reaction ~ poly(Days, 2) + (Days | Subject)",
                               gj.datasets.load("sleepstudy"), family="gaussian"),
    "gamma": lambda: gj.fit("y ~ x + (1 | g)", _gamma_data(), family="gamma"),
    "negative_binomial": lambda: gj.fit(
        "SiblingNegotiation ~ FoodTreatment + offset(logBroodSize) + (1 | Nest)",
        gj.datasets.load("owls"), family="negative_binomial"),
    "crossed": lambda: gj.fit("y ~ x + (1 | subj) + (1 | item)", _crossed_data()),
}


@pytest.fixture(scope="module")
def fits():
    return {}


def _fit(fits, name):
    if name not in fits:
        fits[name] = FITS[name]()
    return fits[name]


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("name", list(FITS))
def test_round_trip_is_exact(fits, name, tmp_path):
    res = _fit(fits, name)
    path = tmp_path / f"{name}.glmm"
    res.save(path)
    back = gj.load(path)
    for f in ("beta", "beta_cov", "theta", "cov_theta", "hessian", "gradient"):
        assert np.array_equal(getattr(back, f), getattr(res, f), equal_nan=True), f
    for f in ("formula", "nagq", "nobs", "x_names", "reml", "dispersion", "loglik",
              "converged", "n_iter", "singular", "messages", "n_dropped", "aliased"):
        assert getattr(back, f) == getattr(res, f), f
    assert back.family == res.family
    for a, b in zip(back.terms, res.terms, strict=True):
        assert (a.group, a.z_names) == (b.group, b.z_names)
        assert a.levels.equals(b.levels) and a.levels.dtype == b.levels.dtype
        for k in ("L", "b", "b_cov"):
            assert np.array_equal(getattr(a, k), getattr(b, k))
    for f in fields(Convergence):
        assert _same(getattr(back.convergence, f.name), getattr(res.convergence, f.name)), f
    pd.testing.assert_frame_equal(back.varcorr, res.varcorr)
    pd.testing.assert_frame_equal(back.wald_table, res.wald_table)
    for g in res.ranef:
        pd.testing.assert_frame_equal(back.ranef[g], res.ranef[g])
    assert back.summary() == res.summary()
    # the model frame and its formula encoding
    for k in ("X", "y", "trials", "offset", "weights"):
        assert np.array_equal(getattr(back.frame, k), getattr(res.frame, k)), k
    assert back.frame.row_index.equals(res.frame.row_index)
    assert back.frame.encoding.state.keys() == res.frame.encoding.state.keys()
    for key, vals in res.frame.encoding.state.items():
        for a, b in zip(back.frame.encoding.state[key], vals, strict=True):
            assert np.array_equal(a, b)
    new = res.model.frame  # design rows for the first rows rebuilt by the loaded encoding
    assert back.frame.encoding.names == new.encoding.names


@pytest.mark.parametrize("name", ["binomial", "gaussian", "crossed"])
def test_loaded_fit_predicts_as_the_original(fits, name, tmp_path):
    res = _fit(fits, name)
    res.save(tmp_path / "fit.glmm")
    back = gj.load(tmp_path / "fit.glmm")
    np.testing.assert_array_equal(back.fitted().to_numpy(), res.fitted().to_numpy())
    data = {"binomial": lambda: gj.datasets.load("cbpp"),
            "gaussian": lambda: gj.datasets.load("sleepstudy"),
            "crossed": _crossed_data}[name]().iloc[:7]
    for kind in ("link", "response"):
        a = back.predict(data, type=kind)
        b = res.predict(data, type=kind)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_loaded_fit_rebuilds_its_model(fits, tmp_path):
    res = _fit(fits, "binomial")
    res.save(tmp_path / "fit.glmm")
    back = gj.load(tmp_path / "fit.glmm")
    assert back.model.theta_names == res.model.theta_names
    assert back.model.negloglik(back.theta) == pytest.approx(-res.loglik, abs=1e-9)
    np.testing.assert_array_equal(back.simulate(2, seed=3), res.simulate(2, seed=3))
    pd.testing.assert_frame_equal(back.conf_int(), res.conf_int())


def test_saved_without_rows_is_rebuilt_from_the_data(fits, tmp_path):
    res = _fit(fits, "poisson")
    res.save(tmp_path / "fit.glmm", data=False)
    with zipfile.ZipFile(tmp_path / "fit.glmm") as z:
        npz = z.read("arrays.npz")
    assert b"frame.X" not in npz  # no row-level arrays in the file
    alone = gj.load(tmp_path / "fit.glmm")
    assert alone.frame is None and alone.model is None
    assert np.array_equal(alone.beta, res.beta)
    back = gj.load(tmp_path / "fit.glmm", data=gj.datasets.load("salamanders"))
    np.testing.assert_array_equal(back.frame.X, res.frame.X)
    assert back.summary() == res.summary()
    other = gj.datasets.load("salamanders").iloc[:300]  # scale() learns another centre
    with pytest.raises(gj.GLMMInputError, match="do not give the saved fit"):
        gj.load(tmp_path / "fit.glmm", data=other)


def test_bad_files(fits, tmp_path):
    with pytest.raises(gj.GLMMInputError, match="no such file"):
        gj.load(tmp_path / "missing.glmm")
    (tmp_path / "text.glmm").write_text("not a zip")
    with pytest.raises(gj.GLMMInputError, match="not a saved glmm_jax fit"):
        gj.load(tmp_path / "text.glmm")
    res = _fit(fits, "binomial")
    res.save(tmp_path / "fit.glmm")
    with zipfile.ZipFile(tmp_path / "fit.glmm") as z:
        meta, npz = json.loads(z.read("fit.json")), z.read("arrays.npz")
    meta["format_version"] = 99
    with zipfile.ZipFile(tmp_path / "future.glmm", "w") as z:
        z.writestr("fit.json", json.dumps(meta))
        z.writestr("arrays.npz", npz)
    with pytest.raises(gj.GLMMInputError, match="format version 99"):
        gj.load(tmp_path / "future.glmm")
    with pytest.raises(gj.GLMMInputError, match="cannot write"):
        res.save(tmp_path / "no" / "such" / "dir.glmm")


def test_rebuilding_from_data_checks_every_array(fits, tmp_path):
    res = _fit(fits, "gaussian")
    res.save(tmp_path / "fit.glmm", data=False)
    sleep = gj.datasets.load("sleepstudy")
    assert gj.load(tmp_path / "fit.glmm", data=sleep).loglik == res.loglik
    with pytest.raises(gj.GLMMInputError, match="arrays .y differ"):
        gj.load(tmp_path / "fit.glmm", data=sleep.assign(Reaction=sleep.Reaction + 100.0))
    with pytest.raises(gj.GLMMInputError, match="do not give the saved fit"):  # poly()
        gj.load(tmp_path / "fit.glmm", data=sleep.assign(Days=sleep.Days * 2.0))
    res = _fit(fits, "binomial")
    res.save(tmp_path / "cbpp.glmm", data=False)
    cbpp = gj.datasets.load("cbpp")
    with pytest.raises(gj.GLMMInputError, match="arrays .trials differ"):
        gj.load(tmp_path / "cbpp.glmm", data=cbpp.assign(size=cbpp["size"] + 1))


def test_contrasts_and_array_weights_survive_a_rebuild(tmp_path):
    cbpp = gj.datasets.load("cbpp")
    poly = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                  contrasts={"period": "poly"})
    poly.save(tmp_path / "poly.glmm", data=False)
    back = gj.load(tmp_path / "poly.glmm", data=cbpp)
    assert back.frame.x_names == poly.frame.x_names
    w = np.linspace(0.5, 1.5, len(cbpp))
    wfit = gj.fit("incidence ~ period + (1 | herd)", cbpp, family="poisson", weights=w)
    wfit.save(tmp_path / "w.glmm", data=False)
    with pytest.raises(gj.GLMMInputError, match="weights were an array"):
        gj.load(tmp_path / "w.glmm", data=cbpp)
    with pytest.raises(gj.GLMMInputError, match="weights differ"):
        gj.load(tmp_path / "w.glmm", data=cbpp, weights=w[::-1])
    assert gj.load(tmp_path / "w.glmm", data=cbpp, weights=w).loglik == wfit.loglik


def test_unsavable_row_labels_are_an_input_error(tmp_path):
    cbpp = gj.datasets.load("cbpp")
    cbpp.index = pd.date_range("2020-01-01", periods=len(cbpp))
    res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    with pytest.raises(gj.GLMMInputError, match="reset_index"):
        res.save(tmp_path / "fit.glmm")
