"""The value alone against the value, gradient and Hessian: ``Model.negloglik`` and
``Model.value_grad_hess`` on the 100k-row registry (and the slope case), in one process.

Usage: ``python benchmarks/bench_negloglik.py [--cases logit_ri_100k,logit_slope_200k]``.
Each is compiled by a first call, then timed as the median of 7 calls at the start
values, with the modes solved from zero, and from the modes of a nearby theta (as along
a profile); the ratios negloglik / value_grad_hess are what profiles and line searches
save.
Writes ``results/negloglik_<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import CASES, simulate  # noqa: E402
from peers import save_results  # noqa: E402


def timed(fn, theta, repeats: int = 7) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn(theta)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(theta)
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="logit_ri_100k,logit_slope_200k")
    args = ap.parse_args()
    import glmm_jax as gj

    out = []
    for name in args.cases.split(","):
        case = CASES[name]
        df = simulate(case)
        model = gj.build_model(case.formula, df, family=case.family)
        theta = model.start()
        nll_first, nll = timed(model.negloglik, theta)
        vgh_first, vgh = timed(model.value_grad_hess, theta)
        # warm: modes from those of a nearby theta (as along a profile)
        u = model.modes(theta - 0.05)
        _, nll_warm = timed(partial(model.negloglik, u0=u), theta)
        _, vgh_warm = timed(partial(model.value_grad_hess, u0=u), theta)
        row = {"case": name, "negloglik_s": nll, "value_grad_hess_s": vgh,
               "ratio": nll / vgh, "negloglik_warm_s": nll_warm,
               "value_grad_hess_warm_s": vgh_warm, "ratio_warm": nll_warm / vgh_warm,
               "ratio_warm_to_cold_vgh": nll_warm / vgh, "negloglik_first_s": nll_first,
               "value_grad_hess_first_s": vgh_first,
               "same_value": abs(model.negloglik(theta) - model.value_grad_hess(theta)[0])}
        print(row, flush=True)
        out.append(row)
    save_results("negloglik", out)


if __name__ == "__main__":
    main()
