"""The engines behind one interface, and -log L(theta) as a pure function.

Three engines compute the (Laplace/AGHQ) marginal likelihood:

- ``single`` (laplace.py): one grouping factor, clusters in blocks [B, J, ...] (the
  Hessian of one scalar term by Laplace: scalar_laplace.py);
- ``multi`` (crossed.py, nested.py): several terms (or REML), a joint Laplace; or no
  terms (a GLM: no modes, an exact likelihood);
- ``lmm`` (lmm.py): Gaussian models from cross products, exact.

Each is an object with the same methods (``unpack``, ``modes``, ``negloglik``,
``value_grad_hess``, ``conditional``, ``predict_modes``, ``zero_modes``, ``per_term``);
:func:`engine` picks it from the model's static structure, in this one place. theta's
layout is ``structure.theta`` (theta.py).
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from . import crossed, lmm, scalar_laplace, smallmat
from .crossed import MultiStructure
from .laplace import ClusterData, Structure, fixed_eta, grad_negHess, solve_modes, total_loglik
from .lmm import LmmStructure
from .modes import TOL_INNER


def _vgh(f, theta, u_hat, data, s):
    def grad_aux(t):
        v, g = jax.value_and_grad(f)(t, u_hat, data, s)
        return g, (v, g)

    H, (v, g) = jax.jacfwd(grad_aux, has_aux=True)(theta)
    return v, g, H


def _map_blocks(f, xs):
    """``jax.lax.map(f, xs)`` over the leading (block) axis; one block: ``f`` applied
    directly (no loop in the program: small models compile faster)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], f(jax.tree.map(lambda a: a[0], xs)))
    return jax.lax.map(f, xs)


# rows up to which a scalar term's blocks are taken as one (_one_block): the mode solve's
# loop then runs once, not once per block, which on a CPU costs per step. Measured on this
# project's 2-core CPU (model.fit, logit random intercept): 50k rows 22 -> 20 ms, 100k
# 41 -> 36 ms (mode solve 1.8x, Hessian pass 1.15x), 150k 79 -> 58 ms; beyond, the rows'
# temporaries leave the cache: 200k 0.10 -> 0.11 s, 250k 0.12 -> 0.16 s, 1M 0.39 ->
# 0.49 s. A random slope's larger temporaries leave it sooner (200k rows: its mode solve
# 1.2-1.3x slower joined): vector terms stay block by block.
ONE_BLOCK_ROWS = 3 * 2**16


def _one_block(data, s):
    """``data``'s blocks as one block (their chunks in a row, the clusters numbered across
    the blocks) and its structure, or None beyond ``ONE_BLOCK_ROWS`` rows."""
    B, M = data.group.shape
    if B > 1 and data.y.size > ONE_BLOCK_ROWS:
        return None

    def rows(a):
        return a.reshape((B * M,) + a.shape[2:])

    offsets = s.n_groups * jnp.arange(B, dtype=data.group.dtype)[:, None]
    one = ClusterData(rows(data.X), rows(data.Z), rows(data.y), rows(data.trials),
                      rows(data.offset), rows(data.weights), rows(data.group + offsets),
                      jnp.sum(data.log_const))
    return one, replace(s, n_groups=B * s.n_groups)


class _Engine:
    """What the engines share: how Newton (optimize.py) treats them."""

    value_first = False  # a trial point's Hessian is cheap: evaluate it with the value
    log_steps = False  # Newton steps in the scalar terms' log SDs (optimize.py)

    @staticmethod
    def start_point(theta, free, data, s):
        """The point Newton starts from, given the start values ``theta``."""
        return theta

    @classmethod
    def value_grad_hess_aux(cls, theta, u_hat, data, s):
        """value_grad_hess, and what ``conditional`` can reuse at the same theta (its
        ``aux``: nothing here)."""
        return (*cls.value_grad_hess(theta, u_hat, data, s), ())

    @staticmethod
    def empty_aux(s, data):
        """An ``aux`` of the right shapes, holding nothing known (NaN)."""
        return ()

    @staticmethod
    def predict_modes(u_hat, aux, step):
        """Starting modes at theta + ``step`` from the modes ``u_hat`` at theta (and its
        ``aux``): ``u_hat`` itself."""
        return u_hat


class SingleEngine(_Engine):
    """One grouping factor: per-cluster modes and integrals, over blocks of clusters."""

    name = "single"

    @staticmethod
    def unpack(theta, s):
        beta, Ls, log_phi = s.theta.unpack(theta)
        return beta, Ls[0], log_phi

    @staticmethod
    def modes(theta, u0, data, s, tol=TOL_INNER):
        beta, L, log_phi = SingleEngine.unpack(theta, s)

        def block(u, d, s):
            return solve_modes(u, fixed_eta(beta, d), L, log_phi, d, s, tol=tol)

        if s.q == 1 and (one := _one_block(data, s)):
            u, its = block(u0.reshape(-1, 1), *one)
            return u.reshape(u0.shape), its
        u, its = _map_blocks(lambda a: block(*a, s), (u0, data))
        return u, jnp.max(its)

    @staticmethod
    def block_negloglik(theta, u_hat, data, s):
        """-log L of one block (arrays without the block axis)."""
        beta, L, log_phi = SingleEngine.unpack(theta, s)
        return -total_loglik(beta, L, log_phi, u_hat, data, s)

    @staticmethod
    def negloglik(theta, u_hat, data, s):
        per_block = jax.vmap(SingleEngine.block_negloglik, in_axes=(None, 0, 0, None))
        return jnp.sum(per_block(theta, u_hat, data, s))

    @staticmethod
    def value_grad_hess(theta, u_hat, data, s):
        """Block by block (in sequence, so each block's temporaries stay small), summed;
        one scalar term by Laplace: from the rows' Taylor coefficients (scalar_laplace.py;
        on the blocks joined as one, see ``ONE_BLOCK_ROWS``), else by autodiff through
        every row."""
        return SingleEngine.value_grad_hess_aux(theta, u_hat, data, s)[:3]

    @staticmethod
    def value_grad_hess_aux(theta, u_hat, data, s):
        """value_grad_hess; with one scalar term by Laplace, its ``aux`` holds what the
        Hessian's pass over the rows also gives: the conditional covariances [B, J, 1, 1]
        (for ``conditional``) and the modes' derivatives in theta [B, J, n] (for
        ``predict_modes``); else it is ()."""
        if scalar_laplace.applies(s):
            def block(u, d, s):
                v, g, H, cov, du = scalar_laplace.block_value_grad_hess(theta, u, d, s)
                return (-v, -g, -H), (cov, du)

            if one := _one_block(data, s):
                (v, g, H), (cov, du) = block(u_hat.reshape(-1, 1), *one)
                B, J = u_hat.shape[:2]
                return v, g, H, (cov.reshape(B, J, 1, 1), du.reshape(B, J, -1))
        else:
            def block(u, d, s):
                return _vgh(SingleEngine.block_negloglik, theta, u, d, s), ()

        (v, g, H), aux = _map_blocks(lambda a: block(*a, s), (u_hat, data))
        return jnp.sum(v, axis=0), jnp.sum(g, axis=0), jnp.sum(H, axis=0), aux

    @staticmethod
    def empty_aux(s, data):
        if not scalar_laplace.applies(s):
            return ()
        B, n = data.y.shape[0], s.theta.size
        return (jnp.full((B, s.n_groups, 1, 1), jnp.nan), jnp.full((B, s.n_groups, n), jnp.nan))

    @staticmethod
    def predict_modes(u_hat, aux, step):
        """The modes at theta + ``step`` to first order (where ``aux`` holds their
        derivatives: one scalar term by Laplace), else ``u_hat``."""
        if not aux:
            return u_hat
        guess = u_hat + (aux[1] @ step)[..., None]
        return jnp.where(jnp.isfinite(guess), guess, u_hat)

    @staticmethod
    def conditional(theta, u_hat, data, s, aux=()):
        if aux:  # (from the Hessian's pass at theta)
            return u_hat, aux[0]
        beta, L, log_phi = SingleEngine.unpack(theta, s)

        def block(u, d):
            return smallmat.inverse(grad_negHess(u, fixed_eta(beta, d), L, log_phi, d, s)[2])

        return u_hat, jax.vmap(block)(u_hat, data)

    @staticmethod
    def zero_modes(s, data, xp=jnp):
        return xp.zeros((data.y.shape[0], s.n_groups, s.q))

    @staticmethod
    def per_term(u, u_cov, clusters, n_levels):
        """Each term's modes and conditional covariances by level: [(u [J, q], cov)]."""
        J = n_levels[0]
        blk, slot = (np.zeros(J, int), np.arange(J)) if clusters is None else clusters
        return [(np.asarray(u)[blk, slot], np.asarray(u_cov)[blk, slot])]


class MultiEngine(_Engine):
    """Several random terms (or REML): the joint Laplace approximation (crossed.py)."""

    name = "multi"
    value_first = True  # a Hessian can cost seconds: check a risky trial's value first

    @staticmethod
    def unpack(theta, s):
        beta, Ls, log_phi = s.theta.unpack(theta)
        return beta, Ls + [jnp.eye(s.p, dtype=theta.dtype)] * int(s.reml), log_phi

    @staticmethod
    def modes(theta, u0, data, s, tol=TOL_INNER):
        if not s.qs:  # no random terms (a GLM): no modes
            return list(u0), jnp.asarray(0)
        beta, L, log_phi = MultiEngine.unpack(theta, s)
        return crossed.solve_modes(u0, crossed.fixed_eta(beta, data, s), L, log_phi, data, s,
                                   tol=tol)

    @staticmethod
    def negloglik(theta, u_hat, data, s):
        beta, L, log_phi = MultiEngine.unpack(theta, s)
        return -crossed.loglik(beta, L, log_phi, u_hat, data, s)

    @staticmethod
    def value_grad_hess(theta, u_hat, data, s):
        return _vgh(MultiEngine.negloglik, theta, u_hat, data, s)

    @staticmethod
    def conditional(theta, u_hat, data, s, aux=()):
        beta, L, log_phi = MultiEngine.unpack(theta, s)
        _, _, nh = crossed.grad_negHess(u_hat, crossed.fixed_eta(beta, data, s), L, log_phi,
                                        data, s)
        return u_hat, crossed.inverse_blocks(nh, data, s)

    @staticmethod
    def zero_modes(s, data, xp=jnp):
        return [xp.zeros((J, q)) for q, J in zip(s.qs, s.Js, strict=True)]

    @staticmethod
    def per_term(u, u_cov, clusters, n_levels):
        n = list(n_levels) + [None] * (len(u) - len(n_levels))  # (padded levels cut)
        return [(np.asarray(a)[:k], np.asarray(c)[:k]) for a, c, k in zip(u, u_cov, n,
                                                                          strict=True)]


class LmmEngine(MultiEngine):
    """Gaussian models from cross products (lmm.py): no inner problem, exact."""

    name = "lmm"
    log_steps = True  # the value costs a small part of a Hessian

    @staticmethod
    def start_point(theta, free, data, s):
        """ML with every fixed effect free: beta at its GLS estimate given the start's
        covariance parameters (the exact optimum in beta there). A padded column's
        (held at 0: lmmpad.py) is exactly 0."""
        if s.reml or not s.p:
            return theta
        beta = lmm.gls_beta(LmmEngine.unpack(theta, s), data, s)
        ok = jnp.all((free[:s.p] == 1.0) | (beta == theta[:s.p])) & jnp.all(jnp.isfinite(beta))
        return theta.at[:s.p].set(jnp.where(ok, beta, theta[:s.p]))

    @staticmethod
    def modes(theta, u0, data, s, tol=TOL_INNER):
        return u0, jnp.asarray(0)

    @staticmethod
    def negloglik(theta, u_hat, data, s):
        return lmm.negloglik(LmmEngine.unpack(theta, s), data, s)

    @staticmethod
    def value_grad_hess(theta, u_hat, data, s):
        return lmm.value_grad_hess(theta, data, s, LmmEngine.unpack)

    @staticmethod
    def conditional(theta, u_hat, data, s, aux=None):  # aux: S^{-1} at theta, if known
        return lmm.conditional(LmmEngine.unpack(theta, s), data, s, Sinv=aux)

    @staticmethod
    def value_grad_hess_aux(theta, u_hat, data, s):  # aux: S^{-1}
        return lmm.value_grad_hess(theta, data, s, LmmEngine.unpack, aux=True)

    @staticmethod
    def empty_aux(s, data):
        size = s.r_z + s.p * int(s.reml)  # S's
        return jnp.full((size, size), jnp.nan)


_ENGINES = {Structure: SingleEngine, MultiStructure: MultiEngine, LmmStructure: LmmEngine}


def engine(s):
    """The engine of a model's static structure (by its exact type)."""
    return _ENGINES[type(s)]


def unpack(theta, s):
    """theta -> (beta, L (one factor; a list for several terms), log dispersion)."""
    return engine(s).unpack(theta, s)


def unpack_np(theta: np.ndarray, s):
    """:func:`unpack` in NumPy (REML's pseudo-term factor included)."""
    beta, Ls, log_phi = s.theta.unpack_np(theta)
    if engine(s) is SingleEngine:
        return beta, Ls[0], log_phi
    return beta, Ls + [np.eye(s.p)] * int(s.reml), log_phi


def modes(theta, u0, data, s, tol=TOL_INNER):
    """Conditional modes u_hat(theta), started from u0, to within ``tol`` (the largest
    last step; modes.TOL_INNER); and the Newton iterations used."""
    return engine(s).modes(theta, u0, data, s, tol)


def negloglik(theta, u_hat, data, s):
    """-log L(theta) by Laplace/AGHQ, given converged modes u_hat (exact derivatives)."""
    return engine(s).negloglik(theta, u_hat, data, s)


def value_grad_hess(theta, u_hat, data, s):
    """-log L, its gradient and exact (symmetrized) Hessian at theta (modes u_hat)."""
    v, g, H = engine(s).value_grad_hess(theta, u_hat, data, s)
    return v, g, 0.5 * (H + H.T)


def value_grad_hess_aux(theta, u_hat, data, s):
    """:func:`value_grad_hess`, and what :func:`conditional` can reuse at the same theta
    (the engine's ``aux``: S^{-1} for the LMM engine, else ())."""
    v, g, H, aux = engine(s).value_grad_hess_aux(theta, u_hat, data, s)
    return v, g, 0.5 * (H + H.T), aux


def conditional(theta, u_hat, data, s, aux):
    """Conditional modes of u given y at theta and their conditional covariances, the
    diagonal blocks of (-H)^{-1}: [B, J, q, q] (a list per term for several terms);
    ``aux`` from :func:`value_grad_hess_aux` at the same theta."""
    return engine(s).conditional(theta, u_hat, data, s, aux)


def zero_modes(s, data, xp=jnp):
    """Starting conditional modes: zeros ([B, J, q]; a [J_k, q_k] list for several
    terms). ``xp=np`` outside jitted code: NumPy arguments compile no conversion
    programs."""
    return engine(s).zero_modes(s, data, xp)
