"""A notebook session: ten fits on the shipped ``hospital`` registry, each a small step
from the last (a covariate added, an interaction, a quadratic term, three subsets, a
covariate dropped, a random slope), in a fresh process, against lme4 doing the same fits
in the same run. ``--session crossed``: eight fits with two crossed random intercepts
(hospital and comorbidity count), whose subsets drop levels of one term or the other.

Usage: ``python benchmarks/bench_interactive.py [--session crossed] [--rounds 2] [--no-r]``.

Per round: glmm_jax in a fresh Python process with an empty persistent compilation
cache, then again in a fresh process with the cache that run filled, then lme4 in a
fresh ``Rscript`` (``peers_interactive.R``). Each total counts from before ``import
glmm_jax`` (``library(lme4)``) to the end of the last fit; the per-step times and the
Newton programs compiled come along. Writes ``results/interactive_<timestamp>.json``
with every run and the medians' ratios glmm_jax / lme4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import rscript, run_marked, save_results  # noqa: E402

# (formula, subset): the subsets as pandas query strings (peers_interactive.R has R's)
SINGLE = [
    ("y ~ age + (1 | hospital)", None),
    ("y ~ age + sex + (1 | hospital)", None),
    ("y ~ age + sex + comorb + (1 | hospital)", None),
    ("y ~ age + sex + comorb + teaching + (1 | hospital)", None),
    ("y ~ age * sex + comorb + teaching + (1 | hospital)", None),
    ("y ~ age + I(age^2) + sex + comorb + teaching + (1 | hospital)", None),
    ("y ~ age + sex + comorb + teaching + (1 | hospital)", "age > -0.5"),
    ("y ~ age + sex + comorb + teaching + (1 | hospital)", "comorb < 3"),
    ("y ~ age + sex + teaching + (1 | hospital)", "sex == 0 or teaching == 1"),
    ("y ~ age + sex + comorb + teaching + (age | hospital)", None),
]
CROSSED = [  # comorb < 4: 4 of its 6 levels; teaching == 1: the teaching hospitals only
    ("y ~ age + (1 | hospital) + (1 | comorb)", None),
    ("y ~ age + sex + (1 | hospital) + (1 | comorb)", None),
    ("y ~ age + sex + teaching + (1 | hospital) + (1 | comorb)", None),
    ("y ~ age * sex + teaching + (1 | hospital) + (1 | comorb)", None),
    ("y ~ age + sex + teaching + (1 | hospital) + (1 | comorb)", "age > -0.5"),
    ("y ~ age + sex + teaching + (1 | hospital) + (1 | comorb)", "comorb < 4"),
    ("y ~ age + sex + (1 | hospital) + (1 | comorb)", "teaching == 1"),
    ("y ~ age + teaching + (1 | hospital) + (1 | comorb)", "sex == 0"),
]
SESSIONS = {"single": SINGLE, "crossed": CROSSED}


def child(session: str) -> None:
    """Run the session here and print its RESULT_JSON."""
    t0 = time.perf_counter()
    from jax import monitoring

    import glmm_jax as gj

    t_import = time.perf_counter() - t0
    compiled = []  # XLA programs compiled or loaded from the persistent cache
    monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiled.append(secs)
        if name == "/jax/core/compile/backend_compile_duration" else None)
    df = gj.datasets.load("hospital")
    steps = []
    for formula, subset in SESSIONS[session]:
        t = time.perf_counter()
        res = gj.fit(formula, df if subset is None else df.query(subset))
        steps.append({"formula": formula, "subset": subset,
                      "time_s": time.perf_counter() - t, "loglik": res.loglik,
                      "converged": res.converged})
    total = time.perf_counter() - t0
    print("RESULT_JSON: " + json.dumps({"import_s": t_import, "total_s": total,
                                        "steps": steps, "programs": len(compiled),
                                        "program_s": sum(compiled)}))


def run_r(csv: Path, session: str) -> dict:
    r = rscript()
    if r is None:
        return {"status": "skipped", "error": "Rscript not found"}
    cmd = [r, str(HERE / "peers_interactive.R"), str(csv), session]
    return run_marked(cmd, 1200, "lme4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--session", choices=sorted(SESSIONS), default="single")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.session)
    import glmm_jax as gj

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "hospital.csv"
        gj.datasets.load("hospital").to_csv(csv, index=False)
        for k in range(args.rounds):
            cache = Path(tmp) / f"cache{k}"
            env = dict(os.environ, GLMM_JAX_CACHE_DIR=str(cache), GLMM_JAX_CACHE="1")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--session",
                   args.session]
            for kind in ("empty_cache", "filled_cache"):
                row = run_marked(cmd, 1200, "glmm_jax", env)
                runs.append({"round": k, "engine": "glmm_jax", "kind": kind, **row})
                print(kind, round(row.get("total_s", float("nan")), 3), flush=True)
            if not args.no_r:
                row = run_r(csv, args.session)
                runs.append({"round": k, "engine": "lme4", "kind": "fresh", **row})
                print("lme4", round(row.get("total_s", float("nan")), 3), flush=True)
    summary = summarize(runs, len(SESSIONS[args.session]))
    print(json.dumps(summary, indent=1))
    prefix = "interactive" if args.session == "single" else f"interactive_{args.session}"
    save_results(prefix, [{"session": args.session, "summary": summary, "runs": runs}])


def summarize(runs: list[dict], n_steps: int) -> dict:
    def med(engine, kind, key="total_s"):
        vals = [r[key] for r in runs if r["engine"] == engine and r["kind"] == kind
                and isinstance(r.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    out = {"empty_cache_s": med("glmm_jax", "empty_cache"),
           "filled_cache_s": med("glmm_jax", "filled_cache"),
           "lme4_s": med("lme4", "fresh"),
           "import_s": med("glmm_jax", "filled_cache", "import_s")}
    if out["lme4_s"]:
        out["empty_cache_ratio"] = out["empty_cache_s"] / out["lme4_s"]
        out["filled_cache_ratio"] = out["filled_cache_s"] / out["lme4_s"]
    filled = [r for r in runs if r["engine"] == "glmm_jax" and r["kind"] == "filled_cache"
              and "steps" in r]
    if filled:  # each step after the first: a refit with the program already loaded
        per_step = [statistics.median(r["steps"][i]["time_s"] for r in filled)
                    for i in range(n_steps)]
        out["filled_cache_step_s"] = per_step
        out["max_refit_s"] = max(per_step[1:])
        out["programs"] = filled[0]["programs"]
    lme4 = [r for r in runs if r["engine"] == "lme4" and "logliks" in r]
    glmm = [r for r in runs if r["engine"] == "glmm_jax" and "steps" in r]
    if lme4 and glmm:
        out["max_abs_dloglik_vs_lme4"] = max(
            abs(s["loglik"] - ll) for s, ll in zip(glmm[0]["steps"], lme4[0]["logliks"],
                                                   strict=True))
    return out


if __name__ == "__main__":
    main()
