"""From a parsed formula and a DataFrame to validated float64 arrays.

Everything that can be wrong with the data is caught here and reported as a
GLMMInputError naming the column or term. The caller's DataFrame is never modified.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .errors import DataWarning, GLMMInputError
from .families import Binomial, Family
from .formula import ModelSpec, RandomTerm


@dataclass(frozen=True)
class GroupingFactor:
    """A random term's grouping factor and design."""

    name: str  # e.g. "herd" or "a:b"
    term: RandomTerm
    codes: np.ndarray  # [n] int level index per row
    levels: pd.Index
    Z: np.ndarray  # [n, q]
    z_names: tuple[str, ...]


@dataclass(frozen=True)
class ModelFrame:
    """Validated model arrays, one row per used observation (input row order)."""

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


_NOT_COLUMNS = {"np", "numpy", "math", "I", "C", "log", "exp", "sqrt", "abs", "True", "False",
                "None", "center", "scale", "poly", "bs", "Q", "T", "contr", "Treatment"}


def _expr_names(expr: str) -> set[str]:
    """Names a Python expression refers to (for response and offset expressions)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise GLMMInputError(f"cannot read the expression {expr!r}: {e.msg}") from None
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree)
            if isinstance(n, ast.Name) and id(n) not in called and n.id not in _NOT_COLUMNS}


def _formula_names(rhs: str) -> set[str]:
    try:
        return set(formulaic.Formula(rhs).required_variables) - _NOT_COLUMNS
    except Exception as e:  # formulaic's syntax errors
        raise GLMMInputError(f"cannot read the formula terms {rhs!r}: {e}") from None


def _group_columns(group: str) -> list[str]:
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


def _check_columns(names: set[str], data: pd.DataFrame, where: str) -> None:
    missing = sorted(n for n in names if n not in data.columns)
    if missing:
        cols = ", ".join(map(str, data.columns[:20]))
        raise GLMMInputError(
            f"column {missing[0]!r} used in {where} is not in the data "
            f"(missing: {', '.join(missing)}; available: {cols})"
        )


def _evaluate(expr: str, df: pd.DataFrame, what: str) -> pd.Series:
    if expr in df.columns:
        return df[expr]
    try:
        out = df.eval(expr, engine="python")
    except Exception as e:
        raise GLMMInputError(f"cannot evaluate {what} {expr!r}: {e}") from None
    if np.ndim(out) == 0:
        out = pd.Series(np.full(len(df), out), index=df.index)
    return pd.Series(out, index=df.index)


def _numeric(values: pd.Series, what: str) -> np.ndarray:
    if isinstance(values.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    ):
        raise GLMMInputError(f"{what} must be numeric, but has dtype {values.dtype}")
    arr = values.to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise GLMMInputError(
            f"{what} has {bad.size} infinite values "
            f"(first at row label {_row(values.index, bad[0])})"
        )
    return arr


def _response(spec: ModelSpec, df: pd.DataFrame, family: Family):
    if len(spec.response) == 2:
        if not isinstance(family, Binomial):
            raise GLMMInputError("cbind(successes, failures) is a binomial response; "
                                 f"family is {family.name!r}")
        s = _numeric(_evaluate(spec.response[0], df, "response"), f"successes {spec.response[0]!r}")
        f = _numeric(_evaluate(spec.response[1], df, "response"), f"failures {spec.response[1]!r}")
        if np.any(f < 0):
            i = int(np.flatnonzero(f < 0)[0])
            raise GLMMInputError(
                f"binomial response: successes exceed trials in {int(np.sum(f < 0))} rows "
                f"(first at row label {_row(df.index, i)}: "
                f"failures {spec.response[1]!r} = {f[i]:g})"
            )
        return s, s + f, spec.response[0]
    expr = spec.response[0]
    v = _evaluate(expr, df, "response")
    ones = np.ones(len(df))
    if isinstance(family, Binomial) and not pd.api.types.is_numeric_dtype(v):
        levels = (list(v.cat.categories[v.cat.categories.isin(v.unique())])
                  if isinstance(v.dtype, pd.CategoricalDtype) else sorted(v.unique()))
        if len(levels) != 2:
            raise GLMMInputError(
                f"binomial response {expr!r} must be 0/1, logical, or have exactly two levels; "
                f"it has {len(levels)} ({', '.join(map(str, levels[:5]))})"
            )
        return (v == levels[1]).to_numpy(dtype=float), ones, f"{expr}=={levels[1]}"
    return _numeric(v, f"response {expr!r}"), ones, expr


def _check_response(family: Family, y, trials, label: str, index: pd.Index) -> None:
    bad, need = family.invalid_response(y, trials)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = f"{y[i]:g} of {trials[i]:g}" if isinstance(family, Binomial) else f"{y[i]:g}"
        raise GLMMInputError(
            f"{family.title} response {label!r} {need}; {int(bad.sum())} rows are not "
            f"(first at row label {_row(index, i)}: {value})"
        )


def _clean_name(name: str) -> str:
    name = "(Intercept)" if name == "Intercept" else name
    return re.sub(r"\[T\.([^\]]*)\]", r"\1", name)


def _plain_columns(rhs: str, df: pd.DataFrame) -> list[str] | None:
    """The columns of ``rhs`` when it is only an intercept and numeric column names
    (``1``, ``x + z``): such a matrix is stacked directly, skipping formulaic."""
    parts = [p.strip() for p in rhs.split("+")]
    if parts and parts[0] == "1":
        parts = parts[1:]
    ok = all(p.isidentifier() and p in df.columns and p != "I" for p in parts) and \
        all(pd.api.types.is_numeric_dtype(df[p]) and not pd.api.types.is_bool_dtype(df[p])
            for p in parts)
    return parts if ok and len(set(parts)) == len(parts) else None


def _model_matrix(rhs: str, df: pd.DataFrame, what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    cols = _plain_columns(rhs, df)
    if cols is not None:  # same result as formulaic's, without its overhead
        arr = np.ones((len(df), len(cols) + 1))
        for k, c in enumerate(cols):
            arr[:, k + 1] = df[c].to_numpy(dtype=float)
        names = ("(Intercept)", *cols)
        bad = ~np.isfinite(arr)
        if bad.any():
            col = names[np.flatnonzero(bad.any(axis=0))[0]]
            raise GLMMInputError(f"{what} column {col!r} has infinite or missing values")
        return arr, names
    try:
        mm = formulaic.model_matrix(rhs, df, na_action="raise")
    except Exception as e:
        msg = str(e).replace("\x1b[1;31m", "").replace("\x1b[0m", "")
        raise GLMMInputError(f"cannot build the {what} from {rhs!r}: {msg}") from None
    arr = np.asarray(mm, dtype=float)
    bad = ~np.isfinite(arr)
    if bad.any():
        col = mm.columns[np.flatnonzero(bad.any(axis=0))[0]]
        raise GLMMInputError(f"{what} column {_clean_name(col)!r} has infinite or missing values")
    return arr, tuple(_clean_name(c) for c in mm.columns)


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


def _interaction(df: pd.DataFrame, cols: list[str]) -> pd.Categorical:
    """The factor ``a:b:...`` of several columns, its levels the labels "a:b" that occur,
    sorted as strings (labels are made for the combinations that occur, not every row)."""
    parts = [pd.Categorical(df[c]) for c in cols]
    key = np.zeros(len(df), np.int64)
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


def _grouping(term: RandomTerm, df: pd.DataFrame) -> list[GroupingFactor]:
    """The grouping factor(s) of a term: one, or one per column for ``||``."""
    cols = _group_columns(term.group)
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
        cat = _interaction(df, cols)
    codes = np.asarray(cat.codes, dtype=np.int64)
    levels = pd.Index(cat.categories, name=term.group)
    if len(levels) < 2:
        raise GLMMInputError(
            f"grouping factor {term.group!r} in {term} has {len(levels)} level; "
            "a random effect needs at least 2"
        )
    Z, z_names = _model_matrix(term.expr, df, f"random-effects design of {term}")
    if Z.shape[1] == 0:
        raise GLMMInputError(f"random term {term} has no columns")
    _check_identifiable(term, Z, z_names, codes, len(levels))
    if term.correlated:
        return [GroupingFactor(term.group, term, codes, levels, Z, z_names)]
    return [GroupingFactor(term.group, term, codes, levels, Z[:, [k]], (n,))
            for k, n in enumerate(z_names)]


def build_frame(spec: ModelSpec, data: pd.DataFrame, family: Family) -> ModelFrame:
    """Validate ``data`` against ``spec`` and build the model arrays."""
    if isinstance(data, dict):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise GLMMInputError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if not spec.random:
        raise GLMMInputError("the formula has no random term such as (1 | group); "
                             "for a model without random effects use a GLM")
    needed: dict[str, set[str]] = {
        "the response": set().union(*(_expr_names(e) for e in spec.response)),
        "the fixed effects": _formula_names(spec.fixed),
    }
    for o in spec.offsets:
        needed[f"offset({o})"] = _expr_names(o)
    for t in spec.random:
        needed[str(t)] = _formula_names(t.expr) | set(_group_columns(t.group))
    for where, names in needed.items():
        _check_columns(names, data, where)
    cols = list(dict.fromkeys(c for names in needed.values() for c in sorted(names)))
    df = data.loc[:, cols]  # a copy (or, under copy-on-write, copied if ever written)

    missing = df.isna().any(axis=1).to_numpy()
    n_dropped = int(missing.sum())
    if n_dropped:
        which = [c for c in cols if df[c].isna().any()]
        warnings.warn(
            f"dropped {n_dropped} of {len(df)} rows with missing values "
            f"(in columns {', '.join(which)})", DataWarning, stacklevel=3,
        )
        df = df.loc[~missing]
    if len(df) == 0:
        raise GLMMInputError("no rows left after dropping rows with missing values")

    y, trials, response_name = _response(spec, df, family)
    _check_response(family, y, trials, response_name, df.index)
    X, x_names = _model_matrix(spec.fixed, df, "fixed-effects design")
    X, x_names, aliased = _drop_aliased(X, x_names)
    if aliased:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient: dropping {len(aliased)} aliased "
            f"column(s): {', '.join(aliased)}", DataWarning, stacklevel=3,
        )
    offset = np.zeros(len(df))
    for o in spec.offsets:
        offset += _numeric(_evaluate(o, df, "offset"), f"offset({o})")
    groups = tuple(g for t in expand_terms(spec.random) for g in _grouping(t, df))
    return ModelFrame(X, x_names, y, trials, offset, groups, response_name, df.index,
                      n_dropped, aliased)


def subset_frame(frame: ModelFrame, rows: np.ndarray) -> ModelFrame:
    """The frame of a subset of its rows (positions), with cluster codes renumbered."""
    groups = []
    for g in frame.groups:
        used, codes = np.unique(g.codes[rows], return_inverse=True)
        groups.append(GroupingFactor(g.name, g.term, codes.astype(np.int64), g.levels[used],
                                     g.Z[rows], g.z_names))
    return ModelFrame(frame.X[rows], frame.x_names, frame.y[rows], frame.trials[rows],
                      frame.offset[rows], tuple(groups), frame.response_name,
                      frame.row_index[rows], 0, frame.aliased)
