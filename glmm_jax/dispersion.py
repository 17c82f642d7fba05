"""The Pearson chi-square test of overdispersion (``performance::check_overdispersion``).

For a fit with Pearson residuals r_i (conditional on the random effects' modes, as lme4's
and glmmTMB's ``residuals(m, "pearson")``), the statistic is chi2 = sum r_i^2, referred
to a chi-square distribution on the residual degrees of freedom rdf = nobs - the number
of parameters (fixed effects, variance parameters, dispersion: R's ``df.residual``); the
dispersion ratio is chi2 / rdf and the p-value is P(X > chi2), one-sided. The test is
approximate (with shrunken modes chi2 tends to lie below rdf), and it is meaningful for
Poisson and negative binomial counts and binomial responses with more than one trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dist import chi2_sf
from .errors import GLMMInputError

COUNT_FAMILIES = ("poisson", "negative_binomial")
ALPHA = 0.05  # the level at which the printed result speaks of overdispersion


@dataclass(frozen=True)
class OverdispersionTest:
    """The Pearson chi-square statistic ``chisq``, its ``ratio`` to the residual
    degrees of freedom ``rdf``, the one-sided p-value ``p``, the family of the fit, and
    a ``suggestion`` of what to do (empty when no overdispersion is detected)."""

    chisq: float
    ratio: float
    rdf: int
    p: float
    family: str
    suggestion: str

    @property
    def detected(self) -> bool:
        """Overdispersion at the 5% level (as performance: the p-value rounded to 3
        digits is at most 0.05)."""
        return round(self.p, 3) <= ALPHA

    def __str__(self) -> str:
        """performance's printed form (``print.check_overdisp``, digits = 3), with the
        residual df and the suggestion added."""
        p3 = round(self.p, 3)
        cells = [f"{self.ratio:.3f}", f"{self.chisq:.3f}",
                 "< 0.001" if p3 < 0.001 else f"{p3:g}"]
        w = max(len(c) for c in cells)
        lines = ["# Overdispersion test", "",
                 f"       dispersion ratio = {cells[0]:>{w}}",
                 f"  Pearson's Chi-Squared = {cells[1]:>{w}}",
                 f"                p-value = {cells[2]:>{w}}",
                 "",
                 f"residual df = {self.rdf}",
                 "Overdispersion detected." if self.detected else "No overdispersion detected."]
        if self.suggestion:
            lines.append(self.suggestion)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<OverdispersionTest chisq={self.chisq:.4g} ratio={self.ratio:.4g} "
                f"rdf={self.rdf} p={self.p:.4g}{' (overdispersed)' if self.detected else ''}>")


def overdispersion_test(res) -> OverdispersionTest:
    """Pearson chi-square test of overdispersion of a Poisson, negative binomial or
    binomial (more than one trial) fit, as ``performance::check_overdispersion``.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> t = gj.overdispersion_test(res)
    >>> round(t.chisq, 3), t.rdf, round(t.p, 3), t.detected
    (63.078, 51, 0.119, False)
    """
    from .results import GLMMResult

    if not isinstance(res, GLMMResult):
        raise GLMMInputError(f"overdispersion_test needs a fitted GLMMResult, not "
                             f"{type(res).__name__}")
    fam, f = res.family, res.frame
    if fam.name not in COUNT_FAMILIES + ("binomial",):
        raise GLMMInputError(
            f"overdispersion_test: the {fam.title} family has an estimated dispersion; the "
            "test is for Poisson, negative binomial and binomial (with trials) fits")
    if fam.name == "binomial" and np.all(f.trials == 1.0):
        raise GLMMInputError(
            "overdispersion_test: the response is binary (Bernoulli, one trial per row), "
            "whose overdispersion cannot be tested; aggregate it to successes out of "
            "trials, cbind(successes, failures)")
    rdf = int(res.df_resid)
    if rdf < 1:
        raise GLMMInputError(f"overdispersion_test: {res.nobs} observations for "
                             f"{res.df_model} parameters leave no residual df")
    r = np.asarray(res.pearson_residuals(), dtype=float)
    chisq = float(np.sum(r * r))
    p = float(chi2_sf(chisq, rdf))
    out = OverdispersionTest(chisq, chisq / rdf, rdf, p, fam.name, "")
    if out.detected:
        object.__setattr__(out, "suggestion", _suggestion(fam.name))
    return out


def _suggestion(family: str) -> str:
    olre = ("add an observation-level random effect, + (1 | obs) with obs a column "
            "numbering the rows")
    if family == "poisson":
        return f"Consider family=\"negative_binomial\", or {olre}."
    if family == "binomial":
        return f"Consider {olre}."
    return ("The negative binomial fit is still overdispersed: look for missing "
            "predictors, zero inflation or outliers, or " + olre + ".")
