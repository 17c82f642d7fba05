"""Confidence intervals (Wald, likelihood profile, parametric bootstrap) and the
exponentiated coefficients (odds and rate ratios)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import varpar
from .dist import z_quantile
from .errors import GLMMInputError
from .profile import profile

METHODS = ("wald", "profile", "bootstrap")


def conf_int(res, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
    """Confidence intervals for the variance components (SDs, correlations, residual SD)
    and the fixed effects, rows named as lme4's ``confint(oldNames = FALSE)``.

    ``method``: "wald" (estimate +- z SE for the fixed effects; NaN for the variance
    components, as lme4), "profile" (likelihood profile), or "bootstrap" (percentile
    intervals of :func:`glmm_jax.bootstrap`; ``n=``, ``seed=`` passed on). Columns:
    estimate, lower, upper.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> ci = res.conf_int("profile")
    >>> ci.loc["sd_(Intercept)|herd"].round(3).tolist()
    [0.642, 0.346, 1.1]
    """
    if method not in METHODS:
        raise GLMMInputError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                             f"not {method!r}")
    if not 0.0 < level < 1.0:
        raise GLMMInputError(f"level must be between 0 and 1, not {level!r}")
    if method == "wald":
        return wald(res, level)
    if method == "profile":
        return profile(res, level, **kwargs)
    from .bootstrap import bootstrap

    return bootstrap(res, **kwargs).conf_int(level)


def _table(res, lower, upper) -> pd.DataFrame:
    est = varpar.values(res.theta, res, beta=res.beta)
    return pd.DataFrame({"estimate": est, "lower": lower, "upper": upper},
                        index=pd.Index(varpar.names(res), name="parameter"))


def wald(res, level: float = 0.95) -> pd.DataFrame:
    """estimate +- z_{(1+level)/2} SE for the fixed effects (variance components NaN, as
    lme4's ``confint(method = "Wald")``).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> wald(res).loc["period2"].round(3).tolist()
    [-0.992, -1.593, -0.391]
    """
    z = z_quantile(level)
    n_vc = len(varpar.names(res)) - len(res.x_names)
    se = np.sqrt(np.diag(res.beta_cov))
    nan = np.full(n_vc, np.nan)
    return _table(res, np.r_[nan, res.beta - z * se], np.r_[nan, res.beta + z * se])


def odds_ratios(res, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
    """exp of the fixed effects and of their interval ends (logit links): the
    conditional odds ratios, given the random effects.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> res.odds_ratios().loc["period2"].round(3).tolist()
    [0.371, 0.203, 0.676]
    """
    return _exponentiated(res, "logit", "odds_ratios", method, level, kwargs)


def rate_ratios(res, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
    """exp of the fixed effects and of their interval ends (log links: Poisson, negative
    binomial, Gamma): conditional rate (or mean) ratios.

    >>> import glmm_jax as gj
    >>> res = gj.fit("count ~ mined + (1 | site)", gj.datasets.load("salamanders"),
    ...              family="poisson")
    >>> bool(res.rate_ratios().loc["minedno", "estimate"] > 1)
    True
    """
    return _exponentiated(res, "log", "rate_ratios", method, level, kwargs)


def _exponentiated(res, link: str, what: str, method, level, kwargs) -> pd.DataFrame:
    if res.family.link != link:
        raise GLMMInputError(f"{what}() needs a {link} link; this {res.family.name} model "
                             f"has link {res.family.link!r}")
    ci = conf_int(res, method, level, **kwargs).loc[list(res.x_names)]
    out = np.exp(ci)
    out.attrs.update(ci.attrs)
    return out
