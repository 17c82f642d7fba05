"""Likelihood-ratio tests of nested fits: lme4's ``anova(m1, m2, ...)`` table, its
printed form, and the 50:50 chi-bar-square p-value where one variance is at its boundary.
"""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
import pandas as pd

from . import rformat
from .dist import chi2_sf
from .errors import GLMMInputError, GLMMWarning, warn
from .model import ml_fit
from .results import GLMMResult
from .rsyntax import deparse_lines, parse

CHIBAR = "Pr(>Chibarsq)"
REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"


def anova(*results, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests of nested fits, as lme4's ``anova(m1, m2, ...)``.

    The models are sorted by their number of parameters (``npar``) and each is tested
    against the one before it: ``Chisq`` = 2 (difference of log-likelihoods, at least 0)
    on ``Df`` = the difference of npar degrees of freedom. REML fits are refitted by
    maximum likelihood first (``Model.fit`` of the same frame with ``reml=False``), with
    lme4's message "refitting model(s) with ML (instead of REML)" as a
    :class:`~glmm_jax.GLMMWarning`.

    When a model differs from the one before it only by one more scalar random-effect
    term (a random intercept, or an uncorrelated slope; or it is the GLMM of a model
    without random terms), with the same fixed effects, the variance tested is 0 under
    the smaller model, at the boundary of its range, and the chi-squared p-value is
    conservative: a column ``Pr(>Chibarsq)`` holds the 50:50 chi-bar-square p-value
    (Self & Liang 1987), 0.5 P(chi2_1 > Chisq) (1 when Chisq = 0), and
    ``table.attrs["note"]`` says so. lme4 gives only the chi-squared p-value, and does
    not check that the models are nested or fitted to the same response, as here.

    Args:
      *results: two or more fitted :class:`~glmm_jax.GLMMResult`, of one family, fitted
        to the same rows and response, and nested (each model's fixed effects and
        random terms among those of the next bigger one).
      names: the models' names (the table's index), in the order given; default
        "MODEL1", "MODEL2", ... (lme4's generic names; R uses the objects' names).

    Returns:
      A DataFrame indexed by model name with lme4's columns npar, AIC, BIC, logLik,
      deviance, Chisq, Df and Pr(>Chisq) (NaN in the first row), and ``Pr(>Chibarsq)``
      where a boundary comparison is present; ``attrs["heading"]`` (lme4's "Models:"
      lines) and ``attrs["note"]`` (None without a boundary comparison). Print it as
      lme4 does with :func:`format_anova`.

    >>> import glmm_jax as gj
    >>> cbpp = gj.datasets.load("cbpp")
    >>> m = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> g = gj.fit("cbind(incidence, size - incidence) ~ period", cbpp)  # a GLM
    >>> tab = anova(m, g, names=["m", "g"])
    >>> tab[["npar", "Chisq", "Df", "Pr(>Chisq)", "Pr(>Chibarsq)"]].round(4)
       npar    Chisq   Df  Pr(>Chisq)  Pr(>Chibarsq)
    g     4      NaN  NaN         NaN            NaN
    m     5  14.0058  1.0      0.0002         0.0001
    """
    models = _checked_models(results)
    names = _names(names, len(models))
    order = sorted(range(len(models)), key=lambda k: models[k].df_model)  # stable, as R
    models, names = [models[k] for k in order], [names[k] for k in order]
    _check_same_data(models, names)
    for k in range(1, len(models)):
        _check_nested(models[k - 1], models[k], names[k - 1], names[k])
    if any(r.reml for r in models):
        warn(REFIT_MESSAGE, GLMMWarning)
        models = [ml_fit(r) for r in models]
    npar = np.array([r.df_model for r in models])
    llk = np.array([r.loglik for r in models])
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(llk))])
    df = np.concatenate([[np.nan], np.diff(npar).astype(float)])
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, chi2_sf(chisq, np.where(df > 0, df, 1.0)))
    table = pd.DataFrame({
        "npar": npar, "AIC": [r.aic for r in models], "BIC": [r.bic for r in models],
        "logLik": llk, "deviance": -2.0 * llk, "Chisq": chisq, "Df": df, "Pr(>Chisq)": p,
    }, index=pd.Index(names))
    boundary = [k for k in range(1, len(models)) if _one_variance_more(models[k - 1],
                                                                      models[k])]
    note = None
    if boundary:
        chibar = np.full(len(models), np.nan)
        for k in boundary:
            chibar[k] = 0.5 * chi2_sf(chisq[k], 1) if chisq[k] > 0 else 1.0
        table[CHIBAR] = chibar
        pairs = ", ".join(f"{names[k]} vs {names[k - 1]}" for k in boundary)
        note = (f"{pairs}: one more variance, 0 under the smaller model (the boundary of "
                "its range), so Pr(>Chisq) is conservative; Pr(>Chibarsq) is the 50:50 "
                "chi-bar-square p-value 0.5 * P(chi2_1 > Chisq)")
    table.attrs["heading"] = ["Models:"] + [
        f"{n}: {line}" for n, r in zip(names, models, strict=True)
        for line in deparse_lines(parse(r.formula))]
    table.attrs["note"] = note
    return table


def _checked_models(results) -> list:
    if len(results) < 2:
        raise GLMMInputError(f"anova needs two or more fitted models, got {len(results)}")
    for k, r in enumerate(results):
        if not isinstance(r, GLMMResult):
            raise GLMMInputError(f"anova: argument {k + 1} is a {type(r).__name__}, not a "
                                 "fitted GLMMResult")
    fams = {(r.family.name, r.family.link) for r in results}
    if len(fams) > 1:
        raise GLMMInputError("anova: the models have different families: " + ", ".join(
            f"{n}({link})" for n, link in sorted(fams)))
    return list(results)


def _names(names, n: int) -> list[str]:
    if names is None:
        return [f"MODEL{k + 1}" for k in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise GLMMInputError(f"anova: names= has {len(names)} entries for {n} models")
    if len(set(names)) != n:
        raise GLMMInputError(f"anova: names= has duplicates: {names}")
    return names


def _response(res) -> pd.DataFrame:
    """The response (binomial: and its trials) by the caller's row label, sorted."""
    f = res.frame
    cols = {"y": f.y} | ({"trials": f.trials} if res.family.name == "binomial" else {})
    return pd.DataFrame(cols, index=f.row_index).sort_index(kind="stable")


def _check_same_data(models, names) -> None:
    first = _response(models[0])
    for r, name in zip(models[1:], names[1:], strict=True):
        if r.nobs != models[0].nobs:
            raise GLMMInputError(f"anova: the models were fitted to different numbers of "
                                 f"rows ({names[0]}: {models[0].nobs}, {name}: {r.nobs}); "
                                 "fit them to the same rows (rows with missing values in "
                                 "any model's variables are dropped)")
        other = _response(r)
        if not first.index.equals(other.index):
            raise GLMMInputError(f"anova: {names[0]} and {name} were fitted to different "
                                 "rows of the data")
        if not np.array_equal(first.to_numpy(), other.to_numpy()):
            raise GLMMInputError(f"anova: {names[0]} and {name} have different responses")


def _terms(res) -> list[tuple[str, tuple[str, ...]]]:
    return [(t.group, tuple(t.z_names)) for t in res.terms]


def _check_nested(small, big, small_name: str, big_name: str) -> None:
    """small (fewer parameters) must be nested in big: its fixed effects among big's, and
    each random term's effects within a term of big of the same grouping factor."""
    missing = [x for x in small.x_names if x not in big.x_names]
    if missing:
        raise GLMMInputError(f"anova: the models are not nested: fixed effects of "
                             f"{small_name} not in {big_name}: {', '.join(missing)}")
    for group, z in _terms(small):
        if not any(g == group and set(z) <= set(bz) for g, bz in _terms(big)):
            raise GLMMInputError(f"anova: the models are not nested: {small_name}'s random "
                                 f"term ({' + '.join(z)} | {group}) is not within a random "
                                 f"term of {big_name}")


def _one_variance_more(small, big) -> bool:
    """big = small plus one scalar random-effect term, same fixed effects."""
    extra = list(_terms(big))
    for term in _terms(small):
        if term not in extra:
            return False
        extra.remove(term)
    return (set(small.x_names) == set(big.x_names) and len(extra) == 1
            and len(extra[0][1]) == 1 and big.df_model == small.df_model + 1)


def format_anova(table: pd.DataFrame) -> str:
    """The printed form of an :func:`anova` table, as R prints lme4's (``print.anova``:
    R's number formatting with 5 significant digits and significance stars), without
    R's "Data:" line; then, where present, the chi-bar-square p-values and the note.

    >>> import glmm_jax as gj
    >>> cbpp = gj.datasets.load("cbpp")
    >>> m = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> g = gj.fit("cbind(incidence, size - incidence) ~ period", cbpp)
    >>> print(format_anova(anova(g, m, names=["g", "m"])))  # doctest: +NORMALIZE_WHITESPACE
    Models:
    g: cbind(incidence, size - incidence) ~ period
    m: cbind(incidence, size - incidence) ~ period + (1 | herd)
      npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)
    g    4 206.06 214.16 -99.029   198.06
    m    5 194.05 204.18 -92.026   184.05 14.006  1  0.0001822 ***
    ---
    Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1
    <BLANKLINE>
      Pr(>Chibarsq)
    m     9.112e-05 ***
    <BLANKLINE>
    Note: m vs g: one more variance, 0 under the smaller model (the boundary of its
    range), so Pr(>Chisq) is conservative; Pr(>Chibarsq) is the 50:50 chi-bar-square
    p-value 0.5 * P(chi2_1 > Chisq)
    """
    lines = list(table.attrs.get("heading", []))
    lines += _print_table(table.drop(columns=[CHIBAR], errors="ignore"))
    if CHIBAR in table:
        lines += ["", *_print_table(table[[CHIBAR]].dropna(), legend=False)]
    if table.attrs.get("note"):
        lines += ["", *textwrap.wrap("Note: " + table.attrs["note"], 80)]
    return "\n".join(lines)


def _print_table(table: pd.DataFrame, digits: int = 5, legend: bool = True) -> list[str]:
    """R's ``print.anova`` of a numeric table (``printCoefmat`` with ``cs.ind = NULL``):
    ``digits`` significant digits (R's default ``getOption("digits") - 2``), statistics
    (Chisq, F) rounded to ``digits - 1`` decimals, a last ``Pr(...)`` column as p-values
    with significance stars, NaN printed empty."""
    cn = [str(c) for c in table.columns]
    nc = len(cn)
    xm = table.to_numpy(dtype=float).copy()
    ina = np.isnan(xm)
    has_p = bool(re.match(r"^(P|Pr)\(", cn[-1]))
    tst = [j for j, c in enumerate(cn) if c[1:7] == " value" or c in ("F", "Cp", "Chisq")]
    zap = [j for j in range(nc - has_p) if j not in tst and not cn[j].endswith("Df")]
    dig_tst = max(1, min(5, digits - 1))
    for j in zap:
        xm[:, j] = _zapsmall(xm[:, j], digits)
    cells = np.full(xm.shape, "", dtype=object)
    for j in range(nc - has_p):
        col = np.round(xm[:, j], dig_tst) if j in tst else xm[:, j]
        cells[:, j] = rformat.format_real(col, digits)
    plain = [(i, j) for i in range(len(xm)) for j in range(nc - has_p)
             if j not in tst and not ina[i, j]]  # R's "not both 0" repair of these
    fix = [(i, j) for i, j in plain if (xm[i, j] == 0) != (float(cells[i, j]) == 0)]
    if fix:
        for (i, j), s in zip(fix, rformat.format_real([xm[i, j] for i, j in fix],
                                                      max(1, digits - 1)), strict=True):
            cells[i, j] = s
    cells[ina] = ""
    names = list(cn)
    stars = False
    if has_p and (~ina[:, -1]).any():
        pv = xm[:, -1]
        ok = ~ina[:, -1]
        cells[ok, -1] = rformat.format_pval(pv[ok], dig_tst)
        stars = bool(np.any(pv[ok] < 0.1))
        if stars:
            sym = ["" if math.isnan(v) else "***" if v <= 0.001 else "**" if v <= 0.01
                   else "*" if v <= 0.05 else "." if v <= 0.1 else " " for v in pv]
            width = max(map(len, sym))
            cells = np.column_stack([cells, [s.ljust(width) for s in sym]])
            names.append("")
    out = rformat.print_matrix([str(i) for i in table.index], names,
                               [list(r) for r in cells], right=True)
    if stars and legend:
        out += ["---", rformat.SIGNIF_LEGEND]
    return out


def _zapsmall(x: np.ndarray, digits: int) -> np.ndarray:
    """R 4.2's ``zapsmall``: round to digits - log10(max |x|) decimals (R's round takes
    the nearest integer number of decimals)."""
    fin = x[~np.isnan(x)]
    if not fin.size:
        return x
    mx = np.max(np.abs(fin))
    d = max(0.0, digits - math.log10(mx)) if mx > 0 else digits
    return np.round(x, int(math.floor(d + 0.5)))
