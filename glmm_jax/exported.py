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

import hashlib
import threading
from pathlib import Path

import jax
import numpy as np

from . import xla
from ._cache import programs_dir, write_atomic

_LOADED: dict[tuple, object] = {}  # in this process: key -> loaded program (None: failed)
_REGISTERED: set[type] = set()
_LOCK = threading.Lock()
# JAX settings that change what a function traces to
_SETTINGS = ("jax_enable_x64", "jax_numpy_dtype_promotion", "jax_default_matmul_precision",
             "jax_numpy_rank_promotion")


def _source_hash() -> str:
    """A hash of glmm_jax's source: a program stored by other code is never loaded."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _directory() -> Path | None:
    return programs_dir()


def call(name: str, fun, args: tuple, static, options: dict, out_types: tuple = ()):
    """``fun(*args)`` (``static``: the arguments bound in ``fun``, hashable, part of the
    key; ``name`` names the program) through its stored export, compiled with XLA
    ``options``; None where no stored program can serve (the caller then runs its own
    jitted function): the store off, arrays on several devices, a static argument of a
    type defined outside glmm_jax (a user's family: its code is not in the key), or a
    program that cannot be exported, stored, loaded or run. ``out_types``: NamedTuple
    types of the result, for serialization."""
    directory = _directory()
    leaves, tree = jax.tree.flatten(args)
    platform = _platform(leaves)
    if directory is None or platform is None or not _own(static):
        return None
    shapes = tuple((tuple(np.shape(a)), str(a.dtype)) for a in leaves)
    key = (name, platform, static, str(tree), shapes, tuple(sorted(options.items())),
           tuple(str(getattr(jax.config, k, None)) for k in _SETTINGS))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_or_store(key, fun, args, options, out_types, directory,
                                          platform)
        loaded = _LOADED[key]
    if loaded is None:
        return None
    try:
        return loaded(*args)
    except Exception:  # noqa: BLE001 - e.g. a program for another platform: trace instead
        _LOADED[key] = None
        return None


def _load_or_store(key: tuple, fun, args: tuple, options: dict, out_types: tuple,
                   directory: Path, platform: str):
    from jax import export

    digest = hashlib.sha256(repr((_source_hash(), jax.__version__, key)).encode()).hexdigest()
    path = directory / f"{digest}.jaxexport"
    try:
        _register(list(args) + list(out_types), export)
        exp = export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # noqa: BLE001 - none yet, or damaged: export (again)
        try:
            specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), args)
            exp = export.export(jax.jit(fun), platforms=(platform,))(*specs)
        except Exception:  # noqa: BLE001 - no flatbuffers, an op export refuses ...
            return None
        try:
            write_atomic(path, exp.serialize())
        except Exception:  # noqa: BLE001 - a read-only or full disk: use it unstored
            pass
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


def _own(obj) -> bool:
    """Whether ``obj`` (static arguments: tuples, dataclasses) holds only values of
    builtin types and of types defined in glmm_jax."""
    if isinstance(obj, (tuple, list)):
        return all(_own(o) for o in obj)
    if isinstance(obj, (int, float, str, bool, type(None))):
        return True
    if not type(obj).__module__.startswith("glmm_jax."):
        return False
    fields = getattr(obj, "__dataclass_fields__", None)
    return fields is None or all(_own(getattr(obj, f)) for f in fields)




def _platform(leaves) -> str | None:
    """The platform of the arrays' one device (NumPy arrays: the default backend's);
    None for arrays on several devices."""
    devices = set()
    for a in leaves:
        sharding = getattr(a, "sharding", None)
        if sharding is not None:
            devices |= set(sharding.device_set)
    if len(devices) > 1:
        return None
    return next(iter(devices)).platform if devices else jax.default_backend()
