"""``special``: scipy.special, imported at its first use. Its import takes ~0.1 s (with
scipy 1.17 it loads numpy.f2py), about half of what ``import glmm_jax`` adds to JAX's
and pandas' own imports, and a fit that needs it pays it once."""

from __future__ import annotations


class _Special:
    def __getattr__(self, name: str):
        from scipy import special

        return getattr(special, name)


special = _Special()
