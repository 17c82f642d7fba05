"""The sizes of compiled programs: how a model's dimensions are padded so that refits of
the same structure reuse one program.

A program is compiled for its array shapes and static structure. Small models (at most
``SMALL_ROWS`` rows) are padded generously, as their run time is small beside a
compile: fixed effects to a width of :data:`FIXED_WIDTHS` (zero columns, coefficients
held at 0), rows, chunks and clusters to powers of two; and a model whose data fit in
the sizes of a program already built in this process (with the same structure) takes
those sizes, so that a refit on a subset, or with a covariate fewer, compiles nothing;
a random intercept (Laplace) takes a two-effect program laid out before for a random
slope where it fits (layout.py), else its own; several random terms pad each term's
levels (levels without rows) to the odd number at or above the finer grid
(``layout._multi_sizes``). Larger models are padded to the
finer grid of :func:`bucket` (at most 19%), with their own number of fixed effects.
Padding has zero weight and never changes a result. A refit on more rows, chunks or
levels than any program of its structure holds compiles a program of its own.
"""

from __future__ import annotations

import numpy as np

SMALL_ROWS = 2**15  # rows; up to this many, a model is padded generously
FIXED_WIDTHS = (8, 16, 32)  # fixed-effect widths of small models (then multiples of 32)
MAX_SLOTS = 8  # a program's rows may hold up to this many times a small model's rows
MIN_SLOTS = 4096  # ... or this many

# sizes of programs laid out in this process: key (structure without sizes) -> sizes
_USED: dict[tuple, list[tuple]] = {}


def bucket(n: int) -> int:
    """n rounded up to the grid 8, 9, 10, 11, 13, 16, ... (steps of 2**(1/4), so at most
    19% padding).

    >>> [bucket(n) for n in (5, 9, 14, 100)]
    [5, 10, 14, 108]
    """
    if n <= 8:
        return max(n, 1)
    k = int(np.floor(4 * np.log2(n)))
    while int(np.ceil(2 ** (k / 4))) < n:
        k += 1
    return int(np.ceil(2 ** (k / 4)))


def power_of_two(n: int) -> int:
    """The smallest power of two >= n (and >= 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def small(n_rows: int) -> bool:
    return n_rows <= SMALL_ROWS


def fixed_width(p: int, n_rows: int) -> int:
    """The number of fixed-effect columns of the program of a model with ``p`` of them
    and ``n_rows`` rows: ``p`` itself for large models, else the next width of
    :data:`FIXED_WIDTHS` (beyond, the next multiple of 32).

    >>> fixed_width(3, 5000), fixed_width(12, 5000), fixed_width(40, 5000), fixed_width(5, 10**5)
    (8, 16, 64, 5)
    """
    if not small(n_rows):
        return p
    return next((w for w in FIXED_WIDTHS if p <= w), -(-p // 32) * 32)


def slots_allowed(n_rows: int) -> int:
    """The most row slots a small model's program may have."""
    return max(MAX_SLOTS * n_rows, MIN_SLOTS)


def find(key: tuple, fits) -> tuple | None:
    """The smallest sizes already used under ``key`` for which ``fits(sizes)`` holds (a
    refit of the same structure), else None. Sizes are tuples whose first entry orders
    them by cost (their row slots)."""
    return next((sizes for sizes in sorted(_USED.get(key, ())) if fits(sizes)), None)


def reuse(key: tuple, fits, default: tuple) -> tuple:
    """:func:`find`, else ``default``, remembered under ``key``."""
    found = find(key, fits)
    if found is None:
        _USED.setdefault(key, []).append(default)
    return default if found is None else found


def forget() -> None:
    """Forget the sizes used so far (the next models take their own)."""
    _USED.clear()
