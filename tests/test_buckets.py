"""Size buckets: models of nearby sizes share one compiled program, with unchanged results."""

import numpy as np
import pandas as pd
import pytest
from helpers import compilations

import glmm_jax as gj
from glmm_jax.optimize import newton_program
from glmm_jax.sizes import bucket


def _data(sizes, seed=0):
    rng = np.random.default_rng(seed)
    n_clusters = len(sizes)
    g = np.repeat(np.arange(n_clusters), sizes)
    x = rng.normal(size=g.size)
    y = rng.poisson(np.exp(0.2 + 0.4 * x + rng.normal(0, 0.6, n_clusters)[g]))
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_bucket_grid():
    assert [bucket(n) for n in (1, 8, 9, 13, 14, 16, 17)] == [1, 8, 10, 14, 14, 16, 20]
    for n in range(1, 5000):
        assert n <= bucket(n) <= max(8, int(np.ceil(1.19 * n)))


def test_nearby_sizes_reuse_the_compiled_fit(monkeypatch):
    # 15 clusters of 6 rows (45 chunks of 2 rows) and 16 clusters with 92 rows (44 chunks):
    # both are padded to 16 clusters and 46 chunks (the grid of large models: here with
    # every model large; small models are padded further, see test_sizes.py)
    monkeypatch.setattr(gj.sizes, "SMALL_ROWS", 0)
    a, b = _data([6] * 15), _data([6] * 14 + [2] * 2, seed=1)
    res_a = gj.fit("y ~ x + (1 | g)", a, family="poisson")
    model = gj.build_model("y ~ x + (1 | g)", a, family="poisson")
    compiled = compilations()
    res_b = gj.fit("y ~ x + (1 | g)", b, family="poisson")
    assert compilations() == compiled  # no new program for the second size
    assert len(res_b.ranef["g"]) == 16 and len(res_a.ranef["g"]) == 15
    # padding changes nothing: the general engine (no padding) agrees at the estimates
    assert model.structure.n_groups == 16 and model.data.y.shape[1] == 46
    unpadded = gj.build_model("y ~ x + (1 | g)", a, family="poisson", engine="multi")
    f, g, _ = unpadded.value_grad_hess(res_a.theta)
    assert -f == pytest.approx(res_a.loglik, abs=1e-9)
    assert np.max(np.abs(g)) < 1e-4


@pytest.mark.parametrize("family,slope,joined", [("poisson", False, True),
                                                 ("binomial", True, False),
                                                 ("binomial", False, False)])
def test_blocks_give_the_single_block_answer(monkeypatch, family, slope, joined):
    # large data are laid out in blocks of whole clusters, fitted block by block (a scalar
    # term's taken as one block up to objective.ONE_BLOCK_ROWS rows: here either way);
    # forcing ~12 blocks on a small model must reproduce the one-block fit
    if not joined:
        monkeypatch.setattr(gj.objective, "ONE_BLOCK_ROWS", 0)
    rng = np.random.default_rng(3)
    sizes = rng.integers(2, 60, 100)
    g = np.repeat(np.arange(100), sizes)
    x = rng.normal(size=g.size)
    eta = -0.3 + 0.5 * x + rng.normal(0, 0.7, 100)[g] + (rng.normal(0, 0.4, 100)[g] * x) * slope
    if family == "poisson":
        y = rng.poisson(np.exp(eta))
    else:
        y = rng.random(g.size) < 1 / (1 + np.exp(-eta))
    df = pd.DataFrame({"y": y.astype(float), "x": x, "g": g})
    formula = "y ~ x + (1 + x | g)" if slope else "y ~ x + (1 | g)"
    monkeypatch.setattr(gj.sizes, "SMALL_ROWS", 0)  # (small models take one block)
    one = gj.fit(formula, df, family=family)
    monkeypatch.setattr(gj.laplace, "BLOCK_ROWS", 256)
    model = gj.build_model(formula, df, family=family)
    assert model.data.y.shape[0] >= 10
    many = gj.fit(formula, df, family=family)
    assert many.converged and one.converged
    assert many.loglik == pytest.approx(one.loglik, abs=1e-8)
    np.testing.assert_allclose(many.theta, one.theta, atol=1e-8)
    np.testing.assert_allclose(many.se, one.se, rtol=1e-7)
    pd.testing.assert_frame_equal(many.ranef["g"], one.ranef["g"], atol=1e-8, rtol=0)


def test_small_and_large_programs_agree(monkeypatch):
    # small single-term models compile with other XLA:CPU emitters: same fit either way
    from glmm_jax import optimize

    df = _data([6] * 15 + [9] * 10)
    model = gj.build_model("y ~ x + (1 | g)", df, family="poisson")
    assert newton_program(model.data, model.structure) is optimize.NEWTON_SMALL
    small = gj.fit("y ~ x + (1 | g)", df, family="poisson")
    monkeypatch.setattr(optimize, "SMALL_ROWS", 0)
    assert newton_program(model.data, model.structure) is optimize.NEWTON_DEFAULT
    large = gj.fit("y ~ x + (1 | g)", df, family="poisson")
    assert small.converged and large.converged
    assert small.loglik == pytest.approx(large.loglik, abs=1e-9)
    np.testing.assert_allclose(small.theta, large.theta, atol=1e-8)
    np.testing.assert_allclose(small.se, large.se, rtol=1e-7)


def test_block_layout_keeps_clusters_whole():
    from glmm_jax.laplace import cluster_arrays, make_layout

    rng = np.random.default_rng(0)
    sizes = np.concatenate([[900], rng.integers(1, 30, 200)])  # one cluster of 900 rows
    codes = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    lay = make_layout(codes, len(sizes), size=4, block_rows=256)
    assert lay.n_blocks > 3
    place = np.stack([lay.block, lay.chunk, lay.slot], axis=1)
    assert len(np.unique(place, axis=0)) == len(codes)  # every row has its own place
    assert np.all(lay.block == lay.cluster_block[codes])  # a cluster stays in one block
    n = len(codes)
    data = cluster_arrays(np.ones((n, 1)), np.ones((n, 1)), np.ones(n), np.ones(n),
                          np.zeros(n), np.zeros(n), lay)
    assert data.weights.sum() == n
    # each chunk holds rows of the cluster it is assigned to, in non-decreasing order
    chunk_cluster = data.group[lay.block, lay.chunk]
    assert np.all(chunk_cluster == lay.cluster_slot[codes])
    assert np.all(np.diff(data.group, axis=1) >= 0)


def test_cluster_arrays_put_every_row_value_in_its_place():
    # unsorted rows, non-constant and constant columns, padded blocks, chunks and clusters
    from glmm_jax.laplace import cluster_arrays, make_layout

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 40, 500)
    lay = make_layout(codes, 40, size=4, block_rows=64)
    n, B, M = len(codes), lay.n_blocks + 1, lay.max_chunks + 3
    X, y, w = rng.normal(size=(n, 3)), rng.integers(0, 2, n).astype(float), rng.random(n)
    data = cluster_arrays(X, np.ones((n, 1)), y, np.full(n, 2.0), rng.normal(size=n),
                          np.zeros(n), lay, n_chunks=M, n_groups=lay.max_clusters + 2,
                          n_blocks=B, weights=w)
    at = (lay.block, lay.chunk, lay.slot)
    np.testing.assert_array_equal(data.X[at], X)
    np.testing.assert_array_equal(data.y[at], y)
    np.testing.assert_array_equal(data.weights[at], w)
    pad = np.ones(data.y.shape, bool)
    pad[at] = False
    assert pad.sum() == B * M * lay.size - n
    # padding: zero weight, X and Z zero, y = trials = 1, offset 0; the rows' trials 2
    assert np.all(data.weights[pad] == 0) and np.all(data.X[pad] == 0)
    assert np.all(data.Z[pad] == 0) and np.all(data.Z[at] == 1)
    assert np.all(data.y[pad] == 1) and np.all(data.trials[pad] == 1)
    assert np.all(data.trials[at] == 2) and np.all(data.offset[pad] == 0)


def test_blocks_hold_at_most_block_rows():
    # 300 chunks of 4 rows over blocks of 256 rows (64 chunks): 5 blocks, none above 256
    # rows (rounding the block count down would give 4 blocks of 75 chunks)
    from glmm_jax.laplace import make_layout

    codes = np.repeat(np.arange(300), 4)
    lay = make_layout(codes, 300, size=4, block_rows=256)
    assert lay.n_blocks == 5
    assert lay.max_chunks * lay.size <= 256


def test_block_rows_per_platform():
    # CPU blocks stay cache-sized; accelerators take larger blocks (fewer, fuller kernels)
    assert gj.laplace.block_rows("cpu") == gj.laplace.BLOCK_ROWS
    assert gj.laplace.block_rows("gpu") == gj.laplace.ACCELERATOR_BLOCK_ROWS > gj.laplace.BLOCK_ROWS


@pytest.mark.filterwarnings("ignore::glmm_jax.SingularFitWarning")
def test_small_gaussian_models_take_the_small_programs_emitters(monkeypatch):
    # xla.SMALL's emitters compile a small cross-product model faster: the same fit
    from glmm_jax import optimize

    df = gj.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    model = gj.build_model(formula, df, family="gaussian")
    assert newton_program(model.data, model.structure) is optimize.NEWTON_SMALL
    small = model.fit()
    monkeypatch.setattr(optimize, "SMALL_LMM_EFFECTS", 0)
    assert newton_program(model.data, model.structure) is optimize.NEWTON_DEFAULT
    large = model.fit()
    assert small.converged and large.converged
    assert small.loglik == pytest.approx(large.loglik, abs=1e-9)
    np.testing.assert_allclose(small.theta, large.theta, atol=1e-8)
    np.testing.assert_allclose(small.se, large.se, rtol=1e-7)


def test_arrays_placed_in_place_or_copied_hold_the_same_values():
    import jax

    from glmm_jax.layout import _in_place

    base = np.arange(1001, dtype=float)
    readonly = base.copy()
    readonly.flags.writeable = False
    for a in (base.copy(), base[1:], readonly, base[::2], np.asarray(3.0)):
        out = _in_place(a)
        assert isinstance(out, jax.Array) and out.devices() == {jax.devices("cpu")[0]}
        np.testing.assert_array_equal(np.asarray(out), a)
