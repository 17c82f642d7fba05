"""Exceptions and warnings that glmm_jax raises for users to catch or test for."""

import warnings


class GLMMInputError(ValueError):
    """Invalid formula, data, family or option; the message names the culprit."""


class SeparationError(GLMMInputError):
    """The data separate the outcome (complete or quasi-complete separation): some
    fixed-effect estimates are infinite. Found before fitting, from the data and formula
    alone, and cured by changing them (or by a penalized fit), hence an input error; the
    message names the coefficients and their directions (see ``gj.detect_separation``)."""


class GLMMFitError(RuntimeError):
    """A computation on fitted models failed as a whole (e.g. every bootstrap refit)."""


class GLMMWarning(UserWarning):
    """Base class of glmm_jax warnings."""


class ConvergenceWarning(GLMMWarning):
    """The optimizer stopped before meeting its convergence criteria."""


class SingularFitWarning(GLMMWarning):
    """A random-effect covariance is at the boundary (a variance of 0 or correlation of ±1)."""


class SeparationWarning(GLMMWarning):
    """The data are separated; fitted anyway (``on_separation="warn"``), and the
    infinite estimates are reported as +-Inf."""


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
