"""Linear mixed models from cross products (glmm_jax/lmm.py).

References: the dense multivariate normal likelihood of y (written here with NumPy), the
joint Laplace path of crossed.py (exact for a Gaussian response), the per-cluster path,
and pure forward-over-reverse autodiff of the same objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj
from glmm_jax import api, lmm
from glmm_jax.model import fit_model
from glmm_jax.objective import negloglik

CROSSED = "y ~ x + (1 + x | g1) + (1 + x | g2) + (1 | g3)"


@pytest.fixture(scope="module")
def crossed_df():
    rng = np.random.default_rng(1)
    n = 600
    g1, g2, g3 = rng.integers(0, 40, n), rng.integers(0, 12, n), rng.integers(0, 4, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 1, 40)[g1] + rng.normal(0, 0.3, 40)[g1] * x
         + rng.normal(0, 0.7, 12)[g2] + rng.normal(0, 0.4, 12)[g2] * x
         + rng.normal(0, 0.5, 4)[g3] + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "g1": [f"a{k}" for k in g1],
                         "g2": [f"b{k}" for k in g2], "g3": [f"c{k}" for k in g3]})


def _models(df, reml):
    m = api.build_model(CROSSED, df, "gaussian", reml=reml)
    general = api.build_model(CROSSED, df, "gaussian", reml=reml, engine="multi")
    return m, general


@pytest.fixture(scope="module", params=[False, True], ids=["ml", "reml"])
def crossed_pair(request, crossed_df):
    m, general = _models(crossed_df, request.param)
    return request.param, m, general, fit_model(m), fit_model(general)


def test_crossed_gaussian_uses_cross_products(crossed_pair):
    _, m, general, _, _ = crossed_pair
    assert isinstance(m.structure, lmm.LmmStructure)
    assert not isinstance(general.structure, lmm.LmmStructure)


def test_loglik_is_the_dense_normal_density(crossed_pair):
    """-log L at a non-optimal theta against log N(y; X beta, Z G Z' + sigma^2 I)."""
    reml, m, _, _, _ = crossed_pair
    theta = np.asarray(m.start()) * 1.1 + 0.05
    frame = m.frame
    beta, Ls, log_phi = m.layout.unpack_np(theta)
    Zs = []
    for g in frame.groups:
        Z = np.zeros((len(frame.y), len(g.levels), g.Z.shape[1]))
        Z[np.arange(len(frame.y)), g.codes] = g.Z
        Zs.append(Z.reshape(len(frame.y), -1))
    V = np.exp(2 * log_phi) * np.eye(len(frame.y))
    for Z, L in zip(Zs, Ls, strict=False):
        G = np.kron(np.eye(Z.shape[1] // len(L)), L @ L.T)
        V += Z @ G @ Z.T
    X, y = frame.X, frame.y
    Vi = np.linalg.inv(V)
    if reml:  # beta at its GLS value, integrated out with a flat prior
        A = X.T @ Vi @ X
        beta = np.linalg.solve(A, X.T @ Vi @ y)
    r = y - X @ beta
    ll = -0.5 * (len(y) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ Vi @ r)
    if reml:
        ll += 0.5 * X.shape[1] * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(A)[1]
    assert m.loglik(theta) == pytest.approx(ll, rel=1e-10)


def test_same_fit_as_joint_laplace(crossed_pair):
    _, _, general_model, fast, general = crossed_pair
    assert fast.converged and general.converged
    assert fast.loglik == pytest.approx(general.loglik, abs=1e-8)
    np.testing.assert_allclose(fast.theta, general.theta, atol=1e-6)
    np.testing.assert_allclose(fast.se, general.se, rtol=1e-6)
    # the two optimizers take different paths (log-SD steps, GLS start: optimize.py) and
    # stop at points within their tolerance of the optimum: the Hessians at one point
    general = fit_model(general_model, start=fast.theta)
    np.testing.assert_array_equal(general.theta, fast.theta)
    np.testing.assert_allclose(fast.cov_theta, general.cov_theta, rtol=1e-5, atol=1e-10)
    for name in fast.ranef:
        np.testing.assert_allclose(fast.ranef[name].to_numpy(), general.ranef[name].to_numpy(),
                                   atol=1e-6, err_msg=name)


@pytest.mark.parametrize("near_zero, formula", [
    (False, None), (True, None),
    (False, "y ~ x + (1 + x | g1) + (1 | g2) + (1 | g3)"),  # scalar terms 1..: block sums
    (True, "y ~ x + (1 + x | g1) + (1 | g2) + (1 | g3)"),
    (False, "y ~ x + (1 | g1) + (1 + x | g2) + (1 | g3)"),  # a scalar term 0
    (False, "y ~ x + (1 + x | g1)"),  # one term
], ids=["interior", "small_factors", "scalar_terms", "scalar_small", "scalar_term0",
        "one_term"])
def test_chain_rule_hessian_is_autodiff_hessian(crossed_pair, crossed_df, near_zero,
                                                formula):
    """lmm.value_grad_hess against jax.hessian of the same -log L (forward over reverse),
    also where the factors of terms 1.. are near 0 (the products are then all formed),
    with scalar terms 1.. only (their quadratic form from block sums), a scalar term 0,
    and one term."""
    reml, m, _, _, _ = crossed_pair
    if formula is not None:
        m = api.build_model(formula, crossed_df, "gaussian", reml=reml)
        assert isinstance(m.structure, lmm.LmmStructure)
    m = m.unpadded  # (the program's own theta: padded programs are tests/test_sizes.py's)
    s, d = m.structure, m.data
    theta = np.asarray(m.start()) * 1.2 - 0.03
    if near_zero:
        theta[s.scale_indices] *= 1e-5
    theta = jnp.asarray(theta)
    f, g, H = m.value_grad_hess(theta)

    def objective(t):
        return negloglik(t, None, d, s)

    auto = jax.jit(jax.hessian(objective))(theta)
    assert f == pytest.approx(float(jax.jit(objective)(theta)), rel=1e-12)
    np.testing.assert_allclose(g, jax.jit(jax.grad(objective))(theta), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(H, auto, rtol=1e-8, atol=1e-7)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)",
                                     "Reaction ~ Days + (1 | Subject)"])
def test_one_term_ml_same_as_per_cluster_path(formula):
    df = gj.datasets.load("sleepstudy")
    m = api.build_model(formula, df, "gaussian", reml=False)
    single = api.build_model(formula, df, "gaussian", reml=False, engine="single")
    a, b = fit_model(m), fit_model(single)
    assert isinstance(m.structure, lmm.LmmStructure)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-6)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-6)
    np.testing.assert_allclose(a.ranef["Subject"].to_numpy(), b.ranef["Subject"].to_numpy(),
                               atol=1e-6)


def test_too_large_for_cross_products_takes_joint_laplace(crossed_df, monkeypatch):
    monkeypatch.setattr(lmm, "MAX_DENSE", 10)
    m = api.build_model(CROSSED, crossed_df, "gaussian")
    assert not isinstance(m.structure, lmm.LmmStructure)


def test_offset_same_as_joint_laplace(crossed_df):
    df = crossed_df.assign(off=np.linspace(-1.0, 2.0, len(crossed_df)))
    formula = "y ~ x + offset(off) + (1 | g1) + (1 | g2)"
    m = api.build_model(formula, df, "gaussian")
    general = api.build_model(formula, df, "gaussian", engine="multi")
    a, b = fit_model(m), fit_model(general)
    assert isinstance(m.structure, lmm.LmmStructure)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    # the two optimizers take different paths (optimize.py) and each stops where its
    # Newton decrement is below 1e-12 (1 + |f|): each theta within sqrt(1.1e-9 / 22.6)
    # = 7e-6 of the optimum here (22.6: the Hessian's smallest eigenvalue), so within
    # 1.4e-5 of each other; the fixed effects (REML: given theta) at one theta
    np.testing.assert_allclose(a.theta, b.theta, atol=1.4e-5)
    b = fit_model(general, start=a.theta)
    np.testing.assert_array_equal(b.theta, a.theta)
    np.testing.assert_allclose(a.fixef, b.fixef, atol=1e-6)


def test_too_many_pairs_for_cross_products_takes_joint_laplace(crossed_df, monkeypatch):
    monkeypatch.setattr(lmm, "MAX_PAIRS", 10)
    m = api.build_model(CROSSED, crossed_df, "gaussian")
    assert not isinstance(m.structure, lmm.LmmStructure)


def test_ml_starts_from_gls_fixed_effects(crossed_df):
    # Newton starts from the fixed effects' GLS estimates at the start values' covariance
    # parameters: the general engine's optimum in beta with those held (no such start)
    m = api.build_model(CROSSED, crossed_df, "gaussian", reml=False)
    general = api.build_model(CROSSED, crossed_df, "gaussian", reml=False, engine="multi")
    start, c = m.start(), fit_model(m).convergence
    held = dict(zip(m.theta_names[2:], start[2:], strict=True))
    gls = fit_model(general, start=start, fixed=held)
    np.testing.assert_allclose(c.theta_start[:2], gls.fixef, rtol=1e-9, atol=1e-10)
    assert not np.allclose(start[:2], gls.fixef, atol=1e-4)  # (a start of its own)
    np.testing.assert_array_equal(c.theta_start[2:], start[2:])
    assert c.objective_start == pytest.approx(m.negloglik(c.theta_start), rel=1e-12)
    # a fixed effect held: no GLS start
    c = fit_model(m, fixed={"x": 0.4}).convergence
    np.testing.assert_array_equal(c.theta_start, np.r_[start[0], 0.4, start[2:]])


def _few_levels_df(seed: int, sd: float) -> pd.DataFrame:
    """InstEval's shape, small: crossed students and instructors, and a term of 28
    levels (dept:serv, nested in the fixed effect serv) of SD ``sd``."""
    rng = np.random.default_rng(seed)
    n = 3000
    s, d = rng.integers(0, 300, n), rng.integers(0, 60, n)
    dept, serv = rng.integers(0, 14, n), rng.integers(0, 2, n)
    y = (3 + 0.1 * serv + rng.normal(0, 0.3, 300)[s] + rng.normal(0, 0.5, 60)[d]
         + rng.normal(0, sd, 28)[dept * 2 + serv] + rng.normal(0, 1.2, n))
    return pd.DataFrame({"y": y, "serv": serv.astype(str), "s": s.astype(str),
                         "d": d.astype(str), "dept": dept.astype(str)})


@pytest.mark.parametrize("seed, sd, reml", [(2, 0.1, False), (0, 0.1, True),
                                            (3, 0.0, False), (2, 0.0, True)],
                         ids=["ml", "reml", "zero_sd_ml", "zero_sd_reml"])
def test_log_sd_steps_same_fit_as_joint_laplace(seed, sd, reml):
    # the LMM engine's Newton (GLS start; trial points also in log SD) against the general
    # engine's (steps in theta alone): the same optimum, also at a zero SD, in no more
    # iterations on these data (fewer where an SD of few levels moves far)
    df, formula = _few_levels_df(seed, sd), "y ~ serv + (1 | s) + (1 | d) + (1 | dept:serv)"
    m = api.build_model(formula, df, "gaussian", reml=reml)
    general = api.build_model(formula, df, "gaussian", reml=reml, engine="multi")
    assert isinstance(m.structure, lmm.LmmStructure)
    a, b = fit_model(m), fit_model(general)
    assert a.converged and b.converged
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-6)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-5)
    sd_fit = abs(a.theta[a.theta_names.index("L_dept:serv[(Intercept),(Intercept)]")])
    assert (sd_fit < 1e-4) == (sd == 0.0)  # these data: a zero SD where there is none
    assert a.convergence.n_iter <= b.convergence.n_iter
    if (seed, reml) == (2, False):
        assert a.convergence.n_iter < b.convergence.n_iter


def test_pair_sums_scattered_both_ways_are_k_plus_its_transpose(crossed_df):
    """_pair_sums(both=True) (the Hessian's form) is sym K = K + K' (the value's)."""
    m = api.build_model(CROSSED, crossed_df, "gaussian").unpadded
    d, s = m.data, m.structure
    R = s.r_z
    M = jnp.asarray(np.random.default_rng(0).normal(size=d.ZtZ0.shape))
    sym = lmm._pair_sums(M, d, R)
    np.testing.assert_allclose(lmm._pair_sums(M, d, R, both=True), sym, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sym, sym.T, rtol=0, atol=0)


@pytest.mark.parametrize("reml", [True, False])
def test_no_fixed_effects_is_lmers_fit(reml, monkeypatch):
    # lme4 1.1-31: m <- lmer(Reaction ~ 0 + (1 | Subject), sleepstudy); logLik(m),
    # VarCorr(m)$Subject[1], sigma(m) (the same for REML = FALSE: no fixed effects)
    df = gj.datasets.load("sleepstudy")
    for small in (gj.sizes.SMALL_ROWS, 0):  # padded (8 zero columns) and not
        monkeypatch.setattr(gj.sizes, "SMALL_ROWS", small)
        res = gj.fit("Reaction ~ 0 + (1 | Subject)", df, family="gaussian", reml=reml)
        assert res.converged and len(res.fixef) == 0 and res.coef_table.empty
        assert res.loglik == pytest.approx(-992.8398454715, abs=1e-8)
        vc = res.varcorr.set_index("group")["variance"]
        assert vc["Subject"] == pytest.approx(90303.3977053850, rel=1e-7)
        # (lme4's sigma to its optimizer's tolerance: 4e-8 apart where logLik agrees to
        # 1e-12)
        assert np.sqrt(vc["Residual"]) == pytest.approx(44.2590690373, rel=1e-6)
    if reml:  # (the joint Laplace engine's REML needs a fixed effect: a clear error)
        with pytest.raises(gj.GLMMInputError, match="REML is ML"):
            gj.build_model("Reaction ~ 0 + (1 | Subject)", df, family="gaussian",
                           reml=True, engine="multi")
