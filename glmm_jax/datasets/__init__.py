"""Shipped example datasets and a seeded simulator of hospital registries."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

_FILES = {
    "cbpp": "cbpp.csv",
    "grouseticks": "grouseticks.csv",
    "owls": "Owls.csv",
    "salamanders": "Salamanders.csv",
    "sleepstudy": "sleepstudy.csv",
    "toenail": "toenail.csv",
    "verbagg": "VerbAgg.csv",
}

# Factor level orders that differ from sorted order (as in the R packages).
_LEVELS = {
    "salamanders": {"spp": ["GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"],
                    "mined": ["yes", "no"]},
    "grouseticks": {"YEAR": ["95", "96", "97"]},
    "cbpp": {"period": ["1", "2", "3", "4"]},
}


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted([*_FILES, "hospital"])


def load(name: str) -> pd.DataFrame:
    """Load a shipped dataset as a new DataFrame.

    ``"hospital"`` is a small synthetic registry (``simulate_registry(seed=1)``,
    5,000 rows, 100 hospitals); the others are the R datasets of the same name.

    >>> load("cbpp").shape
    (56, 4)
    """
    key = name.lower()
    if key == "hospital":
        return simulate_registry(n_rows=5_000, n_hospitals=100, seed=1)
    if key not in _FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(names())}")
    with resources.files(__package__).joinpath("data", _FILES[key]).open("rb") as fh:
        df = pd.read_csv(fh)
    for col, levels in _LEVELS.get(key, {}).items():
        df[col] = pd.Categorical(df[col].astype(str), categories=levels)
    return df


def simulate_registry(
    n_rows: int = 100_000,
    n_hospitals: int = 2_000,
    *,
    family: str = "binomial",
    slope_sd: float = 0.0,
    intercept_sd: float = 0.8,
    slope_corr: float = 0.3,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate a hospital registry for ``y ~ age + sex + comorb + teaching + (1 | hospital)``.

    Cluster sizes are unequal (log-normal weights, at least 2 rows per hospital).
    ``slope_sd > 0`` adds a random slope on ``age`` correlated ``slope_corr`` with the
    intercept. ``family`` is ``"binomial"`` (0/1 outcome) or ``"poisson"`` (counts).
    Columns: ``y, age, sex, comorb, teaching, hospital``.
    """
    if n_rows < 2 * n_hospitals:
        raise ValueError("need at least 2 rows per hospital")
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.0, n_hospitals)
    extra = rng.multinomial(n_rows - 2 * n_hospitals, w / w.sum())
    sizes = extra + 2
    hospital = np.repeat(np.arange(n_hospitals), sizes)
    teaching_h = rng.random(n_hospitals) < 0.3
    age = rng.normal(0.0, 1.0, n_rows)  # standardized age
    sex = rng.integers(0, 2, n_rows)
    comorb = rng.poisson(1.0, n_rows)
    teaching = teaching_h[hospital].astype(int)
    z = rng.normal(size=(n_hospitals, 2))
    b0 = intercept_sd * z[:, 0]
    b1 = slope_sd * (slope_corr * z[:, 0] + np.sqrt(1.0 - slope_corr**2) * z[:, 1])
    b = np.column_stack([b0, b1])
    if family == "binomial":
        eta = -1.0 + 0.4 * age - 0.3 * sex + 0.25 * comorb + 0.2 * teaching
        eta = eta + b[hospital, 0] + b[hospital, 1] * age
        y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    elif family == "poisson":
        eta = -0.5 + 0.2 * age - 0.1 * sex + 0.15 * comorb + 0.1 * teaching
        eta = eta + b[hospital, 0] + b[hospital, 1] * age
        y = rng.poisson(np.exp(eta))
    else:
        raise ValueError("family must be one of 'binomial', 'poisson'")
    return pd.DataFrame({
        "y": y, "age": age, "sex": sex, "comorb": comorb, "teaching": teaching,
        "hospital": pd.Categorical([f"H{h:05d}" for h in hospital]),
    })
