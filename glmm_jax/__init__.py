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
- :func:`check_convergence` — refits from dispersed starts (lme4's allFit question:
  the same optimum?), vmapped on accelerators.
- :func:`load` — a fit saved by ``GLMMResult.save`` (JSON + npz, no pickle).
- :func:`anova` — likelihood-ratio tests of nested fits (lme4's table, chi-bar-square
  at a variance's boundary); :func:`satterthwaite` — lmerTest's df for Gaussian fits.
- :func:`marginal_coefficients`, :func:`marginal_means`, :func:`marginal_covariance`,
  :func:`icc`, :func:`r2` — population-averaged effects, intra-cluster correlation,
  Nakagawa's R².
- :func:`random_effects` (posterior modes, means, medians), :func:`shrinkage`.
- :func:`tidy`, :func:`glance`, :func:`augment` — broom.mixed's tidy tables.
- :func:`influence` — leave-one-cluster-out refits (lme4's influence), Cook's distance,
  DFBETAS, vmapped.
- :func:`overdispersion_test` (performance's Pearson chi-square check),
  :func:`quantile_residuals` and :func:`residual_tests` (DHARMa's simulated residuals).
- :mod:`families` — ``Binomial``, ``Poisson``, ``Gaussian``, ``Gamma``, ``NegativeBinomial``.
- :mod:`datasets` — shipped example data and a registry simulator.
- :mod:`plots` — model-checking plots (matplotlib, optional: imported on first access).
- :func:`detect_separation` — complete / quasi-complete separation of a binomial model
  (R's detectseparation linear program), checked by ``fit`` too (``on_separation=``).
- errors and warnings: ``GLMMInputError``, ``ConvergenceWarning``, ``SingularFitWarning``,
  ``DataWarning``, ``SeparationError``, ``SeparationWarning``.
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
from .convergence import ConvergenceCheck, check_convergence  # noqa: E402
from .design import model_matrix  # noqa: E402
from .dharma import quantile_residuals, residual_tests  # noqa: E402
from .dispersion import OverdispersionTest, overdispersion_test  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceWarning,
    DataWarning,
    GLMMFitError,
    GLMMInputError,
    GLMMWarning,
    SeparationError,
    SeparationWarning,
    SingularFitWarning,
)
from .influence import InfluenceResult, influence  # noqa: E402
from .marginal import (  # noqa: E402
    icc,
    marginal_coefficients,
    marginal_covariance,
    marginal_means,
    r2,
)
from .persist import load  # noqa: E402
from .posterior import random_effects, shrinkage  # noqa: E402
from .results import GLMMResult  # noqa: E402
from .satterthwaite import satterthwaite  # noqa: E402
from .separation import Separation, detect_separation  # noqa: E402
from .tidy import augment, glance, tidy  # noqa: E402


def __getattr__(name: str):
    """``glmm_jax.plots`` is imported on first access (it needs matplotlib, optional)."""
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "fit", "build_model", "model_matrix", "Model", "GLMMResult", "fit_many", "ManyResult",
    "families", "datasets", "GLMMInputError", "GLMMWarning", "ConvergenceWarning",
    "SingularFitWarning", "DataWarning", "enable_compilation_cache", "bootstrap",
    "BootstrapResult", "GLMMFitError", "anova", "format_anova", "satterthwaite", "icc", "r2",
    "marginal_coefficients", "marginal_covariance", "marginal_means", "random_effects",
    "influence", "InfluenceResult",
    "check_convergence", "ConvergenceCheck",
    "shrinkage", "overdispersion_test", "OverdispersionTest", "quantile_residuals",
    "residual_tests", "load",
    "detect_separation", "Separation", "SeparationError", "SeparationWarning",
    "tidy", "glance", "augment",
]
