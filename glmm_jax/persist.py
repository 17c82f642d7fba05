"""Saved fits: :func:`save` and :func:`load`, in an open format that never runs code.

A saved fit is a zip archive of two members: ``fit.json`` (the formula, family, options,
scalars, names, levels, the convergence record, the formula encoding and the package
and format versions) and ``arrays.npz`` (every array, read with ``allow_pickle=False``).
By default the model frame (X, y, trials, offset, weights, each term's codes and Z) is
saved too, as R's saved ``merMod`` keeps its model frame, so a loaded fit can predict,
profile and bootstrap without the data; ``save(..., data=False)`` leaves the rows out,
and ``load(path, data=df)`` rebuilds the model from the data (checking that they give
the fit's design).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import fields

import numpy as np
import pandas as pd

from .design import GroupingFactor, ModelFrame, expand_terms
from .errors import GLMMInputError
from .families import get_family
from .formula import parse_formula
from .modelmatrix import Encoding, VarCoding, terms_of
from .objective import engine
from .results import Convergence, GLMMResult, TermFit

FORMAT = "glmm_jax fit"
FORMAT_VERSION = 1

# GLMMResult fields and how they are kept: "json" (plain values), "array" (npz), or
# handled on their own (family, terms, frame, convergence, the model)
_JSON = ("formula", "nagq", "nobs", "x_names", "reml", "dispersion", "loglik", "converged",
         "n_iter", "singular", "messages", "n_dropped", "aliased")
_ARRAYS = ("beta", "beta_cov", "theta", "cov_theta", "hessian", "gradient")
_OWN = ("family", "terms", "frame", "convergence", "separation", "model_", "builder")


def save(res: GLMMResult, path, data: bool = True) -> None:
    """Write the fit ``res`` to ``path`` (a zip of JSON and npz; see the module); with
    ``data=False`` the model frame's rows are left out.

    >>> import os, tempfile
    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> path = os.path.join(tempfile.mkdtemp(), "cbpp.glmm")
    >>> res.save(path)
    >>> back = gj.load(path)
    >>> back.loglik == res.loglik, bool((back.vcov == res.vcov).all().all())
    (True, True)
    """
    if not isinstance(res, GLMMResult):
        raise GLMMInputError(f"save: expected a GLMMResult, not {type(res).__name__}")
    unknown = {f.name for f in fields(GLMMResult)} - set(_JSON + _ARRAYS + _OWN)
    if unknown:  # a new result field must be given a place in the file
        raise NotImplementedError(f"save does not know how to keep {sorted(unknown)}")
    from . import __version__

    arrays: dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "glmm_jax": __version__,
            "family": {"name": res.family.name, "link": res.family.link}}
    meta.update({k: _plain(getattr(res, k)) for k in _JSON})
    for k in _ARRAYS:
        value = getattr(res, k)
        if value is not None:
            arrays[k] = np.asarray(value)
    meta["terms"] = []
    for i, t in enumerate(res.terms):
        meta["terms"].append({"group": t.group, "z_names": list(t.z_names),
                              "levels": _index(t.levels)})
        arrays.update({f"term{i}.L": t.L, f"term{i}.b": t.b, f"term{i}.b_cov": t.b_cov})
    meta["convergence"] = _convergence(res.convergence, arrays)
    meta["separation"] = _separation(res.separation)
    model = res.model
    meta["engine"] = engine(model.structure).name if model is not None else None
    meta["frame"] = _frame(res.frame, arrays, data) if res.frame is not None else None
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("fit.json", json.dumps(meta, indent=1))
            z.writestr("arrays.npz", buf.getvalue())
    except OSError as exc:
        raise GLMMInputError(f"save: cannot write {str(path)!r}: {exc}") from None


def load(path, data: pd.DataFrame | None = None, weights=None, offset=None) -> GLMMResult:
    """The fit saved at ``path`` by :func:`save` (see its example). Its model is rebuilt
    from the saved model frame when first asked for; for a fit saved with
    ``data=False``, pass the fit's ``data`` (and ``weights=``/``offset=`` where they were
    arrays rather than columns): it must give the saved fit's design.

    >>> import os, tempfile
    >>> import glmm_jax as gj
    >>> cbpp = gj.datasets.load("cbpp")
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> path = os.path.join(tempfile.mkdtemp(), "cbpp.glmm")
    >>> res.save(path, data=False)  # no rows in the file
    >>> gj.load(path).frame is None
    True
    >>> back = gj.load(path, data=cbpp)  # the model rebuilt from the data
    >>> bool((back.predict(cbpp) == res.predict(cbpp)).all())
    True
    """
    meta, arrays = _read(path)
    fam = get_family(meta["family"]["name"], meta["family"]["link"])
    values = {k: _unplain(k, meta[k]) for k in _JSON}
    values.update({k: arrays.get(k) for k in _ARRAYS})
    terms = tuple(
        TermFit(t["group"], tuple(t["z_names"]), _unindex(t["levels"]),
                arrays[f"term{i}.L"], arrays[f"term{i}.b"], arrays[f"term{i}.b_cov"])
        for i, t in enumerate(meta["terms"]))
    conv = _unconvergence(meta["convergence"], arrays)
    frame = None
    if meta["frame"] is not None and (meta["frame"]["rows"] or data is not None):
        frame = _unframe(meta["frame"], arrays, values["formula"], fam, data, weights,
                         offset)
    builder = None
    if frame is not None:
        def builder(frame=frame):
            from .model import model_from_frame

            return model_from_frame(values["formula"], frame, fam, values["nagq"],
                                    reml=values["reml"], engine=meta["engine"])
    return GLMMResult(family=fam, terms=terms, convergence=conv, frame=frame,
                      builder=builder, separation=_unseparation(meta["separation"]),
                      **values)


# ---- JSON values ----------------------------------------------------------------------
def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return v


def _unplain(key: str, v):
    return tuple(v) if key in ("x_names", "messages", "aliased") else v


def _index(ix: pd.Index) -> dict:
    """An Index as JSON: its values, dtype and name (strings, numbers and booleans)."""
    values = ix.tolist()
    if not all(isinstance(x, (str, int, float, bool)) for x in values):
        raise GLMMInputError(f"save: labels of type {ix.dtype} ({ix.name or 'the rows'}) "
                             "cannot be saved: use text or numbers (e.g. "
                             "data.reset_index() before fitting)")
    return {"values": values, "dtype": str(ix.dtype), "name": ix.name}


def _unindex(d: dict) -> pd.Index:
    return pd.Index(d["values"], dtype=d["dtype"], name=d["name"])


def _convergence(c: Convergence | None, arrays: dict) -> dict | None:
    if c is None:
        return None
    out = {}
    for f in fields(Convergence):
        v = getattr(c, f.name)
        if isinstance(v, np.ndarray):
            arrays[f"convergence.{f.name}"] = v
        else:
            out[f.name] = _plain(v)
    return out


def _unconvergence(d: dict | None, arrays: dict) -> Convergence | None:
    if d is None:
        return None
    kw = {f.name: arrays[f"convergence.{f.name}"] if f"convergence.{f.name}" in arrays
          else d[f.name] for f in fields(Convergence)}
    kw["methods"], kw["fixed"] = tuple(kw["methods"]), tuple(kw["fixed"])
    return Convergence(**kw)


def _separation(sep) -> dict | None:
    if sep is None:
        return None
    return {"separated": bool(sep.separated), "kind": sep.kind,
            "infinite": _series(sep.infinite), "direction": _series(sep.direction),
            "n_predicted": int(sep.n_predicted), "n_rows": int(sep.n_rows),
            "message": sep.message, "policy": sep.policy}


def _unseparation(d: dict | None):
    if d is None:
        return None
    from .separation import Separation

    return Separation(**{**d, "infinite": _unseries(d["infinite"]),
                         "direction": _unseries(d["direction"])})


def _series(s: pd.Series) -> dict:
    return {"index": [str(i) for i in s.index], "values": s.astype(float).tolist(),
            "name": s.name}


def _unseries(d: dict) -> pd.Series:
    return pd.Series(d["values"], index=d["index"], name=d["name"], dtype=float)


# ---- the formula encoding --------------------------------------------------------------
def _encoding(enc: Encoding) -> dict:
    return {"codings": [{"label": c.label, "kind": c.kind, "colnames": list(c.colnames),
                         "levels": list(c.levels), "contrast": c.contrast, "text": c.text}
                        for c in enc.codings],
            "contrasted": [list(t) for t in enc.contrasted], "names": list(enc.names),
            "keep": None if enc.keep is None else list(enc.keep)}


def _unencoding(d: dict, terms, state: dict) -> Encoding:
    codings = tuple(VarCoding(c["label"], c["kind"], tuple(c["colnames"]), tuple(c["levels"]),
                              c["contrast"], c["text"]) for c in d["codings"])
    return Encoding(terms, codings, state, tuple(tuple(t) for t in d["contrasted"]),
                    tuple(d["names"]), None if d["keep"] is None else tuple(d["keep"]))


def _state(state: dict) -> list:
    """The stateful transforms' parameters: [function, position, [values...]]."""
    return [[fn, pos, [np.asarray(v).tolist() for v in vals]]
            for (fn, pos), vals in state.items()]


def _unstate(items: list) -> dict:
    out = {}
    for fn, pos, vals in items:
        vals = [np.asarray(v, dtype=float) for v in vals]
        out[(fn, pos)] = tuple(float(v) if v.ndim == 0 else v for v in vals)
    return out


# ---- the model frame ------------------------------------------------------------------
_FRAME_ARRAYS = ("X", "y", "trials", "offset", "weights")


def _fingerprint(f: ModelFrame) -> dict:
    """SHA-256 digests of the frame's arrays (kept also without the rows), so that data
    given to :func:`load` are checked to give exactly the fit's X, y, ... and Z."""
    parts = {k: getattr(f, k) for k in _FRAME_ARRAYS}
    for i, g in enumerate(f.groups):
        parts[f"group{i}.codes"], parts[f"group{i}.Z"] = g.codes, g.Z
    return {k: hashlib.sha256(np.ascontiguousarray(v, dtype=np.float64).tobytes()).hexdigest()
            for k, v in parts.items()}


def _frame(f: ModelFrame, arrays: dict, data: bool) -> dict:
    if data:
        arrays.update({f"frame.{k}": getattr(f, k) for k in _FRAME_ARRAYS})
        for i, g in enumerate(f.groups):
            arrays[f"frame.group{i}.codes"], arrays[f"frame.group{i}.Z"] = g.codes, g.Z
    return {"rows": data, "x_names": list(f.x_names), "response_name": f.response_name,
            "row_index": _index(f.row_index) if data else None, "n_dropped": f.n_dropped,
            "aliased": list(f.aliased), "weights_label": f.weights_label,
            "offset_label": f.offset_label, "response_note": f.response_note,
            "state": _state(f.encoding.state), "encoding": _encoding(f.encoding),
            "fingerprint": _fingerprint(f),
            "groups": [{"name": g.name, "term": str(g.term), "levels": _index(g.levels),
                        "z_names": list(g.z_names), "encoding": _encoding(g.encoding)}
                       for g in f.groups]}


def _unframe(d: dict, arrays: dict, formula: str, fam, data, weights, offset) -> ModelFrame:
    spec = parse_formula(formula)
    state = _unstate(d["state"])
    by_text = {str(t): t for t in expand_terms(spec.random)}
    enc = _unencoding(d["encoding"], terms_of(list(spec.fixed)), state)
    if data is not None:
        return _rebuilt(d, spec, fam, data, weights, offset, enc)
    groups = []
    for i, g in enumerate(d["groups"]):
        term = by_text[g["term"]]
        genc = _unencoding(g["encoding"], terms_of([("+", term.expr)]), state)
        groups.append(GroupingFactor(g["name"], term, arrays[f"frame.group{i}.codes"],
                                     _unindex(g["levels"]), arrays[f"frame.group{i}.Z"],
                                     tuple(g["z_names"]), genc))
    kw = {k: arrays[f"frame.{k}"] for k in _FRAME_ARRAYS}
    return ModelFrame(x_names=tuple(d["x_names"]), groups=tuple(groups),
                      response_name=d["response_name"], row_index=_unindex(d["row_index"]),
                      n_dropped=d["n_dropped"], aliased=tuple(d["aliased"]),
                      weights_label=d["weights_label"], offset_label=d["offset_label"],
                      encoding=enc, response_note=d["response_note"], **kw)


def _rebuilt(d: dict, spec, fam, data, weights, offset, enc: Encoding) -> ModelFrame:
    """The model frame of ``data``, checked against the saved fit's."""
    from .design import build_frame

    contrasts = {c.label: c.contrast for c in enc.codings if c.kind == "fac"}
    for what, label, given in (("weights", d["weights_label"], weights),
                               ("offset", d["offset_label"], offset)):
        if given is None and label is not None and label.endswith("(an array)"):
            raise GLMMInputError(f"load: this fit's {what} were an array, not a column: "
                                 f"pass {what}= with the same values")
    frame = build_frame(spec, data, fam, weights=d["weights_label"] if weights is None
                        else weights, offset=d["offset_label"] if offset is None else offset,
                        contrasts=contrasts)
    saved = (tuple(d["x_names"]), [(g["name"], _unindex(g["levels"]).tolist())
                                   for g in d["groups"]], d["state"])
    got = (frame.x_names, [(g.name, g.levels.tolist()) for g in frame.groups],
           _state(frame.encoding.state))
    for what, a, b in zip(("fixed-effect columns", "grouping levels",
                           "scale()/poly() parameters"), saved, got, strict=True):
        if json.dumps(a) != json.dumps(_plain(b) if what != "grouping levels" else b):
            raise GLMMInputError(f"load: the data do not give the saved fit's {what}: "
                                 "pass the data the model was fitted to")
    got = _fingerprint(frame)
    differ = [k for k, v in d.get("fingerprint", {}).items() if got.get(k) != v]
    if differ:
        raise GLMMInputError(f"load: the data do not give the saved fit's arrays "
                             f"({', '.join(differ)} differ): pass the data (and weights=, "
                             "offset=) the model was fitted to")
    return frame


def _read(path) -> tuple[dict, dict]:
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("fit.json"))
            with np.load(io.BytesIO(z.read("arrays.npz")), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise GLMMInputError(f"load: no such file: {str(path)!r}") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise GLMMInputError(f"load: {str(path)!r} is not a saved glmm_jax fit ({exc})"
                             ) from None
    if meta.get("format") != FORMAT:
        raise GLMMInputError(f"load: {str(path)!r} is not a saved glmm_jax fit")
    if meta.get("format_version") != FORMAT_VERSION:
        raise GLMMInputError(
            f"load: {str(path)!r} was saved by glmm_jax {meta.get('glmm_jax')} in format "
            f"version {meta.get('format_version')}; this glmm_jax reads version "
            f"{FORMAT_VERSION}")
    return meta, arrays
