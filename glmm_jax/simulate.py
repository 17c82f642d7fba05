"""Responses simulated from a fitted model (lme4's ``simulate.merMod``).

Random effects are drawn anew from N(0, G) (``random_effects="new"``, lme4's default
``use.u = FALSE``) or held at the conditional modes (``"conditional"``, ``use.u =
TRUE``); responses are drawn from the family given them (``Family.sample``), with the
fit's binomial trials and Gaussian precision weights. As R, other prior weights are not
used in simulation (a warning says so).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import rows
from .errors import DataWarning, GLMMInputError, warn

KINDS = ("new", "conditional")


def simulate(res, nsim: int = 1, seed: int = 0, random_effects: str = "new") -> np.ndarray:
    """``nsim`` responses for the rows of the fit: an array [n_rows, nsim] (binomial:
    successes out of the fit's trials).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> Y = res.simulate(3, seed=1)
    >>> Y.shape, bool((Y <= res.frame.trials[:, None]).all())
    ((56, 3), True)
    """
    if random_effects not in KINDS:
        raise GLMMInputError(f"random_effects must be 'new' or 'conditional', not "
                             f"{random_effects!r}")
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise GLMMInputError(f"nsim must be a positive integer, not {nsim!r}")
    f, fam = res.frame, res.family
    if fam.name not in ("binomial", "gaussian") and not np.all(f.weights == 1.0):
        warn(f"simulate: the prior weights of this {fam.title} model are not used "
             "(as R's simulate)", DataWarning)
    eta = f.X @ res.beta + f.offset
    codes = tuple(np.asarray(g.codes) for g in f.groups)
    Zs = tuple(np.asarray(g.Z) for g in f.groups)
    if random_effects == "conditional":
        eta = eta + rows.random_part(f.groups, [t.b for t in res.terms])
        Ls = tuple(np.zeros((len(t.z_names),) * 2) for t in res.terms)
    else:
        Ls = tuple(t.L for t in res.terms)
    sizes = tuple(len(t.levels) for t in res.terms)
    Y = _draw(jax.random.key(int(seed)), eta, codes, Zs, Ls, rows.log_dispersion(res),
              f.trials, fam, sizes, int(nsim))
    return np.asarray(Y).T


@partial(jax.jit, static_argnames=("fam", "sizes", "nsim"))
def _draw(key, eta, codes, Zs, Ls, log_phi, trials, fam, sizes, nsim):
    def one(k):
        kb, ky = jax.random.split(k)
        e = eta
        for kk, c, Z, L, J in zip(jax.random.split(kb, len(sizes)), codes, Zs, Ls, sizes,
                                  strict=True):
            b = jax.random.normal(kk, (J, L.shape[0])) @ L.T
            e = e + jnp.sum(Z * b[c], axis=1)
        return fam.sample(ky, fam.linkinv(e), log_phi, trials)

    return jax.vmap(one)(jax.random.split(key, nsim))
