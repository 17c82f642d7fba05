"""How results show infinite fixed-effect estimates (a separated binomial model fitted
with ``on_separation="warn"``, see :mod:`glmm_jax.separation`): +-Inf estimates, NaN
standard errors and tests, one-sided intervals, and a note in the summary."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd


def infinite_of(sep, x_names) -> np.ndarray:
    """+-inf for each fixed effect whose estimate is infinite (separation), else 0."""
    if sep is None or not sep.separated:
        return np.zeros(len(x_names))
    return sep.infinite.reindex(list(x_names), fill_value=0.0).to_numpy(float)


def shown(inf: np.ndarray, beta, cov) -> tuple[np.ndarray, np.ndarray]:
    """The fixed effects and their covariance as the tables show them: +-Inf estimates,
    NaN rows and columns of the covariance."""
    beta, cov = np.array(beta, dtype=float), np.array(cov, dtype=float)
    bad = inf != 0
    if bad.any():
        beta[bad] = inf[bad]
        cov[bad, :] = np.nan
        cov[:, bad] = np.nan
    return beta, cov


def _listing(inf: np.ndarray, x_names) -> str:
    return ", ".join(f"{n} ({'+' if v > 0 else '-'}Inf)"
                     for n, v in zip(x_names, inf, strict=True) if v != 0)


def mark_intervals(table: pd.DataFrame, inf: np.ndarray, x_names, exp: bool = False
                   ) -> pd.DataFrame:
    """An interval table (estimate, lower, upper) with each infinite estimate's row at
    +-Inf: the estimate and the end on its side infinite, the other end NaN (``exp``:
    the exponentiated scale, where -Inf is 0)."""
    rows = [(n, v) for n, v in zip(x_names, inf, strict=True) if v != 0 and n in table.index]
    if not rows:
        return table
    table = table.copy()
    for n, v in rows:
        e = v if not exp else (np.inf if v > 0 else 0.0)
        table.loc[n, ["estimate", "upper" if v > 0 else "lower"]] = e
        table.loc[n, "lower" if v > 0 else "upper"] = np.nan
    table.attrs["note"] = f"infinite estimates (separation): {_listing(inf, x_names)}"
    return table


def quiet_overflow(inf: np.ndarray):
    """No overflow warnings where estimates are infinite (their exp is Inf anyway)."""
    return np.errstate(over="ignore") if np.any(inf != 0) else contextlib.nullcontext()


def summary_note(sep, inf: np.ndarray, x_names) -> list[str]:
    """The lines a summary adds about infinite estimates (none without separation)."""
    if not np.any(inf != 0):
        return []
    return ["", f"Separation ({sep.kind}): the estimates of {_listing(inf, x_names)} are "
            "infinite; their standard errors and tests are NA (see result.separation)"]
