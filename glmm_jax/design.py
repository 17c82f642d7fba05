"""From a parsed formula and a DataFrame to validated float64 arrays.

Everything that can be wrong with the data is caught here and reported as a
GLMMInputError naming the column or term. The caller's DataFrame is never modified.
As in R, the variables are evaluated on all rows (so ``scale(x)`` and ``poly(x, 2)`` use
every non-missing value), rows with a missing value anywhere are dropped, and factor
levels that no kept row uses are dropped (lme4's ``drop.unused.levels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .errors import DataWarning, GLMMInputError, warn
from .families import Binomial, Family, Gaussian
from .formula import ModelSpec, RandomTerm, parse_rhs, pieces
from .modelmatrix import Encoding, build, contrast_kind, terms_of, variable_values
from .rsyntax import Call, deparse, names_in
from .rvalues import CONSTANTS, Value, as_factor, evaluate


@dataclass(frozen=True)
class GroupingFactor:
    """A random term's grouping factor and design."""

    name: str  # e.g. "herd" or "a:b"
    term: RandomTerm
    codes: np.ndarray  # [n] int level index per row
    levels: pd.Index
    Z: np.ndarray  # [n, q]
    z_names: tuple[str, ...]
    encoding: Encoding | None = field(default=None, compare=False)  # how Z was built


@dataclass(frozen=True)
class ModelFrame:
    """Validated model arrays, one row per used observation (input row order).

    ``weights`` multiply each row's log density (prior weights; binomial weights that
    give the number of trials are in ``trials`` instead). For the Gaussian family
    ``trials`` holds the precision weights (the residual variance of a row is
    sigma^2 / w), 1 without weights. ``response_note`` says which level of a two-level
    response is a success.
    """

    X: np.ndarray
    x_names: tuple[str, ...]
    y: np.ndarray
    trials: np.ndarray
    offset: np.ndarray
    groups: tuple[GroupingFactor, ...]
    response_name: str
    row_index: pd.Index  # labels of the rows used, in the caller's DataFrame
    n_dropped: int
    aliased: tuple[str, ...]
    weights: np.ndarray | None = None
    weights_label: str | None = None
    offset_label: str | None = None
    encoding: Encoding | None = field(default=None, compare=False)
    response_note: str | None = None

    def __post_init__(self):
        if self.weights is None:
            object.__setattr__(self, "weights", np.ones(len(self.y)))


def group_columns(group: str) -> list[str]:
    """The data columns of a grouping factor: ``a/b`` and ``a:b`` name a and b."""
    return [c for part in group.split("/") for c in part.split(":")]


def expand_terms(terms) -> list[RandomTerm]:
    """Nested grouping as in lme4: (e | a/b) is (e | a) + (e | b:a)."""
    out = []
    for t in terms:
        parts = t.group.split("/")
        for i in range(len(parts)):
            out.append(RandomTerm(t.expr, ":".join(reversed(parts[: i + 1])), t.correlated))
    return out


def _row(index: pd.Index, i: int) -> str:
    """A row label of the caller's DataFrame, printed as the user wrote it."""
    label = index[i]
    return repr(label.item() if isinstance(label, np.generic) else label)


def _columns_of(nodes, data: pd.DataFrame) -> set[str]:
    return {n.id for node in nodes for n in names_in(node)
            if n.id in data.columns or n.id not in CONSTANTS}


def _check_columns(names: set[str], data: pd.DataFrame, where: str) -> None:
    missing = sorted(n for n in names if n not in data.columns)
    if missing:
        cols = ", ".join(map(str, data.columns[:20]))
        raise GLMMInputError(
            f"column {missing[0]!r} used in {where} is not in the data "
            f"(missing: {', '.join(missing)}; available: {cols})"
        )


def _check_unique_columns(data: pd.DataFrame) -> None:
    if data.columns.is_unique:
        return
    dup = data.columns[data.columns.duplicated()]
    if len(dup):
        raise GLMMInputError(f"the data have duplicated column names: "
                             f"{', '.join(map(str, dict.fromkeys(dup)))}")


def _take(v: Value, rows: np.ndarray) -> Value:
    return replace(v, data=v.data[rows])


def _finite(arr: np.ndarray, what: str, index: pd.Index) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise GLMMInputError(
            f"{what} has {bad.size} infinite values "
            f"(first at row label {_row(index, bad[0])})"
        )
    return arr


def _numeric(v: Value, what: str, index: pd.Index) -> np.ndarray:
    if v.kind not in ("num", "lgl"):
        kind = {"fac": "a factor", "chr": "text", "mat": "a matrix"}[v.kind]
        raise GLMMInputError(f"{what} must be numeric, but is {kind}")
    return _finite(v.data.astype(float), what, index)


def _vector(value, data: pd.DataFrame, what: str) -> tuple[np.ndarray, str]:
    """A ``weights=``/``offset=`` argument: a column name or one value per row."""
    if isinstance(value, str):
        _check_columns({value}, data, f"{what}=")
        col = data[value]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise GLMMInputError(f"{what}= column {value!r} must be numeric, not {col.dtype}")
        return col.to_numpy(dtype=float, na_value=np.nan), value
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value)
    if arr.ndim != 1 or len(arr) != len(data):
        raise GLMMInputError(f"{what}= must be a column name or one value per row of the data "
                             f"({len(data)} rows); it has shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool or np.iscomplexobj(arr):
        raise GLMMInputError(f"{what}= must be numeric, not {arr.dtype}")
    return arr.astype(float), f"{what} (an array)"


def _check_weights(w: np.ndarray, index: pd.Index) -> None:
    for bad, what in ((~np.isfinite(w), "infinite"), (w < 0, "negative"), (w == 0, "zero")):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            hint = " (drop those rows from the data to leave them out)" if what == "zero" else ""
            raise GLMMInputError(f"weights must be positive and finite: {int(bad.sum())} are "
                                 f"{what} (first at row label {_row(index, i)}: {w[i]:g}){hint}")


def _response(spec: ModelSpec, values: list[Value], family: Family, w, index: pd.Index):
    """(y, trials, engine weights, label, note) of the response; ``w``: prior weights."""
    n = len(index)
    ones = np.ones(n)
    labels = spec.response_labels
    if len(values) == 2:
        if not isinstance(family, Binomial):
            raise GLMMInputError("cbind(successes, failures) is a binomial response; "
                                 f"family is {family.name!r}")
        s = _numeric(values[0], f"successes {labels[0]!r}", index)
        f = _numeric(values[1], f"failures {labels[1]!r}", index)
        if np.any(f < 0):
            i = int(np.flatnonzero(f < 0)[0])
            raise GLMMInputError(
                f"binomial response: successes exceed trials in {int(np.sum(f < 0))} rows "
                f"(first at row label {_row(index, i)}: failures {labels[1]!r} = {f[i]:g})"
            )
        return s, s + f, (ones if w is None else w), labels[0], None
    v, label, note = values[0], labels[0], None
    if isinstance(family, Binomial) and v.kind in ("fac", "chr"):
        fac = as_factor(v, label)
        if len(fac.levels) != 2:
            raise GLMMInputError(
                f"binomial response {label!r} must be 0/1, logical, or have exactly two "
                f"levels; it has {len(fac.levels)} ({', '.join(fac.levels[:5])})")
        y = (fac.data == 1).astype(float)
        note = (f"response {label}: {fac.levels[1]!r} is a success, {fac.levels[0]!r} a "
                "failure (the first level, as in R)")
        label = f"{label}=={fac.levels[1]}"
    else:
        y = _numeric(v, f"response {label!r}", index)
    if w is None:
        return y, ones, ones, label, note
    if isinstance(family, Binomial):  # a proportion (or 0/1) and its number of trials
        if np.any((y < 0) | (y > 1)):
            i = int(np.flatnonzero((y < 0) | (y > 1))[0])
            raise GLMMInputError(f"binomial response {label!r} with weights must be a proportion "
                                 f"in [0, 1] (first bad at row label {_row(index, i)}: {y[i]:g})")
        s = y * w
        frac = np.abs(s - np.round(s)) > 1e-8 * np.maximum(w, 1.0)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise GLMMInputError(
                f"binomial response {label!r} × weights must be whole numbers of successes; "
                f"{int(frac.sum())} rows are not (first at row label {_row(index, i)}: "
                f"{y[i]:g} × {w[i]:g}); R would round them silently")
        return np.round(s), w, ones, label, note
    if isinstance(family, Gaussian):  # precision weights
        return y, w, ones, label, note
    return y, ones, w, label, note


def _check_response(family: Family, y, trials, label: str, index: pd.Index) -> None:
    bad, need = family.invalid_response(y, trials)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = f"{y[i]:g} of {trials[i]:g}" if isinstance(family, Binomial) else f"{y[i]:g}"
        raise GLMMInputError(
            f"{family.title} response {label!r} {need}; {int(bad.sum())} rows are not "
            f"(first at row label {_row(index, i)}: {value})"
        )


def _design(terms, values, n, contrasts, what: str, index: pd.Index, state: dict):
    X, names, enc = build(terms, None, contrasts, values=values, state=state, n=n)
    bad = ~np.isfinite(X)
    if bad.any():
        k = int(np.flatnonzero(bad.any(axis=0))[0])
        i = int(np.flatnonzero(bad[:, k])[0])
        raise GLMMInputError(f"{what} column {names[k]!r} has infinite or missing values "
                             f"(first at row label {_row(index, i)})")
    return X, names, enc


def aliased_columns(X: np.ndarray) -> np.ndarray:
    """Mask of columns that are (numerically) linear combinations of earlier columns.

    Works on the scaled Gram matrix (one pass over the data): column j is aliased when its
    squared residual norm after projection on the kept earlier columns is below 1e-12
    of its squared norm (a residual below 1e-6 of the column's length).
    """
    G = X.T @ X
    d = np.diag(G).copy()
    d[d == 0] = 1.0
    R = G / np.sqrt(np.outer(d, d))
    keep: list[int] = []
    aliased = np.zeros(X.shape[1], dtype=bool)
    for j in range(X.shape[1]):
        r = R[j, j] if not keep else \
            R[j, j] - R[j, keep] @ np.linalg.solve(R[np.ix_(keep, keep)], R[keep, j])
        if r < 1e-12:
            aliased[j] = True
        else:
            keep.append(j)
    return aliased


def _drop_aliased(X: np.ndarray, names: tuple[str, ...]):
    """Drop columns that are linear combinations of earlier ones (as lme4 does)."""
    if X.shape[1] == 0:
        return X, names, ()
    bad = aliased_columns(X)
    if not bad.any():
        return X, names, ()
    aliased = tuple(n for n, b in zip(names, bad, strict=True) if b)
    return X[:, ~bad], tuple(n for n, b in zip(names, bad, strict=True) if not b), aliased


def _check_identifiable(term: RandomTerm, Z, z_names, codes, n_levels: int) -> None:
    """A random slope on a column that is constant within every level duplicates the
    random intercept: refuse it by name rather than return a degenerate fit."""
    if "(Intercept)" not in z_names:
        return
    counts = np.bincount(codes, minlength=n_levels)
    for k, name in enumerate(z_names):
        if name == "(Intercept)":
            continue
        mean = np.bincount(codes, Z[:, k], n_levels) / np.maximum(counts, 1)
        spread = np.bincount(codes, (Z[:, k] - mean[codes]) ** 2, n_levels)
        if np.all(spread <= 1e-12 * (1.0 + np.sum(Z[:, k] ** 2))):
            raise GLMMInputError(
                f"random term {term} is not identifiable: {name!r} is constant within every "
                f"level of {term.group!r}, so its random slope duplicates the random intercept "
                f"(drop it from the term, e.g. (1 | {term.group}))"
            )


def interaction(df, cols: list[str]) -> pd.Categorical:
    """The factor ``a:b:...`` of several columns of ``df`` (a DataFrame, or a dict of
    columns), its levels the labels "a:b" that occur, sorted as strings (labels are made
    for the combinations that occur, not every row)."""
    parts = [pd.Categorical(df[c]) for c in cols]
    key = np.zeros(len(parts[0]), np.int64)
    for cat in parts:
        key = key * (len(cat.categories) + 1) + cat.codes + 1  # code -1 (missing) stays apart
    uniq, inverse = np.unique(key, return_inverse=True)
    digits = []
    for cat in reversed(parts):
        digits.append(uniq % (len(cat.categories) + 1) - 1)
        uniq = uniq // (len(cat.categories) + 1)
    names = [np.asarray(cat.categories.astype(str), dtype=object) for cat in parts]
    labels = [":".join(str(names[k][i]) if i >= 0 else "nan" for k, i in enumerate(combo))
              for combo in zip(*reversed(digits), strict=True)]
    order = np.argsort(np.asarray(labels, dtype=object), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[inverse.ravel()],
                                     pd.Index(np.asarray(labels, dtype=object)[order]))


def _grouping(term: RandomTerm, df: dict, Z, z_names, enc) -> list[GroupingFactor]:
    """The grouping factor(s) of a term (``df``: the grouping columns, rows kept): one, or
    one per column for ``||``."""
    cols = group_columns(term.group)
    for c in cols:
        v = df[c]
        if pd.api.types.is_float_dtype(v) and np.any(v != np.round(v)):
            raise GLMMInputError(
                f"grouping variable {c!r} in {term} looks continuous (non-integer values such as "
                f"{v[v != np.round(v)].iloc[0]!r}); a grouping factor must be categorical: "
                f"convert it, e.g. data[{c!r}].astype('category')"
            )
    if len(cols) == 1:
        cat = pd.Categorical(df[cols[0]])
        if np.any(np.bincount(cat.codes[cat.codes >= 0], minlength=len(cat.categories)) == 0):
            cat = cat.remove_unused_categories()
    else:
        cat = interaction(df, cols)
    codes = np.asarray(cat.codes, dtype=np.int64)
    levels = pd.Index(cat.categories, name=term.group)
    if len(levels) < 2:
        raise GLMMInputError(
            f"grouping factor {term.group!r} in {term} has {len(levels)} level; "
            "a random effect needs at least 2"
        )
    if Z.shape[1] == 0:
        raise GLMMInputError(f"random term {term} has no columns")
    _check_identifiable(term, Z, z_names, codes, len(levels))
    if term.correlated:
        return [GroupingFactor(term.group, term, codes, levels, Z, z_names, enc)]
    return [GroupingFactor(term.group, term, codes, levels, Z[:, [k]], (n,), enc)
            for k, n in enumerate(z_names)]


def _warn_level_order(enc: Encoding) -> None:
    """Text columns get their levels in R's order in a UTF-8 locale (case-insensitive);
    R in the C locale sorts by code point: say so where that changes the reference level."""
    for c in enc.codings:
        if c.kind == "fac" and c.text and c.contrast == "treatment":
            c_locale = min(c.levels)
            if c_locale != c.levels[0]:
                warn(f"the reference level of text column {c.label!r} is {c.levels[0]!r} "
                     f"(levels sorted as R sorts them in a UTF-8 locale); R in the C locale "
                     f"would take {c_locale!r}: to choose, pass a pd.Categorical with the "
                     "levels in the order you want", DataWarning)


def _contrasts(contrasts) -> dict[str, str]:
    if contrasts is None:
        return {}
    if not isinstance(contrasts, dict):
        raise GLMMInputError("contrasts= must be a dict such as {'period': 'sum'}")
    return {str(k): contrast_kind(v) for k, v in contrasts.items()}


def build_frame(spec: ModelSpec, data: pd.DataFrame, family: Family, weights=None,
                offset=None, contrasts=None) -> ModelFrame:
    """Validate ``data`` against ``spec`` and build the model arrays.

    ``weights``, ``offset``: a column name or an array (one value per row);
    ``contrasts``: {factor: "treatment" | "sum" | "helmert" | "poly"}.
    """
    if isinstance(data, dict):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise GLMMInputError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    _check_unique_columns(data)
    coding = _contrasts(contrasts)
    fixed = terms_of(list(spec.fixed))
    rterms = expand_terms(spec.random)
    rsides = {t.expr: terms_of([("+", t.expr)]) for t in spec.random}
    needed: dict[str, set[str]] = {
        "the response": _columns_of(spec.response, data),
        "the fixed effects": _columns_of([n for _, n in spec.fixed], data),
    }
    for o in spec.offsets:
        needed[f"offset({deparse(o)})"] = _columns_of([o], data)
    for t in spec.random:
        needed[str(t)] = _columns_of([t.expr], data) | set(group_columns(t.group))
    for where, names in needed.items():
        _check_columns(names, data, where)

    # evaluate every variable on all rows (as R's model.frame), then drop incomplete rows
    state: dict = {}
    parts: dict[str, list[Value]] = {
        "response": [evaluate(r, data, state) for r in spec.response],
        "fixed": variable_values(fixed, data, state),
        "offsets": [evaluate(o, data, state) for o in spec.offsets],
    }
    for k, side in enumerate(rsides.values()):
        parts[f"random{k}"] = variable_values(side, data, state)
    labels = {"response": list(spec.response_labels), "fixed": fixed.var_labels(),
              "offsets": [f"offset({deparse(o)})" for o in spec.offsets]}
    labels.update({f"random{k}": s.var_labels() for k, s in enumerate(rsides.values())})
    extra = {}
    if weights is not None:
        extra["weights"] = _vector(weights, data, "weights")
    if offset is not None:
        extra["offset"] = _vector(offset, data, "offset")
    group_cols = list(dict.fromkeys(c for t in rterms for c in group_columns(t.group)))
    group_na = {c: data[c].isna().to_numpy() for c in group_cols}
    missing = np.zeros(len(data), dtype=bool)
    for na in group_na.values():
        missing |= na
    na_cols = [c for c, na in group_na.items() if na.any()]
    for key, vals in parts.items():
        for label, v in zip(labels[key], vals, strict=True):
            na = v.na()
            if na.any():
                na_cols.append(label)
                missing |= na
    for key, (arr, _) in extra.items():
        if np.isnan(arr).any():
            na_cols.append(f"{key}=")
            missing |= np.isnan(arr)
    n_dropped = int(missing.sum())
    if n_dropped:
        warn(f"dropped {n_dropped} of {len(data)} rows with missing values "
             f"(in columns {', '.join(dict.fromkeys(na_cols))})", DataWarning)
    if n_dropped == len(data):
        raise GLMMInputError("no rows left after dropping rows with missing values")
    keep = ~missing
    index = data.index[keep] if n_dropped else data.index
    n = len(index)
    # (the design matrices are new arrays whatever their parts; every other part is copied,
    # so that the frame never shares the caller's memory)
    parts = {k: vals if not n_dropped and k != "response" and k != "offsets" else
             [_take(v, keep) for v in vals] for k, vals in parts.items()}

    w = None
    if "weights" in extra:
        w = extra["weights"][0][keep]
        _check_weights(w, index)
    y, trials, row_w, response_name, note = _response(spec, parts["response"], family, w, index)
    _check_response(family, y, trials, response_name, index)
    X, x_names, enc = _design(fixed, parts["fixed"], n, coding, "fixed-effects design", index,
                           state)
    X, x_names, aliased = _drop_aliased(X, x_names)
    if aliased:
        enc = enc.dropped(~np.isin(enc.names, aliased))
        warn(f"fixed-effect model matrix is rank deficient: dropping {len(aliased)} aliased "
             f"column(s): {', '.join(aliased)}", DataWarning)
    off = np.zeros(n)
    for label, v in zip(labels["offsets"], parts["offsets"], strict=True):
        off += _numeric(v, label, index)
    if "offset" in extra:
        off += _finite(extra["offset"][0][keep], "offset=", index)
    df = {c: data[c][keep] if n_dropped else data[c] for c in group_cols}
    zs = {}
    for k, (expr, side) in enumerate(rsides.items()):
        zs[expr] = _design(side, parts[f"random{k}"], n, {},  # (contrasts: X only, as lme4)
                           f"random-effects design of ({deparse(expr)} | ...)", index, state)
    used = {c.label for c in enc.codings if c.kind == "fac"}
    _warn_level_order(enc)
    for name in coding:
        if name not in used:
            raise GLMMInputError(
                f"contrasts= names {name!r}, which is not a factor of the fixed effects "
                f"(its factors: {', '.join(sorted(used)) or 'none'})")
    groups = tuple(g for t in rterms for g in _grouping(t, df, *zs[t.expr]))
    return ModelFrame(X, x_names, y, trials, off, groups, response_name, index,
                      n_dropped, aliased, weights=row_w,
                      weights_label=extra.get("weights", (None, None))[1],
                      offset_label=extra.get("offset", (None, None))[1], encoding=enc,
                      response_note=note)


def subset_frame(frame: ModelFrame, rows: np.ndarray) -> ModelFrame:
    """The frame of a subset of its rows (positions), with cluster codes renumbered."""
    groups = []
    for g in frame.groups:
        used, codes = np.unique(g.codes[rows], return_inverse=True)
        groups.append(GroupingFactor(g.name, g.term, codes.astype(np.int64), g.levels[used],
                                     g.Z[rows], g.z_names, g.encoding))
    return replace(frame, X=frame.X[rows], y=frame.y[rows], trials=frame.trials[rows],
                   offset=frame.offset[rows], groups=tuple(groups),
                   row_index=frame.row_index[rows], n_dropped=0,
                   weights=frame.weights[rows])


def model_matrix(formula: str, data: pd.DataFrame, contrasts: dict | None = None
                 ) -> pd.DataFrame:
    """R's ``model.matrix(formula, data, contrasts.arg = contrasts)`` of a one-sided
    formula: R's terms, codings and column names (rows with missing values dropped;
    aliased columns kept, as R keeps them).

    >>> import glmm_jax as gj
    >>> mm = gj.model_matrix("~ poly(Days, 2) + I(Days^2)", gj.datasets.load("sleepstudy"))
    >>> list(mm.columns)
    ['(Intercept)', 'poly(Days, 2)1', 'poly(Days, 2)2', 'I(Days^2)']
    """
    if not isinstance(data, pd.DataFrame):
        raise GLMMInputError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    _check_unique_columns(data)
    tree = parse_rhs(formula)
    parts = [(sign, node) for sign, node in pieces(tree)  # offsets are not columns (R)
             if not (isinstance(node, Call) and node.func == "offset")]
    _check_columns(_columns_of([n for _, n in parts], data), data, "the formula")
    terms = terms_of(parts)
    state: dict = {}
    values = variable_values(terms, data, state)
    keep = ~np.any([v.na() for v in values], axis=0) if values else np.ones(len(data), bool)
    values = [_take(v, keep) for v in values]
    X, names, _ = build(terms, None, _contrasts(contrasts), values=values, state=state,
                        n=int(keep.sum()), drop_unused=False)
    return pd.DataFrame(X, columns=list(names), index=data.index[keep])
