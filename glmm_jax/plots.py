"""Model-checking plots of a fitted GLMM, each returned as a matplotlib Figure.

matplotlib is an optional dependency (``pip install "glmm_jax[plot]"``), imported only
when a plot is drawn: ``import glmm_jax`` never imports it, and ``glmm_jax.plots`` is
loaded on first access. Figures are made with matplotlib's object-oriented API
(``matplotlib.figure.Figure``), never pyplot's global state, so they work headless and
do not accumulate; ``fig.savefig(path)`` writes one. Functions that draw one panel take
``ax=`` to draw into an existing Axes instead.

- :func:`caterpillar` — each level's random effect with its interval, sorted.
- :func:`qq` — uniform QQ plot of simulated quantile residuals.
- :func:`residuals_vs_fitted` — residuals against fitted means, with binned means.
- :func:`shrinkage` — each cluster's own-data estimate against its EB estimate.
- :func:`observed_vs_fitted` — per cluster, the observed against the fitted mean.
- :func:`profile` — profile zeta plots, one panel per parameter.
- :func:`effects` — conditional (b = 0) and marginal mean curves over one covariate.
- :func:`influence` — Cook's distance by cluster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from . import posterior
from . import profile as _profile
from .dist import z_quantile
from .errors import GLMMInputError
from .formula import parse_formula
from .predict import predict
from .rsyntax import names_in

INSTALL = 'pip install "glmm_jax[plot]"'


def _figure(nrows: int = 1, ncols: int = 1, ax=None, size=(5.0, 4.0)):
    """A new Figure with nrows x ncols axes (a flat list), or ``ax``'s figure and ax."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover (matplotlib is in the test extra)
        raise ImportError(f"glmm_jax.plots needs matplotlib: {INSTALL}") from e
    if ax is not None:
        if nrows * ncols != 1:
            raise GLMMInputError(f"ax= draws one panel; this plot has {nrows * ncols}: "
                                 "leave ax=None")
        return ax.figure, [ax]
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.ravel())


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return -(-n // ncols), ncols


def _check_result(res, what: str) -> None:
    if getattr(res, "frame", None) is None or not hasattr(res, "terms"):
        raise GLMMInputError(f"{what} needs a fitted GLMMResult, not {type(res).__name__}")


def caterpillar(res, term: str | None = None, kind: str = "mode", level: float = 0.95,
                ax=None):
    """Caterpillar plot: each level's random effect (``kind`` "mode", "mean" or
    "median", from :func:`glmm_jax.random_effects`) with its ``level`` interval
    (estimate ± z posterior SD; equal-tailed posterior quantiles for "median"), one
    panel per effect of grouping factor ``term`` (needed with several), levels sorted
    by the first effect (as lme4's ``dotplot(ranef(fit))``).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> fig = gj.plots.caterpillar(res)
    >>> len(fig.axes[0].lines[-1].get_xdata())  # one point per herd
    15
    """
    _check_result(res, "caterpillar")
    tables = posterior.random_effects(res, kind=kind, level=level)
    if term is None and len(tables) == 1:
        term = next(iter(tables))
    if term not in tables:
        raise GLMMInputError(f"term={term!r} is not a grouping factor of the model (choose "
                             f"one of {', '.join(map(repr, tables))})")
    tab = tables[term]
    names = [c for c in tab.columns if not c.startswith(("condsd ", "lower ", "upper "))]
    order = np.argsort(tab[names[0]].to_numpy(), kind="stable")
    tab = tab.iloc[order]
    fig, axes = _figure(1, len(names), ax, size=(3.5, max(3.0, 0.18 * len(tab) + 1.0)))
    z = z_quantile(level)
    pos = np.arange(len(tab))
    for a, name in zip(axes, names, strict=True):
        est = tab[name].to_numpy()
        if kind == "median":
            lo, hi = tab[f"lower {name}"].to_numpy(), tab[f"upper {name}"].to_numpy()
        else:
            sd = tab[f"condsd {name}"].to_numpy()
            lo, hi = est - z * sd, est + z * sd
        a.axvline(0.0, color="0.6", lw=0.8, zorder=0)
        a.hlines(pos, lo, hi, color="C0", lw=1.2, label=f"{level:.0%} interval")
        a.plot(est, pos, "o", color="C0", ms=4, label=kind)
        a.set_yticks(pos, [str(v) for v in tab.index])
        a.set_xlabel(name)
    axes[0].set_ylabel(term)
    axes[0].set_title(f"random effects ({kind}) of {term}", loc="left")
    return fig


def qq(res_or_residuals, nsim: int = 250, seed: int = 0, ax=None):
    """Uniform QQ plot of quantile residuals (DHARMa's): the sorted values against the
    uniform plotting positions ``(i - a) / (n + 1 - 2a)`` (R's ``ppoints``), with the
    identity line and a Kolmogorov-Smirnov p-value. Given a fitted result, its
    simulated quantile residuals (``glmm_jax.quantile_residuals``, ``nsim`` simulations
    from ``seed``); given an array of values in [0, 1], those.

    >>> import glmm_jax as gj
    >>> fig = gj.plots.qq(np.linspace(0.01, 0.99, 50))
    >>> len(fig.axes[0].lines[-1].get_xdata())
    50
    """
    if hasattr(res_or_residuals, "frame") and hasattr(res_or_residuals, "terms"):
        try:
            from .dharma import quantile_residuals
        except ImportError as e:
            raise GLMMInputError("qq of a fit needs glmm_jax.quantile_residuals; pass the "
                                 "residuals as an array instead") from e
        r = quantile_residuals(res_or_residuals, nsim=nsim, seed=seed)
    else:
        r = res_or_residuals
    try:
        r = np.asarray(r, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise GLMMInputError("qq needs a fitted result or an array of quantile residuals, "
                             f"not {type(res_or_residuals).__name__}") from e
    if r.size == 0 or not np.all((r >= 0.0) & (r <= 1.0)):
        raise GLMMInputError("qq: quantile residuals must be values in [0, 1] (none "
                             "missing); got " + ("none" if r.size == 0 else
                                                 f"{int(np.sum(~((r >= 0) & (r <= 1))))} "
                                                 "outside"))
    n = r.size
    a_ = 3.0 / 8.0 if n <= 10 else 0.5
    expected = (np.arange(1, n + 1) - a_) / (n + 1 - 2 * a_)
    fig, (a,) = _figure(ax=ax)
    a.plot([0, 1], [0, 1], color="0.5", lw=1.0, zorder=0)
    a.plot(expected, np.sort(r), "o", ms=3, color="C0", label="residuals")
    p = stats.kstest(r, "uniform").pvalue
    a.set_xlabel("expected (uniform)")
    a.set_ylabel("observed quantile residual")
    a.set_title(f"QQ plot of quantile residuals (KS p = {p:.3g})", loc="left")
    return fig


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int):
    """Means of x and y within ``bins`` groups of about equal size, by sorted x."""
    groups = np.array_split(np.argsort(x, kind="stable"), bins)
    return (np.array([x[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]))


def residuals_vs_fitted(res, type: str = "pearson", bins: int | None = None, ax=None):
    """Residuals (``res.residuals(type)``) against the conditional fitted means
    (``res.fitted()``), with a zero line and the residuals' means in ``bins`` groups of
    about equal size by fitted value (default: n / 10, between 2 and 20), which should
    stay near 0.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> fig = gj.plots.residuals_vs_fitted(res)
    >>> len(fig.axes[0].collections[0].get_offsets())  # one point per row
    56
    """
    _check_result(res, "residuals_vs_fitted")
    x, y = res.fitted().to_numpy(), res.residuals(type=type).to_numpy()
    if bins is None:
        bins = int(np.clip(len(x) // 10, 2, 20))
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or \
            not 1 <= bins <= len(x):
        raise GLMMInputError(f"bins must be an integer from 1 to {len(x)}, not {bins!r}")
    fig, (a,) = _figure(ax=ax)
    a.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    a.scatter(x, y, s=12, color="C0", alpha=0.7, label="rows")
    bx, by = _binned_means(x, y, int(bins))
    a.plot(bx, by, "-", color="C3", lw=1.5, label=f"binned means ({bins} bins)")
    a.set_xlabel("fitted")
    a.set_ylabel(f"{type} residual")
    a.legend(loc="best", fontsize="small")
    return fig


def shrinkage(res, term: str | int | None = None, ax=None):
    """Shrinkage plot: each cluster's own-data estimate (``own_estimate`` of
    :func:`glmm_jax.shrinkage`) against its empirical-Bayes estimate (the conditional
    mode), marker area by cluster size (trials for a binomial response, else rows),
    with the identity line (no shrinkage) and 0; one panel per effect of the term.
    Clusters without a finite own estimate are left out, as the legend says.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> fig = gj.plots.shrinkage(res)
    >>> len(fig.axes[0].collections[0].get_offsets())
    15
    """
    _check_result(res, "shrinkage")
    tab = posterior.shrinkage(res, term)
    k = posterior._term_index(res, term)
    t = res.terms[k]
    size = tab["trials" if "trials" in tab.columns else "n"].to_numpy(dtype=float)
    area = 10.0 + 90.0 * size / max(float(size.max()), 1e-300)
    fig, axes = _figure(1, len(t.z_names), ax)
    scalar = len(t.z_names) == 1
    for a, name in zip(axes, t.z_names, strict=True):
        own = tab["own_estimate" if scalar else f"own_estimate {name}"].to_numpy()
        eb = tab["mode" if scalar else f"mode {name}"].to_numpy()
        ok = np.isfinite(own)
        lim = np.concatenate([own[ok], eb])
        lo, hi = float(lim.min()), float(lim.max())
        a.plot([lo, hi], [lo, hi], color="0.5", lw=1.0, zorder=0, label="no shrinkage")
        a.axhline(0.0, color="0.7", lw=0.8, zorder=0)
        left_out = int((~ok).sum())
        label = "clusters" + (f" ({left_out} without a finite own estimate not shown)"
                              if left_out else "")
        a.scatter(own[ok], eb[ok], s=area[ok], color="C0", alpha=0.7, label=label)
        a.set_xlabel(f"own-data estimate: {name}")
        a.set_ylabel(f"EB estimate (mode): {name}")
        a.legend(loc="best", fontsize="small")
    axes[0].set_title(f"shrinkage of {t.group}", loc="left")
    return fig


def observed_vs_fitted(res, group: str | None = None, ax=None):
    """Per cluster of grouping factor ``group`` (needed with several), the observed
    mean response against the mean of the conditional fitted values, with the identity
    line: for a binomial response the proportions sum(y) / sum(trials) and
    sum(trials mu) / sum(trials), else the plain means over the cluster's rows.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> fig = gj.plots.observed_vs_fitted(res)
    >>> len(fig.axes[0].collections[0].get_offsets())
    15
    """
    _check_result(res, "observed_vs_fitted")
    f = res.frame
    names = list(dict.fromkeys(g.name for g in f.groups))
    if group is None and len(names) == 1:
        group = names[0]
    if group not in names:
        raise GLMMInputError(f"group={group!r} is not a grouping factor of the model "
                             f"(choose one of {', '.join(map(repr, names))})")
    g = f.groups[[x.name for x in f.groups].index(group)]
    J = len(g.levels)
    mu = res.fitted().to_numpy()
    w = f.trials if res.family.name == "binomial" else np.ones(len(mu))
    y = f.y if res.family.name == "binomial" else f.y * w
    total = np.bincount(g.codes, w, minlength=J)
    obs = np.bincount(g.codes, y, minlength=J) / total
    fit = np.bincount(g.codes, w * mu, minlength=J) / total
    fig, (a,) = _figure(ax=ax)
    lo, hi = float(min(obs.min(), fit.min())), float(max(obs.max(), fit.max()))
    a.plot([lo, hi], [lo, hi], color="0.5", lw=1.0, zorder=0)
    a.scatter(fit, obs, s=16, color="C0", label=f"levels of {group}")
    what = "proportion" if res.family.name == "binomial" else "mean"
    a.set_xlabel(f"fitted {what}")
    a.set_ylabel(f"observed {what}")
    a.set_title(f"observed vs fitted by {group}", loc="left")
    return fig


def profile(res, parameters=None, level: float = 0.95):
    """Profile zeta plots (lme4's ``xyplot(profile(fit))``): the signed root deviance
    zeta against each parameter at the points the profile evaluated
    (:func:`glmm_jax.profile.profile_points`), with the lines zeta = ±z_{(1+level)/2}
    whose crossings are the profile interval's ends; one panel per parameter (names
    as in ``res.conf_int("profile")``; ``parameters``: a subset).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> len(gj.plots.profile(res, ["period2", "period3"]).axes)
    2
    """
    _check_result(res, "profile")
    if isinstance(parameters, str):
        parameters = [parameters]
    pts = _profile.profile_points(res, level=level, parameters=parameters)
    names = list(dict.fromkeys(pts["parameter"]))
    if not names:
        raise GLMMInputError("parameters: no parameter to profile")
    z = z_quantile(level)
    fig, axes = _figure(*_grid(len(names)), size=(3.5, 3.0))
    for a, name in zip(axes, names, strict=False):
        p = pts[pts["parameter"] == name]
        a.axhline(z, color="0.6", lw=0.8, ls="--")
        a.axhline(-z, color="0.6", lw=0.8, ls="--")
        a.plot(p["value"].to_numpy(), p["zeta"].to_numpy(), "o-", color="C0", ms=3)
        a.set_xlabel(name)
        a.set_ylabel("zeta")
    for a in axes[len(names):]:
        fig.delaxes(a)
    return fig


def effects(res, variable: str, data: pd.DataFrame, n: int = 50, at: dict | None = None,
            ax=None):
    """Conditional and marginal effect curves of a numeric covariate ``variable``: the
    mean response (per trial for a binomial) over ``n`` points spanning its range in
    ``data`` (the fit's data), at b = 0 (``predict(..., random_effects=False)``) and
    averaged over the random effects (``predict(..., marginal=True)``, the population-
    averaged mean), the other columns held at ``at`` or else at their mean (numeric)
    or their first level (sorted; a Categorical's first category) over the fit's rows.
    For an identity link the two curves coincide.

    >>> import glmm_jax as gj
    >>> df = gj.datasets.load("sleepstudy")
    >>> res = gj.fit("Reaction ~ Days + (Days | Subject)", df, family="gaussian")
    >>> fig = gj.plots.effects(res, "Days", df, n=11)
    >>> [len(line.get_xdata()) for line in fig.axes[0].lines]
    [11, 11]
    """
    _check_result(res, "effects")
    new = _effect_grid(res, variable, data, n, at)
    cond = predict(res, new, type="response", random_effects=False).to_numpy()
    marg = predict(res, new, type="response", marginal=True).to_numpy()
    x = new[variable].to_numpy()
    fig, (a,) = _figure(ax=ax)
    a.plot(x, cond, "-", color="C0", label="conditional (b = 0)")
    a.plot(x, marg, "--", color="C3", label="marginal (population-averaged)")
    a.set_xlabel(variable)
    a.set_ylabel("mean response" + (" (per trial)" if res.family.name == "binomial" else ""))
    held = [c for c in _covariates(res) if c != variable and c in new.columns]
    a.set_title(", ".join(f"{c} = {_short(new[c].iloc[0])}" for c in held), loc="left",
                fontsize="small")
    a.legend(loc="best", fontsize="small")
    return fig


def _covariates(res) -> list[str]:
    """The data columns in the formula's fixed part, random-term expressions and
    offsets (not the response or the grouping factors)."""
    spec = parse_formula(res.formula)
    nodes = [n for _, n in spec.fixed] + [t.expr for t in spec.random] + list(spec.offsets)
    return list(dict.fromkeys(x.id for n in nodes for x in names_in(n)))


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


def _effect_grid(res, variable: str, data: pd.DataFrame, n: int,
                 at: dict | None) -> pd.DataFrame:
    """The rows :func:`effects` predicts: ``variable`` on ``n`` points over its range
    in the fit's rows of ``data``, every other column at ``at``'s value or its
    reference value (mean, or first level)."""
    if not isinstance(data, pd.DataFrame):
        raise GLMMInputError(f"data must be the fit's DataFrame, not {type(data).__name__}")
    if variable not in data.columns:
        raise GLMMInputError(f"variable {variable!r} is not a column of data")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise GLMMInputError(f"n must be an integer of at least 2, not {n!r}")
    at = {} if at is None else dict(at)
    bad = [c for c in at if c not in data.columns]
    if bad:
        raise GLMMInputError(f"at: {', '.join(map(repr, bad))} not a column of data")
    used = data.loc[data.index.intersection(res.frame.row_index)]
    col = used[variable]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise GLMMInputError(f"variable {variable!r} must be a numeric column, not "
                             f"{col.dtype}")
    new = pd.DataFrame({variable: np.linspace(float(col.min()), float(col.max()), int(n))})
    for c in data.columns:
        if c != variable:
            new[c] = at[c] if c in at else _reference(used[c])
        if isinstance(data[c].dtype, pd.CategoricalDtype) and c != variable:
            new[c] = pd.Categorical(new[c], categories=data[c].cat.categories,
                                    ordered=data[c].cat.ordered)
    X, Zs = res.model.design(new)
    if np.ptp(X, axis=0).max(initial=0.0) == 0.0 and all(np.ptp(Z, axis=0).max(initial=0.0)
                                                         == 0.0 for Z in Zs):
        raise GLMMInputError(f"variable {variable!r} does not enter the model "
                             f"({res.formula})")
    return new


def _reference(col: pd.Series):
    """A column's value held fixed: its mean (numeric), else its first level."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return float(col.mean())
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.categories[0]
    values = col.dropna().unique()
    try:
        return sorted(values)[0]
    except TypeError:
        return values[0]


def influence(infl, n_label: int = 3, ax=None):
    """Cook's distance by cluster, as a stem plot with the ``n_label`` largest
    labelled; ``infl`` is the result of ``glmm_jax.influence`` (any object with a
    ``cooks_distance`` Series indexed by cluster) or such a Series itself.

    >>> cooks = pd.Series([0.1, 0.5, 0.05], index=["a", "b", "c"])
    >>> fig = influence(cooks)
    >>> fig.axes[0].lines[0].get_ydata().tolist()
    [0.1, 0.5, 0.05]
    """
    cooks = infl if isinstance(infl, pd.Series) else getattr(infl, "cooks_distance", None)
    if not isinstance(cooks, pd.Series):
        raise GLMMInputError("influence needs the result of glmm_jax.influence (with a "
                             f"cooks_distance Series), not {type(infl).__name__}")
    d = cooks.to_numpy(dtype=float)
    pos = np.arange(len(d))
    fig, (a,) = _figure(ax=ax, size=(max(5.0, 0.15 * len(d)), 3.5))
    a.vlines(pos, 0.0, d, color="C0", lw=1.0)
    a.plot(pos, d, "o", color="C0", ms=4)
    for i in np.argsort(-np.nan_to_num(d, nan=-np.inf), kind="stable")[:max(0, n_label)]:
        a.annotate(str(cooks.index[i]), (pos[i], d[i]), textcoords="offset points",
                   xytext=(3, 3), fontsize="small")
    a.set_xticks(pos, [str(v) for v in cooks.index], rotation=90, fontsize="x-small")
    a.set_xlabel(cooks.index.name or "cluster")
    a.set_ylabel("Cook's distance")
    a.set_ylim(bottom=0.0)
    return fig
