"""Evaluating the R expressions of a formula on a DataFrame, with R's semantics.

A variable of a formula (``x``, ``I(x^2)``, ``factor(YEAR)``, ``poly(x, 2)``,
``(r2 == "Y")``) evaluates to a :class:`Value`: numeric, logical, character, factor or a
numeric matrix. Stateful transforms (``scale``, ``poly``) record what they learned from
the data in ``state`` (keyed by the call's position in the formula), so that new data
are transformed exactly as the data of the fit (R's ``makepredictcall``).

>>> import pandas as pd
>>> from glmm_jax.rsyntax import parse
>>> v = evaluate(parse("I(x^2)"), pd.DataFrame({"x": [1, 2, 3]}), {})
>>> v.kind, v.data.tolist()
('num', [1.0, 4.0, 9.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import GLMMInputError
from .rsyntax import BinOp, Call, Name, Node, Num, Paren, Str, Unary, deparse, format_number

CONSTANTS = {"TRUE": True, "FALSE": False, "T": True, "F": False, "pi": math.pi}


@dataclass(frozen=True)
class Value:
    """An evaluated R value: ``kind`` is "num", "lgl" (floats 0/1, NaN for NA), "chr",
    "fac" (integer codes, -1 for NA, into ``levels``) or "mat" ([n, k], ``colnames``)."""

    kind: str
    data: np.ndarray
    levels: tuple[str, ...] = ()
    ordered: bool = False
    colnames: tuple[str, ...] = field(default=())
    text: bool = False  # a factor made from a character column (as R's model frame does)

    def na(self) -> np.ndarray:
        """Mask of missing entries (rows, for a matrix)."""
        if self.kind == "fac":
            return self.data < 0
        if self.kind == "chr":
            return pd.isna(self.data)
        if self.kind == "mat":
            return np.isnan(self.data).any(axis=1)
        return np.isnan(self.data)


def level_label(v) -> str:
    """A level as R prints it (numbers as R's as.character)."""
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return format_number(float(v))
    return str(v)


def column(df: pd.DataFrame, name: str) -> Value:
    """A data column as an R value (logical, factor, character or numeric)."""
    col = df[name]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat
        return Value("fac", np.asarray(cat.codes, dtype=np.int64),
                     tuple(level_label(c) for c in cat.categories), bool(cat.ordered))
    if pd.api.types.is_bool_dtype(col):
        return Value("lgl", col.to_numpy(dtype=float, na_value=np.nan))
    if pd.api.types.is_numeric_dtype(col):
        return Value("num", col.to_numpy(dtype=float, na_value=np.nan))
    if pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
        if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
            col = col.map(lambda v: v if v is None or v != v else level_label(v))
        return text_factor(col)
    raise GLMMInputError(f"column {name!r} has dtype {col.dtype}, which a formula cannot use "
                         "(use numbers, logicals, strings or categories)")


def collation_key(level: str):
    """R's order of text in a UTF-8 locale, for letters and digits: case-insensitive,
    lower case first on ties ("a" < "B" < "b"; the C locale puts "B" before "a")."""
    return level.casefold(), level.swapcase()


def text_factor(col: pd.Series) -> Value:
    """A factor of a text column: hashed, then levels in R's (UTF-8 locale) order."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    labels = [str(u) for u in uniques]
    order = sorted(range(len(labels)), key=lambda i: collation_key(labels[i]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
    return Value("fac", codes.astype(np.int64), tuple(labels[i] for i in order), text=True)


def as_factor(v: Value, what: str, drop: bool = True) -> Value:
    """R's as.factor: characters get sorted levels, numbers sorted numeric levels;
    ``drop``: levels no row uses are dropped."""
    if v.kind == "fac":
        used = np.unique(v.data[v.data >= 0])
        if len(used) == len(v.levels) or not drop:
            return v
        remap = np.full(len(v.levels), -1)
        remap[used] = np.arange(len(used))
        return Value("fac", np.where(v.data >= 0, remap[v.data], -1),
                     tuple(v.levels[i] for i in used), v.ordered, text=v.text)
    if v.kind == "mat":
        raise GLMMInputError(f"{what} is a matrix and cannot be a factor")
    na = v.na()
    if v.kind == "chr":
        f = text_factor(pd.Series(v.data))
        return Value("fac", f.data, f.levels)
    else:
        uniq, codes = np.unique(v.data[~na], return_inverse=True)
        labels = tuple(("TRUE" if u else "FALSE") if v.kind == "lgl" else level_label(u)
                       for u in uniq)
    return Value("fac", _fill(na, codes.ravel().astype(np.int64)), labels)


def _fill(na: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = np.full(len(na), -1, np.int64)
    out[~na] = codes
    return out


def numeric(v: Value, what: str) -> np.ndarray:
    if v.kind in ("num", "lgl"):
        return v.data
    kind = {"fac": "factor", "chr": "character vector", "mat": "matrix"}[v.kind]
    raise GLMMInputError(f"{what} must be numeric, but is a {kind}")


# ---- functions -------------------------------------------------------------------------
def _num1(fn):
    def f(args, node, ctx):
        x = numeric(args["x"], f"the argument of {node.func}()")
        with np.errstate(all="ignore"):
            return Value("num", np.asarray(fn(x), dtype=float))
    return (("x",), f)


def _const(args, key, default, node, kinds=("num", "lgl", "chr")):
    """A constant argument, of one of the value ``kinds``."""
    v = args.get(key)
    if v is None:
        return default
    if v.data.ndim != 0 or v.kind not in kinds:
        what = {"num": "a number", "lgl": "TRUE or FALSE", "chr": "a string"}
        raise GLMMInputError(f"argument {key!r} of {node.func}() at position {node.pos} must be "
                             + " or ".join(what[k] for k in kinds))
    return bool(v.data.item()) if v.kind == "lgl" else v.data.item()


def _log(args, node, ctx):
    x = numeric(args["x"], "the argument of log()")
    base = _const(args, "base", math.e, node, ("num",))
    if not base > 0 or base == 1:
        raise GLMMInputError(f"log() at position {node.pos}: base must be positive and not 1")
    with np.errstate(all="ignore"):
        return Value("num", np.log(x) / math.log(base))


def _round(args, node, ctx):
    digits = int(_const(args, "digits", 0, node, ("num",)))
    return Value("num", r_round(numeric(args["x"], "the argument of round()"), digits))


def r_round(x: np.ndarray, digits: int) -> np.ndarray:
    """R 4's round(x, digits): of the two candidates with ``digits`` decimals around x,
    the nearer in double arithmetic; on a tie, the even one (round(1.05, 1) is 1)."""
    p10 = 10.0**digits
    ax = np.abs(x)
    with np.errstate(invalid="ignore"):
        x10 = ax * p10
        i10 = np.floor(x10)
        xd, xu = i10 / p10, np.ceil(x10) / p10
        du, dd = xu - ax, ax - xd
        up = (du < dd) | ((du == dd) & (np.mod(i10, 2) == 1))
    return np.sign(x) * np.where(up, xu, xd) + 0.0


def _identity(args, node, ctx):
    return args["x"]


def _factor(args, node, ctx):
    v = as_factor(args["x"], deparse(node))
    return Value("fac", v.data, v.levels, v.ordered)  # a factor now, not text


def _ordered(args, node, ctx):
    v = as_factor(args["x"], deparse(node))
    return Value("fac", v.data, v.levels, True)


def _relevel(args, node, ctx):
    if args["x"].kind not in ("fac",) or args["x"].ordered:
        raise GLMMInputError(f"relevel() at position {node.pos} is for unordered factors and "
                             "text columns")
    v = as_factor(args["x"], deparse(node))
    ref = _const(args, "ref", None, node, ("num", "chr"))
    if isinstance(ref, float):  # R: a number is the position of the level
        if not (ref == int(ref) and 1 <= ref <= len(v.levels)):
            raise GLMMInputError(f"relevel() at position {node.pos}: ref = {ref:g} is not a "
                                 f"level position (1 to {len(v.levels)})")
        ref = v.levels[int(ref) - 1]
    if ref not in v.levels:
        raise GLMMInputError(f"relevel() at position {node.pos}: {ref!r} is not a level "
                             f"(levels: {', '.join(v.levels)})")
    k = v.levels.index(ref)
    order = [k] + [i for i in range(len(v.levels)) if i != k]
    rank = np.argsort(order)
    return Value("fac", np.where(v.data >= 0, rank[v.data], -1),
                 tuple(v.levels[i] for i in order))


def _as_numeric(args, node, ctx):
    v = args["x"]
    if v.kind == "fac" and v.text:  # a character column: its values read as numbers
        nums = pd.to_numeric(pd.Series(v.levels, dtype=object), errors="coerce").to_numpy(float)
        return Value("num", np.where(v.data >= 0, np.append(nums, np.nan)[v.data], np.nan))
    if v.kind == "fac":  # R: the factor's integer codes
        return Value("num", np.where(v.data >= 0, v.data + 1.0, np.nan))
    if v.kind == "chr":
        return Value("num", pd.to_numeric(pd.Series(v.data), errors="coerce").to_numpy(float))
    return Value("num", numeric(v, "the argument of as.numeric()").astype(float))


def _as_integer(args, node, ctx):
    return Value("num", np.trunc(_as_numeric(args, node, ctx).data))


def _as_logical(args, node, ctx):
    x = numeric(args["x"], "the argument of as.logical()")
    return Value("lgl", np.where(np.isnan(x), np.nan, (x != 0).astype(float)))


def _ifelse(args, node, ctx):
    test = numeric(args["test"], "the test of ifelse()")
    yes = numeric(args["yes"], "ifelse()'s yes")
    no = numeric(args["no"], "ifelse()'s no")
    return Value("num", np.where(np.isnan(test), np.nan, np.where(test != 0, yes, no)))


def _pminmax(fn):
    def f(args, node, ctx):
        return Value("num", fn(numeric(args["x"], node.func), numeric(args["y"], node.func)))
    return (("x", "y"), f)


def _scale(args, node, ctx):
    """R's scale(x, center = TRUE, scale = TRUE): NA ignored; the scale is the SD, or the
    root mean square (n - 1) when not centred."""
    x = numeric(args["x"], "the argument of scale()")
    key = ("scale", node.pos)
    if ctx.fitting:
        ok = x[~np.isnan(x)]
        center = _const(args, "center", True, node, ("num", "lgl"))
        c = float(np.mean(ok)) if center is True else (0.0 if center is False else float(center))
        sc = _const(args, "scale", True, node, ("num", "lgl"))
        dev = ok - c
        s = float(np.sqrt(np.sum(dev**2) / max(1, len(dev) - 1))) if sc is True else \
            (1.0 if sc is False else float(sc))
        ctx.state[key] = (c, s)
    c, s = ctx.state[key]
    return Value("mat", ((x - c) / s)[:, None], colnames=("",))


def _poly(args, node, ctx):
    """R's poly(x, degree, raw = FALSE): orthogonal polynomials (three-term recurrence
    with the fitted coefficients alpha, norm2, as R's predict.poly), or raw powers."""
    x = numeric(args["x"], "the argument of poly()")
    degree = _const(args, "degree", 1.0, node, ("num",))
    raw = _const(args, "raw", False, node, ("lgl",))
    if degree < 1 or degree != int(degree):
        raise GLMMInputError(f"poly() at position {node.pos}: degree must be a whole number "
                             "of at least 1")
    degree = int(degree)
    if ctx.fitting and np.isnan(x).any():
        raise GLMMInputError(f"poly() at position {node.pos}: missing values are not "
                             "allowed in 'poly' (as in R)")
    if raw:
        return Value("mat", x[:, None] ** np.arange(1, degree + 1),
                     colnames=tuple(str(k) for k in range(1, degree + 1)))
    key = ("poly", node.pos)
    if ctx.fitting:
        if degree >= len(np.unique(x)):
            raise GLMMInputError(f"poly() at position {node.pos}: 'degree' must be less than "
                                 "the number of unique points")
        xbar = float(np.mean(x))
        xc = x - xbar
        Q, R = np.linalg.qr(xc[:, None] ** np.arange(degree + 1))
        Z = Q * np.diag(R)
        norm2 = np.sum(Z**2, axis=0)
        alpha = (np.sum(xc[:, None] * Z**2, axis=0) / norm2 + xbar)[:degree]
        ctx.state[key] = (alpha, np.concatenate([[1.0], norm2]))
    alpha, norm2 = ctx.state[key]
    Z = np.ones((len(x), degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (norm2[i + 1] / norm2[i]) * Z[:, i - 1]
    Z = Z / np.sqrt(norm2[1:])
    return Value("mat", Z[:, 1:], colnames=tuple(str(k) for k in range(1, degree + 1)))


FUNCTIONS = {
    "I": (("x",), _identity),
    "log": (("x", "base"), _log),
    "log2": _num1(np.log2), "log10": _num1(np.log10), "log1p": _num1(np.log1p),
    "exp": _num1(np.exp), "expm1": _num1(np.expm1), "sqrt": _num1(np.sqrt),
    "abs": _num1(np.abs), "sin": _num1(np.sin), "cos": _num1(np.cos), "tan": _num1(np.tan),
    "floor": _num1(np.floor), "ceiling": _num1(np.ceil), "trunc": _num1(np.trunc),
    "sign": _num1(np.sign),
    "round": (("x", "digits"), _round),
    "factor": (("x",), _factor), "as.factor": (("x",), _factor),
    "ordered": (("x",), _ordered), "relevel": (("x", "ref"), _relevel),
    "as.numeric": (("x",), _as_numeric), "as.double": (("x",), _as_numeric),
    "as.integer": (("x",), _as_integer), "as.logical": (("x",), _as_logical),
    "ifelse": (("test", "yes", "no"), _ifelse),  # (all required: see REQUIRED)
    "pmin": _pminmax(np.minimum), "pmax": _pminmax(np.maximum),
    "scale": (("x", "center", "scale"), _scale),
    "poly": (("x", "degree", "*", "raw"), _poly),  # after "*": by name only
}
REQUIRED = {"ifelse": 3, "pmin": 2, "pmax": 2}  # arguments without defaults (else 1)


@dataclass
class Context:
    df: pd.DataFrame
    state: dict  # stateful transforms' parameters, keyed by (function, position)
    fitting: bool


def _match_args(node: Call, spec: tuple[str, ...]) -> dict[str, Node]:
    params = tuple(p for p in spec if p != "*")
    by_position = spec[: spec.index("*")] if "*" in spec else spec
    named = {}
    for k, v in node.args:
        if k is not None:
            if k not in params:
                raise GLMMInputError(
                    f"{node.func}() at position {node.pos} has no argument {k!r} "
                    f"(its arguments: {', '.join(params)})")
            named[k] = v
    free = [p for p in by_position if p not in named]
    positional = [v for k, v in node.args if k is None]
    if len(positional) > len(free):
        raise GLMMInputError(f"{node.func}() at position {node.pos} takes at most "
                             f"{len(by_position)} unnamed arguments ({', '.join(by_position)}"
                             + (f"; name the others: {', '.join(params[len(by_position):])})"
                                if len(params) > len(by_position) else ")"))
    named.update(zip(free, positional, strict=False))
    missing = [p for p in params[: REQUIRED.get(node.func, 1)] if p not in named]
    if missing:
        raise GLMMInputError(f"{node.func}() at position {node.pos} needs the argument(s) "
                             f"{', '.join(missing)}")
    return named


def _arith(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "^":
            return np.power(a, b)
        if op == "%%":
            return np.mod(a, b)
        return np.floor_divide(a, b)  # %/%


def _labels(v: Value) -> np.ndarray:
    if v.kind == "fac":
        lv = np.asarray(v.levels + (None,), dtype=object)
        return lv[v.data]
    return v.data


def _as_text(v: Value, labels):
    """Numbers and logicals compared with levels are compared as R prints them."""
    if v.kind not in ("num", "lgl"):
        return labels
    lgl = v.kind == "lgl"
    text = [None if x != x else (("TRUE" if x else "FALSE") if lgl else level_label(x))
            for x in np.ravel(labels)]
    return np.asarray(text, dtype=object).reshape(np.shape(labels))


def _compare(op: str, a: Value, b: Value, node) -> Value:
    if a.kind in ("fac", "chr") or b.kind in ("fac", "chr"):
        if op not in ("==", "!="):
            raise GLMMInputError(f"{op!r} at position {node.at} compares text; only == and "
                                 "!= are meaningful for factors and strings")
        la, lb = _labels(a), _labels(b)
        la, lb = _as_text(a, la), _as_text(b, lb)
        na = pd.isna(la) | pd.isna(lb)
        la = np.where(pd.isna(la), "", la).astype(str) if np.ndim(la) else str(la)
        lb = np.where(pd.isna(lb), "", lb).astype(str) if np.ndim(lb) else str(lb)
        eq = np.asarray(la == lb, dtype=float)
        out = eq if op == "==" else 1.0 - eq
        return Value("lgl", np.where(na, np.nan, out))
    x, y = numeric(a, op), numeric(b, op)
    fn = {"==": np.equal, "!=": np.not_equal, "<": np.less, ">": np.greater,
          "<=": np.less_equal, ">=": np.greater_equal}[op]
    with np.errstate(invalid="ignore"):
        return Value("lgl", np.where(np.isnan(x) | np.isnan(y), np.nan, fn(x, y).astype(float)))


def _eval(node: Node, ctx: Context) -> Value:
    if isinstance(node, Num):
        return Value("num", np.asarray(node.value))
    if isinstance(node, Str):
        return Value("chr", np.asarray(node.value, dtype=object))
    if isinstance(node, Name):
        if node.id in ctx.df.columns:
            return column(ctx.df, node.id)
        if node.id in CONSTANTS:
            c = CONSTANTS[node.id]
            return Value("lgl" if isinstance(c, bool) else "num", np.asarray(float(c)))
        raise GLMMInputError(f"column {node.id!r} (position {node.pos}) is not in the data")
    if isinstance(node, Paren):
        return _eval(node.inner, ctx)
    if isinstance(node, Unary):
        v = _eval(node.operand, ctx)
        if node.op == "!":
            x = numeric(v, "the operand of '!'")
            return Value("lgl", np.where(np.isnan(x), np.nan, (x == 0).astype(float)))
        if node.op in "+-":
            x = numeric(v, f"the operand of unary {node.op!r}")
            return Value("num", -x if node.op == "-" else x)
        raise GLMMInputError(f"{node.op!r} at position {node.pos} is not allowed here")
    if isinstance(node, BinOp):
        op = node.op
        if op in ("+", "-", "*", "/", "^", "%%", "%/%"):
            a, b = _eval(node.left, ctx), _eval(node.right, ctx)
            return Value("num", _arith(op, numeric(a, f"an operand of {op!r}"),
                                       numeric(b, f"an operand of {op!r}")))
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return _compare(op, _eval(node.left, ctx), _eval(node.right, ctx), node)
        if op in ("&", "&&", "|", "||"):
            a = numeric(_eval(node.left, ctx), op)
            b = numeric(_eval(node.right, ctx), op)
            with np.errstate(invalid="ignore"):
                v = (a != 0) & (b != 0) if op[0] == "&" else (a != 0) | (b != 0)
            return Value("lgl", np.where(np.isnan(a) | np.isnan(b), np.nan, v.astype(float)))
        raise GLMMInputError(
            f"operator {op!r} at position {node.at} is a formula operator; inside an "
            f"expression wrap the arithmetic in I(...)")
    if isinstance(node, Call):
        if node.func not in FUNCTIONS:
            hint = " (use scale(x, scale = FALSE))" if node.func == "center" else ""
            raise GLMMInputError(
                f"unknown function {node.func}() at position {node.pos} of the formula{hint}; "
                f"glmm_jax knows: {', '.join(sorted(FUNCTIONS))}")
        params, fn = FUNCTIONS[node.func]
        args = {k: _eval(v, ctx) for k, v in _match_args(node, params).items()}
        return fn(args, node, ctx)
    raise GLMMInputError(f"cannot evaluate {deparse(node)!r}")  # pragma: no cover


def evaluate(node: Node, df: pd.DataFrame, state: dict, fitting: bool = True) -> Value:
    """Evaluate ``node`` on ``df`` as R would, broadcast to one value per row. With
    ``fitting``, stateful transforms learn their parameters into ``state``; otherwise they
    use those stored there."""
    v = _eval(node, Context(df, state, fitting))
    if v.data.ndim == 0:
        v = Value(v.kind, np.full(len(df), v.data.item(),
                                  dtype=object if v.kind == "chr" else float))
    return v
