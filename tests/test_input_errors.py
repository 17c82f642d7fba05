"""Invalid input raises GLMMInputError naming the culprit; data problems warn clearly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special

import glmm_jax as gj

Err = gj.GLMMInputError


@pytest.fixture()
def df():
    rng = np.random.default_rng(0)
    n = 60
    return pd.DataFrame({
        "y": rng.integers(0, 2, n),
        "x": rng.normal(size=n),
        "g": np.repeat(list("abcdef"), 10),
        "cnt": rng.poisson(3, n),
        "t": rng.uniform(1, 2, n),
        "pos": rng.gamma(2.0, 1.0, n),
    })


def build(formula, data, family="binomial", **kw):
    return gj.build_model(formula, data, family, **kw)


def test_error_is_a_value_error():
    assert issubclass(gj.GLMMInputError, ValueError)


# ---------------------------------------------------------------------------------------
# missing columns


@pytest.mark.parametrize("formula, family, column, where", [
    ("y ~ x + z + (1 | g)", "binomial", "z", "fixed effects"),
    ("y ~ x + (1 | h)", "binomial", "h", r"\(1 \| h\)"),
    ("y ~ x + (1 + w | g)", "binomial", "w", r"\(1 \+ w \| g\)"),
    ("yy ~ x + (1 | g)", "binomial", "yy", "response"),
    ("cbind(y, nn - y) ~ x + (1 | g)", "binomial", "nn", "response"),
    ("cnt ~ x + offset(log(tt)) + (1 | g)", "poisson", "tt", r"offset\(log\(tt\)\)"),
])
def test_missing_column(df, formula, family, column, where):
    with pytest.raises(Err, match=rf"'{column}'.*{where}"):
        build(formula, df, family)


# ---------------------------------------------------------------------------------------
# non-finite and impossible values


def test_infinite_covariate(df):
    df.loc[5, "x"] = np.inf
    with pytest.raises(Err, match=r"'x'.*infinite"):
        build("y ~ x + (1 | g)", df)


def test_infinite_response(df):
    df["pos"] = df["pos"].astype(float)
    df.loc[7, "pos"] = -np.inf
    with pytest.raises(Err, match=r"'pos'.*infinite.*row label 7"):
        build("pos ~ x + (1 | g)", df, "gaussian")


def test_infinite_offset(df):
    df.loc[8, "t"] = 0.0  # log(0) = -inf
    with np.errstate(divide="ignore"), pytest.raises(Err, match=r"offset\(log\(t\)\).*infinite"):
        build("cnt ~ x + offset(log(t)) + (1 | g)", df, "poisson")


def test_binary_response_outside_01(df):
    df.loc[9, "y"] = 2
    with pytest.raises(Err, match=r"binomial response 'y'.*row (label )?9\b"):
        build("y ~ x + (1 | g)", df)
    df.loc[9, "y"] = -1
    with pytest.raises(Err, match=r"binomial response 'y'"):
        build("y ~ x + (1 | g)", df)


def test_binary_response_non_integer(df):
    df["y"] = df["y"].astype(float)
    df.loc[4, "y"] = 0.5
    with pytest.raises(Err, match=r"binomial response 'y'.*row (label )?4\b"):
        build("y ~ x + (1 | g)", df)


def test_successes_exceed_trials(df):
    df["n"] = df["cnt"] + 1
    df.loc[11, "n"] = df.loc[11, "cnt"] - 1
    with pytest.raises(Err, match=r"successes exceed trials.*row label 11.*'n - cnt'"):
        build("cbind(cnt, n - cnt) ~ x + (1 | g)", df)


def test_binary_error_row_is_the_callers_row(df):
    # after rows with missing values are dropped, the reported row must still identify
    # the offending row of the caller's data (by label or by position there)
    df["y"] = df["y"].astype(float)
    df.loc[2, "y"] = np.nan
    df.loc[9, "y"] = 2
    with pytest.warns(gj.DataWarning), pytest.raises(Err, match=r"row (label )?9\b"):
        build("y ~ x + (1 | g)", df)


def test_count_error_row_is_the_callers_row(df):
    df["cnt"] = df["cnt"].astype(float)
    df.loc[0, "x"] = np.nan
    df.loc[6, "cnt"] = -3
    with pytest.warns(gj.DataWarning), pytest.raises(Err, match=r"row (label )?6\b"):
        build("cnt ~ x + (1 | g)", df, "poisson")


@pytest.mark.parametrize("family, label", [("poisson", "Poisson"),
                                           ("negative_binomial", "negative binomial")])
@pytest.mark.parametrize("bad", [-1.0, 1.5])
def test_counts_must_be_non_negative_integers(df, family, label, bad):
    df["cnt"] = df["cnt"].astype(float)
    df.loc[3, "cnt"] = bad
    pattern = rf"{label} response 'cnt'.*non-negative integer.*row (label )?3\b"
    with pytest.raises(Err, match=pattern):
        build("cnt ~ x + (1 | g)", df, family)


@pytest.mark.parametrize("bad", [0.0, -2.0])
def test_gamma_response_must_be_positive(df, bad):
    df.loc[4, "pos"] = bad
    with pytest.raises(Err, match=r"Gamma response 'pos' must be positive.*row (label )?4\b"):
        build("pos ~ x + (1 | g)", df, "gamma")


def test_non_numeric_response_for_poisson(df):
    df["word"] = np.where(df["y"] == 1, "a", "b")
    with pytest.raises(Err, match=r"'word'.*numeric"):
        build("word ~ x + (1 | g)", df, "poisson")


def test_binomial_response_with_three_levels(df):
    df["word"] = np.array(["a", "b", "c"])[np.arange(len(df)) % 3]
    with pytest.raises(Err, match=r"'word'.*two levels.*3"):
        build("word ~ x + (1 | g)", df)


# ---------------------------------------------------------------------------------------
# grouping factors


def test_grouping_factor_with_one_level(df):
    df["one"] = "A"
    with pytest.raises(Err, match=r"'one'.*1 level"):
        build("y ~ x + (1 | one)", df)


def test_continuous_grouping_variable(df):
    df["cont"] = df["x"]
    with pytest.raises(Err, match=r"'cont'.*continuous"):
        build("y ~ x + (1 | cont)", df)


def test_integer_valued_float_grouping_is_accepted(df):
    df["gf"] = np.repeat(np.arange(6.0), 10)
    m = build("y ~ x + (1 | gf)", df)
    assert "(Intercept)" in m.theta_names[-1]


def test_no_random_term_is_a_glm(df):
    # (no longer refused: the GLM is fitted; tests/test_glm.py checks it against R)
    m = build("y ~ x", df)
    assert m.frame.groups == () and m.theta_names == ["(Intercept)", "x"]


# ---------------------------------------------------------------------------------------
# formula syntax


@pytest.mark.parametrize("formula, pos", [
    ("y ~ x + (1 | g", 8),  # unbalanced '('
    ("y ~ x + (1 | g))", 15),  # unbalanced ')'
    ("y x + (1 | g)", None),  # missing '~'
    ("y ~ x | g", 6),  # '|' outside parentheses
    ("y ~ x + 1 | g + (1 | g)", 10),
    ("y ~ x ~ z + (1 | g)", None),  # two '~'
    ("y ~ x + (1 | g) +", 17),  # a trailing '+' (R reads "x + + z" as a unary plus)
    ("~ x + (1 | g)", None),  # no response
])
def test_formula_syntax_errors(df, formula, pos):
    with pytest.raises(Err, match="position") as info:
        build(formula, df)
    msg = str(info.value)
    assert formula in msg  # the formula is echoed with a pointer
    if pos is not None:
        assert f"position {pos}" in msg
        # the caret points at the offending character
        lines = msg.splitlines()
        caret = lines[-1]
        assert lines[-2].strip() == formula
        assert caret.index("^") - (len(lines[-2]) - len(lines[-2].lstrip())) == pos


def test_missing_tilde_is_named(df):
    with pytest.raises(Err, match="'~'"):
        build("y x + (1 | g)", df)


def test_bar_outside_parentheses_is_named(df):
    with pytest.raises(Err, match=r"'\|'"):
        build("y ~ x | g", df)


def test_formula_must_be_a_string(df):
    with pytest.raises(Err, match="formula"):
        build(None, df)


def test_data_must_be_a_dataframe():
    with pytest.raises(Err, match="DataFrame"):
        build("y ~ x + (1 | g)", [1, 2, 3])


# ---------------------------------------------------------------------------------------
# family, link and options


def test_unknown_family_lists_valid_names(df):
    with pytest.raises(Err, match=r"'binomal'") as info:
        build("y ~ x + (1 | g)", df, "binomal")
    for name in ("binomial", "poisson", "gaussian", "gamma", "negative_binomial"):
        assert repr(name) in str(info.value)


def test_unknown_link_lists_valid_names(df):
    with pytest.raises(Err, match=r"'logg'") as info:
        build("y ~ x + (1 | g)", df, "binomial", link="logg")
    for name in ("logit", "probit", "cloglog"):
        assert repr(name) in str(info.value)
    with pytest.raises(Err, match=r"'logit'.*'poisson'.*'log'"):
        build("cnt ~ x + (1 | g)", df, "poisson", link="logit")


@pytest.mark.parametrize("nagq", [0, -1, 2.0, True, "5"])
def test_bad_nagq(df, nagq):
    with pytest.raises(Err, match="nagq"):
        build("y ~ x + (1 | g)", df, nagq=nagq)
    with pytest.raises(Err, match="nagq"):
        gj.fit("y ~ x + (1 | g)", df, "binomial", nagq=nagq)


def test_too_many_random_effects_for_gaussian(df):
    # one random effect per observation: residual and random variance not identifiable
    df["obs"] = np.arange(len(df))
    with pytest.raises(Err, match="identifiable"):
        build("x ~ 1 + (1 | obs)", df, "gaussian")


# ---------------------------------------------------------------------------------------
# warnings: dropped rows, aliased columns, singular fits, non-convergence


def _binary(seed=1, J=30, per=10):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), per)
    x = rng.normal(size=g.size)
    b = rng.normal(0, 1.0, J)
    y = (rng.random(g.size) < special.expit(-0.2 + 0.8 * x + b[g])).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": [f"c{k}" for k in g]})


def test_rows_with_missing_values_are_dropped_with_a_warning():
    full = _binary()
    df = full.copy()
    df.loc[[3, 17], "y"] = np.nan
    df.loc[40, "x"] = np.nan
    df.loc[[41, 99], "g"] = None
    df["unused"] = np.nan  # NaN in a column the formula does not use: no effect
    with pytest.warns(gj.DataWarning, match=r"dropped 5 of 300 rows") as rec:
        res = gj.fit("y ~ x + (1 | g)", df, "binomial")
    msg = str(rec[0].message)
    for col in ("y", "x", "g"):
        assert col in msg
    assert res.nobs == 295
    # the same fit as on the complete rows
    complete = full.drop(index=[3, 17, 40, 41, 99])
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.GLMMWarning)
        ref = gj.fit("y ~ x + (1 | g)", complete, "binomial")
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-8)
    pd.testing.assert_series_equal(res.fixef, ref.fixef, check_exact=False, atol=1e-8)


def test_all_rows_missing_is_an_error():
    df = _binary()
    df["y"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.DataWarning)
        with pytest.raises(Err, match="no rows"):
            build("y ~ x + (1 | g)", df)


def test_aliased_column_is_dropped_with_a_warning():
    df = _binary()
    df["x2"] = 2.0 * df["x"]
    with pytest.warns(gj.DataWarning, match=r"rank deficient.*x2"):
        res = gj.fit("y ~ x + x2 + (1 | g)", df, "binomial")
    assert list(res.fixef.index) == ["(Intercept)", "x"]
    assert res.converged and np.all(np.isfinite(res.se))
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.GLMMWarning)
        ref = gj.fit("y ~ x + (1 | g)", df, "binomial")
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-8)
    pd.testing.assert_series_equal(res.fixef, ref.fixef, check_exact=False, atol=1e-8)
    assert res.df_model == ref.df_model


def test_singular_fit_warns():
    # every cluster holds exactly the same rows, so the between-cluster variation of the
    # responses is nil: the score of the random-intercept variance at 0 is
    # 1/2 sum_j [(sum_i r_ij)^2 - sum_i p_i(1-p_i)] < 0 (each cluster's residuals sum to 0
    # at the fixed-effect MLE), so the maximum likelihood SD is exactly 0
    rng = np.random.default_rng(4)
    per, J = 12, 25
    x = rng.normal(size=per)
    y = (rng.random(per) < special.expit(0.3 + 0.8 * x)).astype(int)
    y[:2] = [0, 1]  # both outcomes present
    df = pd.DataFrame({"y": np.tile(y, J), "x": np.tile(x, J),
                       "g": np.repeat([f"c{k}" for k in range(J)], per)})
    with pytest.warns(gj.SingularFitWarning):
        res = gj.fit("y ~ x + (1 | g)", df, "binomial")
    assert res.singular
    assert res.varcorr["sd"].iloc[0] < 1e-3
    assert any("singular" in m for m in res.messages)
    assert "singular" in res.summary()


def test_singular_fit_gaussian_zero_between_variance():
    # cluster means of the noise are exactly 0: the ML between-cluster variance is 0
    rng = np.random.default_rng(5)
    J, per = 20, 8
    g = np.repeat(np.arange(J), per)
    e = rng.normal(size=g.size)
    e -= np.bincount(g, e)[g] / per
    x = np.tile(np.linspace(-1, 1, per), J)
    df = pd.DataFrame({"y": 1.0 + 0.5 * x + e, "x": x, "g": g})
    with pytest.warns(gj.SingularFitWarning):
        res = gj.fit("y ~ x + (1 | g)", df, "gaussian")
    assert res.singular
    assert res.varcorr["sd"].iloc[0] < 1e-3 * res.sigma


def test_max_iter_one_does_not_converge():
    df = _binary(seed=2)
    with pytest.warns(gj.ConvergenceWarning):  # (a random slope: the intercept-only fit
        # now converges within max_iter=1 plus the 5 L-BFGS steps of the fallback)
        res = gj.fit("y ~ x + (1 + x | g)", df, "binomial", max_iter=1)
    assert res.converged is False
    assert res.n_iter <= 2  # max_iter for each of the two Newton runs (before/after L-BFGS)
    assert any("converge" in m for m in res.messages)
    assert "NOT converge" in res.summary()


@pytest.mark.parametrize("max_iter", [0, -1, 2.5, True])
def test_max_iter_must_be_a_positive_integer(max_iter):
    with pytest.raises(gj.GLMMInputError, match="max_iter must be a positive integer"):
        gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
               gj.datasets.load("cbpp"), max_iter=max_iter)
