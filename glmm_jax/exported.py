"""Traced programs kept on disk: a new process loads a model's Newton program instead of
tracing it again.

XLA's persistent compilation cache (``_cache.py``) keeps compiled code, but each new
process still traces and lowers a program before it can look its code up: for the
Newton program of one grouping factor that is 0.7-1 s, most of a first fit with a filled
cache. Here the lowered program is serialized with ``jax.export`` beside that cache,
under a key of everything it depends on (glmm_jax's source, the JAX version, the
backend, the static arguments, the arrays' shapes and dtypes, the compile options); a
later process deserializes it in milliseconds, and XLA's cache gives its compiled code.

Used where the cache is on and the arrays are on one device; elsewhere, or if a program
cannot be stored or loaded, the caller traces it as usual.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

from . import xla

_LOADED: dict[tuple, object] = {}  # in this process: key -> loaded program (None: failed)
_REGISTERED: set[type] = set()


@functools.cache
def _source_hash() -> str:
    """A hash of glmm_jax's source: a program stored by other code is never loaded."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _directory() -> Path | None:
    """Where programs are stored: beside XLA's persistent cache (None when it is off)."""
    base = jax.config.jax_compilation_cache_dir
    return Path(base) / "glmm_jax_programs" if base else None


def call(name: str, fun, args: tuple, static, options: dict, out_types: tuple = ()):
    """``fun(*args)`` (``static``: the arguments bound in ``fun``, hashable, part of the
    key; ``name`` names the program) through its stored export, compiled with XLA
    ``options``; None where no stored program can serve (the caller then runs its own
    jitted function). ``out_types``: NamedTuple types of the result, for serialization."""
    directory = _directory()
    leaves, tree = jax.tree.flatten(args)
    if directory is None or not _one_device(leaves):
        return None
    shapes = tuple((tuple(np.shape(a)), str(a.dtype)) for a in leaves)
    key = (name, static, str(tree), shapes, tuple(sorted(options.items())))
    if key not in _LOADED:
        _LOADED[key] = _load_or_store(key, fun, args, options, out_types, directory)
    loaded = _LOADED[key]
    return None if loaded is None else loaded(*args)


def _load_or_store(key: tuple, fun, args: tuple, options: dict, out_types: tuple,
                   directory: Path):
    from jax import export

    digest = hashlib.sha256(repr((_source_hash(), jax.__version__, jax.default_backend(),
                                  key)).encode()).hexdigest()
    path = directory / f"{digest}.jaxexport"
    try:
        _register(list(args) + list(out_types), export)
        if path.exists():
            exp = export.deserialize(bytearray(path.read_bytes()))
        else:
            specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), args)
            exp = export.export(jax.jit(fun))(*specs)
            _write(path, exp.serialize())
    except Exception:  # noqa: BLE001 - no flatbuffers, a full disk, a foreign file ...
        return None
    return xla.jit(exp.call, options=options)


def _register(objects: list, export) -> None:
    """Register the NamedTuple types in ``objects`` (instances, nested, or types) for
    serialization."""
    for obj in objects:
        cls = obj if isinstance(obj, type) else type(obj)
        if hasattr(cls, "_fields") and cls not in _REGISTERED:
            export.register_namedtuple_serialization(
                cls, serialized_name=f"glmm_jax.{cls.__module__}.{cls.__qualname__}")
            _REGISTERED.add(cls)
        if isinstance(obj, (tuple, list)):
            _register(list(obj), export)


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _one_device(leaves) -> bool:
    devices = set()
    for a in leaves:
        sharding = getattr(a, "sharding", None)
        if sharding is not None:
            devices |= set(sharding.device_set)
    return len(devices) <= 1
