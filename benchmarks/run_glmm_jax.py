"""Time glmm_jax on one benchmark case, in a fresh process.

Usage: ``python benchmarks/run_glmm_jax.py CASE [--nagq 1] [--warm 5]``

Simulates the case's registry, then times a first ``glmm_jax.fit`` (cold:
tracing and XLA compilation included) and a second identical fit (warm). Prints
one line ``RESULT_JSON: {...}`` with the timings, memory, log-likelihood, fixed
effects and convergence flag; a failed import or fit is reported in ``error``
rather than raised, so the harness can carry on with the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback

import numpy as np
from cases import CASES, REPO_ROOT, simulate

MARKER = "RESULT_JSON: "
WARM_REPEATS = 5  # warm fits; warm_s is their median (this machine's timings vary ~20%)


def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MB (None if unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / 1e6
        except ImportError:
            return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def release_free_memory() -> None:
    """Hand memory that malloc holds but no longer uses back to the OS (glibc's
    malloc_trim), so that a fit measured next cannot hide its needs in it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: VmHWM via /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def hwm_rss_mb() -> float | None:
    """Peak RSS since the last reset (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None


def device_peak_mb() -> float | None:
    """Peak accelerator memory in use so far, in MB (None on CPU, which reports none)."""
    try:
        import jax

        stats = jax.devices()[0].memory_stats()
        return stats["peak_bytes_in_use"] / 1e6 if stats else None
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        return None


def jax_info() -> dict:
    """JAX version and default device, or the import error."""
    try:
        import jax

        dev = jax.devices()[0]
        return {"jax_version": jax.__version__, "device": f"{dev.platform}:{dev.device_kind}",
                "n_devices": jax.device_count()}
    except Exception as exc:  # noqa: BLE001
        return {"jax_version": None, "device": None, "jax_error": repr(exc)}


def fit_summary(res) -> dict:
    """The comparable parts of a glmm_jax fit result."""
    out = {"loglik": float(res.loglik),
           "fixef": {str(k): float(v) for k, v in res.fixef.items()},
           "converged": bool(res.converged)}
    varcorr = getattr(res, "varcorr", None)
    if varcorr is not None:
        out["varcorr"] = json.loads(varcorr.to_json(orient="records"))
    return out


def run(case_name: str, nagq: int, warm: int = WARM_REPEATS) -> dict:
    """Simulate the data and time a cold and a warm fit."""
    case = CASES[case_name]
    out: dict = {"case": case_name, "formula": case.formula, "family": case.family, "nagq": nagq}
    df = simulate(case)
    out["data_bytes"] = case.n_rows * case.n_used_columns * 8
    try:
        sys.path.insert(1, str(REPO_ROOT))
        import glmm_jax

        out.update(jax_info())
        out["rss_before_fit_mb"] = current_rss_mb()
        t0 = time.perf_counter()
        glmm_jax.fit(case.formula, df, family=case.family, nagq=nagq)
        out["cold_s"] = time.perf_counter() - t0
        release_free_memory()
        before_warm = current_rss_mb()
        reset = reset_peak_rss()
        t0 = time.perf_counter()
        res = glmm_jax.fit(case.formula, df, family=case.family, nagq=nagq)
        runs = [time.perf_counter() - t0]
        if reset and before_warm is not None:
            # memory the warm fit itself needed on top of what the process already held
            out["warm_fit_peak_increase_mb"] = hwm_rss_mb() - before_warm
        for _ in range(warm - 1):
            t0 = time.perf_counter()
            glmm_jax.fit(case.formula, df, family=case.family, nagq=nagq)
            runs.append(time.perf_counter() - t0)
        out["warm_s"], out["warm_runs_s"] = float(np.median(runs)), runs
        out.update(fit_summary(res))
    except Exception as exc:  # noqa: BLE001 - report, never crash the harness
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=5)
    out["peak_rss_mb"] = peak_rss_mb()
    out["device_peak_mb"] = device_peak_mb()
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--nagq", type=int, default=1)
    parser.add_argument("--warm", type=int, default=WARM_REPEATS, help="warm fits timed")
    args = parser.parse_args(argv)
    print(MARKER + json.dumps(run(args.case, args.nagq, max(1, args.warm))), flush=True)


if __name__ == "__main__":
    main()
