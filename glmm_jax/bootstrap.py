"""Parametric bootstrap (lme4's ``bootMer``): responses simulated from the fit, each
refitted from the estimates by one compiled, vmapped program per batch
(``Model.fit_batches``), and percentile intervals of the replicates."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import varpar
from .errors import ConvergenceWarning, GLMMFitError, GLMMInputError, warn
from .fitresult import make_result
from .simulate import simulate

BATCH_ITER = 12  # refits from the estimates take 4-8 Newton iterations; slower ones go on alone


@dataclass(frozen=True)
class BootstrapResult:
    """Replicates of a statistic: ``replicates`` (one row per converged refit),
    ``estimate`` (the statistic of the fit itself), ``n`` refits of which ``n_failed``
    did not converge (their statuses counted in ``failures``), and the seconds taken."""

    replicates: pd.DataFrame
    estimate: pd.Series
    n: int
    n_failed: int
    failures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals: the (1 -+ level)/2 quantiles of the replicates."""
        if not 0.0 < level < 1.0:
            raise GLMMInputError(f"level must be between 0 and 1, not {level!r}")
        q = self.replicates.quantile([(1 - level) / 2, (1 + level) / 2])
        out = pd.DataFrame({"estimate": self.estimate, "lower": q.iloc[0],
                            "upper": q.iloc[1]})
        out.index.name = "parameter"
        out.attrs.update(n=self.n, n_failed=self.n_failed, failures=dict(self.failures))
        return out

    def __repr__(self) -> str:
        return (f"<BootstrapResult {self.n} refits, {self.n_failed} failed, "
                f"{self.replicates.shape[1]} statistics, {self.seconds:.2f} s>")


def bootstrap(res, n: int = 1000, seed: int = 0, statistic=None,
              random_effects: str = "new", batch_size: int = 128,
              progress: bool | None = None) -> BootstrapResult:
    """Parametric bootstrap of a fit: ``n`` responses simulated by
    :func:`glmm_jax.simulate` (``seed``, ``random_effects``), each refitted.

    ``statistic(result) -> array or Series`` of each refit's GLMMResult; default: the
    parameters of ``conf_int`` (variance components and fixed effects), computed from
    the refits' theta without building results. Refits that do not converge (Newton
    from the estimates, without the L-BFGS fallback of a fit) are counted by status in
    ``failures`` and left out; an error if none converges. ``progress``
    (default: when n > 500) shows a tqdm bar.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> boot = gj.bootstrap(res, n=64, seed=1)
    >>> boot.replicates.shape, boot.n_failed
    ((64, 5), 0)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise GLMMInputError(f"n must be a positive integer, not {n!r}")
    t0 = time.perf_counter()
    model = res.model
    Y = simulate(res, n, seed, random_effects).T
    fast = statistic is None and not res.reml
    if statistic is None:
        names = varpar.names(res)
        estimate = pd.Series(varpar.values(res.theta, res, beta=res.beta), index=names)

        def statistic(r):
            return varpar.values(r.theta, r, beta=r.beta)
    else:
        estimate = _as_series(statistic(res), None)
        names = list(estimate.index)
    bar = _bar(n, progress)
    values, failures = [], Counter()
    for _, one, fitted, run, notes in model.fit_batches(
            Y, start=res.theta, batch_size=min(batch_size, n), progress=bar.update,
            batch_iter=BATCH_ITER, lbfgs=False):
        status = _status(one)
        if status != "converged":
            failures[status] += 1
            continue
        if fast:
            values.append(varpar.values(np.asarray(one.theta), res))
        else:
            m = fitted()
            r = make_result(model.formula, m.frame, m.structure.family, m.structure, one,
                            run, notes, m.clusters, model=m)
            values.append(np.asarray(_as_series(statistic(r), names), dtype=float))
    bar.close()
    if not values:
        raise GLMMFitError(f"bootstrap: none of the {n} refits converged ("
                           + ", ".join(f"{k}: {v}" for k, v in failures.items()) + ")")
    if failures:
        warn(f"bootstrap: {sum(failures.values())} of {n} refits did not converge ("
             + ", ".join(f"{k}: {v}" for k, v in failures.items())
             + "); the intervals use the others", ConvergenceWarning)
    reps = pd.DataFrame(np.asarray(values, dtype=float), columns=names)
    return BootstrapResult(reps, estimate, n, int(sum(failures.values())), dict(failures),
                           time.perf_counter() - t0)


def _status(one) -> str:
    if not (np.all(np.isfinite(one.theta)) and np.isfinite(one.f)):
        return "not_finite"
    if not bool(one.inner_converged):
        return "modes_not_converged"
    if bool(one.converged):
        return "converged"
    return "line_search_failed" if bool(one.line_search_failed) else "iteration_limit"


def _as_series(value, names) -> pd.Series:
    if isinstance(value, pd.Series):
        return value if names is None else value.reindex(names)
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if names is None:
        names = [f"t{k + 1}" for k in range(len(arr))]  # (bootMer's t1, t2, ...)
    if len(arr) != len(names):
        raise GLMMInputError(f"bootstrap: statistic returned {len(arr)} values, "
                             f"{len(names)} for the fit itself")
    return pd.Series(arr, index=names)


def _bar(n: int, progress: bool | None):
    from tqdm.auto import tqdm

    show = n > 500 if progress is None else bool(progress)
    return tqdm(total=n, desc="bootstrap refits", disable=not show, leave=False)
