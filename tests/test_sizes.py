"""Padded programs (sizes.py): small models take padded sizes (fixed-effect columns, a
random intercept as a two-effect term after a random slope, rows, chunks, clusters), so
that refits of the same structure reuse one compiled program; the padding changes no
number and never shows."""

import jax
import numpy as np
import pandas as pd
import pytest
from helpers import compilations

import glmm_jax as gj
from glmm_jax.optimize import newton_fit


@pytest.fixture(scope="module")
def hospital():
    return gj.datasets.load("hospital")


def _unpadded(monkeypatch):
    """Every model large for sizes.py: its own fixed effects and terms, the fine grid."""
    monkeypatch.setattr(gj.sizes, "SMALL_ROWS", 0)
    gj.sizes.forget()


def _same_fit(padded, plain):
    assert padded.converged and plain.converged
    assert padded.loglik == pytest.approx(plain.loglik, abs=1e-9)
    np.testing.assert_allclose(padded.theta, plain.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(padded.se, plain.se, rtol=1e-7)
    np.testing.assert_allclose(np.sqrt(np.diag(padded.cov_theta)),
                               np.sqrt(np.diag(plain.cov_theta)), rtol=1e-7)
    assert padded.theta_names == plain.theta_names
    assert padded.hessian.shape == plain.hessian.shape == (len(plain.theta),) * 2
    for name in padded.ranef:
        pd.testing.assert_frame_equal(padded.ranef[name], plain.ranef[name], rtol=0,
                                      atol=1e-7)
    # the padding enters no table, name or degree of freedom
    assert padded.summary() == plain.summary()
    assert padded.df_model == plain.df_model and padded.aic == pytest.approx(plain.aic)
    pd.testing.assert_frame_equal(padded.coef_table, plain.coef_table, rtol=1e-6)
    pd.testing.assert_frame_equal(padded.varcorr, plain.varcorr, rtol=1e-6)
    assert list(padded.vcov.index) == list(plain.vcov.index)


CASES = [  # formula, family, kwargs: one grouping factor ("single") and several ("multi")
    ("y ~ age + sex + (1 | hospital)", "binomial", {}),
    ("y ~ age + comorb + (age | hospital)", "binomial", {}),
    ("comorb ~ age + teaching + (1 | hospital)", "poisson", {}),
    ("age ~ sex + comorb + (1 | hospital)", "gamma_shift", {}),
    ("cbind(k, 4 - k) ~ age + sex + (1 | hospital)", "binomial", {"nagq": 5}),
    ("comorb ~ age + teaching + offset(off) + (1 | hospital)", "negative_binomial",
     {"weights": "w"}),
    ("y ~ age + sex + (1 | hospital) + (1 | comorb)", "binomial", {}),
]


def _with_columns(df):
    """Prior weights, an offset and binomial counts of 4 trials for CASES."""
    rng = np.random.default_rng(7)
    return df.assign(w=rng.uniform(0.5, 2.0, len(df)), off=rng.normal(0, 0.2, len(df)),
                     k=np.minimum(df["comorb"], 4))


@pytest.mark.filterwarnings("ignore::glmm_jax.SingularFitWarning")
@pytest.mark.parametrize("formula,family,kwargs", CASES)
def test_padded_programs_give_the_unpadded_fit(hospital, monkeypatch, formula, family,
                                                kwargs):
    df = _with_columns(hospital)
    if family == "gamma_shift":  # a family with a dispersion: Gamma of a positive y
        family, df = "gamma", df.assign(age=df["age"] - df["age"].min() + 0.5)
    if "weights" in kwargs:
        kwargs = {**kwargs, "weights": df[kwargs["weights"]].to_numpy()}
    model = gj.build_model(formula, df, family=family, **kwargs)
    assert model.padding is not None and model.structure.p == 8
    assert model.layout.size == len(model.theta_names) < model.structure.theta.size
    levels = [len(g.levels) for g in model.frame.groups]
    n_levels = model.structure.Js if len(levels) > 1 else (model.structure.n_groups,)
    assert all(t > J for t, J in zip(n_levels, levels, strict=True))  # levels padded too
    padded = model.fit()
    # the padded entries of the program's theta stay exactly 0 (not to rounding)
    out = newton_fit(model._embed(model.start()), model._u0(None), model.data,
                     model.structure, free=model._free())
    held = np.setdiff1d(np.arange(model.padding.size), model.padding.at)
    assert np.all(np.asarray(out.theta)[held] == 0.0)
    _unpadded(monkeypatch)
    plain_model = gj.build_model(formula, df, family=family, **kwargs)
    assert plain_model.padding is None
    _same_fit(padded, plain_model.fit())
    if len(levels) == 1 and kwargs.get("nagq", 1) == 1:
        # the joint Laplace engine pads nothing here (not even clusters): the same value
        bare = gj.build_model(formula, df, family=family, engine="multi", **kwargs)
        assert bare.structure.Js == tuple(levels) and bare.data.y.shape == (len(df),)
        assert bare.negloglik(padded.theta) == pytest.approx(-padded.loglik, abs=1e-9)
    # the model's own functions take and give its theta (no padding)
    f, g, H = model.value_grad_hess(padded.theta)
    f0, g0, H0 = plain_model.value_grad_hess(padded.theta)
    assert f == pytest.approx(f0, abs=1e-9) and g.shape == g0.shape and H.shape == H0.shape
    np.testing.assert_allclose(g, g0, atol=1e-7)
    np.testing.assert_allclose(H, H0, rtol=1e-7, atol=1e-7)
    assert model.negloglik(padded.theta) == pytest.approx(f0, abs=1e-9)


def test_a_session_of_refits_compiles_once(hospital):
    """Covariates added and dropped, an interaction, a quadratic term, subsets of rows
    and clusters: one Newton program; a random slope: a second, which then also serves
    the random intercept."""
    jax.clear_caches()
    gj.sizes.forget()
    steps = [
        ("y ~ age + (1 | hospital)", hospital),
        ("y ~ age * sex + comorb + teaching + (1 | hospital)", hospital),
        ("y ~ age + I(age^2) + sex + (1 | hospital)", hospital),
        ("y ~ sex + comorb + (1 | hospital)", hospital.query("age > -0.5")),
        ("y ~ age + sex + (1 | hospital)", hospital.query("comorb < 3")),
        ("y ~ age + sex + (1 | hospital)", hospital[hospital.hospital.cat.codes < 50]),
    ]
    before = compilations()
    fits = [gj.fit(steps[0][0], steps[0][1])]
    assert compilations() > before  # the first fit compiles (or loads) its program ...
    assert fits[0].model.structure.q == 1  # (a random intercept's own program)
    fits[0].summary()
    before = compilations()
    fits += [gj.fit(f, d) for f, d in steps[1:]]
    assert all(isinstance(r.summary(), str) for r in fits)
    assert compilations() == before  # ... and the refits (and summaries) compile nothing
    slope = gj.fit("y ~ age + teaching + (age | hospital)", hospital.query("sex == 0"))
    assert compilations() > before  # a new random-effects structure: a new program ...
    before = compilations()
    fits += [slope, gj.fit("y ~ sex + (1 | hospital)", hospital.query("comorb < 2"))]
    assert compilations() == before  # ... which a random intercept then reuses
    assert fits[-1].model.structure.q == 2
    assert all(r.converged for r in fits)
    assert [len(r.fixef) for r in fits] == [2, 6, 4, 3, 3, 3, 3, 2]
    assert fits[5].nobs == (hospital.hospital.cat.codes < 50).sum()
    assert len(fits[5].ranef["hospital"]) == 50  # only the levels of the subset


def test_small_models_reuse_a_larger_program(hospital):
    # a subset fits in the program of the whole data (sizes.reuse), however its chunk
    # count falls against the powers of two
    gj.sizes.forget()
    whole = gj.build_model("y ~ age + (1 | hospital)", hospital)
    for frac in (0.9, 0.7, 0.5, 0.3):
        sub = gj.build_model("y ~ age + (1 | hospital)",
                             hospital.sample(frac=frac, random_state=1))
        assert sub.structure == whole.structure
        assert jax.tree.map(np.shape, sub.data) == jax.tree.map(np.shape, whole.data)
    tiny = gj.build_model("y ~ age + (1 | hospital)", hospital.iloc[:300])
    assert tiny.data.y.size <= gj.sizes.slots_allowed(300)  # not the whole data's program


def test_large_models_are_not_padded(monkeypatch, hospital):
    monkeypatch.setattr(gj.sizes, "SMALL_ROWS", 1000)
    gj.sizes.forget()
    model = gj.build_model("y ~ age + sex + (1 | hospital)", hospital)
    assert model.padding is None and model.structure.p == 3 and model.structure.q == 1


def test_several_terms_reuse_a_program_across_rows_and_levels(hospital):
    # the joint Laplace engine: rows padded (zero weight), covariates padded, each term's
    # levels padded (levels without rows): subsets without some hospitals or some
    # comorbidity counts reuse the program
    gj.sizes.forget()
    jax.clear_caches()
    before = compilations()
    a = gj.fit("y ~ age + (1 | hospital) + (1 | comorb)", hospital)
    assert compilations() > before
    before = compilations()
    subsets = [hospital.query("age < 1.5"), hospital[hospital.hospital.cat.codes < 50],
               hospital.query("comorb < 4")]
    fits = [gj.fit("y ~ age + sex + teaching + (1 | hospital) + (1 | comorb)", d)
            for d in subsets]
    assert compilations() == before
    assert a.converged and all(r.converged for r in fits) and fits[0].nobs < a.nobs
    assert [len(r.ranef["hospital"]) for r in fits] == [100, 50, 100]
    assert [len(r.ranef["comorb"]) for r in fits] == [len(a.ranef["comorb"])] * 2 + [4]


def test_batches_of_refits_run_unpadded(hospital):
    # a vmapped batch compiles its own program: it runs on the model laid out without
    # the padding (which would only slow it), and gives the padded model's fits
    model = gj.build_model("y ~ age + sex + (1 | hospital)", hospital)
    assert model.padding is not None
    plain = model.unpadded
    assert plain.padding is None and plain.structure.p == 3 and plain.structure.q == 1
    assert plain.unpadded is plain and plain.theta_names == model.theta_names
    fit = model.fit()
    y = model.frame.y
    (again,) = model.fit_responses(y[None, :], batch_size=1)
    assert again.loglik == pytest.approx(fit.loglik, abs=1e-9)
    np.testing.assert_allclose(again.theta, fit.theta, atol=1e-8)
    pd.testing.assert_frame_equal(again.ranef["hospital"], fit.ranef["hospital"],
                                  rtol=0, atol=1e-7)


LMM_CASES = [  # Gaussian models from cross products (lmm.py, padded by lmmpad.py)
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", True),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", False),
    ("age ~ sex + comorb + (1 | hospital) + (1 | teaching:sex)", "hospital", True),
    ("y ~ x + (1 | g) + (x | h)", "crossed", False),
]


def _crossed(n=600, seed=3):
    """Two crossed factors, a random slope on the second: every variance clearly > 0."""
    rng = np.random.default_rng(seed)
    g, h, x = rng.integers(0, 30, n), rng.integers(0, 12, n), rng.normal(size=n)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.8, 30)[g] + rng.normal(0, 0.6, 12)[h] + \
        rng.normal(0, 0.4, 12)[h] * x + rng.normal(0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g), "h": pd.Categorical(h)})


@pytest.mark.filterwarnings("ignore::glmm_jax.SingularFitWarning")
@pytest.mark.parametrize("formula,data,reml", LMM_CASES)
def test_padded_lmm_programs_give_the_unpadded_fit(hospital, monkeypatch, formula, data,
                                                   reml):
    df = {"hospital": lambda: hospital, "crossed": _crossed,
          "sleepstudy": lambda: gj.datasets.load("sleepstudy")}[data]()
    model = gj.build_model(formula, df, family="gaussian", reml=reml)
    s = model.structure
    assert type(s).__name__ == "LmmStructure" and s.p == 8
    assert s.Js[0] > len(model.frame.groups[0].levels)  # levels padded (power of two)
    assert (model.padding is None) == reml  # (REML: the fixed effects are not in theta)
    padded = model.fit()
    _unpadded(monkeypatch)
    plain_model = gj.build_model(formula, df, family="gaussian", reml=reml)
    assert plain_model.structure.p == len(plain_model.frame.x_names)
    plain = plain_model.fit()
    _same_fit(padded, plain)
    # the Satterthwaite degrees of freedom (REML) and lme4's fixed-effect SEs
    pd.testing.assert_frame_equal(padded.coef_table, plain.coef_table, rtol=1e-7)
    f, g, H = model.value_grad_hess(padded.theta)
    f0, g0, H0 = plain_model.value_grad_hess(padded.theta)
    assert f == pytest.approx(f0, abs=1e-9)
    np.testing.assert_allclose(g, g0, atol=1e-7)
    np.testing.assert_allclose(H, H0, rtol=1e-7, atol=1e-7)
    assert model.negloglik(padded.theta) == pytest.approx(f0, abs=1e-9)
    # a new response: the padded statistics of the same program
    y = model.frame.y + 0.1 * np.sin(np.arange(len(model.frame.y)))
    new, new0 = model.with_response(y).fit(), plain_model.with_response(y).fit()
    assert new.loglik == pytest.approx(new0.loglik, abs=1e-9)
    np.testing.assert_allclose(new.theta, new0.theta, atol=1e-8)


def test_a_session_of_lmm_refits_compiles_once(hospital):
    """Gaussian refits (REML, lmer's default) with covariates added and dropped and on
    subsets of rows and levels: one program."""
    jax.clear_caches()
    gj.sizes.forget()
    steps = [
        ("age ~ sex + (1 | hospital)", hospital),
        ("age ~ sex * teaching + comorb + (1 | hospital)", hospital),
        ("age ~ comorb + I(comorb^2) + (1 | hospital)", hospital.query("sex == 1")),
        ("age ~ sex + (1 | hospital)", hospital[hospital.hospital.cat.codes < 40]),
    ]
    before = compilations()
    fits = [gj.fit(steps[0][0], steps[0][1], family="gaussian")]
    tables = [fits[0].coef_table, fits[0].summary()]  # (Satterthwaite's df: REML)
    assert compilations() > before
    before = compilations()
    for f, d in steps[1:]:  # the refits and their summaries compile nothing
        fits.append(gj.fit(f, d, family="gaussian"))
        tables += [fits[-1].coef_table, fits[-1].summary()]
    assert compilations() == before
    assert all(r.converged and r.reml for r in fits)
    assert [len(r.fixef) for r in fits] == [2, 5, 3, 2]
    assert len(fits[-1].ranef["hospital"]) == 40
    assert len(fits[-1].coef_table) == 2


def test_crossed_reuse_is_bounded_by_the_dense_coupling():
    # a crossed model's eliminated term couples to the dense part ([J0 q0, Qr]): a subset
    # reuses a program whose coupling is at most 4 times its own (nested terms: 8 times
    # the levels, as their cost is linear)
    from glmm_jax.layout import _multi_sizes

    gj.sizes.forget()
    program = ("test",)  # (family, width and nagq in a model's layout)
    whole = _multi_sizes(program, 4000, (1, 1), (2000, 200), False, False, 1)
    assert whole[0] == 4096 and all(t % 2 and t >= J for t, J in zip(whole[1], (2000, 200),
                                                                      strict=True))
    assert _multi_sizes(program, 3000, (1, 1), (1200, 200), False, False, 1) == whole
    quarter = _multi_sizes(program, 3000, (1, 1), (400, 200), False, False, 1)
    assert quarter != whole and quarter[1][0] < 1000  # its own sizes
    tree = _multi_sizes(program, 4000, (1, 1), (2000, 200), False, True, 1)
    assert _multi_sizes(program, 3000, (1, 1), (400, 100), False, True, 1) == tree
