"""A notebook session of Gaussian refits (the cross-product engine, REML): seven fits on
the shipped ``hospital`` registry, in fresh processes with an empty compilation cache,
for this tree and optionally another (``--base``), in turn.

Usage: ``python benchmarks/bench_lmm_session.py [--base /tmp/base] [--rounds 2]``.
Writes ``results/lmm_session_<timestamp>.json`` (each run's total, counted from before
``import glmm_jax``, and per-fit times).
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
    times = []
    for formula, subset in STEPS:
        d = df if subset is None else (df[df.hospital.cat.codes < 40]
                                       if subset == "codes<40" else df.query(subset))
        t = time.perf_counter()
        res = gj.fit(formula, d, family="gaussian")
        times.append(time.perf_counter() - t)
        assert res.converged, formula
    print("RESULT_JSON" + json.dumps({"total_s": time.perf_counter() - t0,
                                      "step_s": times}))


def run(tree: Path) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GLMM_JAX_CACHE_DIR": cache, "PYTHONPATH": str(tree)}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"],
                             env=env, cwd=tempfile.gettempdir(), capture_output=True,
                             text=True, timeout=600, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT_JSON"))
    return json.loads(line[len("RESULT_JSON"):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="root of another tree, run in turn with this one")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child()
    trees = {"this": HERE.parent} | ({"base": Path(args.base).resolve()} if args.base else {})
    runs = []
    for k in range(args.rounds):
        for name, tree in trees.items():
            r = run(tree) | {"tree": name, "round": k}
            steps = " ".join(f"{t:.3f}" for t in r["step_s"])
            print(f"{name} total {r['total_s']:.2f} s; {steps}", flush=True)
            runs.append(r)
    save_results("lmm_session", [{"steps": STEPS, "runs": runs}])


if __name__ == "__main__":
    main()
