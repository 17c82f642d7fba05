"""Several random terms: glmm_jax against lme4 and glmmTMB on VerbAgg (crossed) and
grouseticks (nested + observation-level), in the same run.

Usage: ``python benchmarks/bench_multi.py``. glmm_jax runs in a fresh process with an
empty compilation cache (cold = first fit, warm = median of three more); lme4 and glmmTMB
(through ``Rscript peers_multi.R``, when installed) report the median of three fits after
a warm-up fit. Writes ``results/multi_<timestamp>.json`` and ``multi_latest.json``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import run_fresh, run_marked, save_results  # noqa: E402

MARKER = "RESULT_JSON: "
CASES = {
    "verbagg_crossed": ("verbagg", "binomial",
                        "y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"),
    "grouseticks_olre": ("grouseticks", "poisson",
                         "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"),
}


def data(case: str):
    sys.path.insert(0, str(HERE.parent))
    import pandas as pd

    import glmm_jax as gj

    name = CASES[case][0]
    df = gj.datasets.load(name)
    if name == "verbagg":
        df = df.assign(y=(df.r2 == "Y").astype(int),
                       Gender=pd.Categorical(df.Gender, ["F", "M"]),
                       btype=pd.Categorical(df.btype, ["curse", "scold", "shout"]),
                       situ=pd.Categorical(df.situ, ["other", "self"]))
    else:
        df = df.assign(**{c: df[c].astype(str) for c in ("BROOD", "INDEX", "LOCATION")})
    return df


def run_glmm_jax(case: str) -> dict:
    sys.path.insert(0, str(HERE.parent))
    import glmm_jax as gj

    _, family, formula = CASES[case]
    df = data(case)
    t0 = time.perf_counter()
    gj.fit(formula, df, family=family)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = gj.fit(formula, df, family=family)
        warm.append(time.perf_counter() - t0)
    return {"engine": "glmm_jax", "cold_s": cold, "time_s": statistics.median(warm),
            "loglik": res.loglik, "converged": res.converged}


def run_r(case: str, engine: str) -> dict:
    if not shutil.which("Rscript"):
        return {"engine": engine, "status": "skip: no Rscript"}
    name = CASES[case][0]
    src = {"verbagg": "VerbAgg.csv", "grouseticks": "grouseticks.csv"}[name]
    path = HERE.parent / "glmm_jax" / "datasets" / "data" / src
    return run_marked(["Rscript", str(HERE / "peers_multi.R"), case, str(path), engine],
                      600, engine)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(MARKER + json.dumps(run_glmm_jax(sys.argv[2])), flush=True)
        return
    out = []
    for case in CASES:
        gj = run_fresh([sys.executable, __file__, "--child", case], 1800, "glmm_jax")
        peers = [run_r(case, e) for e in ("lme4", "glmmTMB")]
        row = {"case": case, "glmm_jax": gj, "peers": peers}
        for p in peers:
            if "time_s" in p and "time_s" in gj:
                p["ratio_to_glmm_jax_warm"] = p["time_s"] / gj["time_s"]
                p["dloglik_glmm_jax_minus_peer"] = gj["loglik"] - p["loglik"]
        print(json.dumps(row, indent=1))
        out.append(row)
    save_results("multi", out)


if __name__ == "__main__":
    main()
