"""Shared fixtures: float64 JAX, the reference table, and one fit per reference case.

Every fit compiles a new XLA program (several seconds on a small CPU), so each reference
case is fitted once per session and shared by every test that needs it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
# a silent dtype promotion (float32 creeping in, int and float arrays mixed) fails a test
jax.config.update("jax_numpy_dtype_promotion", "strict")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from helpers import CBPP_FORMULA, OWLS_FORMULA  # noqa: E402

import glmm_jax as gj  # noqa: E402

DATA_DIR = Path(__file__).parent / "data"



@dataclass(frozen=True)
class Case:
    """A reference case: how to fit it with glmm_jax."""

    formula: str
    dataset: str
    family: str
    nagq: int = 1
    reml: bool | None = None

    def data(self) -> pd.DataFrame:
        df = gj.datasets.load(self.dataset)
        if self.dataset == "toenail":
            df = df.assign(y=(df["outcome"] == "moderate or severe").astype(int))
        return df


CASES = {
    "cbpp_laplace": Case(CBPP_FORMULA, "cbpp", "binomial"),
    "cbpp_agq25": Case(CBPP_FORMULA, "cbpp", "binomial", nagq=25),
    "owls_poisson": Case(OWLS_FORMULA, "owls", "poisson"),
    "owls_nbinom2": Case(OWLS_FORMULA, "owls", "negative_binomial"),
    "salamanders_poisson": Case("count ~ spp + mined + (1 | site)", "salamanders", "poisson"),
    "toenail_laplace": Case("y ~ treatment * visit + (1 | patientID)", "toenail", "binomial"),
    "sleepstudy_ml": Case("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian",
                          reml=False),
    "sleepstudy_reml": Case("Reaction ~ Days + (Days | Subject)", "sleepstudy", "gaussian",
                            reml=True),
}


@pytest.fixture(scope="session")
def reference() -> dict:
    with open(DATA_DIR / "reference_fits.json") as fh:
        return json.load(fh)


class _FitCache:
    """Fits each reference case on first use and records the warnings it raised."""

    def __init__(self):
        self._fits: dict[str, tuple[gj.GLMMResult, list]] = {}

    def __call__(self, name: str) -> gj.GLMMResult:
        return self.with_warnings(name)[0]

    def with_warnings(self, name: str):
        if name not in self._fits:
            case = CASES[name]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = gj.fit(case.formula, case.data(), family=case.family, nagq=case.nagq,
                             reml=case.reml)
            self._fits[name] = (res, [w for w in caught
                                      if issubclass(w.category, gj.GLMMWarning)])
        return self._fits[name]


@pytest.fixture(scope="session")
def ref_fit() -> _FitCache:
    """``ref_fit(name)``: the shared glmm_jax fit of reference case ``name``."""
    return _FitCache()


@pytest.fixture(scope="session")
def cbpp() -> pd.DataFrame:
    return gj.datasets.load("cbpp")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module. One process that
    has compiled some thousands of programs crashes in XLA's CPU compiler (jaxlib 0.10.2:
    a segmentation fault at the ~500th test of this suite); the programs a later module
    needs again come back from the persistent compilation cache."""
    yield
    jax.clear_caches()
