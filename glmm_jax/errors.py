"""Exceptions and warnings that glmm_jax raises for users to catch or test for."""


class GLMMInputError(ValueError):
    """Invalid formula, data, family or option; the message names the culprit."""


class GLMMWarning(UserWarning):
    """Base class of glmm_jax warnings."""


class ConvergenceWarning(GLMMWarning):
    """The optimizer stopped before meeting its convergence criteria."""


class SingularFitWarning(GLMMWarning):
    """A random-effect covariance is at the boundary (a variance of 0 or correlation of ±1)."""


class DataWarning(GLMMWarning):
    """Rows dropped for missing values, or aliased fixed-effect columns dropped."""
