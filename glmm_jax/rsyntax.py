"""R's expression syntax: a tokenizer, a parser and R's deparser, for formulas.

Formulas are read as R reads them: ``^`` is a power (crossing in a formula), ``:`` an
interaction, names may hold dots (``total.fruits``) or be quoted in backticks, ``TRUE``
and ``FALSE`` are logical constants. Every node keeps its position in the formula, so
errors can point at it. :func:`deparse` prints a node as R's ``deparse`` does, which is
how R (and so lme4) names model-matrix columns (``I(Days^2)``, ``log(x + 1)``).

>>> deparse(parse("I(Days ^ 2) + log( x+1 )"))
'I(Days^2) + log(x + 1)'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import GLMMInputError


@dataclass(frozen=True)
class Node:
    """A node of the syntax tree."""

    pos: int  # position of the node's first character in the parsed text


@dataclass(frozen=True)
class Name(Node):
    """A variable: ``x``, ``log.dose``, or ```my var``` (``id`` is its text without the
    backticks)."""

    id: str


@dataclass(frozen=True)
class Num(Node):
    """A number: ``2``, ``1e5``, ``2L``."""

    value: float
    integer: bool = False  # written with an L suffix (2L)


@dataclass(frozen=True)
class Str(Node):
    """A string constant: ``"a"``."""

    value: str


@dataclass(frozen=True)
class Call(Node):
    """A function call: ``log(x, base = 2)``."""

    func: str
    args: tuple[tuple[str | None, Node], ...]  # (argument name or None, value)


@dataclass(frozen=True)
class BinOp(Node):
    """A binary operator: ``a + b``, ``x^2``, ``g | h``, ``y ~ x``."""

    op: str
    left: Node
    right: Node
    at: int = -1  # position of the operator


@dataclass(frozen=True)
class Unary(Node):
    """A unary operator: ``-x``, ``!a``, ``~ x``."""

    op: str
    operand: Node


@dataclass(frozen=True)
class Paren(Node):
    """Parentheses: ``(a + b)``."""

    inner: Node


def syntax_error(text: str, pos: int, what: str) -> GLMMInputError:
    """An error that echoes ``text`` with a caret under position ``pos``."""
    return GLMMInputError(f"formula syntax error at position {pos}: {what}\n  {text}\n  "
                          + " " * pos + "^")


# ---- tokens --------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
  | (?P<name>(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*)
  | (?P<tick>`[^`]*`)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>%[^%]*%|\*\*|\|\||&&|==|!=|<=|>=|[-+*/^:~|&!<>=(),\[\]$@])
""", re.X)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            ch = text[i]
            what = f"unterminated string {ch}" if ch in "'\"`" else f"unexpected {ch!r}"
            raise syntax_error(text, i, what)
        kind = m.lastgroup
        if kind != "ws":
            tok = m.group()
            out.append((kind, "^" if tok == "**" else tok, i))
        i = m.end()
    out.append(("end", "", len(text)))
    return out


# ---- parser (precedence as in R's ?Syntax) -------------------------------------------
_BINARY = {"~": 10, "||": 20, "|": 20, "&&": 30, "&": 30, "==": 50, "!=": 50, "<": 50,
           ">": 50, "<=": 50, ">=": 50, "+": 60, "-": 60, "*": 70, "/": 70, ":": 90,
           "^": 110}
_SPECIAL_BP = 80  # %any%
_PREFIX = {"~": 10, "!": 40, "-": 100, "+": 100}


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokens(text), 0

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, pos: int, what: str):
        return syntax_error(self.text, pos, what)

    def expect(self, value: str, opened: int | None = None):
        kind, tok, pos = self.peek()
        if tok != value or kind not in ("op",):
            if opened is not None and kind == "end":
                raise self.error(opened, "unmatched '('")
            raise self.error(pos, f"expected {value!r}" + (f", found {tok!r}" if tok else ""))
        self.take()

    def binding(self, kind: str, tok: str) -> int:
        if kind != "op":
            return 0
        if tok.startswith("%"):
            return _SPECIAL_BP
        return _BINARY.get(tok, 0)

    def expression(self, min_bp: int = 0) -> Node:
        left = self.prefix()
        while True:
            kind, tok, pos = self.peek()
            if kind == "op" and tok == "(":
                raise self.error(pos, "unexpected '(' (a call needs a function name)")
            bp = self.binding(kind, tok)
            if bp <= min_bp:
                if kind not in ("op", "end"):
                    raise self.error(pos, f"unexpected {tok!r} (an operator is missing)")
                return left
            self.take()
            right = self.expression(bp - 1 if tok == "^" else bp)  # ^ is right-associative
            left = BinOp(left.pos, tok, left, right, pos)

    def prefix(self) -> Node:
        kind, tok, pos = self.take()
        if kind == "num":
            integer = tok.endswith("L")
            return Num(pos, float(tok.rstrip("L")), integer)
        if kind == "str":
            return Str(pos, bytes(tok[1:-1], "utf-8").decode("unicode_escape"))
        if kind in ("name", "tick"):
            name = tok[1:-1] if kind == "tick" else tok
            if kind == "name" and self.peek()[1] == "(" and self.peek()[0] == "op":
                return self.call(name, pos)
            return Name(pos, name)
        if kind == "op" and tok == "(":
            inner = self.expression()
            self.expect(")", opened=pos)
            return Paren(pos, inner)
        if kind == "op" and tok in _PREFIX:
            return Unary(pos, tok, self.expression(_PREFIX[tok]))
        if kind == "end":
            raise self.error(pos, "unexpected end of the formula (a term is missing)")
        raise self.error(pos, f"unexpected {tok!r}")

    def call(self, func: str, pos: int) -> Call:
        opened = self.take()[2]
        args = []
        if self.peek()[1] != ")":
            while True:
                kind, tok, apos = self.peek()
                name = None
                nxt = self.toks[self.i + 1]
                if kind in ("name", "tick") and nxt[1] == "=" and nxt[0] == "op":
                    name = tok.strip("`")
                    self.i += 2
                args.append((name, self.expression()))
                if self.peek()[1] == ",":
                    self.take()
                    continue
                break
        self.expect(")", opened=opened)
        return Call(pos, func, tuple(args))


def parse(text: str) -> Node:
    """Parse R source ``text`` (a formula or an expression) into a tree of Nodes."""
    p = _Parser(text)
    node = p.expression()
    kind, tok, pos = p.peek()
    if kind != "end":
        if tok == ")":
            raise p.error(pos, "unmatched ')'")
        raise p.error(pos, f"unexpected {tok!r}")
    return node


# ---- deparse ---------------------------------------------------------------------------
_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
             "FALSE", "NULL", "Inf", "NaN", "NA", "in"}
_SYNTACTIC = re.compile(r"((?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.)")
_TIGHT = {"^", ":", "/", "%%", "%/%", "$", "@"}  # printed without spaces


def format_number(v: float, digits: int = 15) -> str:
    """A number as R prints it with ``digits`` significant digits at most (R's
    ``as.character``/``deparse``): fewest digits that represent it, fixed notation unless
    scientific is shorter (``1e+05``, ``1e-04``, ``0.001``).

    >>> [format_number(v) for v in (100000, 10000, 0.0001, 2.5, 95.0)]
    ['1e+05', '10000', '1e-04', '2.5', '95']
    """
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    for d in range(1, digits + 1):
        sci = f"{v:.{d - 1}e}"
        if float(sci) == float(f"{v:.{digits - 1}e}"):
            break
    mant, exp = sci.split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    e = int(exp)
    sci = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    decimals = max(d - 1 - e, 0)
    fixed = f"{v:.{decimals}f}"
    return fixed if len(fixed) <= len(sci) else sci


def deparse(node: Node) -> str:
    """``node`` printed as R's ``deparse`` prints the expression."""
    if isinstance(node, Name):
        if node.id in ("TRUE", "FALSE", "T", "F", "NA", "Inf", "NaN", "NULL"):
            return node.id
        ok = _SYNTACTIC.fullmatch(node.id) and node.id not in _RESERVED
        return node.id if ok else f"`{node.id}`"
    if isinstance(node, Num):  # (as R's term labels: 2L prints as 2)
        return format_number(node.value)
    if isinstance(node, Str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, Call):
        args = ", ".join(deparse(v) if k is None else f"{k} = {deparse(v)}"
                         for k, v in node.args)
        return f"{node.func}({args})"
    if isinstance(node, Paren):
        return f"({deparse(node.inner)})"
    if isinstance(node, Unary):
        return f"{node.op}{deparse(node.operand)}"
    if isinstance(node, BinOp):
        sep = node.op if node.op in _TIGHT else f" {node.op} "
        return f"{deparse(node.left)}{sep}{deparse(node.right)}"
    raise TypeError(node)  # pragma: no cover


def names_in(node: Node) -> list[Name]:
    """The Name nodes of an expression (not function names), in order."""
    if isinstance(node, Name):
        return [node]
    if isinstance(node, Call):
        return [n for _, a in node.args for n in names_in(a)]
    if isinstance(node, BinOp):
        return names_in(node.left) + names_in(node.right)
    if isinstance(node, Unary):
        return names_in(node.operand)
    if isinstance(node, Paren):
        return names_in(node.inner)
    return []


def strip_parens(node: Node) -> Node:
    while isinstance(node, Paren):
        node = node.inner
    return node


def deparse_lines(node: Node, cutoff: int = 60) -> list[str]:
    """``node`` deparsed as R's ``deparse`` with its ``width.cutoff``: a new line (indented
    by 4 spaces) after a spaced binary operator or an argument's comma once the line is
    longer than ``cutoff`` characters."""
    lines = [""]

    def put(s: str):
        lines[-1] += s

    def brk():
        if len(lines[-1]) > cutoff:
            lines.append("    ")

    def walk(n: Node):
        if isinstance(n, Call):
            put(f"{n.func}(")
            for k, (name, v) in enumerate(n.args):
                if k:
                    put(", ")
                    brk()
                if name is not None:
                    put(f"{name} = ")
                walk(v)
            put(")")
        elif isinstance(n, Paren):
            put("(")
            walk(n.inner)
            put(")")
        elif isinstance(n, Unary):
            put(n.op)
            walk(n.operand)
        elif isinstance(n, BinOp):
            walk(n.left)
            if n.op in _TIGHT:
                put(n.op)
            else:
                put(f" {n.op} ")
                brk()
            walk(n.right)
        else:
            put(deparse(n))

    walk(node)
    return lines


def fill(items: list[str], width: int = 80) -> list[str]:
    """R's ``cat(..., fill = TRUE)``: items joined by spaces, a new line before an item
    that would pass ``width``."""
    out, line = [], items[0]
    for item in items[1:]:
        if len(line) + 1 + len(item) > width:
            out.append(line + " ")
            line = item
        else:
            line += " " + item
    return out + [line]
