"""fit_many: one structure, many datasets, one vmapped program."""

import warnings

import jax
import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj

FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def simulate_cbpp(seed, n_herds=15):
    rng = np.random.default_rng(seed)
    herd = np.repeat(np.arange(n_herds), 4)
    period = np.tile(np.arange(1, 5), n_herds)
    size = rng.integers(2, 30, herd.size)
    eta = -1.4 + np.array([0.0, -1.0, -1.1, -1.6])[period - 1] + rng.normal(0, 0.65, n_herds)[herd]
    incidence = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"herd": herd, "incidence": incidence, "size": size,
                         "period": pd.Categorical(period.astype(str))})


@pytest.fixture(scope="module")
def datasets():
    # unequal sizes (herd counts) so padding to a common shape is exercised
    return {f"s{i}": simulate_cbpp(i, n_herds=8 + 2 * i) for i in range(5)}


@pytest.fixture(scope="module")
def many(datasets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.SingularFitWarning)
        return gj.fit_many(FORMULA, datasets, progress=False)


def test_fit_many_equals_separate_fits(datasets, many):
    for key, df in datasets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gj.SingularFitWarning)
            one = gj.fit(FORMULA, df)
        res = many.results[key]
        assert res.converged
        np.testing.assert_allclose(res.fixef.values, one.fixef.values, atol=1e-6)
        np.testing.assert_allclose(res.se.values, one.se.values, rtol=1e-6)
        np.testing.assert_allclose(res.varcorr.sd.values, one.varcorr.sd.values, atol=1e-6)
        assert res.loglik == pytest.approx(one.loglik, abs=1e-6)
        np.testing.assert_allclose(res.ranef["herd"].values, one.ranef["herd"].values,
                                   atol=1e-6)


def test_tidy_tables(datasets, many):
    tab = many.table
    assert list(tab.columns) == ["dataset", "term", "estimate", "se", "z", "p"]
    assert len(tab) == 4 * len(datasets)
    assert list(many.summary.index) == list(datasets)
    assert many.summary.converged.all()


def test_by_column_equals_list(datasets, many):
    long = pd.concat([df.assign(site=k) for k, df in datasets.items()], ignore_index=True)
    by = gj.fit_many(FORMULA, long, by="site", progress=False)
    for key in datasets:
        np.testing.assert_allclose(by.results[key].fixef.values,
                                   many.results[key].fixef.values, atol=1e-10)
    # concatenated frames keep their own row labels: duplicates, fitted by position
    dup = pd.concat([df.assign(site=k) for k, df in datasets.items()])
    assert not dup.index.is_unique
    again = gj.fit_many(FORMULA, dup, by="site", progress=False)
    for key in datasets:
        np.testing.assert_allclose(again.results[key].fixef.values,
                                   many.results[key].fixef.values, atol=1e-10)
    text = repr(again)
    assert text.startswith("<ManyResult") and f"{len(datasets)} datasets" in text
    assert f"{len(datasets)} converged" in text and len(text) < 200


def test_failing_dataset_is_reported_and_others_unchanged(datasets, many):
    bad_values = datasets["s0"].copy()
    bad_values.loc[3, "incidence"] = bad_values.loc[3, "size"] + 5  # successes > trials
    one_herd = datasets["s1"][datasets["s1"].herd == 0]  # a single cluster
    data = dict(datasets, bad=bad_values, tiny=one_herd)
    with pytest.warns(gj.DataWarning, match="2 of 7 datasets could not be fitted"):
        out = gj.fit_many(FORMULA, data, progress=False)
    assert out.results["bad"] is None and "trials" in out.errors["bad"]
    assert out.results["tiny"] is None and "level" in out.errors["tiny"]
    assert not out.summary.loc["bad", "converged"]
    for key in datasets:
        np.testing.assert_allclose(out.results[key].fixef.values,
                                   many.results[key].fixef.values, atol=1e-8)


def test_needs_by_for_one_frame(datasets):
    with pytest.raises(gj.GLMMInputError, match="by="):
        gj.fit_many(FORMULA, datasets["s0"])


def test_numpy_arrays_as_data(datasets):
    df = datasets["s2"]
    arrays = {c: df[c].to_numpy() for c in ("herd", "incidence", "size")}
    arrays["period"] = df["period"].astype(str).to_numpy()
    a = gj.fit(FORMULA, arrays)
    b = gj.fit(FORMULA, df)
    np.testing.assert_allclose(a.fixef.values, b.fixef.values, atol=1e-10)
    assert list(a.fixef.index) == list(b.fixef.index)


def test_gaussian_needs_explicit_ml(datasets):
    df = datasets["s0"].assign(z=datasets["s0"]["incidence"] / datasets["s0"]["size"])
    with pytest.raises(gj.GLMMInputError, match="reml=False"):
        gj.fit_many("z ~ period + (1 | herd)", {"a": df, "b": df}, family="gaussian")
    with pytest.raises(gj.GLMMInputError, match="one random term"):
        gj.fit_many("incidence ~ period + (1 | herd) + (1 | period)", {"a": df},
                    family="poisson")


def test_lbfgs_fallback_as_in_fit(datasets):
    # with too few Newton iterations, each dataset continues as fit() does: L-BFGS, then
    # Newton again; the batch gives fit()'s answer, note included
    few = {k: datasets[k] for k in ("s0", "s1")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = gj.fit_many(FORMULA, few, max_iter=2, progress=False)
        for key, df in few.items():
            alone = gj.fit(FORMULA, df, max_iter=2)
            got = out.results[key]
            assert "L-BFGS" in got.messages[0] and got.messages == alone.messages
            assert got.converged == alone.converged
            np.testing.assert_allclose(got.theta, alone.theta, atol=1e-6)


def test_large_datasets_are_fitted_one_by_one(datasets, monkeypatch):
    # datasets too large for a useful vmapped batch go through fit()'s engine, same answer
    monkeypatch.setattr(gj.batch, "MEMORY_BUDGET", 1.0)
    few = {k: datasets[k] for k in ("s0", "s1", "s2")}
    out = gj.fit_many(FORMULA, few, progress=False)
    for key, df in few.items():
        alone = gj.fit(FORMULA, df)
        np.testing.assert_allclose(out.results[key].theta, alone.theta, atol=1e-10)
        assert out.results[key].loglik == pytest.approx(alone.loglik, abs=1e-10)


def test_memory_budget_follows_the_device():
    class FakeGpu:  # a stand-in with a jax device's platform and memory_stats()
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 80e9}

    assert gj.batch.memory_budget(FakeGpu()) == pytest.approx(20e9)
    assert gj.batch.memory_budget(jax.devices("cpu")[0]) == gj.batch.MEMORY_BUDGET
