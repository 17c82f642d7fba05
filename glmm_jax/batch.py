"""``fit_many``: one model structure fitted to many datasets in one compiled, vmapped program.

The datasets (groups of a ``by`` column, or a list of DataFrames) are validated and laid
out together, padded to a common number of chunks and clusters (padding has zero weight
and contributes exactly nothing), stacked on a leading batch axis and fitted by the
vmapped Newton solver. A dataset that cannot be fitted (bad data, one cluster, aliased
columns) is reported with its reason; it does not stop or change the others.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import ModelFrame, aliased_columns, build_frame, subset_frame
from .errors import ConvergenceWarning, DataWarning, GLMMInputError, SingularFitWarning, warn
from .families import Family, get_family
from .fitresult import Run, make_result
from .formula import parse_formula
from .laplace import Structure, chunk_size, make_layout
from .layout import MAX_QUADRATURE_NODES, frame_arrays
from .model import continue_with_lbfgs, fit_model, model_from_frame
from .optimize import newton_fit_many
from .results import GLMMResult
from .start import start_values

MEMORY_BUDGET = 2e9  # bytes of working memory one vmapped batch may use (rough model)
ACCELERATOR_MEMORY_SHARE = 0.25  # on a GPU: this share of its memory, if more
MIN_BATCH = 4  # datasets so large that fewer fit in one batch are fitted one by one


def memory_budget(device) -> float:
    """Working memory one vmapped batch may use on ``device``, in bytes."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return max(MEMORY_BUDGET, ACCELERATOR_MEMORY_SHARE * stats["bytes_limit"])
    return MEMORY_BUDGET


@dataclass(frozen=True)
class ManyResult:
    """Fits of one formula to many datasets.

    ``results[key]`` is the GLMMResult of dataset ``key`` (None where it failed, with the
    reason in ``errors[key]``); ``table`` (one row per dataset and coefficient),
    ``summary`` (one row per dataset) and ``varcorr``: see :func:`fit_many`'s example.
    """

    formula: str
    keys: tuple
    results: dict
    errors: dict

    def __repr__(self) -> str:
        ok = [r for r in self.results.values() if r is not None]
        conv = sum(bool(r.converged) for r in ok)
        return (f"<ManyResult {self.formula!r}: {len(self.keys)} datasets, {conv} converged"
                f", {len(ok) - conv} not converged, {len(self.errors)} failed>")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per dataset: loglik, AIC, convergence, singularity, error."""
        rows = []
        for k in self.keys:
            r = self.results.get(k)
            rows.append({
                "dataset": k, "nobs": r.nobs if r else np.nan,
                "loglik": r.loglik if r else np.nan, "aic": r.aic if r else np.nan,
                "converged": r.converged if r else False, "n_iter": r.n_iter if r else 0,
                "singular": r.singular if r else False, "error": self.errors.get(k, ""),
            })
        return pd.DataFrame(rows).set_index("dataset")

    @property
    def table(self) -> pd.DataFrame:
        """Tidy fixed effects: dataset, term, estimate, se, z, p (fitted datasets only;
        Wald z also for Gaussian fits, whose own ``coef_table`` has Satterthwaite df)."""
        parts = []
        for k in self.keys:
            r = self.results.get(k)
            if r is not None:
                ct = r.wald_table.rename_axis("term").reset_index()
                ct.insert(0, "dataset", [k] * len(ct))
                parts.append(ct)
        cols = ["dataset", "term", "estimate", "se", "z", "p"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components of every fitted dataset, with a ``dataset`` column."""
        parts = [r.varcorr.assign(dataset=k) for k, r in self.results.items() if r is not None]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _split(data, by):
    if isinstance(data, pd.DataFrame):
        if by is None:
            raise GLMMInputError("fit_many needs by= (a column) when data is one DataFrame")
        if by not in data.columns:
            raise GLMMInputError(f"by column {by!r} is not in the data")
        keys = list(pd.unique(data[by]))
        try:
            keys = sorted(keys)
        except TypeError:
            pass
        if not data.index.is_unique:  # (e.g. concatenated frames): rows by position
            data = data.reset_index(drop=True)
        return keys, data, data[by].to_numpy()
    frames = list(data.items()) if isinstance(data, dict) else list(enumerate(data))
    if not frames:
        raise GLMMInputError("fit_many got no datasets")
    for k, df in frames:
        if not isinstance(df, pd.DataFrame):
            raise GLMMInputError(f"dataset {k!r} is a {type(df).__name__}, not a DataFrame")
    keys = [k for k, _ in frames]
    labels = np.concatenate([np.full(len(df), i) for i, (_, df) in enumerate(frames)])
    combined = pd.concat([df for _, df in frames], ignore_index=True)
    return keys, combined, np.asarray(keys, dtype=object)[labels]


def _dataset_frames(spec, combined, labels, keys, fam):
    """Validated frames per dataset: built together, or one by one if that fails."""
    frames, errors = {}, {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = build_frame(spec, combined, fam)
        row_labels = labels[combined.index.get_indexer(frame.row_index)]
        for k, rows in pd.Series(np.arange(len(row_labels))).groupby(row_labels).indices.items():
            frames[k] = subset_frame(frame, rows)
    except GLMMInputError:
        for k in keys:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    frames[k] = build_frame(spec, combined[labels == k], fam)
            except GLMMInputError as e:
                errors[k] = str(e)
    return frames, errors


def _check_dataset(frame: ModelFrame, x_names) -> str | None:
    g = frame.groups[0]
    if frame.x_names != x_names:
        return f"fixed-effect columns differ from the other datasets: {frame.x_names}"
    if len(g.levels) < 2:
        return f"grouping factor {g.name!r} has {len(g.levels)} level; need at least 2"
    bad = aliased_columns(frame.X) | ~np.any(frame.X, axis=0)
    if bad.any():
        return "fixed-effect design is rank deficient in this dataset (aliased or all-zero " \
            "columns: " + ", ".join(n for n, b in zip(x_names, bad, strict=True) if b) + ")"
    return None


def fit_many(
    formula: str,
    data,
    by: str | None = None,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    *,
    max_iter: int = 100,
    batch_size: int | None = None,
    progress: bool | None = None,
    reml: bool | None = None,
) -> ManyResult:
    """Fit one model to many datasets in one compiled program.

    Args:
      formula, family, link, nagq, max_iter: as in :func:`glmm_jax.fit`.
      data: one DataFrame split by the ``by`` column, or a list/dict of DataFrames.
      batch_size: datasets per vmapped batch (default: as many as fit a memory budget;
        when fewer than ``MIN_BATCH`` large datasets fit, they are fitted one by one with
        :func:`glmm_jax.fit`'s engine, which is then faster).
      progress: show a tqdm progress bar over batches (default: when several batches).
      reml: Gaussian models are fitted by ML here: pass ``reml=False`` (REML batches are
        not available yet).

    Returns:
      A :class:`ManyResult`. Each dataset's estimates equal those of a separate
      :func:`glmm_jax.fit`; failures are reported per dataset in ``errors`` and
      ``summary``, and one warning summarizes non-converged or singular fits.

    >>> import glmm_jax as gj
    >>> cbpp = gj.datasets.load("cbpp")
    >>> mr = gj.fit_many("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                  {"all": cbpp, "first 40": cbpp.iloc[:40]})
    >>> mr
    <ManyResult 'cbind(incidence, size - incidence) ~ period + (1 | herd)': 2 datasets, \
2 converged, 0 not converged, 0 failed>
    >>> round(mr.results["all"].loglik, 3)
    -92.026
    """
    fam = get_family(family, link)
    if fam.name == "gaussian" and reml is not False:
        raise GLMMInputError("fit_many fits Gaussian models by maximum likelihood only: "
                             "pass reml=False (or use fit() for REML)")
    if reml and fam.name != "gaussian":
        raise GLMMInputError(f"reml=True is available for the gaussian family, not {fam.name!r}")
    spec = parse_formula(formula)
    if len(spec.random) != 1 or spec.random[0].group.count("/") or not spec.random[0].correlated:
        raise GLMMInputError("fit_many fits models with one random term (no a/b nesting or ||)")
    keys, combined, labels = _split(data, by)
    frames, errors = _dataset_frames(spec, combined, labels, keys, fam)
    good = [k for k in keys if k in frames]
    if good:
        x_names = frames[good[0]].x_names
        for k in good:
            why = _check_dataset(frames[k], x_names)
            if why:
                errors[k] = why
        good = [k for k in good if k not in errors]
    results = {k: None for k in keys}
    if good:
        results.update(_fit_batches(spec.formula, [frames[k] for k in good], good, fam,
                                    int(nagq), max_iter, batch_size, progress))
    _warn(spec.formula, results, errors)
    return ManyResult(spec.formula, tuple(keys), results, errors)


def _fit_batches(formula, frames, keys, fam, nagq, max_iter, batch_size, progress):
    q = frames[0].groups[0].Z.shape[1]
    if nagq**q > MAX_QUADRATURE_NODES:
        raise GLMMInputError(f"nagq**q = {nagq**q} exceeds {MAX_QUADRATURE_NODES} nodes")
    counts = np.concatenate([np.bincount(f.groups[0].codes) for f in frames])
    C = chunk_size(counts)
    layouts = [make_layout(f.groups[0].codes, len(f.groups[0].levels), C) for f in frames]
    M = max(lay.max_chunks for lay in layouts)
    J = max(len(f.groups[0].levels) for f in frames)
    p = frames[0].X.shape[1]
    s = Structure(fam, p, q, J, nagq)
    if batch_size is None:
        per_fit = M * C * (p + q + 8) * 8 * 60 * max(1, nagq**q)
        budget = memory_budget(jax.devices()[0])
        batch_size = int(max(1, min(len(frames), budget // per_fit)))
        if batch_size < MIN_BATCH < len(frames):
            # large datasets: one at a time with fit()'s engine (blocks of clusters),
            # which is faster than a small vmapped batch
            return _fit_each(formula, frames, keys, fam, nagq, max_iter, progress)
    starts = [start_values(f, fam, s.theta) for f in frames]
    arrays = [frame_arrays(f, fam, lay, M, J) for f, lay in zip(frames, layouts, strict=True)]
    batches = range(0, len(frames), batch_size)
    if progress is None:
        progress = len(batches) > 1
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="fit_many", unit="batch")
    out = {}
    for b0 in batches:
        idx = list(range(b0, min(b0 + batch_size, len(frames))))
        pad = idx + [idx[0]] * (batch_size - len(idx))  # full batches reuse one program
        data = jax.tree.map(lambda *a: jnp.asarray(np.stack(a)), *[arrays[i] for i in pad])
        theta0 = jnp.asarray(np.stack([starts[i] for i in pad]))
        res = newton_fit_many(theta0, jnp.zeros((len(pad), 1, J, q)), data, s,
                              max_iter=max_iter)
        res = jax.tree.map(np.asarray, res)
        for j, i in enumerate(idx):
            one = jax.tree.map(lambda a, j=j: a[j], res)
            run = Run(starts[i], max_iter)
            run.newton(one)
            notes = ()
            if not one.converged:  # as fit()
                one, notes = continue_with_lbfgs(
                    one, jax.tree.map(lambda a, j=j: a[j], data), s, max_iter, run)
                one = jax.tree.map(np.asarray, one)
            out[keys[i]] = make_result(
                formula, frames[i], fam, s, one, run, notes,
                builder=partial(model_from_frame, formula, frames[i], fam, nagq))
    return out


def _fit_each(formula, frames, keys, fam, nagq, max_iter, progress):
    items = zip(keys, frames, strict=True)
    if progress is None or progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(frames), desc="fit_many", unit="dataset")
    out = {}
    for key, frame in items:
        out[key] = fit_model(model_from_frame(formula, frame, fam, nagq), max_iter)
    return out


def _warn(formula, results: dict[object, GLMMResult | None], errors: dict) -> None:
    bad = [k for k, r in results.items() if r is not None and not r.converged]
    if bad:
        warn(f"{formula}: {len(bad)} of {len(results)} datasets did not converge: "
             f"{bad[:10]}", ConvergenceWarning)
    sing = [k for k, r in results.items() if r is not None and r.singular]
    if sing:
        warn(f"{formula}: {len(sing)} of {len(results)} datasets have singular fits: "
             f"{sing[:10]}", SingularFitWarning)
    if errors:
        warn(f"{formula}: {len(errors)} of {len(results)} datasets could not be "
             f"fitted (see result.errors): {list(errors)[:10]}", DataWarning)
