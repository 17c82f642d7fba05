"""This tree against another commit, in one run: the same glmm_jax cases, interleaved.

Usage::

    git worktree add /tmp/base <commit>          # the commit to compare with
    python benchmarks/bench_ab.py --base /tmp/base [--core a,b] [--multi a,b] \
        [--batch cbpp_many:1000,registry_outcomes:50] [--rounds 2]

Each round runs every case once with each tree (base first, then this tree, so drifts of
this VM's speed hit both), each in a fresh process with an empty persistent compilation
cache, through that tree's own ``benchmarks/run_glmm_jax.py`` (core cases) and
``benchmarks/bench_multi.py --child`` (several-terms cases) and ``bench_batch.py --case``
(fit_many cases). Writes
``results/ab_<timestamp>.json`` with every run and, per case, the medians and the ratios
this tree / base of the cold and warm times and of the warm fit's memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import run_fresh, save_results  # noqa: E402


def run(tree: Path, kind: str, case: str) -> dict:
    bench = tree / "benchmarks"
    if kind == "core":
        cmd = [sys.executable, str(bench / "run_glmm_jax.py"), case]
    elif kind == "batch":  # "cbpp_many:1000", "registry_outcomes:50"
        name, n = case.split(":")
        cmd = [sys.executable, str(bench / "bench_batch.py"), "--case", name, "--n", n]
    else:
        cmd = [sys.executable, str(bench / "bench_multi.py"), "--child", case]
    return run_fresh(cmd, 1800, "glmm_jax")


def summarize(runs: list[dict]) -> dict:
    def med(key):
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    return {"cold_s": med("cold_s"), "warm_s": med("warm_s") or med("time_s"),
            "warm_fit_mb": med("warm_fit_peak_increase_mb"), "loglik": med("loglik")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="root of the tree to compare with")
    ap.add_argument("--core", default="logit_ri_100k,logit_slope_200k")
    ap.add_argument("--multi", default="verbagg_crossed,grouseticks_olre,insteval_sim")
    ap.add_argument("--batch", default="", help="fit_many cases, e.g. cbpp_many:1000")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    trees = {"base": Path(args.base).resolve(), "this": HERE.parent}
    cases = [("core", c) for c in args.core.split(",") if c] + \
        [("multi", c) for c in args.multi.split(",") if c] + \
        [("batch", c) for c in args.batch.split(",") if c]
    runs = {(k, c, t): [] for k, c in cases for t in trees}
    for _ in range(args.rounds):
        for kind, case in cases:
            for name, tree in trees.items():
                r = run(tree, kind, case)
                r.setdefault("time_s", r.get("warm_s"))
                runs[(kind, case, name)].append(r)
                print(f"{case:18s} {name:4s} cold {r.get('cold_s') or float('nan'):7.2f} s  "
                      f"warm {r.get('time_s') or float('nan'):7.3f} s  "
                      f"{r.get('status', '')}", flush=True)
    out = []
    for kind, case in cases:
        base, this = (summarize(runs[(kind, case, t)]) for t in ("base", "this"))
        ratio = {k: this[k] / base[k] for k in ("cold_s", "warm_s", "warm_fit_mb")
                 if this[k] and base[k]}
        out.append({"kind": kind, "case": case, "base": base, "this": this,
                    "ratio_this_over_base": ratio, "base_tree": str(trees["base"]),
                    "runs": {t: runs[(kind, case, t)] for t in trees}})
        print(case, {k: round(v, 3) for k, v in ratio.items()},
              "dloglik", None if None in (this["loglik"], base["loglik"])
              else this["loglik"] - base["loglik"])
    save_results("ab", out)


if __name__ == "__main__":
    main()
