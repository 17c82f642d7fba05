"""Traced programs kept on disk (exported.py): stored by a first fit, loaded by a later
one with the same answer as a traced program; a damaged store is replaced, an unwritable
one skipped, and without a store (or for a user's family) programs are traced."""

import numpy as np
import pytest

import glmm_jax as gj
from glmm_jax import exported

FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(exported, "_directory", lambda: tmp_path)
    monkeypatch.setattr(exported, "_LOADED", {})
    return tmp_path


def _fit():
    return gj.fit(FORMULA, gj.datasets.load("cbpp"))


def test_a_stored_program_is_loaded_with_the_same_fit(store):
    first = _fit()
    files = list(store.glob("*.jaxexport"))
    assert len(files) == 1 and files[0].stat().st_size > 1000
    exported._LOADED.clear()  # as a new process: the program comes from the file
    loaded = _fit()
    assert [k[0] for k in exported._LOADED] == ["newton"]
    assert all(v is not None for v in exported._LOADED.values())
    assert loaded.loglik == first.loglik
    np.testing.assert_array_equal(loaded.theta, first.theta)
    np.testing.assert_array_equal(loaded.hessian, first.hessian)


def test_a_damaged_store_is_exported_again(store):
    first = _fit()
    for path in store.glob("*.jaxexport"):
        path.write_bytes(b"not a program")
    exported._LOADED.clear()
    again = _fit()
    assert all(v is not None for v in exported._LOADED.values())
    assert all(p.stat().st_size > 1000 for p in store.glob("*.jaxexport"))  # replaced
    assert again.loglik == pytest.approx(first.loglik, abs=1e-10)


def test_without_a_cache_directory_nothing_is_stored(monkeypatch):
    monkeypatch.setattr(exported, "_directory", lambda: None)
    monkeypatch.setattr(exported, "_LOADED", {})
    assert _fit().converged and exported._LOADED == {}


@pytest.mark.parametrize("formula,dataset,family", [
    (FORMULA, "cbpp", "binomial"),  # one grouping factor
    ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks",
     "poisson"),  # several terms
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian"),  # cross products
])
def test_the_stored_program_gives_the_traced_fit(store, monkeypatch, formula, dataset,
                                                  family):
    df = gj.datasets.load(dataset)
    if dataset == "grouseticks":
        df = df.assign(**{c: df[c].astype(str) for c in ("BROOD", "INDEX", "LOCATION")})
    stored = gj.fit(formula, df, family=family)
    assert list(store.glob("*.jaxexport")) and all(exported._LOADED.values())
    monkeypatch.setattr(exported, "_directory", lambda: None)
    traced = gj.fit(formula, df, family=family)
    assert stored.loglik == pytest.approx(traced.loglik, abs=1e-10)
    np.testing.assert_allclose(stored.theta, traced.theta, rtol=0, atol=1e-9)
    np.testing.assert_allclose(stored.se, traced.se, rtol=1e-8)


def test_a_program_that_cannot_be_written_is_still_used(store, monkeypatch):
    def refuse(path, data):
        raise OSError("read-only")

    monkeypatch.setattr(exported, "write_atomic", refuse)
    res = _fit()
    assert res.converged and not list(store.glob("*.jaxexport"))
    assert all(v is not None for v in exported._LOADED.values())  # exported, not stored


def test_a_users_family_is_not_stored(store):
    # its code is not in the key (glmm_jax's source is): a changed logpdf must not load
    # the program traced for the old one
    class MyPoisson(gj.families.Poisson):
        pass

    df = gj.datasets.load("grouseticks")
    res = gj.fit("TICKS ~ YEAR + (1 | BROOD)", df, family=MyPoisson())
    assert res.converged and exported._LOADED == {}
    assert not list(store.glob("*.jaxexport"))
