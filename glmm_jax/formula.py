"""lme4 formulas: ``response ~ fixed terms + (terms | group) + offset(x)``, read as R.

The formula is parsed with R's syntax (rsyntax.py) and split here into its response,
the signed pieces of the fixed part, the random terms and the offsets; modelmatrix.py
expands the fixed part and each random term's left side as R's ``terms`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GLMMInputError
from .rsyntax import BinOp, Call, Name, Node, Paren, Unary, deparse, parse, strip_parens
from .rsyntax import syntax_error as _syntax_error


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` term; ``correlated`` is False for ``||``."""

    expr: Node
    group: str  # column names joined by ':' (interaction) or '/' (nesting)
    correlated: bool = True

    @property
    def columns(self) -> list[str]:
        return [c for part in self.group.split("/") for c in part.split(":")]

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        return f"({deparse(self.expr)} {bar} {self.group})"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed formula."""

    formula: str
    response: tuple[Node, ...]  # one expression, or (successes, failures) from cbind()
    fixed: tuple[tuple[str, Node], ...]  # signed pieces ("+" or "-", term) of the fixed part
    random: tuple[RandomTerm, ...]
    offsets: tuple[Node, ...]

    @property
    def response_labels(self) -> tuple[str, ...]:
        return tuple(deparse(r) for r in self.response)


def pieces(node: Node, sign: str = "+") -> list[tuple[str, Node]]:
    """A right-hand side split at its top-level '+' and '-'."""
    flip = {"+": "-", "-": "+"}
    if isinstance(node, BinOp) and node.op in "+-":
        return pieces(node.left, sign) + pieces(node.right, sign if node.op == "+"
                                                  else flip[sign])
    if isinstance(node, Unary) and node.op in "+-":
        return pieces(node.operand, sign if node.op == "+" else flip[sign])
    return [(sign, node)]


def _group(node: Node, formula: str) -> str:
    node = strip_parens(node)
    if isinstance(node, Name):
        return node.id
    if isinstance(node, BinOp) and node.op in (":", "/"):
        return f"{_group(node.left, formula)}{node.op}{_group(node.right, formula)}"
    raise _syntax_error(formula, node.pos, f"grouping factor {deparse(node)!r} must be column "
                        "names joined by ':' or '/'")


def _random_term(node: Node, formula: str) -> RandomTerm | None:
    """``(expr | group)`` or ``(expr || group)``; None if ``node`` is not one."""
    if not isinstance(node, Paren):
        return None
    inner = strip_parens(node.inner)
    if not (isinstance(inner, BinOp) and inner.op in ("|", "||")):
        return None
    return RandomTerm(inner.left, _group(inner.right, formula), inner.op == "|")


def _bar(node: Node) -> BinOp | None:
    """A '|' outside any random term (not inside a call)."""
    if isinstance(node, BinOp):
        if node.op in ("|", "||"):
            return node
        return _bar(node.left) or _bar(node.right)
    if isinstance(node, Unary):
        return _bar(node.operand)
    return None


def parse_rhs(formula: str) -> Node:
    """The right-hand side of a one-sided formula ``"~ terms"`` (or of ``"y ~ terms"``)."""
    if not isinstance(formula, str):
        raise GLMMInputError(f"formula must be a string, not {type(formula).__name__}")
    tree = parse(formula)
    if isinstance(tree, Unary) and tree.op == "~":
        return tree.operand
    if isinstance(tree, BinOp) and tree.op == "~":
        return tree.right
    raise _syntax_error(formula, 0, "a one-sided formula starts with '~' (~ terms)")


def parse_formula(formula: str) -> ModelSpec:
    """Parse an lme4-style formula.

    >>> spec = parse_formula("cbind(s, n - s) ~ x + (1 + x | g) + offset(log(t))")
    >>> spec.response_labels, str(spec.random[0]), [deparse(o) for o in spec.offsets]
    (('s', 'n - s'), '(1 + x | g)', ['log(t)'])
    """
    if not isinstance(formula, str):
        raise GLMMInputError(f"formula must be a string, not {type(formula).__name__}")
    try:
        tree = parse(formula)
    except GLMMInputError:
        if "~" not in formula:
            raise _syntax_error(formula, len(formula), "a formula needs exactly one '~' "
                                "(response ~ terms)") from None
        raise
    if isinstance(tree, Unary) and tree.op == "~":
        raise _syntax_error(formula, tree.pos, "missing response before '~'")
    if not (isinstance(tree, BinOp) and tree.op == "~"):
        raise _syntax_error(formula, len(formula), "a formula needs exactly one '~' "
                            "(response ~ terms)")
    lhs, rhs = tree.left, tree.right
    if isinstance(lhs, BinOp) and lhs.op == "~":
        raise _syntax_error(formula, tree.at, "a formula needs exactly one '~' "
                            "(response ~ terms)")
    lhs_core = strip_parens(lhs)
    if isinstance(lhs_core, Call) and lhs_core.func == "cbind":
        if len(lhs_core.args) != 2 or any(k is not None for k, _ in lhs_core.args):
            raise _syntax_error(formula, lhs.pos, "cbind() takes two arguments: successes, "
                                "failures")
        response = tuple(v for _, v in lhs_core.args)
    else:
        response = (lhs,)

    fixed, random, offsets = [], [], []
    for sign, node in pieces(rhs):
        rt = _random_term(node, formula)
        off = node if isinstance(node, Call) and node.func == "offset" else None
        if sign == "-" and (off is not None or rt is not None):
            raise _syntax_error(formula, node.pos, "random terms and offsets cannot be "
                                "subtracted")
        if off is not None:
            if len(off.args) != 1 or off.args[0][0] is not None:
                raise _syntax_error(formula, off.pos, "offset() takes one argument")
            offsets.append(off.args[0][1])
        elif rt is not None:
            random.append(rt)
        elif (bar := _bar(node)) is not None:
            raise _syntax_error(formula, bar.at, "'|' may appear only inside a random term "
                                "(terms | group)")
        else:
            fixed.append((sign, node))
    return ModelSpec(formula, response, tuple(fixed), tuple(random), tuple(offsets))
