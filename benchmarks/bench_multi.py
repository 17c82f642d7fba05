"""Several random terms: glmm_jax against lme4 and glmmTMB on VerbAgg (crossed) and
grouseticks (nested + observation-level), in the same run.

Usage: ``python benchmarks/bench_multi.py``. glmm_jax runs in a fresh process with an
empty compilation cache (cold = first fit, warm = median of three more); lme4 and glmmTMB
(through ``Rscript peers_multi.R``, when installed) report the median of three fits after
a warm-up fit. Writes ``results/multi_<timestamp>.json`` and ``multi_latest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
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
    proc = subprocess.run(["Rscript", str(HERE / "peers_multi.R"), case, str(path), engine],
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if not lines:
        return {"engine": engine, "status": f"skip/error (exit {proc.returncode})"}
    return json.loads(lines[-1][len(MARKER):])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(MARKER + json.dumps(run_glmm_jax(sys.argv[2])), flush=True)
        return
    out = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, GLMM_JAX_CACHE_DIR=cache)
            proc = subprocess.run([sys.executable, __file__, "--child", case], env=env,
                                  capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
        gj = json.loads(lines[-1][len(MARKER):]) if lines else {"error": proc.stderr[-2000:]}
        peers = [run_r(case, e) for e in ("lme4", "glmmTMB")]
        row = {"case": case, "glmm_jax": gj, "peers": peers}
        for p in peers:
            if "time_s" in p and "time_s" in gj:
                p["ratio_to_glmm_jax_warm"] = p["time_s"] / gj["time_s"]
                p["dloglik_glmm_jax_minus_peer"] = gj["loglik"] - p["loglik"]
        print(json.dumps(row, indent=1))
        out.append(row)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    doc = {"timestamp": stamp, "nproc": os.cpu_count(), "results": out}
    for name in (f"multi_{stamp}.json", "multi_latest.json"):
        (HERE / "results" / name).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
