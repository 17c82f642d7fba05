"""R's number formatting and printing, for lme4-style summaries.

Ports of what ``summary(glmer(...))`` prints with: ``format(x, digits)`` (common
fixed or scientific notation for a vector, R's formatReal), ``format.pval``,
``printCoefmat``, ``abbreviate`` and ``print`` of named vectors and character matrices.

>>> format_real([-2.38157, -0.78891, 0.51423], 4)
['-2.3816', '-0.7889', ' 0.5142']
>>> format_pval([1.47e-9, 0.001068, 4.74e-4, 1e-20], 3)
['1.47e-09', '0.001068', '0.000474', '< 2e-16']
"""

from __future__ import annotations

import math

import numpy as np

EPS = float(np.finfo(float).eps)


def _sci_parts(x: float, digits: int) -> tuple[bool, int, int]:
    """(negative, decimal exponent, significant digits needed) of x at ``digits``."""
    if x == 0:
        return False, 0, 1
    mant, exp = f"{abs(x):.{digits - 1}e}".split("e")
    sig = mant.replace(".", "").rstrip("0")
    return x < 0, int(exp), max(len(sig), 1)


def format_real(values, digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` of a numeric vector: one
    notation and number of decimals for all, right-justified to a common width."""
    x = [float(v) + 0.0 for v in np.ravel(np.asarray(values, dtype=float))]  # no -0
    fin = [v for v in x if math.isfinite(v)]
    rgt, mxsl, mxns, neg = 0, 1, 1, False
    mxe, mne = 0, 0
    for v in fin:
        n, kp, nsig = _sci_parts(v, digits)
        left = kp + 1
        mxsl = max(mxsl, n + (1 if left <= 0 else left))
        rgt = max(rgt, nsig - left)
        mxns = max(mxns, nsig)
        mxe, mne = max(mxe, kp), min(mne, kp)
        neg = neg or n
    rgt = max(rgt, 0)
    e_digits = 2 if (mxe >= 100 or mne <= -100) else 1
    d = mxns - 1
    w_sci = int(neg) + (d > 0) + d + 4 + e_digits
    w_fixed = mxsl + rgt + (rgt != 0)
    out = []
    if not fin or w_fixed <= w_sci:
        rgt = max(rgt, nsmall)
        for v in x:
            out.append(f"{v:.{rgt}f}" if math.isfinite(v) else _special(v))
    else:
        for v in x:
            out.append(f"{v:.{d}e}" if math.isfinite(v) else _special(v))
    width = max(len(s) for s in out) if out else 0
    return [s.rjust(width) for s in out]


def _special(v: float) -> str:
    return "NA" if v != v else ("Inf" if v > 0 else "-Inf")


def format_pval(pv, digits: int = 3, eps: float = EPS) -> list[str]:
    """R's ``format.pval(pv, digits, eps)``: fixed notation down to 1e-4, scientific
    below, and ``< 2e-16`` below ``eps``."""
    pv = [float(p) for p in pv]
    out = [""] * len(pv)
    idx = [i for i, p in enumerate(pv) if not p < eps]
    if idx:
        expo = {i: math.floor(math.log10(pv[i])) if pv[i] > 0 else -50 for i in idx}
        fix = [i for i in idx if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
        sci = [i for i in idx if i not in fix]
        for group in (fix, sci):
            for i, s in zip(group, format_real([pv[i] for i in group], digits), strict=True):
                out[i] = s
    zero = [i for i, p in enumerate(pv) if p < eps]
    if zero:
        d = max(1, digits - 2)
        if idx:
            nc = max(len(out[i]) for i in idx)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        for i in zero:
            out[i] = "<" + sep + format_real([eps], d)[0]
    return out


def abbreviate(name: str, minlength: int) -> str:
    """R's ``abbreviate(name, minlength)`` (method "left.kept", use.classes = TRUE)."""
    b = list(name.strip())
    if len(b) <= minlength:
        return "".join(b)
    nspace = sum(ch.isspace() for ch in b)

    def done():
        return len(b) - nspace <= minlength

    def first(i):
        return b[i - 1].isspace()

    def last(i):
        return not b[i - 1].isspace() and (i + 1 == len(b) or b[i + 1].isspace())

    vowel = set("aeiou")
    rules = [lambda i: b[i] in vowel and last(i), lambda i: b[i] in vowel and not first(i),
             lambda i: b[i].islower() and last(i), lambda i: b[i].islower() and not first(i),
             lambda i: not first(i) and not b[i].isspace()]
    for rule in rules:
        if done():
            break
        for i in range(len(b) - 1, 0, -1):
            if i < len(b) and rule(i):
                del b[i]
            if done():
                break
    if len(b) > minlength:
        b = [ch for k, ch in enumerate(b) if k == 0 or not ch.isspace()]
    return "".join(b)


def abbreviate_all(names, minlength: int) -> list[str]:
    """R's ``abbreviate(names, minlength)``: where abbreviations collide, those names are
    abbreviated again with a larger minlength until they differ."""
    out = [abbreviate(n, minlength) for n in names]
    m = minlength
    while len(set(out)) < len(out) and m < max(map(len, names)):
        m += 1
        dup = {a for a in out if out.count(a) > 1}
        out = [abbreviate(n, m) if a in dup else a for n, a in zip(names, out, strict=True)]
    return out


def print_named(names, cells) -> list[str]:
    """R's print of a named vector (already formatted ``cells``): a common width."""
    w = max(max(map(len, names)), max(map(len, cells)))
    return ["".join(n.rjust(w) + " " for n in names), "".join(c.rjust(w) + " " for c in cells)]


def print_matrix(rownames, colnames, cells, right: bool = False) -> list[str]:
    """R's ``print(m, quote = FALSE, right = right)`` of a character matrix."""
    rw = max((len(r) for r in rownames), default=0)
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(colnames)]

    def just(s, w):
        return s.rjust(w) if right else s.ljust(w)

    lines = ["".ljust(rw) + "".join(" " + just(c, w) for c, w in zip(colnames, widths,
                                                                        strict=True))]
    for r, row in zip(rownames, cells, strict=True):
        lines.append(r.ljust(rw) + "".join(" " + just(c, w) for c, w in zip(row, widths,
                                                                            strict=True)))
    return lines


SIGNIF_LEGEND = "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


def _round_half_even(x, decimals):
    return np.round(np.asarray(x, dtype=float), decimals)


def coefmat(rownames, est, se, stat, stat_name: str, p=None, digits: int = 4) -> list[str]:
    """R's ``printCoefmat`` of estimates, standard errors, a test statistic and
    (optionally) p-values, with significance stars and their legend."""
    est, se, stat = (np.asarray(a, dtype=float) for a in (est, se, stat))
    cs = np.column_stack([est, se])
    acs = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    digmin = 1 + (math.floor(math.log10(acs.min())) if acs.size else 0)
    cs_fmt = format_real(_round_half_even(cs.T.ravel(), max(1, digits - digmin)), digits)
    n = len(est)
    col_est, col_se = cs_fmt[:n], cs_fmt[n:]
    dig_tst = max(1, min(5, digits - 1))
    col_stat = format_real(_round_half_even(stat, dig_tst), digits)
    for col, raw in ((col_est, est), (col_se, se)):  # rounded to 0 but not 0
        for i, (s, v) in enumerate(zip(col, raw, strict=True)):
            if v != 0 and math.isfinite(v) and float(s) == 0:
                col[i] = format_real([v], max(1, digits - 1))[0]
    names = ["Estimate", "Std. Error", stat_name]
    cols = [col_est, col_se, col_stat]
    stars = False
    if p is not None:
        p = np.asarray(p, dtype=float)
        names.append(f"Pr(>|{stat_name[0]}|)")
        cols.append(format_pval(p, dig_tst))
        stars = bool(np.any(p < 0.1))
        if stars:
            sym = ["***" if v <= 0.001 else "**" if v <= 0.01 else "*" if v <= 0.05 else
                   "." if v <= 0.1 else " " for v in p]
            width = max(map(len, sym))
            names.append("")
            cols.append([s.ljust(width) for s in sym])
    cells = [list(row) for row in zip(*cols, strict=True)]
    lines = print_matrix(list(rownames), names, cells, right=True)
    if stars:
        lines += ["---", SIGNIF_LEGEND]
    return lines
