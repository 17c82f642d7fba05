"""Traced programs kept on disk (exported.py): stored by a first fit, loaded by a later
one with the same answer; a damaged store or none at all falls back to tracing."""

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


def test_a_damaged_store_falls_back_to_tracing(store):
    first = _fit()
    for path in store.glob("*.jaxexport"):
        path.write_bytes(b"not a program")
    exported._LOADED.clear()
    again = _fit()
    assert list(exported._LOADED.values()) == [None]  # not loaded: traced as before
    assert again.loglik == pytest.approx(first.loglik, abs=1e-10)


def test_without_a_cache_directory_nothing_is_stored(monkeypatch):
    monkeypatch.setattr(exported, "_directory", lambda: None)
    monkeypatch.setattr(exported, "_LOADED", {})
    assert _fit().converged and exported._LOADED == {}
