"""The normal, t and chi-square tail and quantile functions of the tables, from
``scipy.special`` (the functions ``scipy.stats`` calls for them, so the numbers are the
same; importing ``scipy.stats`` costs about half a second, which ``import glmm_jax``
does not pay).

>>> round(z_quantile(0.95), 4), round(float(norm_sf(1.96)), 4)
(1.96, 0.025)
>>> round(float(chi2_sf(3.84, 1)), 3), round(float(t_sf(2.0, 10)), 4)
(0.05, 0.0367)
"""

from __future__ import annotations

import numpy as np

from .lazy import special


def norm_sf(x):
    """P(Z > x), Z standard normal."""
    return special.ndtr(-np.asarray(x, dtype=float))


def z_quantile(level: float) -> float:
    """The (1 + level) / 2 quantile of the standard normal (e.g. 1.96 for 0.95)."""
    return float(special.ndtri(0.5 + level / 2.0))


def chi2_sf(x, df):
    """P(X > x), X chi-square with ``df`` degrees of freedom."""
    return special.chdtrc(df, x)


def t_sf(x, df):
    """P(T > x), T Student's t with ``df`` degrees of freedom."""
    return special.stdtr(df, -np.asarray(x, dtype=float))


def t_quantile(level: float, df):
    """The (1 + level) / 2 quantile of Student's t with ``df`` degrees of freedom."""
    return special.stdtrit(df, 0.5 + level / 2.0)
