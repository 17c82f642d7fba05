"""Time glmm_jax side by side with GPBoost, lme4 and glmmTMB on synthetic registries.

Examples::

    python benchmarks/bench_core.py
    python benchmarks/bench_core.py --cases logit_ri_100k,logit_slope_200k \
        --peers gpboost,lme4,glmmTMB --timeout 300
    python benchmarks/bench_core.py --cases poisson_ri_500k,logit_ri_1m --skip-slow

For each case, the registry is simulated once (fixed seed); glmm_jax runs in a
fresh subprocess (cold and warm fit), GPBoost in this process, lme4 and glmmTMB
through ``Rscript benchmarks/peers.R`` on a temporary CSV of the same data.
Results go to ``benchmarks/results/core_<timestamp>.json`` and
``core_latest.json``, a table to stdout and to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from cases import CASES, DEFAULT_CASES, Case, simulate
from peers import ALL_PEERS, R_PEERS, rscript, run_glmm_jax, run_gpboost, run_r_peer

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- core-start -->", "<!-- core-end -->"
SHORT_STATUS = {"not supported": "n/s", "skipped": "skip", "timeout": "timeout", "error": "error"}


# --------------------------------------------------------------------------- running

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated, from {', '.join(CASES)} (default: %(default)s)")
    p.add_argument("--peers", default=",".join(ALL_PEERS),
                   help="comma-separated peers to run (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds allowed to each subprocess (glmm_jax, lme4, glmmTMB) per case")
    p.add_argument("--skip-slow", action="store_true",
                   help="skip the peers a case marks slow (e.g. lme4 on the random-slope case)")
    p.add_argument("--nagq", type=int, default=1,
                   help="quadrature points for glmm_jax (1 = Laplace)")
    p.add_argument("--no-glmm-jax", action="store_true", help="run the peers only")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    args = p.parse_args(argv)
    args.cases = _split(args.cases, CASES)
    args.peers = _split(args.peers, ALL_PEERS)
    return args


def _split(text: str, allowed) -> list[str]:
    """Split a comma-separated option and check each item against ``allowed``."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad:
        raise SystemExit(f"unknown: {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def run_case(case: Case, args: argparse.Namespace) -> dict:
    """Simulate one case and fit it with glmm_jax and every requested peer."""
    print(f"\n== {case.name}: {case.n_rows:,} rows, {case.n_hospitals:,} hospitals, "
          f"{case.family}, {case.formula}", flush=True)
    results: dict[str, dict] = {}
    if not args.no_glmm_jax:
        results["glmm_jax"] = _announce(run_glmm_jax(case, args.timeout, args.nagq))
    df = simulate(case)
    if "gpboost" in args.peers:
        results["gpboost"] = _announce(run_gpboost(case, df))
    r_peers = [p for p in args.peers if p in R_PEERS]
    if r_peers:
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / f"{case.name}.csv"
            if rscript() is not None:
                df.to_csv(csv_path, index=False)
            for peer in r_peers:
                if args.skip_slow and peer in case.slow_peers:
                    res = {"engine": peer, "status": "skipped", "note": "slow (--skip-slow)"}
                else:
                    res = run_r_peer(peer, case, csv_path, args.timeout)
                results[peer] = _announce(res)
    return {"case": case.name, "n_rows": case.n_rows, "n_hospitals": case.n_hospitals,
            "family": case.family, "formula": case.formula, "results": results}


def _announce(res: dict) -> dict:
    """Print a one-line progress note for a result and return it unchanged."""
    if res["status"] == "ok":
        extra = f" (cold {res['cold_s']:.2f} s)" if "cold_s" in res else ""
        print(f"  {res['engine']:<9} {res['time_s']:8.2f} s{extra}  "
              f"loglik {res['loglik']:.3f}  converged {res.get('converged')}", flush=True)
    else:
        why = res.get("note") or res.get("error", "")
        print(f"  {res['engine']:<9} {res['status']}: {why}", flush=True)
    return res


# --------------------------------------------------------------------------- machine

def machine_info(case_results: list[dict]) -> dict:
    """CPU, memory, library versions and the device glmm_jax ran on."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "nproc": os.cpu_count(), "cpu_model": _cpu_model(), "mem_gb": _mem_gb()}
    for name in ("jax", "jaxlib", "gpboost", "numpy", "pandas"):
        try:
            info[f"{name}_version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[f"{name}_version"] = None
    info["device"] = None
    for cr in case_results:
        gj = cr["results"].get("glmm_jax", {})
        if gj.get("device"):
            info["device"] = gj["device"]
            break
    info["r_version"] = _r_version()
    info["loadavg_end"] = _loadavg()
    return info


def _loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str | None:
    """The 'model name' line of /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_gb() -> float | None:
    """Total memory in GB, from /proc/meminfo."""
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        return round(int(first.split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return None


def _r_version() -> str | None:
    """``R --version`` first line, if R is installed."""
    if rscript() is None:
        return None
    out = subprocess.run([rscript(), "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else None


# --------------------------------------------------------------------------- summary

def summarize(cr: dict, peers: list[str]) -> dict:
    """Table row of one case: glmm_jax timings, peer times and ratios, loglik gap."""
    res = cr["results"]
    gj = res.get("glmm_jax", {})
    ok = gj.get("status") == "ok"
    row = {"case": cr["case"],
           "cold_s": gj.get("cold_s") if ok else None,
           "warm_s": gj.get("warm_s") if ok else None,
           "cold_cached_s": gj.get("cold_cached_s") if ok else None,
           "peak_rss_mb": gj.get("peak_rss_mb") if ok else None,
           "fit_mem_mb": (gj["peak_rss_mb"] - gj["rss_before_fit_mb"]
                          if ok and gj.get("rss_before_fit_mb") else None),
           "data_mb": gj.get("data_bytes", 0) / 1e6 if ok else None,
           "warm_mem_mb": gj.get("warm_fit_peak_increase_mb") if ok else None,
           "glmm_jax_status": gj.get("status", "not run")}
    for peer in peers:
        pr = res.get(peer, {})
        t = pr.get("time_s") if pr.get("status") == "ok" else None
        row[f"{peer}_s"] = t
        row[f"{peer}_status"] = pr.get("status", "not run")
        row[f"{peer}_ratio"] = t / row["warm_s"] if t is not None and row["warm_s"] else None
    peer_ll = {p: res[p]["loglik"] for p in peers if res.get(p, {}).get("status") == "ok"}
    row["best_peer"] = max(peer_ll, key=peer_ll.get) if peer_ll else None
    row["dloglik"] = (gj["loglik"] - peer_ll[row["best_peer"]]
                      if ok and row["best_peer"] else None)
    return row


def _num(x: float | None, fmt: str) -> str:
    """Format a number, or a dash for None."""
    return "–" if x is None else format(x, fmt)


def markdown_table(rows: list[dict], peers: list[str]) -> str:
    """The main timing table."""
    head = ["case", "glmm_jax cold s", "cold, cached s", "glmm_jax warm s",
            "peak RSS MB (+fit / data)", "warm fit MB",
            *[f"{p} s (× warm)" for p in peers], "Δ loglik vs best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        warm = _num(r["warm_s"], ".2f") if r["warm_s"] is not None else r["glmm_jax_status"]
        mem = _num(r["peak_rss_mb"], ".0f")
        if r["fit_mem_mb"] is not None:
            mem += f" (+{r['fit_mem_mb']:.0f} / {r['data_mb']:.1f})"
        cells = [r["case"], _num(r["cold_s"], ".2f"), _num(r["cold_cached_s"], ".2f"), warm, mem,
                 _num(r["warm_mem_mb"], ".0f")]
        for p in peers:
            if r[f"{p}_s"] is None:
                cells.append(SHORT_STATUS.get(r[f"{p}_status"], r[f"{p}_status"]))
            else:
                ratio = r[f"{p}_ratio"]
                cells.append(f"{r[f'{p}_s']:.2f}" + (f" ({ratio:.1f}×)" if ratio else ""))
        gap = "–" if r["dloglik"] is None else f"{r['dloglik']:+.4f} ({r['best_peer']})"
        cells.append(gap)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loglik_table(case_results: list[dict], engines: list[str]) -> str:
    """Log-likelihood of every engine per case (blank where it did not fit)."""
    lines = ["| case | " + " | ".join(engines) + " |", "|" + "---|" * (len(engines) + 1)]
    for cr in case_results:
        cells = []
        for e in engines:
            r = cr["results"].get(e, {})
            if r.get("status") == "ok":
                flag = "" if r.get("converged") in (True, None) else " (not converged)"
                cells.append(f"{r['loglik']:.3f}{flag}")
            else:
                cells.append(SHORT_STATUS.get(r.get("status"), r.get("status", "–")))
        lines.append(f"| {cr['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(case_results: list[dict]) -> list[str]:
    """One line per engine that did not produce a fit, with the reason."""
    out = []
    for cr in case_results:
        for e, r in cr["results"].items():
            if r["status"] != "ok":
                why = (r.get("note") or r.get("error") or "").splitlines()
                out.append(f"- {cr['case']} / {e}: {r['status']}" + (f" — {why[0]}" if why else ""))
    return out


def report(payload: dict) -> str:
    """Markdown report: header, timing table, loglik table, notes."""
    m = payload["machine"]
    peers = payload["peers"]
    engines = (["glmm_jax"] if not payload["no_glmm_jax"] else []) + peers
    text = [
        f"Run {payload['timestamp']} — `{payload['command']}`",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gb']} GB; "
        f"glmm_jax device {m['device']}, jax {m['jax_version']}, gpboost {m['gpboost_version']}, "
        f"{m['r_version'] or 'R not installed'}; load average {m['loadavg_start']} at start, "
        f"{m['loadavg_end']} at end.",
        "",
        markdown_table(payload["rows"], peers),
        "",
        "Log-likelihood at the optimum (Laplace):",
        "",
        loglik_table(payload["cases"], engines),
    ]
    nts = notes(payload["cases"])
    if nts:
        text += ["", "Not fitted:", "", *nts]
    return "\n".join(text)


# --------------------------------------------------------------------------- output

def write_json(payload: dict) -> Path:
    """Save the results as ``core_<timestamp>.json`` and ``core_latest.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"core_{payload['timestamp']}.json"
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text)
    (RESULTS_DIR / "core_latest.json").write_text(text)
    return path


def update_readme(section: str, readme: Path = README) -> None:
    """Replace the text between the core markers of ``readme`` (appending them if absent)."""
    block = f"{START}\n{section}\n{END}"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> dict:
    """Run the selected cases and write all outputs."""
    cli = sys.argv[1:] if argv is None else argv
    args = parse_args(cli)
    if any(p in R_PEERS for p in args.peers) and rscript() is None:
        print("note: Rscript not found; lme4 and glmmTMB will be skipped", flush=True)
    load_start = _loadavg()
    if load_start and load_start[0] > 0.5:
        print(f"note: load average {load_start[0]} before the run; timings may be skewed",
              flush=True)
    case_results = [run_case(CASES[name], args) for name in args.cases]
    payload = {
        "timestamp": time.strftime("%Y%m%dT%H%M%S"),
        "command": " ".join(["python", "benchmarks/bench_core.py", *cli]),
        "peers": args.peers, "no_glmm_jax": args.no_glmm_jax,
        "timeout_s": args.timeout, "skip_slow": args.skip_slow, "nagq": args.nagq,
        "machine": {**machine_info(case_results), "loadavg_start": load_start},
        "cases": case_results,
    }
    payload["rows"] = [summarize(cr, args.peers) for cr in case_results]
    section = report(payload)
    print("\n" + section)
    path = write_json(payload)
    print(f"\nwrote {path.relative_to(HERE.parent)} and core_latest.json")
    if not args.no_readme:
        update_readme(section)
        print(f"updated {README.relative_to(HERE.parent)}")
    return payload


if __name__ == "__main__":
    main()
