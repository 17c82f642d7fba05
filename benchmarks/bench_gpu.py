"""glmm_jax on an accelerator: core, multi-term and batch cases, with a CPU baseline.

Usage: ``python benchmarks/bench_gpu.py [--budget 420] [--out DIR] [--quick]``

Every item runs in a fresh process with an empty persistent compilation cache, through
the same runners as the CPU benchmarks (``run_glmm_jax.py``, ``bench_multi.py --child``,
``bench_batch.py --case``): *cold* is the first fit, *warm* the median of the further
fits. The plan runs on JAX's default backend (the GPU), then the same core cases on the
host's CPU (``JAX_PLATFORMS=cpu``) in the same run, so that the ratio compares two
engines on one machine. Items start in order until ``--budget`` seconds have passed; one
that fails or times out is recorded and the run goes on. Each log-likelihood is compared
with the latest CPU result of the same case in ``results/`` (``dloglik_vs_cpu``; the
simulated data can differ between NumPy versions) and with the same run's host-CPU fit
(``dloglik_vs_host_cpu``). Writes ``results/gpu_<timestamp>.json`` and
``gpu_latest.json`` (and copies in ``--out``) after every item.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import run_fresh  # noqa: E402

PY = sys.executable
# (section, case, extra arguments); "cpu" items repeat a core case on the host CPU
PLAN = [
    ("core", "logit_ri_100k", []),
    ("core", "logit_slope_200k", []),
    ("core", "poisson_ri_500k", []),
    ("core", "logit_ri_1m", []),
    ("core", "logit_ri_10m", ["--warm", "3"]),
    ("multi", "verbagg_crossed", []),
    ("multi", "insteval_sim", []),
    ("multi", "nested_registry_1m", []),
    ("batch", "cbpp_many", ["--n", "1000"]),
    ("batch", "registry_outcomes", ["--n", "200"]),
    ("cpu", "logit_ri_100k", []),
    ("cpu", "logit_slope_200k", []),
    ("cpu", "logit_ri_1m", []),
    ("cpu", "logit_ri_10m", ["--warm", "1"]),
]
QUICK = [("core", "logit_ri_100k", ["--warm", "2"]), ("multi", "verbagg_crossed", []),
         ("batch", "cbpp_many", ["--n", "50"]), ("cpu", "logit_ri_100k", ["--warm", "2"])]


def command(section: str, case: str, extra: list[str]) -> list[str]:
    if section in ("core", "cpu"):
        return [PY, str(HERE / "run_glmm_jax.py"), case, *extra]
    if section == "multi":
        return [PY, str(HERE / "bench_multi.py"), "--child", case]
    return [PY, str(HERE / "bench_batch.py"), "--case", case, *extra]


def cpu_logliks() -> dict[str, float]:
    """glmm_jax's log-likelihood per case in this repository's CPU results (latest wins)."""
    out: dict[str, float] = {}
    for path in sorted((HERE / "results").glob("core_*.json")):
        if path.name.endswith("latest.json"):
            continue
        for row in json.loads(path.read_text()).get("cases", []):
            r = row.get("results", {}).get("glmm_jax", {})
            if "loglik" in r and str(r.get("device", "cpu")).startswith("cpu"):
                out[row["case"]] = r["loglik"]
    for path in sorted((HERE / "results").glob("multi_*.json")):
        if path.name.endswith("latest.json"):
            continue
        for row in json.loads(path.read_text()).get("results", []):
            if "loglik" in row.get("glmm_jax", {}):
                out[row["case"]] = row["glmm_jax"]["loglik"]
    return out


def machine() -> dict:
    import jax

    info = {"jax_version": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "host_cpus": os.cpu_count()}
    try:
        info["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    return info


def summary_line(section: str, case: str, r: dict) -> str:
    if "status" in r or "error" in r:
        return f"{section:5s} {case:20s} {r.get('status', 'error')}: {r.get('error', '')[:200]}"
    warm = r.get("warm_s", r.get("time_s"))
    mem = r.get("device_peak_mb")
    return (f"{section:5s} {case:20s} cold {r['cold_s']:7.2f} s  warm {warm:8.4f} s  "
            + (f"device peak {mem:8.0f} MB  " if mem else "")
            + (f"dloglik vs CPU {r['dloglik_vs_cpu']:+.2e}" if "dloglik_vs_cpu" in r else ""))


def save(doc: dict, stamp: str, out: str | None) -> None:
    text = json.dumps(doc, indent=1)
    for folder in filter(None, [HERE / "results", out]):
        for name in (f"gpu_{stamp}.json", "gpu_latest.json"):
            Path(folder, name).write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=420.0,
                    help="seconds after which no new item starts (default %(default)s)")
    ap.add_argument("--out", help="folder for a copy of the JSON")
    ap.add_argument("--quick", action="store_true", help="a short plan, to check the script")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    ref = cpu_logliks()
    doc = {"timestamp": stamp, "command": " ".join(sys.argv), "machine": machine(), "items": []}
    print(json.dumps(doc["machine"]), flush=True)
    for section, case, extra in QUICK if args.quick else PLAN:
        left = args.budget - (time.perf_counter() - t_start)
        item = {"section": section, "case": case, "args": extra}
        if left <= 0:
            item["result"] = {"status": "skipped", "error": "--budget spent"}
        else:
            cmd = command(section, case, extra)
            os.environ.pop("JAX_PLATFORMS", None)
            if section == "cpu":
                os.environ["JAX_PLATFORMS"] = "cpu"
            r = run_fresh(cmd, max(left, 60.0), "glmm_jax")
            os.environ.pop("JAX_PLATFORMS", None)
            if "loglik" in r and case in ref:
                r["dloglik_vs_cpu"] = r["loglik"] - ref[case]
            if section == "batch" and "warm_s" in r:
                r["time_s"] = r["warm_s"]
            item["result"] = r
        doc["items"].append(item)
        print(summary_line(section, case, item["result"]), flush=True)
        save(doc, stamp, args.out)
    gpu = {i["case"]: i["result"] for i in doc["items"] if i["section"] == "core"}
    for i in doc["items"]:
        r, g = i["result"], gpu.get(i["case"], {})
        if i["section"] == "cpu" and "warm_s" in r and "warm_s" in g:
            g["dloglik_vs_host_cpu"] = g["loglik"] - r["loglik"]
            print(f"{i['case']}: host CPU warm {r['warm_s']:.3f} s / GPU warm {g['warm_s']:.4f} s"
                  f" = {r['warm_s'] / g['warm_s']:.1f}x; loglik GPU - CPU "
                  f"{g['dloglik_vs_host_cpu']:+.1e}", flush=True)
    save(doc, stamp, args.out)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
