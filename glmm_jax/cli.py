"""The ``glmm-jax`` command: ``demo`` fits shipped examples, ``fit`` fits a CSV file."""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from . import datasets
from .api import fit
from .errors import GLMMInputError

DEMOS = [
    ("cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial"),
    ("hospital", "y ~ age + sex + comorb + teaching + (1 | hospital)", "binomial"),
]


def _fit_and_print(formula, df, family, link=None, nagq=1, label=None):
    t0 = time.perf_counter()
    res = fit(formula, df, family=family, link=link, nagq=nagq)
    took = time.perf_counter() - t0
    if label:
        print(f"=== {label} ({len(df)} rows) ===")
    print(res.summary())
    print(f"[fitted in {took:.2f} s]\n")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmm-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="fit the shipped example datasets and print summaries")
    p_fit = sub.add_parser("fit", help="fit a model to a CSV file (or a shipped dataset)")
    p_fit.add_argument("formula", help='lme4-style formula, e.g. "y ~ x + (1 | g)"')
    p_fit.add_argument("data", help="path to a CSV file, or the name of a shipped dataset")
    p_fit.add_argument("--family", default="binomial")
    p_fit.add_argument("--link", default=None)
    p_fit.add_argument("--nagq", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            for name, formula, family in DEMOS:
                _fit_and_print(formula, datasets.load(name), family, label=name)
        else:
            if args.data.lower() in datasets.names():
                df = datasets.load(args.data)
            else:
                df = pd.read_csv(args.data)
            _fit_and_print(args.formula, df, args.family, args.link, args.nagq)
    except GLMMInputError as e:
        print(f"glmm-jax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
