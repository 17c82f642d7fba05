"""A notebook session of Gaussian refits (the cross-product engine, REML): seven fits on
the shipped ``hospital`` registry, in fresh processes: this tree with an empty
compilation cache and then with the cache it filled, optionally another tree
(``--base``, empty cache), and lme4 (``peers_lmm_session.R``, the same fits), in turn.

Usage: ``python benchmarks/bench_lmm_session.py [--base /tmp/base] [--rounds 2] [--no-r]``.
Writes ``results/lmm_session_<timestamp>.json`` (each run's total, counted from before
``import glmm_jax`` or ``library(lme4)``, and per-fit times; glmm_jax's runs also time
each fit's ``summary()`` and ``coef_table`` (lmerTest's t-tests, Satterthwaite df)
apart: ``summary_s``, not in the total, as lme4's runs make no tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import save_results  # noqa: E402

STEPS = [  # (formula, pandas query or None; "codes<40": the first 40 hospitals)
    ("age ~ sex + (1 | hospital)", None),
    ("age ~ sex + comorb + (1 | hospital)", None),
    ("age ~ sex * teaching + comorb + (1 | hospital)", None),
    ("age ~ comorb + I(comorb^2) + (1 | hospital)", "sex == 1"),
    ("age ~ sex + (1 | hospital)", "codes<40"),
    ("age ~ sex + comorb + (comorb | hospital)", None),
    ("age ~ sex + (comorb | hospital)", "teaching == 1"),
]


def child() -> None:
    t0 = time.perf_counter()
    import glmm_jax as gj

    df = gj.datasets.load("hospital")
    times, summaries = [], []
    for formula, subset in STEPS:
        d = df if subset is None else (df[df.hospital.cat.codes < 40]
                                       if subset == "codes<40" else df.query(subset))
        t = time.perf_counter()
        res = gj.fit(formula, d, family="gaussian")
        times.append(time.perf_counter() - t)
        assert res.converged, formula
        t = time.perf_counter()
        res.summary()
        res.coef_table  # noqa: B018 (lmerTest's t-tests: Satterthwaite df)
        summaries.append(time.perf_counter() - t)
    total = time.perf_counter() - t0 - sum(summaries)
    print("RESULT_JSON" + json.dumps({"total_s": total, "step_s": times,
                                      "summary_s": summaries}))


def _result(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT_JSON"))
    return json.loads(line[len("RESULT_JSON"):].lstrip(":"))


def run(tree: Path, cache: str) -> dict:
    env = {**os.environ, "GLMM_JAX_CACHE_DIR": cache, "PYTHONPATH": str(tree)}
    return _result(subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"], env=env,
        cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600,
        check=True).stdout)


def run_r(csv: Path) -> dict:
    return _result(subprocess.run(["Rscript", str(HERE / "peers_lmm_session.R"), str(csv)],
                                  capture_output=True, text=True, timeout=600,
                                  check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="root of another tree, run in turn with this one")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-r", action="store_true", help="without lme4")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child()
    runs = []

    def record(r, name, k):
        runs.append(r | {"tree": name, "round": k})
        steps = " ".join(f"{t:.3f}" for t in r["step_s"])
        summaries = " ".join(f"{t:.3f}" for t in r.get("summary_s", []))
        print(f"{name} total {r['total_s']:.2f} s; {steps}; tables {summaries}",
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "hospital.csv"
        if not args.no_r:
            sys.path.insert(0, str(HERE.parent))
            import glmm_jax as gj

            gj.datasets.load("hospital").to_csv(csv, index=False)
        for k in range(args.rounds):
            with tempfile.TemporaryDirectory() as cache:
                record(run(HERE.parent, cache), "this", k)
                record(run(HERE.parent, cache), "this_filled_cache", k)
            if args.base:
                with tempfile.TemporaryDirectory() as cache:
                    record(run(Path(args.base).resolve(), cache), "base", k)
            if not args.no_r:
                record(run_r(csv), "lme4", k)
    save_results("lmm_session", [{"steps": STEPS, "runs": runs}])


if __name__ == "__main__":
    main()
