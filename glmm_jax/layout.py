"""Laying a validated model frame out for an engine: the engine's choice, size buckets,
padding, and the arrays' placement (sharding) on devices."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from threadpoolctl import ThreadpoolController

from . import lmm, lmmpad, nested, sizes
from .crossed import MultiData, MultiStructure, TermData, rest_columns
from .design import ModelFrame
from .errors import GLMMInputError
from .families import Family
from .laplace import (
    ClusterData,
    Structure,
    block_rows,
    chunk_size,
    cluster_arrays,
    make_layout,
    positions,
)
from .sizes import bucket
from .theta import Padding

MAX_QUADRATURE_NODES = 1000  # nagq**q per cluster for AGHQ


@functools.cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """Context: NumPy/SciPy's BLAS on one thread, for the row-level NumPy work around a
    fit. Idle BLAS workers spin for a while after each call and take the cores from
    XLA's threads: a 100k-row fit ran 30-40 ms slower right after the start values."""
    return _blas_threads().limit(limits=1, user_api="blas")


ENGINES = ("single", "multi", "lmm")


class Laid(NamedTuple):
    """A model frame laid out for one engine: its (possibly reordered) frame, static
    structure, device arrays, and (one grouping factor) each cluster's (block, slot)."""

    frame: ModelFrame
    structure: Structure | MultiStructure
    data: ClusterData | MultiData | lmm.LmmData
    clusters: tuple | None = None
    # respond(y, trials, weights=None): the data's fields that depend on y (NumPy), and
    # with new prior weights (one per row; 0 leaves a row out) the fields that hold them
    respond: object = None
    padding: Padding | None = None  # the program's theta entries beyond the model's (sizes.py)


def lay_out(frame: ModelFrame, fam: Family, nagq: int = 1, devices=None, reml: bool = False,
            engine: str | None = None, pad: bool = True) -> Laid:
    """Choose the engine (or take ``engine``: "single" for one grouping factor's
    per-cluster path, "multi" for the joint Laplace path of several terms, "lmm" for a
    Gaussian model from cross products) and lay the frame out for it on ``devices``.

    A model without random terms (a GLM) takes the "multi" engine with no terms: no
    modes, and its likelihood is exact (``nagq`` is ignored); under REML (Gaussian) the
    fixed effects are its one pseudo-term, so the restricted likelihood is lme4's.
    ``pad=False`` lays a small model out as a large one (sizes.py): its own columns and
    the fine grid of sizes, for programs that are not shared (a vmapped batch of refits).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise GLMMInputError("devices= is empty")
    if engine is not None and engine not in ENGINES:
        raise GLMMInputError(f"unknown engine {engine!r}; engine must be one of "
                             + ", ".join(repr(e) for e in ENGINES))
    if not frame.groups:
        if engine not in (None, "multi"):
            raise GLMMInputError(f"engine={engine!r}: a model without random terms is "
                                 "fitted by the 'multi' engine")
        return _build_multi(frame, fam, 1, reml, devices, pad)
    if engine in (None, "lmm") and fam.name == "gaussian":
        laid = _build_lmm(frame, fam, nagq, reml, devices, pad)
        if laid is not None:
            return laid
        if engine == "lmm":
            raise GLMMInputError("engine='lmm': this model's dense part is too large for "
                                 "the cross-product engine")
    elif engine == "lmm":
        raise GLMMInputError(f"engine='lmm' fits Gaussian models, not {fam.name!r}")
    if engine == "multi" or (engine is None and (len(frame.groups) > 1 or reml)):
        return _build_multi(frame, fam, nagq, reml, devices, pad)
    if len(frame.groups) > 1 or reml:
        raise GLMMInputError("engine='single' needs one random term (and ML)")
    return _build_single(frame, fam, nagq, devices, pad)


def _build_single(frame: ModelFrame, fam: Family, nagq: int, devices, pad: bool = True
                  ) -> Laid:
    """One grouping factor: the per-cluster path (laplace.py), in blocks of clusters."""
    grouping = frame.groups[0]
    q = grouping.Z.shape[1]
    if nagq**q > MAX_QUADRATURE_NODES:
        raise GLMMInputError(
            f"nagq={nagq} with {q} random effects per group needs nagq**{q} = {nagq**q} "
            f"quadrature nodes per group; the limit is {MAX_QUADRATURE_NODES}: lower nagq"
        )
    p = frame.X.shape[1]
    # a small model's program: fixed effects padded (sizes.py); a random intercept under
    # the Laplace rule runs in a program for two effects (its second column of Z zero)
    # where this process already laid one out that holds it (after a random slope),
    # else in its own (which compiles in half the time and runs twice as fast)
    small = pad and sizes.small(len(frame.y))
    width = sizes.fixed_width(p, len(frame.y)) if small else p
    Qs = (2, 1) if small and q == 1 and nagq == 1 else (q,)
    # pad blocks, clusters and chunks (sizes.py), so that models of nearby sizes reuse one
    # compiled program (padding has zero weight; empty clusters add exactly 0); chunks to
    # a multiple of the number of devices, over which they are sharded
    layout, n_groups, n_chunks, n_blocks, Q = _single_sizes(
        grouping, [(("single", fam, Q, width, nagq, len(devices)), Q) for Q in Qs], devices,
        small)
    s = Structure(fam, width, Q, n_groups, nagq)
    where = positions(layout, n_blocks, n_chunks)
    arrays = frame_arrays(frame, fam, layout, n_chunks, n_groups, n_blocks,
                          put=lambda a: place(a, devices, fresh=True), width=width, q=Q,
                          where=where)

    def respond(y, trials, weights=None):
        w = frame.weights if weights is None else np.asarray(weights, dtype=float)
        out = {"y": where.fill(y, 1.0), "trials": where.fill(trials, 1.0)}
        if weights is not None:
            out["weights"] = where.fill(w, 0.0)
        out["log_const"] = layout.block_sums(w * fam.log_const(y, trials), n_blocks)
        return out

    return Laid(frame, s, arrays, (layout.cluster_block, layout.cluster_slot), respond,
                _padding(frame, s))


def _single_sizes(grouping, keys: list, devices, small: bool):
    """The chunk layout of one grouping factor, the program's sizes (clusters per block,
    chunks per block, blocks) and its number of effects. ``keys`` are (key, effects)
    pairs, preferred first: a small model takes the sizes of a program already laid out
    under the first key where its rows fit (sizes.find), else those of the last key
    (sizes.reuse), else powers of two."""
    codes, J, d = grouping.codes, len(grouping.levels), len(devices)

    def to_devices(m):
        return -(-m // d) * d

    if not small:
        layout = make_layout(codes, J, block_rows=block_rows(devices[0].platform))
        return (layout, bucket(layout.max_clusters), to_devices(bucket(layout.max_chunks)),
                bucket(layout.n_blocks), keys[-1][1])
    counts = np.bincount(codes, minlength=J)
    allowed = sizes.slots_allowed(len(codes))

    def chunks(C):  # chunks of C rows that hold the clusters
        return int(np.sum(-(-counts // C)))

    def fits(sz):
        slots, C, M, n_groups = sz
        return n_groups >= J and slots <= allowed and chunks(C) <= M

    found = next(((sz, Q) for key, Q in keys[:-1] if (sz := sizes.find(key, fits))), None)
    if found is None:
        C = chunk_size(counts)
        M = to_devices(sizes.power_of_two(chunks(C)))
        found = sizes.reuse(keys[-1][0], fits, (M * C, C, M, sizes.power_of_two(J))), keys[-1][1]
    (_, C, M, n_groups), Q = found
    return make_layout(codes, J, size=C), n_groups, M, 1, Q


def _padding(frame: ModelFrame, s) -> Padding | None:
    """The padding of the program of ``s`` around the model of ``frame``."""
    lay = s.theta.of_model(frame.X.shape[1], [len(g.z_names) for g in frame.groups])
    return Padding.between(lay, s.theta)


def _build_lmm(frame: ModelFrame, fam: Family, nagq: int, reml: bool, devices,
               pad: bool = True) -> Laid | None:
    """A Gaussian model fitted from its cross products (lmm.py); None when its dense part
    would be too large (then the joint Laplace path, exact too, takes it). A small model
    (sizes.py) is padded: fixed effects to a width of sizes.FIXED_WIDTHS, each term's
    levels and the other terms' entries and pairs to powers of two, or to the sizes of a
    program already laid out in this process that holds them (lmmpad.py)."""
    _check_one_term_for_agq(frame, nagq)
    groups = sorted(frame.groups, key=lambda g: -len(g.levels) * len(g.z_names))
    p = frame.X.shape[1]
    if sum(len(g.levels) * len(g.z_names) for g in groups[1:]) + reml * p > lmm.MAX_DENSE:
        return None
    terms = [(g.Z, g.codes) for g in groups]
    Js = tuple(len(g.levels) for g in groups)
    q_terms = tuple(len(g.z_names) for g in groups)
    stats = lmm.cross_products(frame.X, frame.y - frame.offset, terms, Js, frame.trials)
    if stats is None:
        return None
    plan = _lmm_padding(stats, fam, q_terms, Js, p, reml, len(frame.y), pad)
    width, Js_to = (plan.width, plan.Js_to) if plan else (p, Js)
    if plan is not None:
        stats = lmm.LmmData(**plan.apply(stats._asdict()))

    def respond(y, trials, weights=None):
        if weights is not None:
            raise GLMMInputError("new prior weights need the 'single' or 'multi' engine; "
                                 "the cross-product engine ('lmm') folds the rows into "
                                 "its statistics (build the model with engine='multi')")
        out = lmm.response_products(frame.X, y - frame.offset, terms, Js, trials)
        return out if plan is None else plan.apply(out)

    qs = q_terms + (width,) * reml
    s = lmm.LmmStructure(fam, width, qs, Js_to + (1,) * reml, nagq, reml=reml)
    frame = replace(frame, groups=tuple(groups))
    return Laid(frame, s, jax.device_put(stats, devices[0]), None, respond,
                _padding(frame, s))


def _lmm_padding(stats: lmm.LmmData, fam: Family, qs, Js, p: int, reml: bool, n: int,
                 pad: bool):
    """The padding of a small Gaussian model's cross products (None for a large one):
    the smallest sizes already used for its structure that hold it and are at most 8
    times its own (sizes.find), else powers of two."""
    if not (pad and sizes.small(n)):
        return None
    width = sizes.fixed_width(p, n)
    E, P = len(stats.ent_j), len(stats.pair_j)
    own = tuple(sizes.power_of_two(J) for J in Js) + (
        sizes.power_of_two(E) if E else 0, sizes.power_of_two(P) if P else 0)
    have = Js + (E, P)

    def fits(sz):
        return all(h <= t <= max(8 * h, 64) for h, t in zip(have, sz[1:], strict=True))

    cost = sum(q * J for q, J in zip(qs, own[:len(Js)], strict=True))
    key = ("lmm", fam, qs, width, reml)
    sz = sizes.reuse(key, fits, (cost,) + own)[1:]
    plan = lmmpad.LmmPadding(qs, Js, sz[:len(Js)], p, width, *sz[len(Js):])
    if plan.r_to + reml * width > lmm.MAX_DENSE:
        return None
    return plan


def _check_one_term_for_agq(frame: ModelFrame, nagq: int) -> None:
    if nagq != 1 and len(frame.groups) > 1:
        raise GLMMInputError(
            f"nagq={nagq}: adaptive Gauss-Hermite quadrature needs a single random term; "
            f"this model has {len(frame.groups)} (use nagq=1, the Laplace approximation)"
        )


def _build_multi(frame: ModelFrame, fam: Family, nagq: int, reml: bool = False,
                 devices=None, pad: bool = True) -> Laid:
    """Several random terms (or REML): joint Laplace (crossed.py). Nested terms, finest
    first, are eliminated level by level (nested.py); otherwise the term with the most
    effects comes first (it is eliminated; lme4 too orders terms by their number of
    levels). Under REML the fixed effects are a last pseudo-term with a flat prior.
    Rows are sharded over ``devices`` (padded with zero-weight rows to a multiple of
    their number; small models to the sizes of sizes.py)."""
    _check_one_term_for_agq(frame, nagq)
    p = frame.X.shape[1]
    if reml and not p:
        raise GLMMInputError("reml=True on the joint Laplace engine needs a fixed effect; "
                             "this formula has none (without fixed effects REML is ML: "
                             "reml=False gives the same fit)")

    def layout(groups):
        terms = [(g.Z, g.codes) for g in groups]
        terms += [(frame.X, np.zeros(len(frame.y), np.int64))] * reml
        Js = tuple(len(g.levels) for g in groups) + (1,) * reml
        return terms, Js

    groups = sorted(frame.groups, key=lambda g: (-len(g.levels), -len(g.z_names)))
    terms, Js = layout(groups)
    anc = nested.ancestors([c for _, c in terms], Js)
    if anc is None:  # crossed: dense Schur complement after the largest term
        groups = sorted(frame.groups, key=lambda g: -len(g.levels) * len(g.z_names))
        terms, Js = layout(groups)
    frame = replace(frame, groups=tuple(groups))
    qs = tuple(Z.shape[1] for Z, _ in terms)
    n, d = len(frame.y), len(devices)
    small = pad and sizes.small(n)
    width = sizes.fixed_width(p, n) if small and not reml else p
    rows_to, Js_to = -(-n // d) * d, Js
    if small:  # rows and levels: those of a program already laid out, else padded
        rows_to, Js_to = _multi_sizes((fam, width, nagq), n, qs, Js, reml, anc is not None,
                                      d)
        if anc is not None and Js_to != Js:  # (a padded level's ancestors: level 0)
            anc = nested.ancestors([c for _, c in terms], Js_to)
    s = MultiStructure(fam, width, qs, Js_to, reml=reml, nested=anc is not None)
    pad = rows_to - n

    def rows(a, fill=0):  # zero-weight padding rows (level 0 of every term, y = 1)
        return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)])

    arrays = MultiData(
        X=rows(widen(frame.X, width)), y=rows(frame.y, 1), trials=rows(frame.trials, 1),
        offset=rows(frame.offset), weights=rows(frame.weights),
        terms=tuple(TermData(rows(Z), rows(c.astype(np.int32))) for Z, c in terms),
        rest_cols=np.zeros((n + pad, 0), np.int32) if s.nested else
        rest_columns([rows(c) for _, c in terms], qs, Js_to),
        log_const=np.asarray(np.sum(frame.weights * fam.log_const(frame.y, frame.trials))),
        anc=anc or (),
    )
    def respond(y, trials, weights=None):
        w = frame.weights if weights is None else np.asarray(weights, dtype=float)
        out = {"y": rows(y, 1), "trials": rows(trials, 1),
               "log_const": np.asarray(np.sum(w * fam.log_const(y, trials)))}
        if weights is not None:
            out["weights"] = rows(w)
        return out

    return Laid(frame, s, place_rows(arrays, devices), None, respond, _padding(frame, s))


def _multi_sizes(program: tuple, n: int, qs: tuple, Js: tuple, reml: bool, is_nested: bool,
                 d: int):
    """A small model's rows and levels per term (joint Laplace): those of a program
    already laid out for the same terms, ``program`` (family, width, nagq) and ``d``
    devices that hold them (sizes.reuse: up to 8 times a term's levels where their cost
    is linear in them, nested terms and the eliminated term of crossed ones, whose
    coupling to the dense part, [J_0 q_0, Q_r], may then grow at most 4-fold (or to
    2**16 entries); up to 25% (or 32) more levels in a crossed term's dense Schur
    complement, cubic), else rows to a power of two (times ``d``) and levels to the odd
    number at or above :func:`bucket` (level counts with large powers of two ran the
    program up to 6 times slower: VerbAgg's 316 and 24 levels padded to 512 and 32).
    Padded levels have no rows: each adds exactly 0 to -log L (a block of the prior's
    identity in -H)."""
    key = ("multi", *program, qs, reml, is_nested, d)
    allowed, n_prior = sizes.slots_allowed(n), len(Js) - int(reml)

    def linear(k):
        return k == 0 or is_nested

    def most(k, J):  # the most levels term k may be padded to
        if k >= n_prior:  # (REML's fixed effects: one level)
            return J
        return max(8 * J, 64) if linear(k) else max(J + J // 4, J + 32)

    def own(k, J):
        return J if k >= n_prior else bucket(J) | 1

    def coupling(levels):  # entries of B: term 0's effects by the dense part's
        return qs[0] * levels[0] * sum(q * t for q, t in zip(qs[1:], levels[1:], strict=True))

    def fits(sz):
        return n <= sz[0] <= allowed and all(
            J <= t <= most(k, J) for k, (J, t) in enumerate(zip(Js, sz[1:], strict=True))
        ) and (is_nested or coupling(sz[1:]) <= max(4 * coupling(Js), 2**16))

    default = (-(-sizes.power_of_two(n) // d) * d,) + tuple(own(k, J) for k, J in
                                                           enumerate(Js))
    sz = sizes.reuse(key, fits, default)
    return sz[0], tuple(sz[1:])


def _shard(arrays, devices, spec: P, is_sharded, fresh: bool = False):
    """Put ``arrays`` on ``devices``: those where ``is_sharded(a)`` split by ``spec`` (over
    mesh axis "d"), the rest replicated. ``fresh``: NumPy arrays that nothing else holds,
    which the (first) CPU device may then use in place (no copy)."""
    if len(devices) == 1:
        if fresh and devices[0] == _first_cpu():
            return jax.tree.map(_in_place, arrays)
        return jax.device_put(arrays, devices[0])
    mesh = Mesh(np.asarray(devices), ("d",))
    split, whole = NamedSharding(mesh, spec), NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.device_put(a, split if is_sharded(a) else whole), arrays)


@functools.cache
def _first_cpu():
    return jax.devices("cpu")[0]


def _in_place(a):
    """A NumPy array as a CPU jax.Array over the same memory where XLA can use it as it
    is (DLPack: C-contiguous and aligned, else copied), else copied."""
    if isinstance(a, np.ndarray) and a.ndim and a.size and a.flags.writeable:
        try:
            return jax.dlpack.from_dlpack(a)
        except (BufferError, TypeError, RuntimeError):
            pass
    return jax.device_put(a, _first_cpu())


def fetch(tree):
    """The arrays of ``tree`` as NumPy, those spread over several processes' devices
    (jax.distributed: a program's per-level outputs can come back sharded) gathered
    first, as every process of the program does."""
    def one(a):  # (a replicated array holds its whole value here too)
        if isinstance(a, jax.Array) and not (a.is_fully_addressable or
                                             a.is_fully_replicated):
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
        return np.asarray(a)

    return jax.tree.map(one, tree)


def place_rows(arrays: MultiData, devices) -> MultiData:
    """Put row-level arrays on ``devices``, sharded by rows; the rest replicated."""
    n = arrays.y.shape[0]
    return _shard(arrays, devices, P("d"), lambda a: np.ndim(a) > 0 and a.shape[0] == n)


def place(arrays, devices, fresh: bool = False):
    """Put the arrays (a ClusterData, or one of its arrays) on ``devices``: each block's
    row chunks sharded across them, the per-block constants replicated (``fresh``: see
    ``_shard``)."""
    return _shard(arrays, devices, P(None, "d"), lambda a: np.ndim(a) > 1, fresh)


def frame_arrays(frame: ModelFrame, fam: Family, layout, n_chunks=None, n_groups=None,
                 n_blocks=None, put=None, width: int | None = None, q: int | None = None,
                 where=None):
    """The engine's (NumPy, or ``put`` applied to each) arrays of a model frame in a chunk
    layout (X and Z with zero columns up to ``width`` and ``q``; ``where``: see
    ``laplace.cluster_arrays``)."""
    g = frame.groups[0]
    return cluster_arrays(widen(frame.X, width), widen(g.Z, q), frame.y, frame.trials, frame.offset,
                          frame.weights * fam.log_const(frame.y, frame.trials), layout,
                          n_chunks, n_groups, n_blocks, put, frame.weights, where)


def widen(X: np.ndarray, width: int | None) -> np.ndarray:
    """X with zero columns appended up to ``width`` (theta.Padding's columns)."""
    if width is None or width == X.shape[1]:
        return X
    return np.concatenate([X, np.zeros((len(X), width - X.shape[1]))], axis=1)
