"""R's terms and model matrices: formula algebra, contrasts, column names.

``terms_of`` expands a formula's right-hand side as R's ``terms.formula`` does (``+``,
``:``, ``*``, ``/``, ``%in%``, ``^``, ``-``, ``0``/``1``; terms ordered by degree);
``build`` makes the model matrix as R's ``model.matrix``: a factor is coded by its
contrasts where the term without it is in the model (and by indicators otherwise, as R
does), interactions vary their first variable fastest, and columns are named as R names
them (``period2``, ``poly(Days, 2)1``, ``FoodTreatmentSatiated:SexParentMale``). The
:class:`Encoding` a fit keeps rebuilds the same columns for new data.

>>> import pandas as pd
>>> from glmm_jax.rsyntax import parse
>>> t = terms_of([("+", parse("(a + b)^2"))])
>>> t.labels()
['a', 'b', 'a:b']
>>> df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["u", "v", "u"]})
>>> X, names, enc = build(t, df, {})
>>> names
('(Intercept)', 'a', 'bv', 'a:bv')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .errors import GLMMInputError
from .rsyntax import BinOp, Node, Num, Paren, Unary, deparse
from .rvalues import Value, as_factor, evaluate

CONTRASTS = ("treatment", "sum", "helmert", "poly")


@dataclass(frozen=True)
class Terms:
    """A formula side: its variables (in order of appearance), the terms as sorted tuples
    of variable indices (ordered by degree) and whether it has an intercept."""

    variables: tuple[Node, ...]
    terms: tuple[tuple[int, ...], ...]
    intercept: bool

    def var_labels(self) -> list[str]:
        return [deparse(v) for v in self.variables]

    def labels(self) -> list[str]:
        vl = self.var_labels()
        return [":".join(vl[i] for i in t) for t in self.terms]


class _Expander:
    def __init__(self, text: str | None):
        self.keys: dict[str, int] = {}
        self.nodes: list[Node] = []
        self.text = text

    def var(self, node: Node) -> int:
        key = deparse(node)
        if key not in self.keys:
            self.keys[key] = len(self.nodes)
            self.nodes.append(node)
        return self.keys[key]

    def expand(self, node: Node):
        """(terms as a list of frozensets, intercept: True/False/None if not said)."""
        if isinstance(node, Paren):
            return self.expand(node.inner)
        if isinstance(node, Num):
            if node.value not in (0.0, 1.0):
                raise GLMMInputError(f"invalid model formula: the number {deparse(node)} at "
                                     f"position {node.pos} is not a term (only 0 and 1 are)")
            return [], node.value == 1.0
        if isinstance(node, Unary) and node.op == "+":
            return self.expand(node.operand)
        if isinstance(node, Unary) and node.op == "-":
            terms, icpt = self.expand(node.operand)
            if terms:
                raise GLMMInputError(f"'-' at position {node.pos} removes terms that are "
                                     "not in the formula before it")
            return [], (None if icpt is None else not icpt)
        if isinstance(node, BinOp) and node.op in ("+", "-", ":", "*", "/", "%in%", "^"):
            left, li = self.expand(node.left)
            if node.op == "^":
                k = node.right
                if not (isinstance(k, Num) and k.value >= 1 and k.value == int(k.value)):
                    raise GLMMInputError(f"'^' at position {node.at} in a formula needs a "
                                         "positive whole number (for a power use I(x^2))")
                out = left
                for _ in range(int(k.value) - 1):
                    out = _union(_union(out, left), _cross(out, left))
                return out, li
            right, ri = self.expand(node.right)
            if node.op == "+":
                return _union(left, right), ri if ri is not None else li
            if node.op == "-":
                return [t for t in left if t not in right], (False if ri else
                                                             True if ri is False else li)
            if node.op in (":", "%in%"):
                return _cross(left, right), li
            if node.op == "*":
                return _union(_union(left, right), _cross(left, right)), \
                    ri if ri is not None else li
            whole = frozenset().union(*left) if left else frozenset()  # "/"
            return _union(left, [whole | t for t in right]), li
        return [frozenset([self.var(node)])], None


def _union(a, b):
    return a + [t for t in b if t not in a]


def _cross(a, b):
    out = []
    for s in a:
        for t in b:
            if (s | t) not in out:
                out.append(s | t)
    return out


def terms_of(pieces: list[tuple[str, Node]], text: str | None = None) -> Terms:
    """R's terms of the signed pieces of a right-hand side (``[("+", node), ...]``)."""
    ex = _Expander(text)
    terms: list[frozenset] = []
    intercept = True
    for sign, node in pieces:
        t, icpt = ex.expand(node)
        if sign == "+":
            terms = _union(terms, t)
            intercept = intercept if icpt is None else icpt
        else:
            terms = [s for s in terms if s not in t]
            intercept = intercept if icpt is None else (not icpt)
    terms = [t for t in terms if t]
    ordered = sorted(range(len(terms)), key=lambda i: (len(terms[i]), i))
    return Terms(tuple(ex.nodes), tuple(tuple(sorted(terms[i])) for i in ordered), intercept)


# ---- contrasts --------------------------------------------------------------------------
def contrast_matrix(kind: str, levels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """R's contr.<kind>(levels) and the suffixes R gives its columns."""
    k = len(levels)
    if kind == "treatment":
        return np.eye(k)[:, 1:], list(levels[1:])
    if kind == "sum":
        return np.vstack([np.eye(k - 1), -np.ones((1, k - 1))]), [str(i) for i in range(1, k)]
    if kind == "helmert":
        C = np.zeros((k, k - 1))
        for j in range(k - 1):
            C[: j + 1, j] = -1.0
            C[j + 1, j] = j + 1.0
        return C, [str(i) for i in range(1, k)]
    if kind == "poly":  # R's make.poly: orthonormal polynomials of the scores 1..k
        s = np.arange(1.0, k + 1) - (k + 1) / 2.0
        Q, R = np.linalg.qr(s[:, None] ** np.arange(k))
        Z = Q * np.sign(np.diag(R))
        names = [".L", ".Q", ".C"] + [f"^{i}" for i in range(4, k)]
        return Z[:, 1:], names[: k - 1]
    raise GLMMInputError(f"unknown contrasts {kind!r}; contrasts must be one of "
                         + ", ".join(repr(c) for c in CONTRASTS))


def contrast_kind(value) -> str:
    """A ``contrasts=`` value: "sum" or R's "contr.sum" (and treatment, helmert, poly)."""
    if not isinstance(value, str):
        raise GLMMInputError(f"a contrasts= value must be a name such as 'sum', not {value!r}")
    kind = value[6:] if value.startswith("contr.") else value
    if kind not in CONTRASTS:
        raise GLMMInputError(f"unknown contrasts {value!r}; contrasts must be one of "
                             + ", ".join(repr(c) for c in CONTRASTS)
                             + " (or R's names, e.g. 'contr.sum')")
    return kind


# ---- model matrices ---------------------------------------------------------------------
@dataclass(frozen=True)
class VarCoding:
    """How one variable enters the matrix: numeric columns, or a factor's levels."""

    label: str
    kind: str  # "num" (incl. matrices) or "fac"
    colnames: tuple[str, ...] = ()  # suffixes of a matrix's columns ("" for one column)
    levels: tuple[str, ...] = ()
    contrast: str = "treatment"
    text: bool = False  # levels sorted from a text column


@dataclass(frozen=True)
class Encoding:
    """Everything needed to rebuild a model matrix for new data: the terms, each
    variable's coding (levels, contrasts), the stateful transforms' parameters, which
    factors of which terms are coded by contrasts, and the columns kept."""

    terms: Terms
    codings: tuple[VarCoding, ...]
    state: dict = field(hash=False, compare=False)
    contrasted: tuple[tuple[bool, ...], ...]  # per term, per variable
    names: tuple[str, ...]
    keep: tuple[int, ...] | None = None  # columns kept (None: all)

    def matrix(self, df: pd.DataFrame) -> np.ndarray:
        """The model matrix of new data ``df`` (unseen factor levels are an error)."""
        values = [evaluate(v, df, self.state, fitting=False) for v in self.terms.variables]
        cols = []
        for c, v in zip(self.codings, values, strict=True):
            if c.kind == "fac":
                v = _to_levels(v, c)
            cols.append(v)
        X = _assemble(self, cols, len(df))[0]
        return X if self.keep is None else X[:, list(self.keep)]

    def dropped(self, keep: np.ndarray) -> Encoding:
        """The encoding with only the columns ``keep`` (a boolean mask)."""
        idx = tuple(int(i) for i in np.flatnonzero(keep))
        return replace(self, names=tuple(self.names[i] for i in idx), keep=idx)


def _to_levels(v: Value, c: VarCoding) -> Value:
    """A new-data value coded on the levels of the fit."""
    if v.kind != "fac":
        v = as_factor(v, c.label)
    lv = np.asarray(v.levels + ("",), dtype=object)[v.data]
    known = {level: i for i, level in enumerate(c.levels)}
    codes = np.array([known.get(x, -2) if x != "" or i >= 0 else -1
                      for x, i in zip(lv, v.data, strict=True)], dtype=np.int64)
    unseen = sorted(set(lv[codes == -2]))
    if unseen:
        raise GLMMInputError(f"new data: {c.label!r} has levels not seen in the fit: "
                             f"{', '.join(map(str, unseen[:10]))} (levels of the fit: "
                             f"{', '.join(c.levels[:10])})")
    return Value("fac", codes, c.levels)


def variable_values(terms: Terms, df: pd.DataFrame, state: dict) -> list[Value]:
    """Evaluate each variable on ``df`` (learning the stateful transforms into ``state``)."""
    return [evaluate(v, df, state, fitting=True) for v in terms.variables]


def _var_coding_matrix(c: VarCoding, contrasted: bool) -> tuple[np.ndarray, list[str]]:
    if contrasted:
        return contrast_matrix(c.contrast, c.levels)
    return np.eye(len(c.levels)), list(c.levels)


def _var_columns(c: VarCoding, v: Value, contrasted: bool):
    if c.kind == "num":
        data = v.data if v.data.ndim == 2 else v.data[:, None]
        return [(c.label + s, data[:, k]) for k, s in enumerate(c.colnames)]
    codes = v.data
    C, suffix = _var_coding_matrix(c, contrasted)
    safe = np.where(codes >= 0, codes, 0)
    return [(c.label + s, np.where(codes >= 0, C[safe, k], np.nan))
            for k, s in enumerate(suffix)]


def _assemble(enc: Encoding, values: list[Value], n: int) -> tuple[np.ndarray, list[str]]:
    """The model matrix and its column names (interactions: first variable fastest)."""
    cols = [("(Intercept)", np.ones(n))] if enc.terms.intercept else []
    for t, flags in zip(enc.terms.terms, enc.contrasted, strict=True):
        block = [("", None)]  # (the empty product: a first factor's columns as they are)
        for i, contrasted in zip(t, flags, strict=True):
            new = _var_columns(enc.codings[i], values[i], contrasted)
            block = [(f"{a}:{b}", u * w) if a else (b, np.asarray(w, dtype=float))
                     for b, w in new for a, u in block]
        cols += block
    X = np.column_stack([w for _, w in cols]) if cols else np.zeros((n, 0))
    return X, [name for name, _ in cols]


def _coding(label: str, v: Value, contrasts: dict, drop: bool) -> tuple[VarCoding, Value]:
    if v.kind in ("num",):
        return VarCoding(label, "num", ("",)), v
    if v.kind == "mat":
        return VarCoding(label, "num", v.colnames), v
    f = as_factor(v, label, drop=drop)
    if len(f.levels) < 2:
        raise GLMMInputError(f"{label!r} has {len(f.levels)} level in the rows used; a factor "
                             "needs at least 2 (contrasts can be applied only to factors with "
                             "2 or more levels)")
    kind = contrasts.get(label, "poly" if f.ordered else "treatment")
    return VarCoding(label, "fac", levels=f.levels, contrast=kind, text=f.text), f


def build(terms: Terms, df: pd.DataFrame | None, contrasts: dict,
          values: list[Value] | None = None, state: dict | None = None, n: int | None = None,
          drop_unused: bool = True):
    """The model matrix of ``terms`` on ``df`` (or, with ``df=None``, on ``n`` rows whose
    variables are already evaluated in ``values``), its column names and its
    :class:`Encoding`. ``drop_unused``: factor levels that no row uses are dropped (as
    lme4 does; R's model.matrix keeps them)."""
    state = {} if state is None else state
    if values is None:
        values = variable_values(terms, df, state)
    n = len(df) if df is not None else n
    labels = terms.var_labels()
    codings, coded = [], []
    for label, v in zip(labels, values, strict=True):
        c, v = _coding(label, v, contrasts, drop_unused)
        codings.append(c)
        coded.append(v)
    contrasted = []
    prior: list[frozenset] = []
    first_factor_done = terms.intercept
    for t in terms.terms:
        flags = []
        for i in t:
            rest = frozenset(t) - {i}
            # R's TermCode: contrasts when the term without this factor is (within) an
            # earlier term (or empty), indicators otherwise
            flags.append(not rest or any(rest <= p for p in prior))
        if not first_factor_done:
            fac = [k for k, i in enumerate(t) if codings[i].kind == "fac"]
            if fac:
                flags[fac[0]] = False
                first_factor_done = True
        prior.append(frozenset(t))
        contrasted.append(tuple(flags))
    enc = Encoding(terms, tuple(codings), state, tuple(contrasted), ())
    X, names = _assemble(enc, coded, n)
    enc = replace(enc, names=tuple(names))
    return X, tuple(names), enc
