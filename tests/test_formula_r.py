"""Formulas read as R reads them, against R: model matrices (R's model.matrix), fits with
R-syntax terms, prior weights and contrasts (lme4 1.1-31 / glmmTMB 1.1.5), and the printed
summary (lme4's summary.merMod).

The reference numbers, matrices and summaries are in tests/data/r_formula/, made by
tests/data/r_formula/make_refs.R (see its README for how to regenerate them).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj

R_DIR = Path(__file__).parent / "data" / "r_formula"
REFS = json.loads((R_DIR / "refs.json").read_text())
CASES = REFS["cases"]


def data(name: str) -> pd.DataFrame:
    """The datasets as make_refs.R prepared them (derived columns included)."""
    if name == "Arabidopsis":
        df = pd.read_csv(R_DIR / "Arabidopsis.csv")
        for col, levels in REFS["factor_levels"]["Arabidopsis"].items():
            df[col] = pd.Categorical(df[col].astype(str), categories=levels)
        return df
    df = gj.datasets.load(name)
    n = np.arange(1, len(df) + 1)
    if name == "sleepstudy":
        df = df.assign(Dayf=df.Days + 0.5, w=1 + (df.Days % 3) / 2)
    elif name == "salamanders":
        df = df.assign(w=1 + n % 2)
    elif name == "cbpp":
        df = df.assign(wc=1 + n % 3, p=df.incidence / df["size"],
                       per=pd.Categorical(df.period, ordered=True))
    elif name == "owls":
        df = df.assign(wo=1 + n % 2, late=df.ArrivalTime > 24, Nest2=df.Nest.astype(str))
    elif name == "grouseticks":
        df = df.assign(YEAR=df.YEAR.astype(int))
    return df


DATASET = {"cbpp": "cbpp", "sleepstudy": "sleepstudy", "Owls": "owls",
           "Salamanders": "salamanders", "grouseticks": "grouseticks",
           "Arabidopsis": "Arabidopsis"}


# ---- model matrices, column by column ------------------------------------------------
@pytest.mark.parametrize("name", sorted(REFS["model_matrices"]))
def test_model_matrix_equals_r(name):
    ref = REFS["model_matrices"][name]
    df = data(DATASET[ref["dataset"]])
    if name == "mm_owls_string":
        df = df.iloc[:60]
    mm = gj.model_matrix(ref["formula"], df, contrasts=ref["contrasts"])
    expected = pd.read_csv(R_DIR / ref["file"])
    assert list(mm.columns) == ref["colnames"] == list(expected.columns)
    np.testing.assert_allclose(mm.to_numpy(), expected.to_numpy(float), rtol=1e-10, atol=1e-12)


# ---- fits against lme4 / glmmTMB -----------------------------------------------------
FITS = {
    # case: (formula, dataset, family, keyword arguments)
    "sleep_I2_int": ("Reaction ~ Days + I(Days^2) + (1 | Subject)", "sleepstudy", "gaussian",
                     {"reml": False}),
    "sleep_I2_float": ("Reaction ~ Dayf + I(Dayf^2) + (1 | Subject)", "sleepstudy",
                       "gaussian", {"reml": False}),
    "sleep_scale": ("Reaction ~ scale(Days) + (1 | Subject)", "sleepstudy", "gaussian",
                    {"reml": False}),
    "sleep_poly": ("Reaction ~ poly(Days, 2) + (1 | Subject)", "sleepstudy", "gaussian",
                   {"reml": False}),
    "sleep_poly_raw": ("Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject)", "sleepstudy",
                       "gaussian", {"reml": False}),
    "sleep_weights_reml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian",
                           {"weights": "w", "reml": True}),
    "sleep_weights_ml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian",
                         {"weights": "w", "reml": False}),
    "sleep_weights_ri_ml": ("Reaction ~ Days + (1 | Subject)", "sleepstudy", "gaussian",
                            {"weights": "w", "reml": False}),
    "arabidopsis_dotted": ("total.fruits ~ nutrient + rack + (1 | popu)", "Arabidopsis",
                           "poisson", {}),
    "grouse_factor": ("TICKS ~ factor(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks",
                      "poisson", {}),
    "cbpp_prop_weights": ("incidence/size ~ period + (1 | herd)", "cbpp", "binomial",
                          {"weights": "size"}),
    "cbpp_weights_cbind": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp",
                           "binomial", {"weights": "wc"}),
    "salamanders_weights": ("count ~ spp + mined + (1 | site)", "salamanders", "poisson",
                            {"weights": "w"}),
    "cbpp_sum": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp",
                 "binomial", {"contrasts": {"period": "sum"}}),
    "cbpp_helmert": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp",
                     "binomial", {"contrasts": {"period": "contr.helmert"}}),
    "cbpp_polyc": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp",
                   "binomial", {"contrasts": {"period": "poly"}}),
    "owls_cross2": ("SiblingNegotiation ~ (FoodTreatment + SexParent + ArrivalTime)^2 + "
                    "offset(logBroodSize) + (1 | Nest)", "owls", "poisson", {}),
    "owls_gamma_weights": ("ArrivalTime ~ FoodTreatment + (1 | Nest)", "owls", "gamma",
                           {"weights": "wo"}),
    "owls_nb_weights": ("SiblingNegotiation ~ FoodTreatment + offset(logBroodSize) + "
                        "(1 | Nest)", "owls", "negative_binomial", {"weights": "wo"}),
}
EXACT = {k for k, v in FITS.items() if v[2] == "gaussian"}  # LMMs: lmer's optimum is exact


class _Fits:
    def __init__(self):
        self.cache = {}

    def __call__(self, case):
        if case not in self.cache:
            formula, ds, family, kw = FITS[case]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", gj.GLMMWarning)
                self.cache[case] = gj.fit(formula, data(ds), family=family, **kw)
        return self.cache[case]


@pytest.fixture(scope="module")
def fits():
    return _Fits()


@pytest.mark.parametrize("case", sorted(FITS))
def test_fit_equals_r(fits, case):
    ref = CASES[case]
    res = fits(case)
    assert res.converged
    assert list(res.x_names) == list(ref["fixef"])
    ll = ref["logLik"]
    if case in EXACT:
        assert res.loglik == pytest.approx(ll, abs=1e-6)
        tol = 1e-4
    else:  # glmer stops short of the optimum: reach the better of glmer and glmmTMB
        best = max(ll, ref.get("glmmTMB_logLik", ll))
        assert best - 1e-6 <= res.loglik <= best + 1e-4
        tol = 5e-3
    est = np.array(list(ref["fixef"].values()))
    np.testing.assert_allclose(res.beta, est, rtol=tol, atol=tol * np.abs(est).max())
    assert res.nobs == ref["nobs"]


def test_glmmtmb_weights_loglik(fits):
    """Poisson weights: glmmTMB (the tighter optimizer) to 1e-6."""
    res = fits("salamanders_weights")
    assert res.loglik == pytest.approx(CASES["salamanders_weights"]["glmmTMB_logLik"], abs=1e-5)
    gamma = fits("owls_gamma_weights")
    assert gamma.dispersion == pytest.approx(CASES["owls_gamma_weights"]["shape"], rel=1e-3)
    nb = fits("owls_nb_weights")
    assert nb.dispersion == pytest.approx(CASES["owls_nb_weights"]["theta"], rel=1e-3)


def test_proportion_with_weights_is_the_cbind_fit(fits, ref_fit):
    prop, cb = fits("cbpp_prop_weights"), ref_fit("cbpp_laplace")
    assert prop.loglik == pytest.approx(cb.loglik, abs=1e-8)
    np.testing.assert_allclose(prop.beta, cb.beta, atol=1e-8)
    np.testing.assert_allclose(prop.se, cb.se, atol=1e-8)


def test_quadratic_spellings_agree(fits):
    """I(x^2) on an integer and a float column, poly and raw poly: one model (as in R,
    where all four have the same logLik to 1e-14); ^ is a power, not XOR."""
    lls = [fits(c).loglik for c in ("sleep_I2_int", "sleep_I2_float", "sleep_poly",
                                    "sleep_poly_raw")]
    assert np.ptp(lls) < 1e-8
    assert fits("sleep_I2_int").fixef["I(Days^2)"] == pytest.approx(
        CASES["sleep_I2_int"]["fixef"]["I(Days^2)"], rel=1e-5)


def test_logical_response_expression(ref_fit, reference):
    df = gj.datasets.load("toenail")
    res = gj.fit('(outcome == "moderate or severe") ~ treatment * visit + (1 | patientID)', df)
    assert res.loglik == pytest.approx(ref_fit("toenail_laplace").loglik, abs=1e-9)


def test_backticks_and_dotted_names_are_columns():
    df = data("Arabidopsis").rename(columns={"rack": "my rack"})
    a = gj.model_matrix("~ `total.fruits` + total.fruits + `my rack`", df)
    assert list(a.columns) == ["(Intercept)", "total.fruits", "`my rack`2"]


def test_true_false_and_r_constants():
    df = data("sleepstudy")
    a = gj.model_matrix("~ poly(Days, 2, raw = TRUE)", df)
    b = gj.model_matrix("~ poly(Days, 2, raw = T)", df)
    assert list(b.columns)[1] == "poly(Days, 2, raw = T)1"  # R names it as written
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    np.testing.assert_allclose(a.iloc[:, 2], df.Days**2)


# ---- stateful transforms and the kept encoding ---------------------------------------
def test_encoding_rebuilds_the_columns_for_new_data():
    df = data("sleepstudy").assign(x=lambda d: (d.Days * 7) % 10)
    model = gj.build_model("Reaction ~ scale(Days) + poly(x, 2) + (1 | Subject)", df,
                           family="gaussian")
    enc = model.frame.encoding
    np.testing.assert_array_equal(enc.matrix(df), model.frame.X)
    rows = [3, 17, 42, 99, 150]
    new = df.iloc[rows]
    X = enc.matrix(new)
    # scale() and poly() keep what they learned from the fit's data, not the new rows'
    np.testing.assert_allclose(X[:, 1], (new.Days - df.Days.mean()) / df.Days.std())
    np.testing.assert_allclose(X, model.frame.X[rows], atol=1e-12)
    assert not np.allclose(gj.model_matrix("~ poly(x, 2)", new).iloc[:, 1:],
                           X[:, 2:])  # (refitted on 5 rows, poly would differ)


def test_unseen_level_in_new_data_is_named():
    df = data("cbpp")
    model = gj.build_model("cbind(incidence, size - incidence) ~ period + (1 | herd)", df)
    new = df.iloc[:2].assign(period=["1", "9"])
    with pytest.raises(gj.GLMMInputError, match=r"'period'.*not seen.*9"):
        model.frame.encoding.matrix(new)


# ---- two-level responses, warnings at the user's call --------------------------------
def test_string_response_names_the_success_level():
    df = data("cbpp").assign(out=lambda d: np.where(d.incidence > 0, "sick", "healthy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.GLMMWarning)
        res = gj.fit("out ~ period + (1 | herd)", df)
    assert "'sick' is a success" in res.summary()
    assert "'healthy' a failure" in res.summary()


def test_warnings_point_at_the_users_call():
    df = data("cbpp")
    df.loc[3, "period"] = np.nan
    with pytest.warns(gj.DataWarning, match="dropped 1 of 56") as rec:
        gj.build_model("cbind(incidence, size - incidence) ~ period + (1 | herd)", df)
    assert rec[0].filename == __file__


# ---- bad input ------------------------------------------------------------------------
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.mark.parametrize("bad, pattern", [
    (-1.0, "negative"), (np.nan, "missing|NaN"), (np.inf, "infinite"), (0.0, "zero"),
])
def test_bad_weights(bad, pattern):
    df = data("cbpp")
    w = np.ones(len(df))
    w[4] = bad
    if bad != bad:  # a missing weight drops its row, as R's na.omit does
        with pytest.warns(gj.DataWarning, match=r"weights="):
            gj.build_model(CBPP, df, weights=w)
        return
    with pytest.raises(gj.GLMMInputError, match=pattern):
        gj.build_model(CBPP, df, weights=w)


def test_weights_of_the_wrong_size_or_column():
    df = data("cbpp")
    with pytest.raises(gj.GLMMInputError, match=r"one value per row.*56"):
        gj.build_model(CBPP, df, weights=np.ones(10))
    with pytest.raises(gj.GLMMInputError, match=r"'nope'.*weights="):
        gj.build_model(CBPP, df, weights="nope")


def test_non_integer_binomial_successes_are_refused():
    df = data("cbpp")
    with pytest.raises(gj.GLMMInputError, match="whole numbers of successes"):
        gj.build_model("p ~ period + (1 | herd)", df, weights=df["size"] + 0.5)


@pytest.mark.parametrize("formula, pattern", [
    ("y ~ foo(x) + (1 | g)", r"unknown function foo\(\) at position 4"),
    ("y ~ poly(x, 2, rw = TRUE) + (1 | g)", r"poly\(\) at position 4 has no argument 'rw'"),
    ("y ~ center(x) + (1 | g)", r"center.*scale\(x, scale = FALSE\)"),
    ("y ~ (x + z)^x + (1 | g)", r"'\^' at position 11.*I\(x\^2\)"),
])
def test_formula_errors_name_the_function_and_position(formula, pattern):
    df = pd.DataFrame({"y": [0, 1] * 10, "x": np.arange(20.0), "z": np.ones(20),
                       "g": np.repeat(list("abcde"), 4)})
    with pytest.raises(gj.GLMMInputError, match=pattern):
        gj.build_model(formula, df)


def test_bad_contrasts():
    df = data("cbpp")
    with pytest.raises(gj.GLMMInputError, match=r"'size'.*not a factor"):
        gj.build_model(CBPP, df, contrasts={"size": "sum"})
    with pytest.raises(gj.GLMMInputError, match=r"'contr\.bogus'.*'treatment', 'sum'"):
        gj.build_model(CBPP, df, contrasts={"period": "contr.bogus"})


# ---- the printed summary, section by section against lme4's --------------------------
def _shape(line: str) -> str:
    """A line with its digits masked: R's layout and number formatting, whatever the
    last digits of the estimates."""
    return re.sub(r"\d", "9", line.rstrip())


SUMMARIES = {
    "cbpp_cbind": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp",
                   "binomial", {}),
    "cbpp_prop_weights": FITS["cbpp_prop_weights"],
    "cbpp_sum": FITS["cbpp_sum"],
    "sleep_reml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian", {}),
    "owls_offset": ("SiblingNegotiation ~ FoodTreatment * SexParent + offset(logBroodSize) "
                    "+ (1 | Nest)", "owls", "poisson", {}),
}


@pytest.mark.parametrize("case", sorted(SUMMARIES))
def test_summary_is_lme4s(fits, ref_fit, case):
    formula, ds, family, kw = SUMMARIES[case]
    res = fits(case) if case in FITS else gj.fit(formula, data(ds), family=family, **kw)
    ours = res.summary().splitlines()
    theirs = (R_DIR / REFS["summaries"][case]).read_text().splitlines()
    # lme4 names its class and the data; glmm_jax has no data name to print
    theirs = [t.replace("[glmerMod]", "[glmm_jax]").replace("['lmerMod']", "[glmm_jax]")
              for t in theirs if not t.startswith("   Data:")]
    assert len(ours) == len(theirs), "\n".join(ours)
    first = theirs.index("Fixed effects:") + 2
    coef_rows = range(first, first + len(res.x_names))
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if k not in coef_rows:  # (the coefficient rows: below, with lme4's numbers)
            assert _shape(a) == _shape(b), f"\n ours: {a!r}\n lme4: {b!r}"
    # the numbers that R rounds to 1 decimal are lme4's exactly
    k = theirs.index(next(t for t in theirs if t.startswith("REML") or "AIC" in t))
    assert ours[k:k + 2] == theirs[k:k + 2]


@pytest.mark.parametrize("case", ["cbpp_cbind", "cbpp_sum", "owls_offset", "sleep_reml"])
def test_coefficient_table_is_printcoefmats(case):
    """R's printCoefmat of lme4's own estimates and SEs gives lme4's printed rows."""
    from scipy import stats

    from glmm_jax.rformat import coefmat

    ref = CASES[case]
    est, se = np.array(list(ref["fixef"].values())), np.array(list(ref["se"].values()))
    z = est / se
    gaussian = ref["class"] == "lmerMod"
    lines = coefmat(list(ref["fixef"]), est, se, z, "t value" if gaussian else "z value",
                    None if gaussian else 2 * stats.norm.sf(np.abs(z)))
    theirs = (R_DIR / REFS["summaries"][case]).read_text().splitlines()
    first = theirs.index("Fixed effects:") + 1
    assert [x.rstrip() for x in lines] == [x.rstrip() for x in theirs[first:first + len(lines)]]


def test_offset_argument_equals_the_offset_term(ref_fit):
    df = data("owls")
    res = gj.fit("SiblingNegotiation ~ FoodTreatment * SexParent + (1 | Nest)", df,
                 family="poisson", offset="logBroodSize")
    ref = ref_fit("owls_poisson")
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-9)
    np.testing.assert_allclose(res.beta, ref.beta, atol=1e-8)
    assert " Offset: logBroodSize" in res.summary().splitlines()  # (lme4 indents it)


def test_correlation_of_fixed_effects_left_out_above_12_columns():
    df = data("salamanders")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gj.GLMMWarning)
        res = gj.fit("count ~ spp * mined + (1 | site)", df, family="poisson")
    assert len(res.x_names) == 14
    text = res.summary()
    assert "Correlation matrix not shown by default, as p = 14 > 12." in text
    assert "Correlation of Fixed Effects:" not in text


# ---- found in review: each against R or lme4's rule ----------------------------------
def test_contrasts_apply_to_the_fixed_effects_only():
    """lme4 applies contrasts= to X only: a random slope on a factor keeps treatment
    coding (dgTRUE), while the fixed effects are sum-coded (dg1)."""
    df = data("sleepstudy").assign(dg=lambda d: d.Days > 4)
    m = gj.build_model("Reaction ~ dg * Days + (1 + dg | Subject)", df, family="gaussian",
                       contrasts={"dg": "sum"})
    assert "dg1" in m.frame.x_names and "dg1:Days" in m.frame.x_names
    assert m.frame.groups[0].z_names == ("(Intercept)", "dgTRUE")


def test_text_levels_sort_as_r_in_a_utf8_locale():
    df = pd.DataFrame({"g": list("aBbA"), "y": np.arange(4.0)})
    mm = gj.model_matrix("~ 0 + g", df)
    assert list(mm.columns) == ["ga", "gA", "gb", "gB"]  # (the C locale: A, B, a, b)
    d = data("cbpp").assign(arm=lambda x: np.where(x.incidence > 1, "b", "A"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", gj.DataWarning)
        gj.build_model(CBPP.replace("period", "arm"), d)  # A < b either way: no warning
    d = d.assign(arm=lambda x: np.where(x.incidence > 1, "b", "C"))
    with pytest.warns(gj.DataWarning, match=r"reference level of text column 'arm' is 'b'.*"
                                            r"C locale would take 'C'"):
        gj.build_model(CBPP.replace("period", "arm"), d)


@pytest.mark.parametrize("formula, pattern", [
    ("~ ifelse(Days > 1, 1)", r"ifelse\(\) at position 2 needs the argument\(s\) no"),
    ('~ poly(Days, "a")', r"'degree' of poly\(\).*a number"),
    ('~ scale(Days, center = "a")', r"'center' of scale\(\).*a number or TRUE or FALSE"),
    ("~ log(Days + 1, base = -1)", r"base must be positive"),
    ("~ Days + 3", r"the number 3 at position 9 is not a term"),
    ("~ poly(Days, 2, TRUE)", r"at most 2 unnamed arguments.*name the others: raw"),
    ('~ poly(Days, 2, raw = "yes")', r"'raw' of poly\(\).*TRUE or FALSE"),
    ("~ relevel(Days, ref = 1)", r"relevel\(\).*unordered factors"),
])
def test_more_bad_formulas(formula, pattern):
    with pytest.raises(gj.GLMMInputError, match=pattern):
        gj.model_matrix(formula, data("sleepstudy"))


def test_duplicate_columns_and_complex_weights_are_refused():
    df = data("cbpp")
    dup = pd.concat([df, df[["size"]]], axis=1)
    with pytest.raises(gj.GLMMInputError, match="duplicated column names: size"):
        gj.build_model(CBPP, dup)
    with pytest.raises(gj.GLMMInputError, match="numeric"):
        gj.build_model(CBPP, df, weights=np.ones(len(df)) * (1 + 1j))


def test_model_matrix_keeps_unused_levels_and_drops_offsets():
    df = data("cbpp").assign(period=lambda d: pd.Categorical(d.period, ["1", "2", "3", "4",
                                                                        "5"]))
    mm = gj.model_matrix("~ period + offset(log(size))", df)
    assert list(mm.columns) == ["(Intercept)", "period2", "period3", "period4", "period5"]
    assert not mm["period5"].any()


def test_summary_details_as_lme4():
    df = data("sleepstudy")
    res = gj.fit("Reaction ~ Days + (Days | Subject)", df, family="gaussian", reml=False)
    assert res.summary().startswith("Linear mixed model fit by maximum likelihood  [")
    from glmm_jax.rformat import abbreviate_all, format_real

    assert format_real([-0.0, 0.5], 7, nsmall=3) == ["0.000", "0.500"]
    # R: abbreviate(c("poly(BROOD, 2)1", "poly(BROOD, 2)2"), 6) widens until unique
    assert abbreviate_all(["poly(BROOD, 2)1", "poly(BROOD, 2)2"], 6) == \
        ["p(BROOD,2)1", "p(BROOD,2)2"]
