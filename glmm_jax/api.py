"""The front door: ``fit`` (formula + DataFrame -> GLMMResult) is
``build_model(...).fit()``."""

from __future__ import annotations

import pandas as pd

from .families import Family
from .model import Model, build_model
from .results import GLMMResult

__all__ = ["fit", "build_model", "Model"]


def fit(formula: str, data: pd.DataFrame, family: str | Family = "binomial",
        link: str | None = None, nagq: int = 1, *, max_iter: int = 100,
        **options) -> GLMMResult:
    """Fit a generalized linear mixed model by maximum likelihood.

    Args:
      formula: lme4-style formula, e.g. ``"y ~ x + (1 + x | g)"``; binomial responses may
        be 0/1, logical, two-level, or ``cbind(successes, failures)``.
      data: DataFrame holding every column the formula uses (it is not modified).
      family: ``"binomial"``, ``"poisson"``, ``"gaussian"``, ``"gamma"``,
        ``"negative_binomial"``, or a ``glmm_jax.families`` object.
      link: link function name, if not the family's default.
      nagq: 1 for the Laplace approximation, > 1 for adaptive Gauss-Hermite quadrature
        with ``nagq`` nodes per random-effect dimension (``nagq**q`` per cluster, at most
        ``MAX_QUADRATURE_NODES``).
      options: the keyword arguments of :func:`build_model` (``reml``, ``devices``,
        ``weights``, ``offset``, ``contrasts``, ``engine``, ``on_separation``):
      reml: restricted maximum likelihood (Gaussian only; default True for Gaussian mixed
        models, as in lmer, and False for a formula without random terms, as glm): the
        fixed effects are integrated out of the likelihood that is maximized, and
        ``loglik`` is the restricted log-likelihood. A formula without random terms
        fits the generalized linear model (log-likelihood as R's ``glm``).
      devices: JAX devices to spread the data over (clusters' row chunks are sharded
        across them with ``jax.sharding``); default: all devices of the default backend.
        Gaussian models are reduced to cross products, which live on the first device.
      weights: prior weights, a column name or one value per row (as lme4's
        ``weights=``): binomial proportions (or 0/1) with ``weights`` = the number of
        trials (the same fit as ``cbind``); for a ``cbind`` response and for Poisson,
        Gamma and negative binomial models they multiply each row's log-likelihood; for
        Gaussian models they are precision weights (residual variance sigma^2 / w, as
        lmer). Weights must be positive and finite.
      offset: a column name or array added to the linear predictor (beside any
        ``offset()`` terms of the formula).
      contrasts: codings of factors, e.g. ``{"period": "sum"}``: "treatment" (the
        default for unordered factors), "sum", "helmert" or "poly" (the default for
        ordered categoricals), or R's names ("contr.sum", ...). Columns are named as R
        names them (``period1``, ... for sum contrasts).
      on_separation: a binomial model is checked for complete or quasi-complete
        separation before fitting (the linear program of R's detectseparation on the
        fixed-effects design; see :func:`glmm_jax.detect_separation`): "error" (the
        default) raises ``SeparationError`` naming the coefficients whose estimates are
        infinite and their signs; "warn" issues a ``SeparationWarning``, fits anyway and
        reports those estimates as +-Inf with NaN standard errors in every table
        (``result.separation`` holds the record); "ignore" skips the check.
      max_iter: maximum outer Newton iterations. If Newton has not converged by then, an
        L-BFGS fallback (optax, at most ``5 * max_iter`` iterations) continues from where it
        stopped and Newton is run once more from its result.

    Returns:
      A :class:`GLMMResult`. Non-convergence and singular fits raise warnings and are
      recorded in ``result.converged`` / ``result.singular``.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"), family="binomial")
    >>> round(res.loglik, 3)
    -92.026
    """
    return build_model(formula, data, family, link, nagq, **options).fit(max_iter=max_iter)
