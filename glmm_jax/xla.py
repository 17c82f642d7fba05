"""XLA compile options for glmm_jax's programs, and ``jit``, which applies them.

XLA versions add and remove options, and refuse names they do not know, so each option
is used only if this jaxlib accepts it (checked once, on a trivial program, the first
time a program is built): with an older or newer jaxlib a fit compiles with XLA's
defaults instead of failing.
"""

from __future__ import annotations

import functools
import hashlib
import json

import jax

from ._cache import programs_dir, write_atomic

# XLA:CPU offloads small contractions to XNNPACK ("ynn" fusions); on the row-level sums
# here that made the Hessian 3-4x slower (measured: 137 ms -> 34 ms, 100k rows), so it is
# switched off for glmm_jax's compiled functions only. Other backends ignore it.
DEFAULT = {"xla_cpu_experimental_ynn_fusion_type": ""}

# Programs for one grouping factor up to optimize.SMALL_ROWS rows: XLA:CPU's older,
# non-MLIR fusion emitters compile them 0.1-1.2 s faster (logit random intercept, 100k
# rows: 2.1 -> 1.5 s; random slope, 200k rows: 3.0 -> 1.8 s; cbpp, toenail: -0.7 to
# -0.9 s) for 0-60 ms (0-20%) more run time. Beyond, their code grows 30-40% slower
# (1M rows: +160 ms a fit), and with several random terms they can compile slower.
# LLVM's optimization level 1 (of 3) cuts their compile time by a further 6-13% (hospital,
# 5,000 rows: random intercept 1.60-1.68 -> 1.46-1.65 s, random slope 3.08-3.12 ->
# 2.69-2.84 s; 100k rows 1.74-1.87 -> 1.60-1.63 s), and their code runs as fast or faster
# (warm 100k 0.98x; the 200k random slope's Newton program 383 -> 293 ms). The other
# programs (several terms, fit_many) ran 3-12% slower warm with it: they keep the default.
SMALL = {**DEFAULT, "xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}


@functools.cache
def accepted(options: frozenset) -> dict:
    """The subset of ``options`` (name, value pairs) that this jaxlib's XLA accepts
    (the answer kept beside the compilation cache, if on: the probe costs 0.1-0.2 s)."""
    base = programs_dir()
    name = hashlib.sha256(repr((jax.__version__, jax.lib.__version__, jax.default_backend(),
                                sorted(options))).encode()).hexdigest()[:32]
    path = None if base is None else base / f"options-{name}.json"
    if path is not None and path.exists():
        try:
            return {k: v for k, v in options if k in json.loads(path.read_text())}
        except (OSError, ValueError, TypeError):
            pass
    kept, compiled = _probe(dict(options))
    if path is not None and compiled:  # (not an answer given up on: probe again later)
        try:
            write_atomic(path, json.dumps(sorted(kept)).encode())
        except OSError:
            pass
    return kept


def _probe(kept: dict) -> tuple[dict, bool]:
    """The options of ``kept`` that compile a trivial program, and whether it compiled
    (with some options, or none)."""
    while kept:
        try:
            jax.jit(lambda x: x + 1.0).lower(0.0).compile(compiler_options=kept)
            return kept, True
        except Exception as exc:  # noqa: BLE001 - the error type differs across versions
            unknown = [k for k in kept if k in str(exc)]
            if not unknown:
                return {}, False
            for k in unknown:
                del kept[k]
    return kept, True


class _Jit:
    """``jax.jit(fun, compiler_options=...)``, built at its first use with the options
    this jaxlib accepts; other attributes (``lower``, ``_cache_size``) are the jit's."""

    def __init__(self, fun, options: dict, **jit_kwargs):
        functools.update_wrapper(self, fun)
        self._fun, self._options, self._jit_kwargs = fun, options, jit_kwargs
        self._jit = None

    def _get(self):
        if self._jit is None:
            options = accepted(frozenset(self._options.items()))
            try:
                self._jit = jax.jit(self._fun, compiler_options=options, **self._jit_kwargs)
            except TypeError:  # a jax whose jit takes no compile options
                self._jit = jax.jit(self._fun, **self._jit_kwargs)
        return self._jit

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        if name in ("_fun", "_options", "_jit_kwargs", "_jit"):  # not set yet (a copy)
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun=None, *, options: dict = DEFAULT, **jit_kwargs):
    """``jax.jit`` with glmm_jax's compile ``options`` (those this XLA accepts); usable as
    a decorator, with or without arguments."""
    if fun is None:
        return functools.partial(jit, options=options, **jit_kwargs)
    return _Jit(fun, options, **jit_kwargs)
