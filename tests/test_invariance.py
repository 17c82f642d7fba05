"""Fits that must not depend on row order, level labels, response encoding or caller state."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP_FORMULA
from scipy import special

import glmm_jax as gj

TOL = 1e-8


def assert_same_fit(a: gj.GLMMResult, b: gj.GLMMResult, tol: float = TOL, ranef_map=None):
    """Estimates, SEs, variance components, logLik and conditional modes agree to ``tol``."""
    assert a.loglik == pytest.approx(b.loglik, abs=tol)
    pd.testing.assert_series_equal(a.fixef, b.fixef, check_exact=False, atol=tol, rtol=tol)
    pd.testing.assert_series_equal(a.se, b.se, check_exact=False, atol=tol, rtol=tol)
    va, vb = a.varcorr, b.varcorr
    for col in ("variance", "sd", "corr"):
        np.testing.assert_allclose(va[col].to_numpy(float), vb[col].to_numpy(float),
                                   atol=tol, rtol=tol, err_msg=col)
    if a.dispersion is not None or b.dispersion is not None:
        assert a.dispersion == pytest.approx(b.dispersion, abs=tol, rel=tol)
    (ga, ra), = a.ranef.items()
    (gb, rb), = b.ranef.items()
    if ranef_map is not None:  # labels of a -> labels of b
        ra = ra.rename(index=ranef_map)
    rb = rb.loc[ra.index]
    np.testing.assert_allclose(ra.to_numpy(), rb.to_numpy(), atol=tol, rtol=tol)
    assert a.nobs == b.nobs and a.df_model == b.df_model


def _binary_data(seed=3, J=40, n=300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, J, n)
    x = rng.normal(size=n)
    b = rng.normal(0, 0.8, J)
    y = (rng.random(n) < special.expit(-0.3 + 0.7 * x + b[g])).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{k:02d}" for k in g]})


@pytest.fixture(scope="module")
def binary():
    return _binary_data()


@pytest.fixture(scope="module")
def binary_fit(binary):
    return gj.fit("y ~ x + (1 | g)", binary, "binomial")


@pytest.fixture(scope="module")
def sleepstudy():
    return gj.datasets.load("sleepstudy")


# ---------------------------------------------------------------------------------------
# row order and level labels


def test_row_shuffle_cbpp(cbpp, ref_fit):
    base = ref_fit("cbpp_laplace")
    rng = np.random.default_rng(0)
    for _ in range(2):
        shuffled = cbpp.iloc[rng.permutation(len(cbpp))]
        assert_same_fit(base, gj.fit(CBPP_FORMULA, shuffled, "binomial"))
    # a shuffled frame with a fresh RangeIndex as well
    shuffled = cbpp.sample(frac=1.0, random_state=5).reset_index(drop=True)
    assert_same_fit(base, gj.fit(CBPP_FORMULA, shuffled, "binomial"))


def test_row_shuffle_random_slope(sleepstudy, ref_fit):
    base = ref_fit("sleepstudy_ml")
    shuffled = sleepstudy.sample(frac=1.0, random_state=1)
    res = gj.fit("Reaction ~ Days + (Days | Subject)", shuffled, "gaussian", reml=False)
    # Reaction is ~300: compare on the relative scale as well
    assert_same_fit(base, res, tol=TOL)


def test_relabelled_clusters(cbpp, ref_fit):
    base = ref_fit("cbpp_laplace")
    rng = np.random.default_rng(7)
    herds = np.sort(cbpp["herd"].unique())
    # new string labels whose sorted order is a random permutation of the old order
    order = rng.permutation(len(herds))
    new = {h: f"farm_{chr(97 + k)}" for h, k in zip(herds, order, strict=True)}
    relabelled = cbpp.assign(herd=cbpp["herd"].map(new))
    res = gj.fit(CBPP_FORMULA, relabelled, "binomial")
    assert_same_fit(base, res, ranef_map=new)
    assert sorted(res.ranef["herd"].index) == sorted(new.values())
    # the same with a categorical grouping factor whose categories are in random order
    cats = pd.Categorical(relabelled["herd"], categories=list(rng.permutation(list(new.values()))))
    res2 = gj.fit(CBPP_FORMULA, relabelled.assign(herd=cats), "binomial")
    assert_same_fit(base, res2, ranef_map=new)


def test_relabelled_and_shuffled_random_slope(sleepstudy, ref_fit):
    base = ref_fit("sleepstudy_ml")
    rng = np.random.default_rng(11)
    subjects = np.sort(sleepstudy["Subject"].unique())
    new = dict(zip(subjects, rng.permutation(len(subjects)) + 1000, strict=True))
    df = sleepstudy.assign(Subject=sleepstudy["Subject"].map(new)).sample(frac=1.0,
                                                                          random_state=2)
    res = gj.fit("Reaction ~ Days + (Days | Subject)", df, "gaussian", reml=False)
    assert_same_fit(base, res, ranef_map=new)


# ---------------------------------------------------------------------------------------
# the caller's data


def test_callers_dataframe_is_unchanged(cbpp):
    df = cbpp.copy()
    df.index = pd.Index([f"r{k}" for k in range(len(df))])  # a non-default index
    df["unused"] = np.arange(len(df), dtype=float)
    df.loc["r3", "unused"] = np.nan  # NaN in an unused column: not dropped, not touched
    df["herd"] = df["herd"].astype("category")
    df.loc[["r5", "r9"], "incidence"] = np.nan  # rows to drop
    before = copy.deepcopy(df)
    with pytest.warns(gj.DataWarning):
        res = gj.fit(CBPP_FORMULA, df, "binomial")
    pd.testing.assert_frame_equal(df, before)
    assert res.nobs == len(df) - 2
    # tables handed out are not views into the fit
    rf = res.ranef["herd"]
    rf.iloc[:, 0] = 0.0
    assert not np.allclose(res.ranef["herd"].iloc[:, 0], 0.0)


def test_callers_dataframe_unchanged_by_build_model(sleepstudy):
    before = copy.deepcopy(sleepstudy)
    gj.build_model("Reaction ~ Days + (Days | Subject)", sleepstudy, "gaussian")
    pd.testing.assert_frame_equal(sleepstudy, before)


def test_model_frame_shares_no_memory_with_the_callers_dataframe(sleepstudy):
    # no row dropped: the frame's arrays are still its own, so that a later in-place edit
    # of the caller's DataFrame cannot change a stored fit
    df = sleepstudy.copy()
    df["w"] = 1.0 + (np.arange(len(df)) % 3)
    df["off"] = 0.1 * np.arange(len(df))
    m = gj.build_model("Reaction ~ Days + offset(off) + (Days | Subject)", df, "gaussian",
                       weights="w", engine="multi")
    f = m.frame
    arrays = [f.X, f.y, f.trials, f.offset, f.weights] + [a for g in f.groups
                                                          for a in (g.Z, g.codes)]
    for col in df.columns:
        values = df[col].to_numpy()
        if values.dtype.kind == "f":
            assert not any(np.shares_memory(a, values) for a in arrays), col


# ---------------------------------------------------------------------------------------
# Laplace and AGHQ with one node; equivalent response encodings


def test_laplace_is_agq_with_one_node(binary, binary_fit):
    res1 = gj.fit("y ~ x + (1 | g)", binary, "binomial", nagq=1)
    assert binary_fit.nagq == res1.nagq == 1
    assert_same_fit(binary_fit, res1, tol=1e-12)
    assert "Laplace" in binary_fit.summary()
    # and the one-node model's objective is the Laplace fit's
    model = gj.build_model("y ~ x + (1 | g)", binary, "binomial", nagq=1)
    theta = np.concatenate([binary_fit.fixef.to_numpy(), binary_fit.varcorr["sd"].to_numpy()])
    assert model.loglik(theta) == pytest.approx(binary_fit.loglik, abs=1e-9)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g)", "y ~ x + (1 + x | g)"])
def test_the_quadrature_branch_with_one_node_is_laplace(binary, formula):
    """The AGHQ code itself, run with the one-node rule (node 0, weight 1), gives the
    Laplace value of every cluster (scalar and vector random effects)."""
    import jax

    from glmm_jax import laplace
    from glmm_jax.objective import modes, unpack

    model = gj.build_model(formula, binary, "binomial", nagq=1)
    s, data = model.structure, model.data
    theta = model.padding.embed(model.start() + 0.1)  # the program's theta (sizes.py)
    u, _ = modes(theta, np.zeros((data.y.shape[0], s.n_groups, s.q)), data, s)
    beta, L, log_phi = unpack(jax.numpy.asarray(theta), s)
    block = jax.tree.map(lambda a: a[0], data)
    t, logw = laplace.gh_rule(1, s.q)
    assert t.shape == (1, s.q) and np.all(t == 0) and logw[0] == 0.0
    quad = laplace.quadrature_loglik(beta, L, log_phi, u[0], block, s, t, logw)
    lap = laplace.marginal_loglik(beta, L, log_phi, u[0], block, s)
    np.testing.assert_allclose(np.asarray(quad), np.asarray(lap), rtol=1e-12, atol=1e-10)


def test_cbind_equals_binary(binary, binary_fit):
    res = gj.fit("cbind(y, 1 - y) ~ x + (1 | g)", binary, "binomial")
    assert_same_fit(binary_fit, res)


def test_two_level_string_response_equals_binary(binary, binary_fit):
    words = binary.assign(y=np.where(binary["y"] == 1, "yes", "no"))
    assert_same_fit(binary_fit, gj.fit("y ~ x + (1 | g)", words, "binomial"))
    # logical response
    logical = binary.assign(y=binary["y"] == 1)
    assert_same_fit(binary_fit, gj.fit("y ~ x + (1 | g)", logical, "binomial"))
    # a factor: the first level is failure (as in R), whatever the alphabetical order
    fac = binary.assign(y=pd.Categorical(np.where(binary["y"] == 1, "case", "control"),
                                         categories=["control", "case"]))
    assert_same_fit(binary_fit, gj.fit("y ~ x + (1 | g)", fac, "binomial"))


def test_aggregated_binomial_equals_binary():
    # rows with identical covariates collapse into binomial counts: the same likelihood in
    # beta and G, up to the log binomial coefficients of the aggregated rows
    rng = np.random.default_rng(3)
    J, per = 30, 12
    g = np.repeat(np.arange(J), per)
    x = np.tile(np.repeat([-1.0, 0.0, 1.0], per // 3), J)
    b = rng.normal(0, 0.8, J)
    y = (rng.random(g.size) < special.expit(-0.3 + 0.7 * x + b[g])).astype(int)
    rows = pd.DataFrame({"y": y, "x": x, "g": [f"s{k:02d}" for k in g]})
    agg = rows.groupby(["g", "x"], as_index=False).agg(s=("y", "sum"), n=("y", "size"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.GLMMWarning)
        r_rows = gj.fit("y ~ x + (1 | g)", rows, "binomial")
        r_agg = gj.fit("cbind(s, n - s) ~ x + (1 | g)", agg, "binomial")
    log_choose = np.sum(special.gammaln(agg.n + 1) - special.gammaln(agg.s + 1)
                        - special.gammaln(agg.n - agg.s + 1))
    assert r_agg.loglik == pytest.approx(r_rows.loglik + log_choose, abs=1e-7)
    pd.testing.assert_series_equal(r_agg.fixef, r_rows.fixef, check_exact=False, atol=1e-6)
    assert r_agg.varcorr["sd"].iloc[0] == pytest.approx(r_rows.varcorr["sd"].iloc[0], abs=1e-6)
