"""glmm_jax: generalized linear mixed models by Laplace and adaptive Gauss-Hermite
quadrature, with exact autodiff derivatives, in JAX (float64).

The public API:

- :func:`fit` — fit a model from an lme4-style formula and a DataFrame.
- :func:`build_model` — the validated model and its pure objective, without fitting.
- :func:`model_matrix` — R's model.matrix of a one-sided formula.
- :func:`fit_many` — one model fitted to many datasets in one vmapped program.
- :class:`GLMMResult` — the immutable fitted result, with ``conf_int`` (Wald, profile,
  bootstrap), ``odds_ratios``, ``rate_ratios`` and ``simulate``.
- :func:`bootstrap` — parametric bootstrap, refits vmapped.
- :func:`anova` — likelihood-ratio tests of nested fits (lme4's table, chi-bar-square
  at a variance's boundary); :func:`satterthwaite` — lmerTest's df for Gaussian fits.
- :func:`marginal_coefficients`, :func:`marginal_means`, :func:`marginal_covariance`,
  :func:`icc`, :func:`r2` — population-averaged effects, intra-cluster correlation,
  Nakagawa's R².
- :func:`random_effects` (posterior modes, means, medians), :func:`shrinkage`.
- :mod:`families` — ``Binomial``, ``Poisson``, ``Gaussian``, ``Gamma``, ``NegativeBinomial``.
- :mod:`datasets` — shipped example data and a registry simulator.
- errors and warnings: ``GLMMInputError``, ``ConvergenceWarning``, ``SingularFitWarning``,
  ``DataWarning``.
"""

import jax

from ._cache import enable_compilation_cache

jax.config.update("jax_enable_x64", True)
enable_compilation_cache()

from . import datasets, families  # noqa: E402
from .anova import anova, format_anova  # noqa: E402
from .api import Model, build_model, fit  # noqa: E402
from .batch import ManyResult, fit_many  # noqa: E402
from .bootstrap import BootstrapResult, bootstrap  # noqa: E402
from .design import model_matrix  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceWarning,
    DataWarning,
    GLMMFitError,
    GLMMInputError,
    GLMMWarning,
    SingularFitWarning,
)
from .marginal import (  # noqa: E402
    icc,
    marginal_coefficients,
    marginal_covariance,
    marginal_means,
    r2,
)
from .posterior import random_effects, shrinkage  # noqa: E402
from .results import GLMMResult  # noqa: E402
from .satterthwaite import satterthwaite  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "fit", "build_model", "model_matrix", "Model", "GLMMResult", "fit_many", "ManyResult",
    "families", "datasets", "GLMMInputError", "GLMMWarning", "ConvergenceWarning",
    "SingularFitWarning", "DataWarning", "enable_compilation_cache", "bootstrap",
    "BootstrapResult", "GLMMFitError", "anova", "format_anova", "satterthwaite", "icc", "r2",
    "marginal_coefficients", "marginal_covariance", "marginal_means", "random_effects",
    "shrinkage",
]
