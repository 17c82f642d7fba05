"""Tidy tables of a fit, as R's broom.mixed (``tidy``, ``glance``, ``augment`` of an lme4
fit), with snake_case column names.

broom.mixed's names map to these: ``std.error`` -> ``std_error``, ``p.value`` ->
``p_value``, ``conf.low``/``conf.high`` -> ``conf_low``/``conf_high``, ``logLik`` ->
``log_lik``, ``AIC``/``BIC`` -> ``aic``/``bic``, ``REMLcrit`` -> ``reml_crit``,
``df.residual`` -> ``df_residual``; augment's ``.fitted``, ``.resid``, ``.fixed``,
``.mu``, ``.offset``, ``.sqrtXwt``, ``.sqrtrwt``, ``.weights``, ``.wtres`` -> ``fitted``,
``resid``, ``fixed``, ``mu``, ``offset``, ``sqrt_xwt``, ``sqrt_rwt``, ``weights``,
``wtres``. Rows and terms are named and ordered as broom.mixed's: fixed effects first,
then the variance components ``sd__(Intercept)``, ``cor__(Intercept).Days``, ``sd__Days``
per group (lme4's lower-triangle order) and ``sd__Observation`` of group ``Residual``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import rows
from .dist import norm_sf, t_quantile, z_quantile
from .errors import GLMMInputError

EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")
CONF_METHODS = ("wald", "profile")
SCALES = ("sdcor", "vcov")
COLUMNS = ("effect", "group", "level", "term", "estimate", "std_error", "statistic", "df",
           "p_value", "conf_low", "conf_high")


def tidy(res, effects=("fixed", "ran_pars"), conf_int: bool = False,
         conf_level: float = 0.95, conf_method: str = "wald", exponentiate: bool = False,
         scales=None, ddf_method: str | None = None) -> pd.DataFrame:
    """One row per parameter, as broom.mixed's ``tidy(merMod)``.

    ``effects``: any of "fixed" (fixed effects: estimate, std_error, Wald statistic and
    two-sided normal p_value), "ran_pars" (each group's SDs and correlations, and the
    residual SD), "ran_vals" (conditional modes per level, std_error their conditional
    SD) and "ran_coefs" (lme4's ``coef``: fixed plus random effect per level). Blocks
    come in that order whatever the order of ``effects`` (as broom.mixed).

    Gaussian fits get no ``p_value`` column (as broom.mixed for a plain ``lmer`` fit)
    unless ``ddf_method="satterthwaite"``, which adds ``df`` and t-test p-values from
    :func:`glmm_jax.satterthwaite` (broom.mixed's output for an lmerTest fit; its
    intervals then use the t quantile). ``conf_int=True`` adds ``conf_low`` and
    ``conf_high``: "wald" (fixed effects; NaN for ran_pars, as broom.mixed) or "profile"
    (likelihood profile, ``res.conf_int("profile")``, for fixed and ran_pars); the
    ran_vals intervals are always Wald, ran_coefs have none (NaN). ``exponentiate=True``
    gives exp(estimate) and exp of the interval ends of the fixed effects, and std_error
    times exp(estimate) (the delta method, as broom.mixed); statistic and p_value stay.
    ``scales``: as broom.mixed, one entry per ``effects`` entry, "sdcor" (default) or
    "vcov" (``var__``/``cov__`` rows) for "ran_pars", None elsewhere. A Gamma fit's residual
    row is 1/sqrt(shape) (glmmTMB's sigma); a negative binomial fit has none.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> t = tidy(res)
    >>> t[["effect", "group", "term"]].values.tolist()[-2:]
    [['fixed', nan, 'period4'], ['ran_pars', 'herd', 'sd__(Intercept)']]
    >>> tidy(res, conf_int=True)[["estimate", "conf_low", "conf_high"]].iloc[1].round(3).tolist()
    [-0.992, -1.593, -0.391]
    """
    effects = _effects(effects)
    if not isinstance(conf_level, (int, float)) or not 0.0 < conf_level < 1.0:
        raise GLMMInputError(f"conf_level must be a number between 0 and 1, not {conf_level!r}")
    if conf_method not in CONF_METHODS:
        raise GLMMInputError(f"conf_method must be one of {', '.join(map(repr, CONF_METHODS))}"
                             f", not {conf_method!r}")
    if ddf_method is not None and ddf_method != "satterthwaite":
        raise GLMMInputError(f"ddf_method must be None or 'satterthwaite', not {ddf_method!r}")
    if ddf_method is not None and res.family.name != "gaussian":
        raise GLMMInputError(f"ddf_method='satterthwaite' is for Gaussian fits; this fit is "
                             f"{res.family.name}")
    if conf_int and conf_method != "wald" and "ran_vals" in effects:
        raise GLMMInputError("conf_method: only Wald intervals are available for the "
                             "conditional modes (ran_vals), as broom.mixed")
    scale = _scale(effects, scales)
    prof = None
    if conf_int and conf_method == "profile" and ({"fixed", "ran_pars"} & set(effects)):
        prof = res.conf_int("profile", conf_level)
    blocks = []
    if "fixed" in effects:
        blocks.append(_fixed(res, conf_int, conf_level, prof, exponentiate, ddf_method))
    if "ran_pars" in effects:
        blocks.append(_ran_pars(res, scale, conf_int, prof))
    if "ran_vals" in effects:
        blocks.append(_ran_vals(res, conf_int, conf_level))
    if "ran_coefs" in effects:
        coefs = _ran_coefs(res)
        if conf_int:  # (broom.mixed: NA with a warning)
            coefs["conf_low"] = coefs["conf_high"] = np.nan
        blocks.append(coefs)
    out = pd.concat([b for b in blocks if len(b)] or blocks, ignore_index=True)
    return out[[c for c in COLUMNS if c in out.columns]]


def glance(res) -> pd.DataFrame:
    """One row of fit statistics, as broom.mixed's ``glance(merMod)``: nobs, sigma,
    log_lik, aic, bic, deviance (``reml_crit`` instead for REML fits), df_residual.

    ``deviance`` is lme4's ``deviance()``: -2 log L for Gaussian ML fits, and for other
    families the conditional deviance, the sum of the squared deviance residuals at the
    conditional modes (not ``res.deviance``, which is -2 log L, the "deviance" of lme4's
    summary). ``sigma`` is the residual SD of a Gaussian fit, 1/sqrt(shape) for Gamma
    and 1 otherwise. Under REML log_lik, aic and bic are the REML criterion's (as lme4).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> glance(res).round(2).iloc[0].tolist()
    [56.0, 1.0, -92.03, 194.05, 204.18, 73.47, 51.0]
    """
    from .predict import residuals

    if res.family.name == "gaussian":
        dev = res.deviance
    else:
        dev = float(np.sum(residuals(res, "deviance").to_numpy() ** 2))
    row = {"nobs": res.nobs, "sigma": _residual_sd(res), "log_lik": res.loglik,
           "aic": res.aic, "bic": res.bic, "reml_crit" if res.reml else "deviance": dev,
           "df_residual": res.df_resid}
    return pd.DataFrame([row])


def augment(res, data: pd.DataFrame | None = None, na_action: str = "omit") -> pd.DataFrame:
    """Per-row quantities of the fit, as broom.mixed's ``augment(merMod)``.

    Columns (broom's in parentheses): ``fitted`` (``.fitted``: the conditional linear
    predictor, lme4's ``predict()``, the link scale), ``resid`` (``.resid``: lme4's
    default ``residuals()``: response residuals for Gaussian fits, deviance residuals
    otherwise), ``fixed`` (``.fixed``: X beta + offset, lme4's ``re.form = NA``), ``mu``
    (``.mu``: conditional mean, per trial for a binomial response), ``offset``,
    ``sqrt_xwt`` (``.sqrtXwt``: sqrt(w) mu_eta / sqrt(V(mu))), ``sqrt_rwt``
    (``.sqrtrwt``: sqrt(w / V(mu))), ``weights`` (``.weights``: prior weights, the
    trials of a binomial response), ``wtres`` (``.wtres``: sqrt_rwt (y - mu)), with V
    R's variance function (1 for Gaussian), then one column per random-effect
    coefficient, ``ranef_<group>_<term>`` (e.g. ``ranef_herd_(Intercept)``): the
    conditional mode of the row's level. broom's ``.hat``, ``.cooksd`` and ``.eta`` (=
    ``fitted`` for a GLMM) are not given.

    Without ``data`` the rows are indexed by the caller's row labels
    (``res.frame.row_index``) and hold only these columns. With ``data`` (the DataFrame
    the model was fitted to; it is not modified) its columns come first: rows dropped
    for missing values are left out (``na_action="omit"``, broom with lme4's default
    ``na.omit``) or kept with NaN (``"exclude"``, broom with ``na.exclude``). ``data``
    must have the fit's row labels and number of rows, and give the fit's X, Z and
    (numeric) response on the rows used (the dropped rows are not checked).

    >>> import glmm_jax as gj
    >>> df = gj.datasets.load("cbpp")
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", df)
    >>> a = augment(res, df)
    >>> a[["fitted", "resid", "mu", "ranef_herd_(Intercept)"]].iloc[0].round(4).tolist()
    [-0.8085, -1.438, 0.3082, 0.59]
    """
    from .predict import residuals

    if na_action not in ("omit", "exclude"):
        raise GLMMInputError(f"na_action must be 'omit' or 'exclude', not {na_action!r}")
    f, fam = res.frame, res.family
    eta = rows.linear_predictor(res)
    mu = np.asarray(fam.linkinv(eta))
    w = f.weights * f.trials
    var = _unit_variance(res, mu)
    y = f.y / f.trials if fam.name == "binomial" else f.y
    sqrt_rwt = np.sqrt(w / var)
    cols = {"fitted": eta,
            "resid": residuals(res, "response" if fam.name == "gaussian" else "deviance"),
            "fixed": rows.linear_predictor(res, random_effects=False),
            "mu": mu, "offset": f.offset,
            "sqrt_xwt": sqrt_rwt * np.asarray(fam.mu_eta(eta)), "sqrt_rwt": sqrt_rwt,
            "weights": w, "wtres": sqrt_rwt * (y - mu)}
    for t, g in zip(res.terms, f.groups, strict=True):
        for k, z in enumerate(t.z_names):
            name = f"ranef_{t.group}_{z}"
            cols[name if name not in cols else f"{name}.{len(cols)}"] = t.b[g.codes, k]
    out = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in cols.items()},
                       index=f.row_index.copy())
    if data is None:
        return out
    _check_data(res, data)
    clash = [c for c in out.columns if c in data.columns]
    if clash:
        raise GLMMInputError(f"augment: data already has column(s) {', '.join(clash)}; "
                             "rename them first")
    base = data.loc[f.row_index] if na_action == "omit" else data
    return pd.concat([base.copy(), out.reindex(base.index)], axis=1)


# ---- tidy's blocks -----------------------------------------------------------------------
def _fixed(res, conf_int, level, prof, exponentiate, ddf_method) -> pd.DataFrame:
    names = list(res.x_names)
    est = res.fixef.to_numpy()  # (+-Inf where separated, as every table)
    out = pd.DataFrame({"effect": "fixed", "term": names, "estimate": est})
    if ddf_method is not None:
        from .satterthwaite import satterthwaite

        sat = satterthwaite(res)
        se, df = sat["se"].to_numpy(), sat["df"].to_numpy()
        out["std_error"], out["statistic"] = se, est / se
        out["df"], out["p_value"] = df, sat["p"].to_numpy()
        q = t_quantile(level, df)
    else:
        se = res.se.to_numpy()  # (NaN where the estimate is infinite)
        out["std_error"], out["statistic"] = se, est / se
        if res.family.name != "gaussian":
            out["p_value"] = 2.0 * norm_sf(np.abs(est / se))
        q = z_quantile(level)
    if conf_int:
        if prof is not None:
            out["conf_low"] = prof.loc[names, "lower"].to_numpy()
            out["conf_high"] = prof.loc[names, "upper"].to_numpy()
        else:
            out["conf_low"], out["conf_high"] = est - q * se, est + q * se
        # an infinite estimate: its own side's bound infinite, the other unknown
        out.loc[est == np.inf, "conf_high"] = np.inf
        out.loc[est == -np.inf, "conf_low"] = -np.inf
    if exponentiate:
        for c in ("estimate", "conf_low", "conf_high"):
            if c in out:
                out[c] = np.exp(out[c])
        out["std_error"] = out["std_error"] * out["estimate"]
    return out


def _ran_pars(res, scale: str, conf_int: bool, prof) -> pd.DataFrame:
    """Per group, lme4's lower-triangle order: sd (var) of term j, then its correlations
    (covariances) with the later terms; then the residual SD."""
    sd_p, cor_p = ("sd", "cor") if scale == "sdcor" else ("var", "cov")
    recs = []  # group, term, estimate, profile row, how its ends transform
    for label, t in zip(res._term_labels(), res.terms, strict=True):
        G, z = t.G, t.z_names
        sd = np.sqrt(np.diag(G))
        for j in range(len(z)):
            est = sd[j] if scale == "sdcor" else G[j, j]
            recs.append((label, f"{sd_p}__{z[j]}", est, f"sd_{z[j]}|{label}", scale))
            for i in range(j + 1, len(z)):
                if scale == "sdcor":
                    est = G[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                else:
                    est = G[i, j]
                recs.append((label, f"{cor_p}__{z[j]}.{z[i]}", est,
                             f"cor_{z[i]}.{z[j]}|{label}", "sdcor" if scale == "sdcor" else None))
    sigma = _residual_sd(res)
    if res.family.name in ("gaussian", "gamma"):
        how = "sigma" if res.family.name == "gaussian" else "shape"
        recs.append(("Residual", f"{sd_p}__Observation", sigma if scale == "sdcor"
                     else sigma**2, how, f"{how}:{scale}"))
    out = pd.DataFrame({"effect": "ran_pars", "group": [r[0] for r in recs],
                        "term": [r[1] for r in recs],
                        "estimate": np.array([r[2] for r in recs], dtype=float)})
    if conf_int:
        lo, hi = np.full(len(recs), np.nan), np.full(len(recs), np.nan)
        if prof is not None:
            for k, (_, _, _, name, how) in enumerate(recs):
                a, b = prof.loc[name, "lower"], prof.loc[name, "upper"]
                if how in ("sdcor", "sigma:sdcor"):
                    lo[k], hi[k] = a, b
                elif how in ("vcov", "sigma:vcov"):  # a variance: the SD's ends squared
                    lo[k], hi[k] = a**2, b**2
                elif how is not None and how.startswith("shape"):  # sigma = shape^-1/2
                    p = 1.0 if how.endswith("sdcor") else 2.0
                    lo[k], hi[k] = b ** (-p / 2.0), a ** (-p / 2.0)
        out["conf_low"], out["conf_high"] = lo, hi
    return out


def _ran_vals(res, conf_int: bool, level: float) -> pd.DataFrame:
    """As ``as.data.frame(ranef(m, condVar = TRUE))``: per grouping factor, per term,
    every level."""
    parts = []
    for group, terms in _by_group(res).items():
        for t in terms:
            csd = np.sqrt(np.diagonal(t.b_cov, axis1=1, axis2=2))
            for k, z in enumerate(t.z_names):
                parts.append(pd.DataFrame({
                    "effect": "ran_vals", "group": group, "level": t.levels.astype(str),
                    "term": z, "estimate": t.b[:, k], "std_error": csd[:, k]}))
    out = _concat(parts, ["effect", "group", "level", "term", "estimate", "std_error"])
    if conf_int:
        q = z_quantile(level)
        out["conf_low"] = out["estimate"] - q * out["std_error"]
        out["conf_high"] = out["estimate"] + q * out["std_error"]
    return out


def _ran_coefs(res) -> pd.DataFrame:
    """As lme4's ``coef(m)`` in long form: per grouping factor, per fixed effect, every
    level, the fixed effect plus the level's random effect for that coefficient."""
    parts = []
    names = list(res.x_names)
    for group, terms in _by_group(res).items():
        levels = terms[0].levels
        vals = np.tile(np.asarray(res.beta, dtype=float), (len(levels), 1))
        for t in terms:
            for k, z in enumerate(t.z_names):
                if z not in names:
                    raise GLMMInputError(f"ran_coefs: the random effect {z!r} of group "
                                         f"{group!r} is not a fixed effect (as lme4's coef)")
                vals[:, names.index(z)] += t.b[:, k]
        for j, n in enumerate(names):
            parts.append(pd.DataFrame({"effect": "ran_coefs", "group": group,
                                       "level": levels.astype(str), "term": n,
                                       "estimate": vals[:, j]}))
    return _concat(parts, ["effect", "group", "level", "term", "estimate"])


# ---- helpers -----------------------------------------------------------------------------
def _effects(effects) -> tuple[str, ...]:
    if isinstance(effects, str):
        effects = (effects,)
    try:
        effects = tuple(effects)
    except TypeError:
        raise GLMMInputError(f"effects must be a string or a sequence of strings, not "
                             f"{effects!r}") from None
    bad = [e for e in effects if e not in EFFECTS]
    if bad or not effects:
        raise GLMMInputError(f"effects: unknown effect type {bad[0] if bad else '(none)'!r}; "
                             f"choose from {', '.join(map(repr, EFFECTS))}")
    return effects


def _scale(effects: tuple[str, ...], scales) -> str:
    if scales is None:
        return "sdcor"
    scales = (scales,) if isinstance(scales, str) else tuple(scales)
    if len(scales) != len(effects):
        raise GLMMInputError(f"scales: one value (or None) per entry of effects "
                             f"({len(effects)}), not {len(scales)} (as broom.mixed)")
    scale = "sdcor"
    for e, s in zip(effects, scales, strict=True):
        if e == "ran_pars" and s is not None:
            if s not in SCALES:
                raise GLMMInputError(f"scales: unrecognized ran_pars scale {s!r}; choose "
                                     f"'sdcor' or 'vcov'")
            scale = s
        elif e != "ran_pars" and not (s is None or (isinstance(s, float) and np.isnan(s))):
            raise GLMMInputError(f"scales: only 'ran_pars' takes a scale; give None for "
                                 f"{e!r}, not {s!r}")
    return scale


def _by_group(res) -> dict:
    """Terms by grouping factor, in the order of the terms (lme4's ranef combines the
    terms of one factor, e.g. from ``||``)."""
    out: dict = {}
    for t in res.terms:
        out.setdefault(t.group, []).append(t)
    return out


def _concat(parts, columns) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _residual_sd(res) -> float:
    if res.family.name == "gaussian":
        return float(res.dispersion)
    if res.family.name == "gamma":
        return float(1.0 / np.sqrt(res.dispersion))
    return 1.0


def _unit_variance(res, mu):
    """R's ``family()$variance(mu)`` (the negative binomial's with its theta)."""
    name = res.family.name
    if name == "gaussian":
        return np.ones_like(mu)
    if name == "gamma":
        return mu * mu
    return np.asarray(res.family.variance(mu, rows.log_dispersion(res)))


def _check_data(res, data) -> None:
    """``data`` must hold the fit's rows (``res.frame.row_index``), as many rows as the
    fit saw, and give the same fixed and random design on them."""
    f = res.frame
    if not isinstance(data, pd.DataFrame):
        raise GLMMInputError(f"augment: data must be a DataFrame, not {type(data).__name__}")
    n = res.nobs + f.n_dropped
    if len(data) != n or not data.index.is_unique or not f.row_index.isin(data.index).all():
        raise GLMMInputError(f"augment: data does not match the fit: the fit used {res.nobs} "
                             f"of {n} rows (labels {f.row_index[:3].tolist()}...); data has "
                             f"{len(data)} rows" + ("" if data.index.is_unique
                                                    else " with repeated index labels"))
    try:
        X, Zs = res.model.design(data.loc[f.row_index])
    except GLMMInputError as exc:
        raise GLMMInputError(f"augment: data does not match the fit: {exc}") from None
    same = X.shape == f.X.shape and np.allclose(X, f.X, rtol=1e-10, atol=1e-12) and all(
        Z.shape == g.Z.shape and np.allclose(Z, g.Z, rtol=1e-10, atol=1e-12)
        for Z, g in zip(Zs, f.groups, strict=True))
    if not same:
        raise GLMMInputError("augment: data does not match the fit: its rows give a "
                             "different fixed- or random-effects design than the fit's")
    y = _numeric_response(res, data.loc[f.row_index])
    if y is not None and not any(np.allclose(y, v, rtol=1e-10, atol=1e-12)
                                 for v in (f.y, f.y / f.trials)):
        raise GLMMInputError(f"augment: data does not match the fit: the response "
                             f"{f.response_name!r} differs on the fit's rows")


def _numeric_response(res, data: pd.DataFrame):
    """The (first) response expression evaluated on ``data`` where it is numeric (the
    successes of a ``cbind``), else None (a factor or string response is not checked)."""
    from .formula import parse_formula
    from .rvalues import evaluate

    try:
        v = evaluate(parse_formula(res.formula).response[0], data,
                     res.frame.encoding.state, fitting=False)
        y = np.asarray(v.data, dtype=float)
    except (GLMMInputError, TypeError, ValueError):
        return None
    return y if y.shape == res.frame.y.shape else None
