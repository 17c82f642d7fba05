"""Benchmark cases: synthetic hospital registries and the model fitted to each.

Shared by ``bench_core.py`` (the harness, which also runs the peers) and
``run_glmm_jax.py`` (the glmm_jax subprocess), so that both build the very same
data from the same seed.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXED = "age + sex + comorb + teaching"
COVARIATES = ["age", "sex", "comorb", "teaching"]
SEED = 0


@dataclass(frozen=True)
class Case:
    """One benchmark case: data size, outcome family and random-effects term."""

    name: str
    n_rows: int
    n_hospitals: int
    family: str  # "binomial" or "poisson"
    slope: bool  # False: (1 | hospital); True: (1 + age | hospital)
    optional: bool = False  # not run unless asked for by name
    slow_peers: frozenset[str] = field(default_factory=frozenset)  # skipped by --skip-slow
    shuffled: bool = False  # rows in random order (as real extracts), not by hospital

    @property
    def random(self) -> str:
        """The random-effects term of the formula."""
        return "(1 + age | hospital)" if self.slope else "(1 | hospital)"

    @property
    def formula(self) -> str:
        """The full model formula, in lme4 syntax."""
        return f"y ~ {FIXED} + {self.random}"

    @property
    def slope_sd(self) -> float:
        """Standard deviation of the simulated random age slope."""
        return 0.5 if self.slope else 0.0

    @property
    def n_used_columns(self) -> int:
        """Columns the model reads: y, the covariates and hospital."""
        return 2 + len(COVARIATES)


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case("logit_ri_100k", 100_000, 2_000, "binomial", slope=False),
        Case("logit_ri_100k_shuffled", 100_000, 2_000, "binomial", slope=False,
             shuffled=True),
        Case("logit_slope_200k", 200_000, 5_000, "binomial", slope=True,
             slow_peers=frozenset({"lme4"})),
        Case("poisson_ri_500k", 500_000, 10_000, "poisson", slope=False, optional=True,
             slow_peers=frozenset({"lme4", "glmmTMB"})),
        Case("logit_ri_1m", 1_000_000, 20_000, "binomial", slope=False, optional=True,
             slow_peers=frozenset({"lme4", "glmmTMB"})),
        Case("logit_ri_10m", 10_000_000, 200_000, "binomial", slope=False, optional=True,
             slow_peers=frozenset({"gpboost", "lme4", "glmmTMB"})),
    ]
}

DEFAULT_CASES = [name for name, c in CASES.items() if not c.optional]


def _simulator():
    """Return ``glmm_jax.datasets.simulate_registry``.

    Falls back to loading ``glmm_jax/datasets/__init__.py`` by path, so that the
    peers can still be benchmarked while the top-level package does not import.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))
    try:
        from glmm_jax.datasets import simulate_registry
    except Exception:  # noqa: BLE001 - package under construction; load the file directly
        path = REPO_ROOT / "glmm_jax" / "datasets" / "__init__.py"
        spec = importlib.util.spec_from_file_location("_glmm_jax_datasets", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        simulate_registry = module.simulate_registry
    return simulate_registry


def simulate(case: Case):
    """Simulate the registry of ``case`` (a pandas DataFrame; shuffled: its rows in a
    random order, the index 0..n-1)."""
    df = _simulator()(
        n_rows=case.n_rows, n_hospitals=case.n_hospitals, family=case.family,
        slope_sd=case.slope_sd, seed=SEED,
    )
    if case.shuffled:
        df = df.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    return df
