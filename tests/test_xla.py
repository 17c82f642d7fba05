"""Compile options: used when this jaxlib's XLA knows them, dropped when it does not."""

import jax
import jax.numpy as jnp

from glmm_jax import xla


def _known(name, value) -> bool:
    try:
        jax.jit(lambda x: x * 3.0).lower(1.0).compile(compiler_options={name: value})
        return True
    except Exception:  # noqa: BLE001
        return False


def test_unknown_options_are_dropped_known_ones_kept():
    wanted = {"xla_glmm_jax_no_such_option": True, **xla.SMALL}
    known = {k: v for k, v in wanted.items() if _known(k, v)}
    assert "xla_glmm_jax_no_such_option" not in known
    assert xla.accepted(frozenset(wanted.items())) == known


def test_a_program_with_an_unknown_option_still_runs():
    double = xla.jit(lambda x: 2.0 * x, options={"xla_glmm_jax_no_such_option": 1})
    assert float(double(jnp.asarray(3.0))) == 6.0
    assert double._cache_size() == 1  # the jit's own attributes pass through
