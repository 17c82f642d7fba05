"""The ``glmm-jax`` command line: fit a model to a data file, predict from a saved fit,
list or demo the shipped datasets.

Exit codes: 0 success; 1 a fit that failed or did not converge (unless
``--allow-nonconverged``); 2 bad input (one ``glmm-jax: error:`` line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets
from .errors import GLMMFitError, GLMMInputError
from .families import FAMILIES, LINKS

DEMOS = [
    ("cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial"),
    ("hospital", "y ~ age + sex + comorb + teaching + (1 | hospital)", "binomial"),
]
READERS = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
           ".tab": lambda p: pd.read_csv(p, sep="\t"), ".parquet": pd.read_parquet,
           ".pq": pd.read_parquet}
EPILOG = """examples:
  glmm-jax fit "cbind(incidence, size - incidence) ~ period + (1 | herd)" cbpp
  glmm-jax fit "y ~ YEAR + (1 | BROOD)" ticks.csv --family poisson --factor YEAR
  glmm-jax fit "y ~ x + (1 | g)" data.parquet --format json --out fit.glmm
  glmm-jax predict fit.glmm new.csv --type response
"""


class InputError(Exception):
    """Bad command-line input (exit code 2)."""


def read_data(source: str, factors=()) -> pd.DataFrame:
    """A DataFrame from a CSV/TSV/Parquet file or a shipped dataset's name, with the
    ``factors`` columns read as categorical."""
    path = Path(source)
    if not path.exists() and source.lower() in datasets.names():
        df = datasets.load(source)
    else:
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise InputError(f"{source}: unknown file type {path.suffix!r} (expected "
                             f"{', '.join(READERS)}, or a shipped dataset: "
                             f"{', '.join(datasets.names())})")
        if not path.is_file():
            raise InputError(f"{source}: no such file")
        try:
            df = reader(path)
        except ImportError as exc:
            raise InputError(f"{source}: reading {path.suffix} needs {exc.name or exc}: "
                             "pip install pyarrow") from None
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
            raise InputError(f"{source}: cannot read it ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [c for c in factors if c not in df.columns]
    if missing:
        raise InputError(f"--factor {missing[0]!r}: no such column in {source} (columns: "
                         f"{', '.join(map(str, df.columns[:20]))})")
    return df.assign(**{c: _factor(df[c]) for c in factors})


def _factor(col: pd.Series) -> pd.Categorical:
    """A column as R's factor(): levels sorted by value (numbers as numbers), named as
    text (8 and 10 give levels "8", "10", in that order)."""
    cat = pd.Categorical(col)
    labels = [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
              for v in cat.categories]
    return cat.rename_categories(labels)


class Progress:
    """A line on stderr while a long job runs (after ``delay`` seconds), updated each
    second on a terminal; cleared when done."""

    def __init__(self, what: str, delay: float = 1.0):
        self.what, self.delay, self.t0 = what, delay, time.perf_counter()
        self._done, self._shown = threading.Event(), False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        tty = sys.stderr.isatty()
        if self._done.wait(self.delay):
            return
        while True:
            msg = f"glmm-jax: {self.what} ... {time.perf_counter() - self.t0:.0f} s"
            sys.stderr.write(("\r" + msg) if tty else msg + "\n")
            sys.stderr.flush()
            self._shown = True
            if not tty or self._done.wait(1.0):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        if self._shown and sys.stderr.isatty():
            sys.stderr.write("\n")


def _table(res) -> pd.DataFrame:
    return res.coef_table.rename_axis("term").reset_index()


def _json(res) -> dict:
    """The fit as JSON values (NaN and Inf become null in :func:`_finite_or_null`)."""
    table, vc = _table(res), res.varcorr
    return {"formula": res.formula, "family": res.family.name, "link": res.family.link,
            "nobs": res.nobs, "loglik": res.loglik, "aic": res.aic, "bic": res.bic,
            "converged": bool(res.converged), "singular": bool(res.singular),
            "reml": bool(res.reml), "coefficients": table.to_dict(orient="records"),
            "variance_components": vc.to_dict(orient="records"),
            "messages": list(res.messages)}


def _finite_or_null(v):
    """JSON has no NaN or Infinity: they become null."""
    if isinstance(v, dict):
        return {k: _finite_or_null(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_null(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _fit(args) -> int:
    from .api import fit

    df = read_data(args.data, args.factor)
    with Progress(f"fitting {len(df)} rows (the first fit of a model compiles it)"):
        res = fit(args.formula, df, family=args.family, link=args.link, nagq=args.nagq,
                  reml=args.reml, weights=args.weights, max_iter=args.max_iter)
    if args.format == "json":
        print(json.dumps(_finite_or_null(_json(res)), indent=1, allow_nan=False))
    elif args.format == "csv":
        print(_table(res).to_csv(index=False), end="")
    else:
        print(res.summary())
    if args.out:
        res.save(args.out)
        print(f"glmm-jax: saved the fit to {args.out}", file=sys.stderr)
    if not res.converged and not args.allow_nonconverged:
        print(f"glmm-jax: the fit did not converge ({res.convergence.message})",
              file=sys.stderr)
        return 1
    return 0


def _predict(args) -> int:
    from .persist import load

    res = load(args.fit)
    df = read_data(args.data, args.factor)
    pred = res.predict(df, type=args.type, random_effects=not args.no_random_effects,
                       allow_new_levels=args.allow_new_levels)
    print(pred.to_frame("fit").to_csv(index_label="row"), end="")
    return 0


def _demo(args) -> int:
    from .api import fit

    for name, formula, family in DEMOS:
        df = datasets.load(name)
        t0 = time.perf_counter()
        res = fit(formula, df, family=family)
        print(f"=== {name} ({len(df)} rows) ===")
        print(res.summary())
        print(f"[fitted in {time.perf_counter() - t0:.2f} s]\n")
    return 0


def _datasets(args) -> int:
    for name in datasets.names():
        df = datasets.load(name)
        print(f"{name:12s} {len(df):6d} rows  {', '.join(map(str, df.columns))}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="glmm-jax", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generalized linear mixed models (lme4 formulas) in JAX.\n\n"
                    "Exit codes: 0 success, 1 a fit that failed or did not converge, "
                    "2 bad input.", epilog=EPILOG)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", help="fit the shipped example datasets and print summaries")
    sub.add_parser("datasets", help="list the shipped datasets")
    p = sub.add_parser("fit", help="fit a model to a data file (or a shipped dataset)")
    p.add_argument("formula", help='lme4 formula, e.g. "y ~ x + (1 | g)"')
    p.add_argument("data", help="a .csv, .tsv or .parquet file, or a shipped dataset's "
                                "name (see `glmm-jax datasets`)")
    p.add_argument("--family", default="binomial", choices=sorted(FAMILIES),
                   help="response family (default: binomial)")
    p.add_argument("--link", default=None, choices=sorted(LINKS),
                   help="link function (default: the family's: logit for binomial, "
                        "log for poisson, gamma and negative_binomial, identity for "
                        "gaussian)")
    p.add_argument("--nagq", type=int, default=1,
                   help="1: Laplace approximation; more: adaptive Gauss-Hermite "
                        "quadrature nodes per random-effect dimension (default: 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reml", dest="reml", action="store_true", default=None,
                   help="restricted maximum likelihood (gaussian; the default for "
                        "gaussian mixed models, as lmer)")
    g.add_argument("--ml", dest="reml", action="store_false",
                   help="maximum likelihood (the default for other families)")
    p.add_argument("--weights", metavar="COL", default=None,
                   help="column of prior weights (binomial: the number of trials)")
    p.add_argument("--factor", metavar="COL", action="append", default=[],
                   help="read column COL as categorical (repeatable); numeric-looking "
                        "columns such as YEAR are otherwise numbers, as in R")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text",
                   help="text: lme4's summary; json: loglik, AIC, BIC, converged, "
                        "coefficients, variance components, messages; csv: the "
                        "coefficient table (default: text)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="save the fit (JSON + npz in a zip; read it with glmm_jax.load)")
    p.add_argument("--max-iter", type=int, default=100,
                   help="maximum Newton iterations (default: 100)")
    p.add_argument("--allow-nonconverged", action="store_true",
                   help="exit 0 even when the fit did not converge")
    q = sub.add_parser("predict", help="predict from a saved fit (--out) for a data file")
    q.add_argument("fit", help="a fit saved by `glmm-jax fit --out` or GLMMResult.save")
    q.add_argument("data", help="a .csv, .tsv or .parquet file with the model's columns")
    q.add_argument("--type", choices=("link", "response"), default="link",
                   help="scale of the predictions (default: link)")
    q.add_argument("--no-random-effects", action="store_true",
                   help="predict at b = 0 (lme4's re.form = NA)")
    q.add_argument("--allow-new-levels", action="store_true",
                   help="predict unseen grouping levels at b = 0")
    q.add_argument("--factor", metavar="COL", action="append", default=[],
                   help="read column COL as categorical (as when fitting)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = {"fit": _fit, "predict": _predict, "demo": _demo, "datasets": _datasets}
    try:
        return run[args.command](args)
    except (GLMMInputError, InputError) as exc:
        print(f"glmm-jax: error: {exc}", file=sys.stderr)
        return 2
    except GLMMFitError as exc:
        print(f"glmm-jax: the fit failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
