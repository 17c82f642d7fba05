"""Several random terms: glmm_jax against lme4 and glmmTMB, in the same run.

Cases: VerbAgg (crossed, binary), grouseticks (nested + observation-level, Poisson), an
InstEval-size crossed Gaussian model (simulated: 73,421 rows, 2,972 students x 1,128
instructors + 28 dept:service levels, REML) and a 1M-row Poisson registry of visits in
wards in hospitals with an observation-level effect (simulated; glmm_jax only: the peers
would need a sparse 1M x 1M Hessian factorization per evaluation).

Also lme4's real InstEval, REML and ML (``insteval``, ``insteval_ml``), read from
``$GLMM_JAX_INSTEVAL_CSV`` (default ``../shared/reference/data/InstEval.csv``; skipped
where absent).

Usage: ``python benchmarks/bench_multi.py [--cases a,b] [--peers lme4,glmmTMB]``.
glmm_jax runs in a fresh process with an empty compilation cache (cold = first fit,
warm = median of the next ``WARM[case]`` fits) and reports its peak RSS and the peak
memory of the warm fits; lme4 and glmmTMB (through ``Rscript peers_multi.R``, when
installed) report the median of three fits after a warm-up fit. Writes
``results/multi_<timestamp>.json`` and ``multi_latest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
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
    "insteval_sim": ("insteval_sim", "gaussian",
                     "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"),
    "nested_registry_1m": ("nested_registry_1m", "poisson",
                           "y ~ age + sex + (1 | hospital/ward) + (1 | obs)"),
    # lme4's InstEval (73,421 ratings), REML and ML: read from INSTEVAL_CSV
    "insteval": ("insteval", "gaussian", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"),
    "insteval_ml": ("insteval", "gaussian",
                    "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"),
}
ML = {"insteval_ml"}  # Gaussian cases fitted by ML (the others: REML, lmer's default)
WARM = {"nested_registry_1m": 2}  # warm fits timed (default 3)
NO_PEERS = {"nested_registry_1m": "not run: 1M observation-level effects"}
INSTEVAL_CSV = Path(os.environ.get("GLMM_JAX_INSTEVAL_CSV", HERE.parent.parent / "shared"
                                   / "reference" / "data" / "InstEval.csv"))


def simulate_insteval(seed: int = 0):
    """InstEval-size crossed design: students x instructors, dept:service, Gaussian."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, n_s, n_d, n_dept = 73_421, 2_972, 1_128, 14
    s, d = rng.integers(0, n_s, n), rng.integers(0, n_d, n)
    dept = rng.integers(0, n_dept, n_d)[d]
    service = rng.integers(0, 2, n)
    y = (3.2 + 0.1 * service + rng.normal(0, 0.32, n_s)[s] + rng.normal(0, 0.52, n_d)[d]
         + rng.normal(0, 0.08, 2 * n_dept)[2 * dept + service] + rng.normal(0, 1.18, n))
    return pd.DataFrame({"y": y, "service": service, "s": s, "d": d, "dept": dept})


def simulate_nested_registry(n: int = 1_000_000, seed: int = 0):
    """Visits in 10 wards in each of n/500 hospitals; Poisson with an OLRE."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_h, n_w = n // 500, 10
    hosp, ward = rng.integers(0, n_h, n), rng.integers(0, n_w, n)
    age, sex = rng.normal(size=n), rng.integers(0, 2, n)
    eta = (-0.5 + 0.3 * age - 0.2 * sex + rng.normal(0, 0.5, n_h)[hosp]
           + rng.normal(0, 0.3, n_h * n_w)[hosp * n_w + ward] + rng.normal(0, 0.4, n))
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "age": age, "sex": sex,
                         "hospital": hosp, "ward": ward, "obs": np.arange(n)})


def data(case: str):
    sys.path.insert(0, str(HERE.parent))
    import pandas as pd

    import glmm_jax as gj

    name = CASES[case][0]
    if name == "insteval_sim":
        return simulate_insteval()
    if name == "nested_registry_1m":
        return simulate_nested_registry()
    if name == "insteval":
        df = pd.read_csv(INSTEVAL_CSV)
        return df.assign(**{c: df[c].astype(str) for c in ("s", "d", "dept", "service")})
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
    import jax
    from run_glmm_jax import (
        current_rss_mb,
        device_peak_mb,
        hwm_rss_mb,
        peak_rss_mb,
        release_free_memory,
        reset_peak_rss,
    )

    import glmm_jax as gj

    _, family, formula = CASES[case]
    df = data(case)
    t0 = time.perf_counter()
    reml = False if case in ML else None
    gj.fit(formula, df, family=family, reml=reml)
    cold = time.perf_counter() - t0
    release_free_memory()
    before, reset = current_rss_mb(), reset_peak_rss()
    warm = []
    for _ in range(WARM.get(case, 3)):
        t0 = time.perf_counter()
        res = gj.fit(formula, df, family=family, reml=reml)
        warm.append(time.perf_counter() - t0)
    out = {"engine": "glmm_jax", "cold_s": cold, "time_s": statistics.median(warm),
           "warm_runs_s": warm, "loglik": res.loglik, "converged": res.converged,
           "n_iter": res.n_iter, "nobs": res.nobs, "peak_rss_mb": peak_rss_mb(),
           "device_peak_mb": device_peak_mb(), "device": str(jax.devices()[0]),
           "varcorr": json.loads(res.varcorr.to_json(orient="records"))}
    if reset and before is not None:
        out["warm_fit_peak_increase_mb"] = hwm_rss_mb() - before
    return out


def run_r(case: str, engine: str) -> dict:
    if case in NO_PEERS:
        return {"engine": engine, "status": NO_PEERS[case]}
    if not shutil.which("Rscript"):
        return {"engine": engine, "status": "skip: no Rscript"}
    name = CASES[case][0]
    if name == "insteval_sim":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "insteval_sim.csv"
            data(case).to_csv(path, index=False)
            return run_marked(["Rscript", str(HERE / "peers_multi.R"), case, str(path),
                               engine], 1200, engine)
    if name == "insteval":
        return run_marked(["Rscript", str(HERE / "peers_multi.R"), case, str(INSTEVAL_CSV),
                           engine], 1200, engine)
    src = {"verbagg": "VerbAgg.csv", "grouseticks": "grouseticks.csv"}[name]
    path = HERE.parent / "glmm_jax" / "datasets" / "data" / src
    return run_marked(["Rscript", str(HERE / "peers_multi.R"), case, str(path), engine],
                      600, engine)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(MARKER + json.dumps(run_glmm_jax(sys.argv[2])), flush=True)
        return
    cases, engines = list(CASES), ["lme4", "glmmTMB"]
    args = sys.argv[1:]
    if "--cases" in args:
        cases = args[args.index("--cases") + 1].split(",")
    if "--peers" in args:  # e.g. --peers lme4 (glmmTMB takes ~40 s a fit on InstEval)
        engines = [e for e in args[args.index("--peers") + 1].split(",") if e]
    out = []
    if not INSTEVAL_CSV.exists():  # lme4's InstEval is not shipped: skipped without it
        cases = [c for c in cases if CASES[c][0] != "insteval"]
    for case in cases:
        gj = run_fresh([sys.executable, __file__, "--child", case], 1800, "glmm_jax")
        peers = [run_r(case, e) for e in engines]
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
