"""Separation detection (glmm_jax/separation.py) and how fits report infinite estimates.

References: tests/data/r_separation/refs.json (tests/data/r_separation/make_refs.R: the
Konis primal linear program of detectseparation, solved in R by lpSolve, and R's glm
coefficients running off to huge values), brute-force log-likelihoods along the
reported direction, and a refit without the separated rows."""

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj

REFS = json.loads((Path(__file__).parent / "data" / "r_separation" / "refs.json").read_text())
CBIND = "cbind(incidence, size - incidence)"


# ---- the datasets of make_refs.R (deterministic in the row number) ----------------------
def data_complete():
    df = pd.DataFrame({"x": 2 * np.sin(1.7 * np.arange(1, 31))})
    df["y"] = (df.x > 0.3).astype(int)
    df["g"] = np.arange(30) // 3
    return df


def data_combination():
    i = np.arange(1, 41)
    df = pd.DataFrame({"x1": 1.5 * np.sin(0.9 * i), "x2": np.cos(1.3 * i)})
    df["y"] = (df.x1 + df.x2 > 0.2).astype(int)
    return df


def data_factor():
    j = np.arange(1, 37)
    df = pd.DataFrame({"f": np.array(["a", "b", "c"])[(j - 1) % 3], "x": np.cos(0.7 * j)})
    df["y"] = (np.sin(2.3 * j) > 0).astype(int)
    df.loc[df.f == "b", "y"] = 0
    df["g"] = (j - 1) // 4
    return df


def cbpp_x():
    df = gj.datasets.load("cbpp")
    df["x"] = (df.incidence > 0).astype(float)
    return df


def signs(sep) -> dict:
    return {k: float(np.sign(v)) for k, v in sep.infinite.items()}


def ref_signs(key) -> dict:
    return {k: float(v) for k, v in REFS[key]["infinite"].items()}


# ---- detection, against R ------------------------------------------------------------------
@pytest.mark.parametrize("key, formula, make", [
    ("complete_x", "y ~ x", data_complete),
    ("combination", "y ~ x1 + x2", data_combination),
    ("combination_x1", "y ~ x1", data_combination),
    ("combination_x2", "y ~ x2", data_combination),
    ("factor_level", "y ~ f + x", data_factor),
    ("cbpp_x", f"{CBIND} ~ x", cbpp_x),
    ("cbpp_period", f"{CBIND} ~ period", cbpp_x),
])
def test_infinite_coefficients_match_r(key, formula, make):
    sep = gj.detect_separation(formula, make())
    assert signs(sep) == ref_signs(key)
    assert sep.separated == any(v != 0 for v in ref_signs(key).values())
    glm = REFS[key]["glm_coef"]  # R's glm: the infinite ones run off, with the same sign
    for name, s in ref_signs(key).items():
        if s != 0:
            assert np.sign(glm[name]) == s and abs(glm[name]) > 15


def test_complete_separation_by_a_covariate_raises_naming_it():
    with pytest.raises(gj.SeparationError) as err:
        gj.fit("y ~ x + (1 | g)", data_complete())
    msg = str(err.value)
    assert msg.startswith("complete separation in y ~ x + (1 | g)")
    assert "`x` (+Inf)" in msg and "`(Intercept)` (-Inf)" in msg
    assert "penalized" in msg and "on_separation='warn'" in msg
    assert isinstance(err.value, gj.GLMMInputError)
    sep = gj.detect_separation("y ~ x", data_complete())
    assert sep.kind == "complete" and sep.n_predicted == sep.n_rows == 30


def test_quasi_complete_factor_level_raises_naming_it():
    with pytest.raises(gj.SeparationError, match=r"quasi-complete separation.*`fb` \(-Inf\) "
                       r"is infinite.*< 0 on 12 rows, all failures"):
        gj.build_model("y ~ f + x + (1 | g)", data_factor())
    sep = gj.detect_separation("y ~ f + x + (1 | g)", data_factor())
    assert sep.kind == "quasi-complete" and sep.n_predicted == 12
    assert sep.direction["fb"] == -1 and np.allclose(sep.direction.drop("fb"), 0)


def test_separation_by_a_combination_of_two_columns():
    df = data_combination()
    assert not gj.detect_separation("y ~ x1", df).separated
    assert not gj.detect_separation("y ~ x2", df).separated
    with pytest.raises(gj.SeparationError, match=r"`x1` \(\+Inf\).*`x2` \(\+Inf\)"):
        gj.build_model("y ~ x1 + x2", df)
    # the reported direction separates: x'd >= 0 on successes, <= 0 on failures
    d = gj.detect_separation("y ~ x1 + x2", df).direction
    v = d["(Intercept)"] + d["x1"] * df.x1 + d["x2"] * df.x2
    assert (v[df.y == 1] >= -1e-12).all() and (v[df.y == 0] <= 1e-12).all()


def test_successes_of_trials_and_weights_give_the_same_record():
    df = cbpp_x()
    with pytest.raises(gj.SeparationError, match=r"`x` \(\+Inf\)"):
        gj.build_model(f"{CBIND} ~ x + (1 | herd)", df)
    a = gj.detect_separation(f"{CBIND} ~ x", df)
    df["p"] = df.incidence / df["size"]
    b = gj.detect_separation("p ~ x", df, weights="size")
    assert a.kind == b.kind == "quasi-complete"  # rows with 0 < y < n are never strict
    assert signs(a) == signs(b) == {"(Intercept)": -1.0, "x": 1.0}
    assert a.n_predicted == int((df.incidence == 0).sum())


def test_brute_force_likelihood_grows_along_the_direction():
    """Bernoulli log-likelihood of the glm along the reported direction: increasing
    without bound toward its supremum (so the estimate is infinite)."""
    df = data_factor()
    sep = gj.detect_separation("y ~ f + x", df)
    X = gj.model_matrix("~ f + x", df).to_numpy()
    y = df.y.to_numpy()
    beta0 = np.array([0.3, 0.0, -0.1, -0.4])

    def loglik(b):
        eta = X @ b
        return float(np.sum(y * eta - np.logaddexp(0, eta)))

    ll = [loglik(beta0 + t * sep.direction.to_numpy()) for t in (0, 2, 5, 10, 20)]
    assert np.all(np.diff(ll) > 0)
    # and no finite direction of the non-separated data improves without bound
    ll_x = [loglik(beta0 + t * np.array([0, 0, 0, 1.0])) for t in (0, 20)]
    assert ll_x[1] < ll_x[0]


# ---- fitting anyway: the tables ------------------------------------------------------------
@pytest.fixture(scope="module")
def warned():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = gj.fit("y ~ f + x + (1 | g)", data_factor(), on_separation="warn", max_iter=25)
    return res, caught


def test_warn_fits_and_marks_infinite_estimates(warned):
    res, caught = warned
    kinds = [w.category for w in caught]
    assert gj.SeparationWarning in kinds
    msg = next(str(w.message) for w in caught if w.category is gj.SeparationWarning)
    assert "`fb` (-Inf)" in msg
    assert res.separation.kind == "quasi-complete"
    assert res.fixef["fb"] == -np.inf and np.isfinite(res.fixef.drop("fb")).all()
    assert np.isnan(res.se["fb"]) and np.isfinite(res.se.drop("fb")).all()
    assert res.vcov.loc["fb"].isna().all() and res.vcov["fb"].isna().all()
    ct = res.coef_table
    assert ct.loc["fb", "estimate"] == -np.inf and ct.loc["fb", ["se", "z", "p"]].isna().all()
    assert np.isfinite(ct.drop("fb").to_numpy()).all()
    ci = res.conf_int()
    assert ci.loc["fb", "estimate"] == -np.inf and ci.loc["fb", "lower"] == -np.inf
    assert np.isnan(ci.loc["fb", "upper"]) and np.isfinite(ci.loc["x"]).all()
    assert res.odds_ratios().loc["fb", "estimate"] == 0.0
    assert res.beta[list(res.x_names).index("fb")] < -10  # the optimizer's finite value


def test_warn_summary_prints_inf(warned):
    res, _ = warned
    text = res.summary()
    fb = next(line for line in text.splitlines() if line.startswith("fb "))
    assert fb.split() == ["fb", "-Inf", "NA", "NA", "NA"]
    assert "Separation (quasi-complete): the estimates of fb (-Inf) are infinite" in text


def test_warn_other_estimates_are_the_fit_without_the_separated_rows(warned):
    """The finite estimates are those of the data less level b's rows (which the -Inf
    coefficient predicts exactly): an independent fit."""
    res, _ = warned
    df = data_factor()
    ref = gj.fit("y ~ f + x + (1 | g)", df[df.f != "b"])
    for name in ["(Intercept)", "fc", "x"]:
        assert res.fixef[name] == pytest.approx(ref.fixef[name], abs=2e-4)


# ---- no false alarms -----------------------------------------------------------------------
def contraception_like(seed: int) -> pd.DataFrame:
    """Binary use of contraception, as mlmRev's Contraception: 60 districts of unequal
    size, centred age, urban, number of living children (0, 1, 2, 3+)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 60, 60)
    district = np.repeat(np.arange(60), sizes)
    n = len(district)
    age = rng.uniform(-14, 20, n)
    urban = rng.random(n) < 0.3
    livch = rng.choice(["0", "1", "2", "3+"], n, p=[0.27, 0.19, 0.17, 0.37])
    eta = (-1.0 + 0.005 * age - 0.004 * age**2 + 0.7 * urban + 0.8 * (livch != "0")
           + rng.normal(0, 0.5, 60)[district])
    return pd.DataFrame({"use": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int),
                         "age": age, "urban": np.where(urban, "Y", "N"), "livch": livch,
                         "district": district})


@pytest.mark.parametrize("name, formula, prepare", [
    ("cbpp", f"{CBIND} ~ period + (1 | herd)", None),
    ("toenail", "y ~ treatment * visit + (1 | patientID)",
     lambda d: d.assign(y=(d.outcome == "moderate or severe").astype(int))),
    ("verbagg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", None),
])
def test_no_false_alarm_on_reference_datasets(name, formula, prepare):
    df = gj.datasets.load(name)
    df = prepare(df) if prepare else df
    sep = gj.detect_separation(formula, df)
    assert not sep.separated and sep.kind == "none"
    assert (sep.infinite == 0).all()
    gj.build_model(formula, df)  # the fit's default check raises nothing


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_no_false_alarm_on_contraception_like_simulations(seed):
    sep = gj.detect_separation("use ~ age + I(age^2) + urban + livch + (1 | district)",
                               contraception_like(seed))
    assert not sep.separated


def test_registry_check_is_cheap():
    df = gj.datasets.simulate_registry()  # 100,000 rows
    formula = "y ~ age + sex + comorb + teaching + (1 | hospital)"
    from glmm_jax.design import build_frame
    from glmm_jax.formula import parse_formula
    from glmm_jax.separation import separation_of

    frame = build_frame(parse_formula(formula), df, gj.families.Binomial())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        sep = separation_of(frame, gj.families.Binomial())
        times.append(time.perf_counter() - t0)
    assert not sep.separated
    assert min(times) < 0.5  # ~0.02 s on an idle 2-core CPU (a subsample suffices)


def test_large_separated_data_still_found():
    """A subsample may not decide: a separated level in a large dataset is found."""
    df = gj.datasets.simulate_registry(20_000, 200, seed=3)
    df["site"] = np.where(np.arange(len(df)) % 50 == 0, "rare", "common")
    df.loc[df.site == "rare", "y"] = 1
    sep = gj.detect_separation("y ~ age + sex + site", df)
    assert signs(sep) == {"(Intercept)": 0.0, "age": 0.0, "sex": 0.0, "siterare": 1.0}


# ---- options, other families, new responses ---------------------------------------------
def test_non_binomial_family_says_it_does_not_apply():
    df = gj.datasets.load("salamanders")
    sep = gj.detect_separation("count ~ mined + (1 | site)", df, family="poisson")
    assert not sep.separated and not sep.applicable and sep.kind == "not applicable"
    assert "binomial models only" in sep.message and "'poisson'" in sep.message
    assert gj.build_model("count ~ mined + (1 | site)", df, family="poisson").separation is None


def test_options():
    df = data_factor()
    with pytest.raises(gj.GLMMInputError, match="on_separation must be one of"):
        gj.build_model("y ~ f + x", df, on_separation="raise")
    assert gj.build_model("y ~ f + x", df, on_separation="ignore").separation is None
    with pytest.warns(gj.SeparationWarning):
        m = gj.build_model("y ~ f + x", df, on_separation="warn")
    assert m.separation.separated and "fb -Inf" in repr(m.separation)


def test_a_new_separated_response_is_checked_when_fitted():
    df = data_factor()
    y = df.y.to_numpy().copy()
    y[df.f == "b"] = [0, 1] * 6  # not separated
    m = gj.build_model("y ~ f + x", df.assign(y=y))
    assert not m.separation.separated
    with pytest.raises(gj.SeparationError, match="`fb`"):
        m.with_response(df.y.to_numpy()).fit()


def test_a_separated_subsample_of_unseparated_data_is_not_an_alarm(monkeypatch):
    """A rare level that is all successes in the first subsample, not in the data: the
    check goes on to larger subsamples and finds no separation."""
    from glmm_jax import separation

    calls = []
    solve = separation._solve
    monkeypatch.setattr(separation, "_solve", lambda *a: calls.append(1) or solve(*a))
    df = gj.datasets.simulate_registry(20_000, 200, seed=4)
    rare = np.arange(len(df)) % 70 == 0  # 286 rows
    df["site"] = np.where(rare, "rare", "common")
    df.loc[rare, "y"] = (np.arange(rare.sum()) % 100 != 0).astype(int)  # 3 failures
    sep = gj.detect_separation("y ~ age + sex + site", df)
    assert not sep.separated and len(calls) >= 2


def test_verdicts_equal_an_independent_linear_program():
    """Small random designs, about half of them separated: the verdict (found without
    the linear program where Stiemke weights prove there is no separation) is that of
    the primal LP solved here, max sum s_i x_i'd s.t. s_i x_i'd >= 0, |d| <= 1."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(11)
    verdicts = []
    for _ in range(150):
        n = int(rng.integers(8, 20))
        df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
        eta = rng.normal(scale=3.0) * df.x1 + rng.normal() * df.x2
        df["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
        if df.y.nunique() < 2:
            continue
        X = np.column_stack([np.ones(n), df.x1, df.x2])
        S = X * np.where(df.y == 1, 1.0, -1.0)[:, None]
        lp = linprog(-S.sum(axis=0), A_ub=-S, b_ub=np.zeros(n), bounds=[(-1, 1)] * 3,
                     method="highs")
        separated = -lp.fun > 1e-7
        got = gj.detect_separation("y ~ x1 + x2", df)
        verdicts.append(separated)
        assert got.separated == separated
    assert 0.2 < np.mean(verdicts) < 0.8  # both kinds were tried


def test_tidy_shows_infinite_estimates_too():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(30), 10)
    x = rng.normal(size=g.size)
    y = rng.binomial(1, 1 / (1 + np.exp(-(0.3 * x + rng.normal(size=30)[g]))))
    treated = ((y == 0) & (rng.random(g.size) < 0.3)).astype(int)
    df = pd.DataFrame({"y": y, "x": x, "treated": treated, "g": g})
    with pytest.warns(gj.SeparationWarning):
        res = gj.fit("y ~ x + treated + (1 | g)", df, on_separation="warn")
    t = gj.tidy(res, effects=("fixed",), conf_int=True).set_index("term")
    assert t.loc["treated", "estimate"] == -np.inf and np.isnan(t.loc["treated", "std_error"])
    assert t.loc["treated", "conf_low"] == -np.inf and np.isnan(t.loc["treated", "conf_high"])
    assert np.isfinite(t.loc["x", "estimate"]) and np.isfinite(t.loc["x", "std_error"])
