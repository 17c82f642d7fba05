"""Inference against lme4 in one run: parametric bootstrap refits and profile intervals.

Usage: ``python benchmarks/bench_inference.py [--boot 1000] [--coverage 200]
[--no-r]``.

glmm_jax runs in a fresh process with an empty compilation cache: ``cold_s`` is the
first call (compilation included, the fit itself not), ``warm_s`` the median of three
more. lme4 (through Rscript, the same machine, the same run) times ``bootMer(m, fixef,
nsim = 200)`` and ``confint(m, method = "profile")`` for cbpp and for
``count ~ spp + mined + (1 | site)`` on Salamanders; ratios are per refit for the
bootstrap. ``--coverage K`` also runs K simulated datasets (30 clusters of 10 binary
responses) with a 200-refit percentile bootstrap each and reports how often the 95%
intervals cover the truth. Writes ``results/inference_<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import MARKER, rscript, run_fresh, save_results  # noqa: E402
from run_glmm_jax import peak_rss_mb  # noqa: E402

DATA = HERE.parent / "glmm_jax" / "datasets" / "data"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
SAL = "count ~ spp + mined + (1 | site)"

R_SCRIPT = r"""
suppressMessages(library(lme4))
cb <- read.csv(file.path(DATA, "cbpp.csv"))
cb$herd <- factor(cb$herd); cb$period <- factor(cb$period)
sa <- read.csv(file.path(DATA, "Salamanders.csv")); sa$site <- factor(sa$site)
sa$spp <- factor(sa$spp, levels = unique(sa$spp))
sa$mined <- factor(sa$mined, levels = unique(sa$mined))
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, binomial)
s <- glmer(count ~ spp + mined + (1 | site), sa, poisson)
t_boot <- system.time(bootMer(m, fixef, nsim = 200, seed = 1))[["elapsed"]]
t_prof_cbpp <- system.time(confint(m, method = "profile"))[["elapsed"]]
t_prof_sal <- system.time(confint(s, method = "profile"))[["elapsed"]]
cat("RESULT_JSON: ", jsonlite::toJSON(list(boot200_s = t_boot, profile_cbpp_s = t_prof_cbpp,
    profile_salamanders_s = t_prof_sal), auto_unbox = TRUE, digits = NA), "\n", sep = "")
"""


def worker(n_boot: int, coverage: int) -> dict:
    """In this (fresh) process: time the glmm_jax calls."""
    import warnings

    import numpy as np
    import pandas as pd
    from scipy import special

    import glmm_jax as gj

    out = {}
    cbpp = gj.fit(CBPP, gj.datasets.load("cbpp"))
    sal = gj.fit(SAL, gj.datasets.load("salamanders"), family="poisson")

    def timed(key, fn):
        t0 = time.perf_counter()
        fn()
        out[f"{key}_cold_s"] = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            value = fn()
            runs.append(time.perf_counter() - t0)
        out[f"{key}_warm_s"] = statistics.median(runs)
        return value

    boot = timed("boot", lambda: gj.bootstrap(cbpp, n=n_boot, seed=1, progress=False))
    out.update(boot_n=n_boot, boot_failed=boot.n_failed)
    ci = timed("profile_cbpp", lambda: cbpp.conf_int("profile"))
    out["profile_cbpp_refits"] = ci.attrs["n_refits"]
    ci = timed("profile_salamanders", lambda: sal.conf_int("profile"))
    out["profile_salamanders_refits"] = ci.attrs["n_refits"]
    if coverage:
        rng = np.random.default_rng(2026)
        J, n_j, beta, sd = 30, 10, np.array([-0.5, 1.0]), 0.8
        df = pd.DataFrame({"g": np.repeat(np.arange(J), n_j), "x": rng.normal(size=J * n_j)})

        def draw():
            b = rng.normal(0, sd, J)[df["g"]]
            return rng.binomial(1, special.expit(beta[0] + beta[1] * df["x"] + b))

        model = gj.build_model("y ~ x + (1 | g)", df.assign(y=draw()))
        truth = np.r_[sd, beta]
        hits, used, t0 = np.zeros(3), 0, time.perf_counter()
        for _ in range(coverage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = model.with_response(draw()).fit()
            if not res.converged:
                continue
            ci = gj.bootstrap(res, n=200, seed=int(rng.integers(1 << 30)),
                              progress=False).conf_int()
            hits += (ci["lower"].to_numpy() <= truth) & (truth <= ci["upper"].to_numpy())
            used += 1
        out["coverage"] = {"datasets": used, "per_parameter": dict(zip(
            ["sd_(Intercept)|g", "(Intercept)", "x"], (hits / used).tolist(), strict=True)),
            "pooled": float(hits.sum() / (3 * used)), "seconds": time.perf_counter() - t0}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_r(timeout: float) -> dict:
    exe = rscript()
    if exe is None:
        return {"status": "skipped", "note": "no Rscript"}
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(f'DATA <- "{DATA}"\n' + R_SCRIPT)
    try:
        proc = subprocess.run([exe, fh.name], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if not lines:
        return {"status": "error", "error": proc.stderr[-600:]}
    return {"status": "ok", **json.loads(lines[-1][len(MARKER):])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--coverage", type=int, default=0)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if args.worker:
        print(MARKER + json.dumps(worker(args.boot, args.coverage)), flush=True)
        return
    cmd = [sys.executable, __file__, "--worker", "--boot", str(args.boot), "--coverage",
           str(args.coverage)]
    gj_res = run_fresh(cmd, args.timeout, "glmm_jax")
    print("glmm_jax", gj_res, flush=True)
    r = {"status": "skipped"} if args.no_r else run_r(args.timeout)
    print("lme4", r, flush=True)
    ratios = {}
    if r.get("status") == "ok" and "boot_warm_s" in gj_res:
        per_gj = gj_res["boot_warm_s"] / gj_res["boot_n"]
        ratios["bootstrap_per_refit_warm"] = (r["boot200_s"] / 200) / per_gj
        ratios["bootstrap_per_refit_cold"] = (r["boot200_s"] / 200) / (
            gj_res["boot_cold_s"] / gj_res["boot_n"])
        for case in ("cbpp", "salamanders"):
            for kind in ("warm", "cold"):
                ratios[f"profile_{case}_{kind}"] = r[f"profile_{case}_s"] / \
                    gj_res[f"profile_{case}_{kind}_s"]
    print("lme4 time / glmm_jax time:", ratios)
    save_results("inference", [{"glmm_jax": gj_res, "lme4": r, "ratios": ratios}])


if __name__ == "__main__":
    main()
