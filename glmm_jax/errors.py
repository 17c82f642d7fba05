"""Exceptions and warnings that glmm_jax raises for users to catch or test for."""

import warnings


class GLMMInputError(ValueError):
    """Invalid formula, data, family or option; the message names the culprit."""


class GLMMFitError(RuntimeError):
    """A computation on fitted models failed as a whole (e.g. every bootstrap refit)."""


class GLMMWarning(UserWarning):
    """Base class of glmm_jax warnings."""


class ConvergenceWarning(GLMMWarning):
    """The optimizer stopped before meeting its convergence criteria."""


class SingularFitWarning(GLMMWarning):
    """A random-effect covariance is at the boundary (a variance of 0 or correlation of ±1)."""


class DataWarning(GLMMWarning):
    """Rows dropped for missing values, or aliased fixed-effect columns dropped."""


def warn(message: str, category: type[Warning]) -> None:
    """Issue a warning attributed to the user's call: the first frame outside glmm_jax."""
    import sys
    from pathlib import Path

    package = str(Path(__file__).parent)
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
