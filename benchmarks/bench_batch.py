"""Batch benchmarks: many fits of one structure with ``glmm_jax.fit_many``.

Usage: ``python benchmarks/bench_batch.py [--datasets 1000] [--outcomes 200]``

- ``cbpp_many``: N simulated datasets the size of cbpp (15 herds x 4 periods, binomial
  successes out of trials), ``cbind(incidence, size - incidence) ~ period + (1 | herd)``.
- ``registry_outcomes``: K binary outcomes simulated on one 100k-row / 2,000-hospital
  registry, ``y ~ age + sex + comorb + teaching + (1 | hospital)``, fitted with fit_many
  over a list of DataFrames; reported per outcome.

Each case runs in a fresh process with an empty persistent compilation cache: *cold* is
the first ``fit_many`` call (compilation included), *warm* a second identical call. For
comparison, the same number of sequential ``glmm_jax.fit`` calls is timed on a subset and
extrapolated. Results go to ``benchmarks/results/batch_<timestamp>.json`` and
``batch_latest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import run_fresh, save_results  # noqa: E402

MARKER = "RESULT_JSON: "


def cbpp_like(seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    herd = np.repeat(np.arange(15), 4)
    period = np.tile(np.arange(1, 5), 15)
    size = rng.integers(2, 30, herd.size)
    eta = -1.4 + np.array([0.0, -1.0, -1.1, -1.6])[period - 1] + rng.normal(0, 0.65, 15)[herd]
    incidence = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"herd": herd, "incidence": incidence, "size": size,
                         "period": pd.Categorical(period.astype(str))})


def registry_outcomes(k: int):
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    import glmm_jax as gj

    base = gj.datasets.simulate_registry(100_000, 2_000, seed=0)
    rng = np.random.default_rng(1)
    eta0 = -1.0 + 0.4 * base.age - 0.3 * base.sex + 0.25 * base.comorb
    codes = base.hospital.cat.codes.to_numpy()
    out = []
    for _ in range(k):
        eta = eta0 + rng.normal(0, 0.8, 2_000)[codes]
        out.append(base.assign(y=(rng.random(len(base)) < 1 / (1 + np.exp(-eta))).astype(int)))
    return out


def run_case(case: str, n: int) -> dict:
    """Time fit_many (cold, warm) and sequential fit on a subset, in this process."""
    import warnings

    import jax

    sys.path.insert(0, str(HERE.parent))
    from run_glmm_jax import device_peak_mb

    import glmm_jax as gj

    if case == "cbpp_many":
        formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
        data = [cbpp_like(i) for i in range(n)]
    else:
        formula = "y ~ age + sex + comorb + teaching + (1 | hospital)"
        data = registry_outcomes(n)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    gj.fit_many(formula, data, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = gj.fit_many(formula, data, progress=False)
    warm = time.perf_counter() - t0
    m = min(n, 20)
    gj.fit(formula, data[0])
    t0 = time.perf_counter()
    for df in data[:m]:
        gj.fit(formula, df)
    seq = (time.perf_counter() - t0) / m
    summ = res.summary
    return {"case": case, "n_datasets": n, "cold_s": cold, "warm_s": warm,
            "warm_per_dataset_s": warm / n, "sequential_fit_per_dataset_s": seq,
            "converged": int(summ.converged.sum()), "failed": len(res.errors),
            "device": str(jax.devices()[0]), "device_peak_mb": device_peak_mb()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=1000, help="cbpp-size datasets (0: skip)")
    ap.add_argument("--outcomes", type=int, default=200, help="registry outcomes (0: skip)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:  # child process
        print(MARKER + json.dumps(run_case(args.case, args.n)), flush=True)
        return
    results = []
    for case, n in (("cbpp_many", args.datasets), ("registry_outcomes", args.outcomes)):
        if n <= 0:  # --outcomes 0: skip that case
            continue
        cmd = [sys.executable, __file__, "--case", case, "--n", str(n)]
        r = run_fresh(cmd, 3600, "glmm_jax")
        print(json.dumps(r, indent=1))
        results.append(r)
    save_results("batch", results)


if __name__ == "__main__":
    main()
