"""Adapters that fit one benchmark case with one engine and return a result dict.

Every adapter returns a dict with at least ``engine`` and ``status``:

- ``"ok"``: ``time_s``, ``loglik``, ``fixef`` (name -> value) and ``converged`` are set;
- ``"not supported"``, ``"skipped"``: ``note`` says why;
- ``"error"``, ``"timeout"``: ``error`` holds the message.

Adapters never raise for a failed or missing engine: the harness must keep going.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cases import COVARIATES, Case

HERE = Path(__file__).resolve().parent
MARKER = "RESULT_JSON: "
R_PEERS = ("lme4", "glmmTMB")
ALL_PEERS = ("gpboost", *R_PEERS)


def _parse_marked_json(text: str) -> dict | None:
    """The JSON object printed after ``RESULT_JSON: `` on the last such line, if any."""
    lines = [ln for ln in text.splitlines() if ln.startswith(MARKER)]
    return json.loads(lines[-1][len(MARKER):]) if lines else None


def _tail(text: str, n: int = 600) -> str:
    """The last ``n`` characters of ``text``, for error messages."""
    return text.strip()[-n:]


def run_marked(cmd: list[str], timeout: float, engine: str, env: dict | None = None) -> dict:
    """Run ``cmd``, return its ``RESULT_JSON`` dict, or an error/timeout result."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "status": "timeout", "error": f"no result within {timeout:g} s"}
    result = _parse_marked_json(proc.stdout)
    if result is None:
        return {"engine": engine, "status": "error",
                "error": f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"}
    result["engine"] = engine
    result["returncode"] = proc.returncode
    return result


def run_fresh(cmd: list[str], timeout: float, engine: str) -> dict:
    """``run_marked`` in a fresh process with an empty persistent compilation cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GLMM_JAX_CACHE_DIR=cache, GLMM_JAX_CACHE="1")
        return run_marked(cmd, timeout, engine, env)


def save_results(prefix: str, results: list) -> None:
    """Write results/<prefix>_<timestamp>.json and results/<prefix>_latest.json."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    doc = {"timestamp": stamp, "nproc": os.cpu_count(), "results": results}
    for name in (f"{prefix}_{stamp}.json", f"{prefix}_latest.json"):
        (HERE / "results" / name).write_text(json.dumps(doc, indent=1))


# --------------------------------------------------------------------------- glmm_jax

def run_glmm_jax(case: Case, timeout: float, nagq: int = 1) -> dict:
    """Fit ``case`` with glmm_jax in a fresh Python process (see ``run_glmm_jax.py``).

    ``time_s`` is the warm fit; ``cold_s`` (first fit, compilation included, with an
    empty persistent compilation cache), ``peak_rss_mb`` and ``rss_before_fit_mb`` come
    along. A second process then fits again with the cache the first one filled:
    ``cold_cached_s`` is its first fit.
    """
    cmd = [sys.executable, str(HERE / "run_glmm_jax.py"), case.name, "--nagq", str(nagq)]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GLMM_JAX_CACHE_DIR=cache, GLMM_JAX_CACHE="1")
        result = run_marked(cmd, timeout, "glmm_jax", env)
        if "status" in result:
            return result  # timeout, or a crash before a result was printed
        second = run_marked(cmd, timeout, "glmm_jax", env)
        result["cold_cached_s"] = second.get("cold_s")
    if result.get("error"):
        result["status"] = "error"
    else:
        result["status"] = "ok"
        result["time_s"] = result["warm_s"]
    return result


# --------------------------------------------------------------------------- GPBoost

REPEATS = 3  # GPBoost runs per case (its time is their median, like glmm_jax's warm time)


def run_gpboost(case: Case, df) -> dict:
    """Fit ``case`` with GPBoost's Laplace approximation (random intercept only).

    ``time_s`` covers building the ``GPModel`` (grouping structure) and ``fit``, the
    median of ``REPEATS`` runs (``times_s`` lists them); ``fit_s`` is ``fit`` alone in
    the last run. ``loglik`` is minus
    ``get_current_neg_log_likelihood()``, the Laplace-approximated marginal
    log-likelihood at the optimum.
    """
    out: dict = {"engine": "gpboost"}
    if case.slope:
        return {**out, "status": "not supported",
                "note": "GPBoost has no correlated random slopes"}
    try:
        import gpboost as gpb
    except ImportError:
        return {**out, "status": "skipped", "note": "gpboost not installed (pip install gpboost)"}
    import numpy as np

    likelihood = {"binomial": "bernoulli_logit", "poisson": "poisson"}[case.family]
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(np.float64) for c in COVARIATES])
    y = df["y"].to_numpy(np.float64)
    groups = df["hospital"].cat.codes.to_numpy()
    times = []
    try:
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            model = gpb.GPModel(group_data=groups, likelihood=likelihood)
            t1 = time.perf_counter()
            model.fit(y=y, X=X)
            t2 = time.perf_counter()
            times.append(t2 - t0)
    except Exception as exc:  # noqa: BLE001
        return {**out, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    coef = model.get_coef(format_pandas=False)
    cov = model.get_cov_pars(format_pandas=False)
    status = getattr(model, "_get_convergence_status", lambda: None)()
    return {
        **out, "status": "ok", "version": gpb.__version__,
        "time_s": float(np.median(times)), "times_s": times, "fit_s": t2 - t1,
        "loglik": -model.get_current_neg_log_likelihood(),
        "fixef": dict(zip(["(Intercept)", *COVARIATES], map(float, coef), strict=True)),
        "re_var": {"(Intercept)": float(cov[0])},
        "converged": None,  # GPBoost reports no public convergence flag
        "convergence_status": status,
        "n_iter": getattr(model, "_get_num_optim_iter", lambda: None)(),
    }


# --------------------------------------------------------------------------- lme4 / glmmTMB

def rscript() -> str | None:
    """Path of ``Rscript``, or None."""
    return shutil.which("Rscript")


def run_r_peer(peer: str, case: Case, csv_path: Path, timeout: float) -> dict:
    """Fit ``case`` with R's lme4 (``glmer``) or glmmTMB via ``peers.R``.

    ``time_s`` is the R ``system.time`` of the fit call alone (no CSV reading).
    """
    exe = rscript()
    if exe is None:
        return {"engine": peer, "status": "skipped", "note": "Rscript not found"}
    cmd = [exe, "--vanilla", str(HERE / "peers.R"), peer, str(csv_path), case.formula, case.family]
    result = run_marked(cmd, timeout, peer)
    if "status" in result:
        return result
    if result.get("returncode") == 3:
        return {"engine": peer, "status": "skipped", "note": result.get("error")}
    if result.get("error"):
        return {**result, "status": "error"}
    return {**result, "status": "ok"}
