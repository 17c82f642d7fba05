"""JAX's persistent compilation cache, on by default for glmm_jax.

Compiling a model's program takes seconds; with the cache a second Python process that
fits a model of the same structure loads it from disk instead. The cache lives in
``$GLMM_JAX_CACHE_DIR`` or ``$XDG_CACHE_HOME/glmm_jax/xla`` (default ``~/.cache``).
Set ``GLMM_JAX_CACHE=0`` before importing glmm_jax to leave it off; a cache directory
the user already configured for JAX is left as it is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("GLMM_JAX_CACHE_DIR") or Path(base) / "glmm_jax" / "xla")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (at ``path`` or the default).

    Returns the directory in use, or None when disabled by ``GLMM_JAX_CACHE=0``.
    ``import glmm_jax`` calls it with the default (``$GLMM_JAX_CACHE_DIR``, else
    ``~/.cache/glmm_jax/xla``).

    >>> import glmm_jax as gj
    >>> path = gj.enable_compilation_cache()  # the directory already in use
    >>> path is None or path.name != ""
    True
    """
    if path is None:
        if os.environ.get("GLMM_JAX_CACHE", "1").lower() in ("0", "false", "no", "off"):
            return None
        if jax.config.jax_compilation_cache_dir:
            return Path(jax.config.jax_compilation_cache_dir)
        path = default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return Path(path)


def programs_dir() -> Path | None:
    """Where glmm_jax keeps its own files beside the cache (traced programs, the compile
    options this XLA accepts); None when the cache is off."""
    base = jax.config.jax_compilation_cache_dir
    return Path(base) / "glmm_jax_programs" if base else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the whole file or none),
    readable by every user of a shared cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
