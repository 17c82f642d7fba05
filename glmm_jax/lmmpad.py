"""Padding of a Gaussian model's cross products (lmm.py) to the sizes of a shared program.

Padded levels of a term are levels without rows (zero cross products): each contributes
exactly 0 to -log L, as a random effect that no observation sees integrates out to 1.
Padded fixed-effect columns are zero columns of X whose coefficients are held at 0; X'X
gets 1 on their diagonal, so that the fixed effects' block of the Schur complement stays
positive definite (an identity block, uncoupled from the rest: log det 1 = 0, and the
GLS estimates of those coefficients are exactly 0); under REML the data's ``fixed_pad``
takes their count out of the dimension N and the 2π constant. Padded entries and pairs
of the other terms' columns carry zero values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LmmPadding(NamedTuple):
    """From a model's cross products to a program's: each term's levels ``Js`` to
    ``Js_to`` (``qs`` effects each), ``p`` fixed effects to ``width``, the entries and
    pairs of the other terms' columns to ``n_ent`` and ``n_pairs``."""

    qs: tuple[int, ...]
    Js: tuple[int, ...]
    Js_to: tuple[int, ...]
    p: int
    width: int
    n_ent: int
    n_pairs: int

    def column_map(self) -> np.ndarray:
        """Where each column of the other terms' effects (term 1.., level-major) sits
        among the program's."""
        out, to = [], 0
        for q, J, J_to in zip(self.qs[1:], self.Js[1:], self.Js_to[1:], strict=True):
            out.append(to + np.arange(q * J))
            to += q * J_to
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    @property
    def r_to(self) -> int:
        return sum(q * J for q, J in zip(self.qs[1:], self.Js_to[1:], strict=True))

    def apply(self, fields: dict) -> dict:
        """The (NumPy) fields of an ``LmmData``, or those of ``lmm.response_products``,
        padded; fields not named here are kept."""
        J0, p, w = self.Js_to[0], self.p, self.width
        cols, R_to = self.column_map(), self.r_to
        R = len(cols)
        out = dict(fields)

        def rows(a, n):  # axis 0 padded with zeros to n
            return np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)])

        for k in ("ZtZ0", "Zty0"):
            if k in fields:
                out[k] = rows(fields[k], J0)
        if "ZtX0" in fields:
            a = fields["ZtX0"]
            out["ZtX0"] = np.concatenate([rows(a, J0), np.zeros(
                (J0, a.shape[1], w - p))], axis=2)
        if "Ztyr" in fields:
            out["Ztyr"] = np.zeros(R_to)
            out["Ztyr"][cols] = fields["Ztyr"]
        if "Xty" in fields:
            out["Xty"] = np.concatenate([fields["Xty"], np.zeros(w - p)])
        if "ZtZr" not in fields:  # (a response's fields)
            return out
        out["ZtZr"] = np.zeros((R_to, R_to))
        out["ZtZr"][np.ix_(cols, cols)] = fields["ZtZr"]
        out["ZtXr"] = np.zeros((R_to, w))
        out["ZtXr"][cols, :p] = fields["ZtXr"]
        out["XtX"] = np.eye(w)
        out["XtX"][:p, :p] = fields["XtX"]
        out["fixed_pad"] = np.asarray(float(w - p))
        r1, r2 = np.divmod(fields["pair_rr"].astype(np.int64), max(R, 1))
        pair_rr = (cols[r1] * R_to + cols[r2]).astype(np.int32) if R else fields["pair_rr"]
        P = len(pair_rr)
        last = max(R_to * R_to - 1, 0)  # (padding pairs at the end keep pair_rr sorted)
        out["ent_j"] = rows(fields["ent_j"], self.n_ent)
        out["ent_r"] = rows(cols[fields["ent_r"]].astype(np.int32) if R else
                            fields["ent_r"], self.n_ent)
        out["ent_c"] = rows(fields["ent_c"], self.n_ent)
        out["pair_j"] = rows(fields["pair_j"], self.n_pairs)
        out["pair_rr"] = np.concatenate([pair_rr, np.full(self.n_pairs - P, last, np.int32)])
        out["pair_c"] = rows(fields["pair_c"], self.n_pairs)
        return out
