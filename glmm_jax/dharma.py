"""Simulation-based (DHARMa) residuals and tests of a fitted model.

``quantile_residuals`` follows DHARMa 0.4.x (``simulateResiduals`` with ``refit =
FALSE`` and ``getQuantile(method = "PIT")``, DHARMa's default since 0.3.1): ``nsim``
responses are simulated from the fit (``glmm_jax.simulate``; by default with new random
effects, as DHARMa's default ``simulate(fittedModel, nsim)`` of an lme4 fit), and row i's
residual is the randomized probability integral transform of its observation among its
simulations, a uniform draw between lower_i = #(sims < y_i) / nsim and upper_i = #(sims
<= y_i) / nsim (lower_i itself where the two agree, e.g. continuous responses). Under a
correct model the residuals are uniform on (0, 1); integer responses are randomized.
Binomial responses are successes out of the fit's trials, as DHARMa's.

``residual_tests`` computes DHARMa's tests from the same simulations: ``testUniformity``
(Kolmogorov-Smirnov against U(0, 1), as R's ``ks.test``: exact for n < 100 without ties,
asymptotic otherwise), ``testDispersion`` (type "DHARMa", ``refit = FALSE``: the variance
of y - fitted over the mean of the same variance of the simulations, fitted being the
means at b = 0 as DHARMa's ``getFitted``, with DHARMa's two-sided simulation p-value),
``testZeroInflation`` (observed over mean simulated zeros) and ``testOutliers(type =
"binomial")`` (residuals within 1/(nsim + 1) of 0 or 1 against Binomial(n, 2/(nsim + 1)),
R's ``binom.test``).
One deliberate difference: for binomial fits the dispersion test subtracts the fitted
successes (trials x mean), where DHARMa subtracts the fitted proportion from the simulated
successes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import rows
from .errors import GLMMInputError
from .families import Family
from .simulate import KINDS, simulate

DISCRETE = ("binomial", "poisson", "negative_binomial")


def _check(res, nsim, seed, random_effects, what: str) -> None:
    from .results import GLMMResult

    if not isinstance(res, GLMMResult):
        raise GLMMInputError(f"{what} needs a fitted GLMMResult, not {type(res).__name__}")
    fam = res.family
    if type(fam).sample is Family.sample:
        raise GLMMInputError(f"{what}: the family {type(fam).__name__} ({fam.name!r}) "
                             "cannot be simulated: it defines no sample method")
    if fam.name != "gaussian" and not np.all(res.frame.weights == 1.0):
        raise GLMMInputError(
            f"{what}: the fit has prior weights (weights={res.frame.weights_label or 'an array'}"
            f"), which multiply the {fam.title} log-likelihood but define no distribution to "
            "simulate from, so simulated residuals would not be uniform; refit without weights "
            "(a binomial proportion with weights = trials is cbind(successes, failures))")
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 2:
        raise GLMMInputError(f"nsim must be an integer of at least 2, not {nsim!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GLMMInputError(f"seed must be a non-negative integer, not {seed!r}")
    if random_effects not in KINDS:
        raise GLMMInputError(f"random_effects must be 'new' or 'conditional', not "
                             f"{random_effects!r}")


def _simulations(res, nsim: int, seed: int, random_effects: str):
    """(observed y, simulations [n, nsim], randomized PIT residuals)."""
    Y = simulate(res, int(nsim), int(seed), random_effects)
    y = np.asarray(res.frame.y, dtype=float)
    rng = np.random.default_rng([int(seed), 15])  # apart from simulate's JAX key
    return y, Y, pit(Y, y, rng)


def pit(simulations, observed, rng=None) -> np.ndarray:
    """DHARMa's randomized PIT residuals (``getQuantile(method = "PIT")``) of
    ``observed`` [n] among ``simulations`` [n, nsim]: U(lower, upper) with lower the
    fraction of simulations below the observation and upper those at or below it.

    >>> pit(np.array([[0.0, 1.0, 2.0, 3.0]]), np.array([2.5])).tolist()
    [0.75]
    """
    S = np.asarray(simulations, dtype=float)
    y = np.asarray(observed, dtype=float)
    lower = np.mean(S < y[:, None], axis=1)
    upper = np.mean(S <= y[:, None], axis=1)
    rng = np.random.default_rng() if rng is None else rng
    draw = rng.uniform(lower, upper)
    return np.where(lower != upper, draw, lower)


def quantile_residuals(res, nsim: int = 250, seed: int = 0,
                       random_effects: str = "new") -> pd.Series:
    """Simulated (DHARMa) quantile residuals of the rows of the fit, in [0, 1]: uniform
    under a correctly specified model. ``nsim`` simulations from the fit (``seed``;
    ``random_effects`` "new" or "conditional" as :func:`glmm_jax.simulate.simulate`).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> u = gj.quantile_residuals(res, nsim=250, seed=1)
    >>> len(u), bool(((u >= 0) & (u <= 1)).all())
    (56, True)
    """
    _check(res, nsim, seed, random_effects, "quantile_residuals")
    _, _, u = _simulations(res, nsim, seed, random_effects)
    out = pd.Series(u, index=res.frame.row_index, name="quantile_residual")
    out.attrs.update(nsim=int(nsim), seed=int(seed), random_effects=random_effects)
    return out


def residual_tests(res, nsim: int = 250, seed: int = 0, residuals=None,
                   random_effects: str = "new") -> pd.DataFrame:
    """DHARMa's uniformity (KS), dispersion, zero-inflation and outlier tests of a fit,
    from ``nsim`` simulations (``seed``, ``random_effects`` as
    :func:`quantile_residuals`): one row per test with its ``statistic`` (KS D; ratio
    of observed to mean simulated variance; ratio of observed to mean simulated zeros;
    number of outliers), ``p_value`` (two-sided), what the statistic is and the method.
    ``residuals``: quantile residuals to test for uniformity and outliers instead of
    those of these simulations (the dispersion and zero tests use the simulations).
    The zero-inflation row is NaN for continuous families.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> t = gj.residual_tests(res, seed=1)
    >>> list(t.index), bool(t["p_value"].between(0, 1).all())
    (['uniformity', 'dispersion', 'zero_inflation', 'outliers'], True)
    """
    _check(res, nsim, seed, random_effects, "residual_tests")
    y, Y, u = _simulations(res, nsim, seed, random_effects)
    if residuals is not None:
        u = np.asarray(residuals, dtype=float).ravel()
        if u.shape != y.shape or not np.all((u >= 0) & (u <= 1)):
            raise GLMMInputError(f"residuals must be {len(y)} quantile residuals in [0, 1] "
                                 f"(one per row of the fit); got shape {u.shape}")
    fam = res.family
    # DHARMa's fitted values: predict(type = "response", re.form = ~0), i.e. b = 0
    fitted = np.asarray(fam.linkinv(rows.linear_predictor(res, random_effects=False)))
    if fam.name == "binomial":
        fitted = fitted * res.frame.trials  # fitted successes
    kind = "exact" if _exact_ks(u) else "asymptotic"
    table = {
        "uniformity": (*ks_uniform(u), "D",
                       f"{kind} one-sample Kolmogorov-Smirnov test against U(0, 1)"),
        "dispersion": (*dispersion(y, Y, fitted), "dispersion",
                       "DHARMa nonparametric dispersion test via sd of residuals fitted vs. "
                       "simulated"),
        "zero_inflation": (*zero_inflation(y, Y), "ratioObsSim",
                           "DHARMa zero-inflation test via comparison to expected zeros "
                           "with simulation under H0 = fitted model"),
        "outliers": (*outliers(u, int(nsim)), "outliers",
                     "DHARMa outlier test based on exact binomial test with approximate "
                     "expectations"),
    }
    if fam.name not in DISCRETE:
        table["zero_inflation"] = (np.nan, np.nan, "ratioObsSim",
                                  f"not applicable: the {fam.title} response is continuous")
    out = pd.DataFrame.from_dict(table, orient="index",
                                 columns=["statistic", "p_value", "statistic_name", "method"])
    out.index.name = "test"
    out.attrs.update(nsim=int(nsim), seed=int(seed), random_effects=random_effects)
    return out


def _exact_ks(u) -> bool:
    return len(u) < 100 and len(np.unique(u)) == len(u)


def ks_uniform(u) -> tuple[float, float]:
    """Two-sided one-sample KS test of ``u`` against U(0, 1) as R's ``ks.test``: the
    exact distribution for n < 100 without ties, the asymptotic one otherwise."""
    u = np.asarray(u, dtype=float)
    from scipy import stats  # (imported when needed: scipy.stats is slow to import)

    r = stats.kstest(u, "uniform", method="exact" if _exact_ks(u) else "asymp")
    return float(r.statistic), float(r.pvalue)


def simulation_p(simulated, observed: float) -> float:
    """DHARMa's two-sided simulation p-value (``getP``): twice the smaller tail
    fraction of the simulated statistics at or beyond the observed one, at most 1."""
    s = np.asarray(simulated, dtype=float)
    return float(min(2.0 * min(np.mean(s <= observed), np.mean(s >= observed)), 1.0))


def dispersion(y, Y, fitted) -> tuple[float, float]:
    """DHARMa's dispersion test: var(y - fitted) against var(Y[:, j] - fitted) of the
    simulations, as the ratio to their mean and the simulation p-value."""
    Y = np.asarray(Y, dtype=float)
    expected = np.var(Y, ddof=1)  # DHARMa's scale sd(simulations)^2 (cancels in the ratio)
    obs = np.var(np.asarray(y) - fitted, ddof=1) / expected
    sims = np.var(Y - np.asarray(fitted)[:, None], axis=0, ddof=1) / expected
    return float(obs / np.mean(sims)), simulation_p(sims, obs)


def zero_inflation(y, Y) -> tuple[float, float]:
    """Observed zeros over the mean number of simulated zeros, and the simulation p."""
    obs = float(np.sum(np.asarray(y) == 0))
    sims = np.sum(np.asarray(Y) == 0, axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = obs / np.mean(sims)
    return float(ratio), simulation_p(sims, obs)


def outliers(u, nsim: int) -> tuple[float, float]:
    """Residuals within 1/(nsim + 1) of 0 or of 1, and the two-sided exact binomial
    p-value against the rate 2/(nsim + 1) (DHARMa's ``testOutliers(type = "binomial")``)."""
    u = np.asarray(u, dtype=float)
    edge = 1.0 / (nsim + 1)
    k = int(np.sum(u < edge) + np.sum(u > 1.0 - edge))
    from scipy import stats

    return float(k), float(stats.binomtest(k, len(u), 2.0 * edge).pvalue)
