"""lme4-style formulas: ``y ~ fixed terms + (re terms | group) + offset(x)``.

The formula is split here into its response, fixed part, random terms and offsets; the
fixed part and each random term's left side are then read by formulaic (see design.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import GLMMInputError


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` term; ``correlated`` is False for ``||``."""

    expr: str
    group: str
    correlated: bool = True

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        return f"({self.expr} {bar} {self.group})"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed formula."""

    formula: str
    response: tuple[str, ...]  # one expression, or (successes, failures) from cbind()
    fixed: str  # right-hand side for formulaic (fixed effects)
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...]


def _syntax_error(formula: str, pos: int, what: str) -> GLMMInputError:
    pointer = " " * pos + "^"
    return GLMMInputError(
        f"formula syntax error at position {pos}: {what}\n  {formula}\n  {pointer}"
    )


def _split_top(text: str, sep: str, base: int, formula: str) -> list[tuple[int, str]]:
    """Split ``text`` at top-level ``sep`` characters; return (position, piece) pairs."""
    parts, depth, start, quote = [], 0, 0, None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _syntax_error(formula, base + i, "unmatched ')'")
        elif ch == sep and depth == 0:
            parts.append((base + start, text[start:i]))
            start = i + 1
    if quote:
        raise _syntax_error(formula, base + len(text), f"unterminated string {quote}")
    if depth > 0:
        raise _syntax_error(formula, base + text.rfind("("), "unmatched '('")
    parts.append((base + start, text[start:]))
    return parts


def _signed_terms(text: str, base: int, formula: str) -> list[tuple[int, str, str]]:
    """Split a right-hand side at top-level '+' and '-' into (position, sign, term)."""
    out, depth, start, sign = [], 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0:
            out.append((base + start, sign, text[start:i]))
            sign, start = ch, i + 1
    out.append((base + start, sign, text[start:]))
    # a leading '-' (as in "~ -1 + x") leaves an empty first piece: drop it
    if len(out) > 1 and not out[0][2].strip() and out[1][1] == "-":
        out = out[1:]
    return out


def _strip(pos: int, piece: str) -> tuple[int, str]:
    lead = len(piece) - len(piece.lstrip())
    return pos + lead, piece.strip()


def _call_args(term: str, name: str) -> str | None:
    m = re.fullmatch(rf"{name}\s*\((.*)\)", term, flags=re.S)
    return m.group(1) if m else None


def _random_term(pos: int, term: str, formula: str) -> RandomTerm | None:
    """Parse ``(expr | group)`` or ``(expr || group)``; None if ``term`` is not one."""
    if not (term.startswith("(") and term.endswith(")")):
        return None
    inner = term[1:-1]
    pieces = _split_top(inner, "|", pos + 1, formula)
    if len(pieces) == 1:
        return None
    if len(pieces) == 2:
        correlated = True
    elif len(pieces) == 3 and not pieces[1][1].strip():
        correlated = False
        pieces = [pieces[0], pieces[2]]
    else:
        raise _syntax_error(formula, pos, "a random term has the form (terms | group)")
    (epos, expr), (gpos, group) = (_strip(*p) for p in pieces)
    if not expr:
        raise _syntax_error(formula, epos, "empty left side of '|' (use 1 for an intercept)")
    if not group:
        raise _syntax_error(formula, gpos, "missing grouping factor after '|'")
    if not re.fullmatch(r"[A-Za-z_.][\w.]*(\s*[:/]\s*[A-Za-z_.][\w.]*)*", group):
        raise _syntax_error(formula, gpos, f"grouping factor {group!r} must be column names "
                            "joined by ':' or '/'")
    return RandomTerm(expr, re.sub(r"\s+", "", group), correlated)


def parse_formula(formula: str) -> ModelSpec:
    """Parse an lme4-style formula.

    >>> spec = parse_formula("cbind(s, n - s) ~ x + (1 + x | g) + offset(log(t))")
    >>> spec.response, spec.fixed, spec.random[0].group, spec.offsets
    (('s', 'n - s'), 'x', 'g', ('log(t)',))
    """
    if not isinstance(formula, str):
        raise GLMMInputError(f"formula must be a string, not {type(formula).__name__}")
    sides = _split_top(formula, "~", 0, formula)
    if len(sides) != 2:
        pos = sides[2][0] - 1 if len(sides) > 2 else len(formula)
        raise _syntax_error(formula, pos, "a formula needs exactly one '~' (response ~ terms)")
    (lpos, lhs), (rpos, rhs) = (_strip(*p) for p in sides)
    if not lhs:
        raise _syntax_error(formula, lpos, "missing response before '~'")
    cb = _call_args(lhs, "cbind")
    if cb is not None:
        args = [a.strip() for _, a in _split_top(cb, ",", lpos + 6, formula)]
        if len(args) != 2 or not all(args):
            raise _syntax_error(formula, lpos, "cbind() takes two arguments: successes, failures")
        response = tuple(args)
    else:
        response = (lhs,)

    fixed, random, offsets = [], [], []
    for pos, sign, raw in _signed_terms(rhs, rpos, formula):
        pos, term = _strip(pos, raw)
        if not term:
            raise _syntax_error(formula, pos, "empty term (two operators in a row, or a "
                                "trailing '+' or '-')")
        off = _call_args(term, "offset")
        rt = _random_term(pos, term, formula)
        if sign == "-" and (off is not None or rt is not None):
            raise _syntax_error(formula, pos, "random terms and offsets cannot be subtracted")
        if off is not None:
            offsets.append(off.strip())
        elif rt is not None:
            random.append(rt)
        elif "|" in term:
            raise _syntax_error(formula, pos + term.index("|"),
                                "'|' may appear only inside a random term (terms | group)")
        else:
            fixed.append(term if sign == "+" else f"- {term}")
    fixed_rhs = " + ".join(fixed).replace("+ -", "-") if fixed else "1"
    if fixed_rhs.startswith("- "):
        fixed_rhs = "1 " + fixed_rhs
    return ModelSpec(formula, response, fixed_rhs, tuple(random), tuple(offsets))
