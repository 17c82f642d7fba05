"""Newton's method with the exact autodiff Hessian and a backtracking line search.

The whole fit (outer Newton iterations, line searches and inner mode solves) is one
jitted, vmappable function of (theta0, u0, data).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import exported, xla
from .laplace import ClusterData, Structure
from .modes import MAX_INNER_ITER, TOL_INNER
from .objective import conditional, engine, modes, negloglik, value_grad_hess_aux


class NewtonResult(NamedTuple):
    theta: jax.Array
    u: jax.Array  # conditional modes at theta
    f: jax.Array  # -log L
    grad: jax.Array
    hess: jax.Array
    u_cov: jax.Array  # conditional covariances of u at the mode (objective.conditional)
    n_iter: jax.Array
    converged: jax.Array
    line_search_failed: jax.Array
    inner_converged: jax.Array  # the conditional modes at theta met their tolerance
    f0: jax.Array  # -log L at theta0
    n_eval: jax.Array  # points evaluated (accepted or not; both trial points of a pass)
    theta0: jax.Array  # where Newton started (engine.start_point of the start values)


def _direction(g, H):
    """Newton direction with eigenvalues of H replaced by their absolute values."""
    ev, V = jnp.linalg.eigh(H)
    floor = 1e-8 * jnp.maximum(1.0, jnp.max(jnp.abs(ev)))
    d = -V @ ((V.T @ g) / jnp.maximum(jnp.abs(ev), floor))
    return d, jnp.min(ev) > floor


class _State(NamedTuple):
    theta: jax.Array  # last accepted point
    u: jax.Array  # modes there
    f: jax.Array
    g: jax.Array
    H: jax.Array
    d: jax.Array  # Newton direction from theta
    dp: jax.Array  # (engines with log steps) the Newton direction in log SD
    alpha: jax.Array  # step length of the next trial point theta + alpha * d
    n_iter: jax.Array  # accepted points (Hessian evaluations)
    converged: jax.Array
    failed: jax.Array
    inner_ok: jax.Array  # modes at theta converged
    risky: jax.Array  # the next trial may well fail: check its value before its Hessian
    f0: jax.Array
    n_eval: jax.Array
    aux: object  # what conditional reuses at theta (value_grad_hess_aux: S^{-1} or ())


TOL = 1e-12  # Newton decrement g' H^-1 g below TOL (1 + |f|): converged
# the start point's modes (from start values, not near the optimum): a largest last step
# of 1e-3, one pass over the rows fewer than TOL_INNER's from zero (100k-row logit random
# intercept: 5 passes, not 6; the modes within 1e-11 of TOL_INNER's; 1e-2: 4 passes, 5e-6)
FIRST_TOL_INNER = 1e-3
MAX_STEP = 5.0  # longest Newton step (Euclidean norm in theta)


def _log_entries(theta, logm):
    """The entries of mask ``logm`` where theta is not 0: those moved in psi = log |theta|
    (psi = theta elsewhere); d theta / d psi = d2 theta / d psi2 = theta there."""
    return (logm > 0) & (theta != 0.0)


def _log_jacobian(theta, logm):
    """d theta / d psi (:func:`_log_entries`)."""
    return jnp.where(_log_entries(theta, logm), theta, 1.0)


def _log_point(theta, step, logm):
    """theta moved by ``step`` in psi (:func:`_log_entries`)."""
    on = _log_entries(theta, logm)
    return jnp.where(on, theta * jnp.exp(jnp.where(on, step, 0.0)), theta + step)


def _newton_fit(theta0, u0, data: ClusterData, s: Structure, max_iter: int = 100,
                free=None, first_tol=TOL_INNER, tol: float = TOL,
                max_step: float = MAX_STEP) -> NewtonResult:
    """Minimize -log L from theta0; u0 are starting conditional modes; ``free`` (1/0 per
    entry of theta, default all 1) marks the entries that move: the others stay at
    theta0 (the Newton system is solved in the free entries only).

    One loop evaluates one trial point per pass, with its value, exact gradient and
    Hessian (full Newton steps are almost always accepted, so a separate value-only
    evaluation would cost more than it saves); a point that fails the Armijo test halves
    the step. A trial's modes start from the accepted point's, moved to first order
    where the engine knows their derivatives (``predict_modes``: one scalar term by
    Laplace, from the Hessian's pass). The mode solver and the Hessian each appear once
    in the compiled program.
    With several random terms (where a Hessian can cost seconds), a trial point after a
    rejection or after a step from an indefinite Hessian is first checked on its value.
    Gaussian models (whose value costs a small part of a Hessian) start from their GLS
    fixed effects (ML) and, where they differ, take the lower of two trial points (by
    their values, before the Hessian): the Newton step in theta and the one in the log
    SDs of the scalar terms. -log L is far from quadratic in the SD of a term with few
    levels and closer to it in its logarithm, but only the step in theta reaches a zero
    SD quickly (the vector terms' factors stay in theta, where they fared better).
    """
    n = theta0.shape[0]
    eng = engine(s)
    value_first, log_steps = eng.value_first, eng.log_steps
    free = jnp.ones(n, theta0.dtype) if free is None else free
    theta0 = eng.start_point(theta0, free, data, s)
    logm = jnp.asarray(s.theta.scalar_mask()) if log_steps else None

    def direction(g, H):  # (0 in the held entries exactly, not to rounding)
        d, pos_def = _direction(g * free, H * free[:, None] * free[None, :] +
                                jnp.diag(1.0 - free))
        return d * free, pos_def

    def accept(st: _State, theta, u, inner_ok, f, g, H, aux):
        d, pos_def = direction(g, H)
        decrement = -(g @ d)  # (d is 0 in the fixed entries)
        # (not at a start point whose modes were solved to a looser first_tol)
        exact = (st.n_iter > 0) | (first_tol <= TOL_INNER)
        converged = pos_def & (decrement < tol * (1.0 + jnp.abs(f))) & exact
        d = d * jnp.minimum(1.0, max_step / jnp.linalg.norm(d))
        dp = st.dp
        if log_steps:  # Newton in psi: gradient J g, Hessian J H J + diag(g d2theta/dpsi2)
            jac = _log_jacobian(theta, logm)
            dp, _ = direction(jac * g, jac[:, None] * H * jac[None, :] + jnp.diag(
                jnp.where(_log_entries(theta, logm), theta * g, 0.0)))
            dp = dp * jnp.minimum(1.0, max_step / jnp.linalg.norm(dp))
        return st._replace(theta=theta, u=u, f=f, g=g, H=H, d=d, dp=dp, alpha=jnp.ones(()),
                           n_iter=st.n_iter + 1, converged=converged, inner_ok=inner_ok,
                           risky=~pos_def, f0=jnp.where(st.n_iter == 0, f, st.f0), aux=aux)

    def reject(st: _State, theta, u, inner_ok, f, g, H, aux):
        alpha = 0.5 * st.alpha
        # a failed line search near the optimum (rounding) counts as converged
        decrement = -(st.g @ st.d)
        near = jnp.isfinite(st.f) & (decrement < 1e-8 * (1.0 + jnp.abs(st.f)))
        stuck = alpha < 1e-10
        return st._replace(alpha=alpha, converged=stuck & near, failed=stuck & ~near,
                           risky=jnp.asarray(True))

    def body(st: _State):
        def armijo(slope):  # the largest value a trial along a slope may take
            return st.f + 1e-4 * st.alpha * slope

        theta = st.theta + st.alpha * st.d
        slope = st.g @ st.d
        # (the start point's modes to first_tol: from start values, Newton's first step
        # needs no more; convergence is declared only at a point with modes to TOL_INNER)
        u, inner_iter = modes(theta, eng.predict_modes(st.u, st.aux, theta - st.theta), data, s,
                              jnp.where(st.n_iter == 0, first_tol, TOL_INNER))
        extra = 0  # points evaluated besides the trial (its twin in psi)
        if value_first:
            trial = (theta, u, inner_iter, slope)

            def risky(trial):  # check the trial's value before its Hessian
                out = st.risky
                if eng.name == "lmm":  # also when the step promises a large decrease
                    out = out | (jnp.isfinite(st.f) & (-trial[3] * st.alpha > 1.0))
                return out

            def value(trial):  # a risky trial's value (else -inf: evaluated with the Hessian)
                return jax.lax.cond(risky(trial), lambda: negloglik(trial[0], trial[1], data, s),
                                    lambda: -jnp.inf * jnp.ones(()))

            if log_steps:  # where the step in psi leads elsewhere (by 1e-3 of an SD):
                # the better of the two points (their values from one compiled copy)
                theta_p = _log_point(st.theta, st.alpha * st.dp, logm)
                trial_p = (theta_p, *modes(theta_p, st.u, data, s),
                           st.g @ (_log_jacobian(st.theta, logm) * st.dp))
                gap = jnp.max(jnp.abs(theta_p - theta))
                differ = jnp.isfinite(st.f) & (gap > 1e-3 * jnp.max(jnp.abs(st.theta * logm)))

                def values():  # (one compiled copy of the value, run twice)
                    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), trial[:2], trial_p[:2])
                    return jax.lax.map(lambda a: negloglik(a[0], a[1], data, s), both)

                f_l, f_p = jax.lax.cond(differ | risky(trial), values,
                                        lambda: -jnp.inf * jnp.ones(2))
                # the one that passes its Armijo test, else the lower (NaN: not taken)
                pass_l, pass_p = f_l <= armijo(trial[3]), f_p <= armijo(trial_p[3])
                lower = (f_p < f_l) | (jnp.isnan(f_l) & ~jnp.isnan(f_p))
                use_p = differ & jnp.where(pass_l != pass_p, pass_p, lower)
                extra = differ.astype(st.n_eval.dtype)
                trial = jax.tree.map(lambda a, b: jnp.where(use_p, a, b), trial_p, trial)
                f_try = jnp.where(use_p, f_p, f_l)
            else:
                f_try = value(trial)
            theta, u, inner_iter, slope = trial
            bound = armijo(slope)
            f, g, H, aux = jax.lax.cond(
                f_try <= bound, lambda: value_grad_hess_aux(theta, u, data, s),
                lambda: (f_try, jnp.zeros(n), jnp.zeros((n, n)), zero_aux))
        else:
            bound = armijo(slope)
            f, g, H, aux = value_grad_hess_aux(theta, u, data, s)
        ok = f <= bound
        st = st._replace(n_eval=st.n_eval + 1 + extra)
        return jax.lax.cond(ok, accept, reject, st, theta, u, inner_iter < MAX_INNER_ITER,
                            f, g, H, aux)

    def cond(st: _State):
        return ~st.converged & ~st.failed & (st.n_iter < max_iter)

    zero = jnp.zeros(())
    nan_aux = eng.empty_aux(s, data)
    zero_aux = jax.tree.map(jnp.zeros_like, nan_aux)
    init = _State(theta0, u0, jnp.asarray(jnp.inf), jnp.zeros(n), jnp.zeros((n, n)),
                  jnp.zeros(n), jnp.zeros(n), zero, jnp.asarray(0), jnp.asarray(False),
                  jnp.asarray(False), jnp.asarray(True), jnp.asarray(False),
                  jnp.asarray(jnp.inf), jnp.asarray(0), nan_aux)  # (no point accepted: NaN)
    st = jax.lax.while_loop(cond, body, init)
    u, u_cov = conditional(st.theta, st.u, data, s, st.aux)  # (aux: at st.theta)
    return NewtonResult(st.theta, u, st.f, st.g, st.H, u_cov, st.n_iter, st.converged,
                        st.failed, st.inner_ok, st.f0, st.n_eval, theta0)


SMALL_ROWS = 2**18  # one grouping factor, up to this many rows: xla.SMALL's emitters
# Gaussian models from cross products with up to this many effects (all terms' levels
# times their effects, REML's fixed effects included): xla.SMALL's emitters compile them
# 40-50% faster for the same run time (hospital, REML: random intercept 5.7 -> 3.1 s,
# random slope 8.5 -> 5.8 s, measured on a loaded 2-core VM; warm 2-6 ms either way)
SMALL_LMM_EFFECTS = 2**11
# the two compiled Newton programs: XLA's default emitters, and xla.SMALL's
NEWTON_DEFAULT = xla.jit(_newton_fit, static_argnames=("s", "max_iter"))
NEWTON_SMALL = xla.jit(_newton_fit, options=xla.SMALL, static_argnames=("s", "max_iter"))


def newton_program(data, s):
    """The jitted :func:`newton_fit` program for a model's data and structure."""
    name = engine(s).name
    small = (name == "single" and data.y.size <= SMALL_ROWS) or (
        name == "lmm" and sum(q * J for q, J in zip(s.qs, s.Js, strict=True))
        <= SMALL_LMM_EFFECTS)
    return NEWTON_SMALL if small else NEWTON_DEFAULT


def newton_fit(theta0, u0, data, s, max_iter: int = 100, free=None,
               cold: bool = False) -> NewtonResult:
    """Minimize -log L from theta0 (see ``_newton_fit``; ``cold``: theta0 are start
    values, whose modes are solved to FIRST_TOL_INNER), compiled for the model's size
    (its traced program kept on disk where it can be: exported.py)."""
    theta0 = np.asarray(theta0, dtype=float)
    free = np.ones(len(theta0)) if free is None else np.asarray(free, dtype=float)
    first_tol = np.asarray(FIRST_TOL_INNER if cold else TOL_INNER, dtype=float)
    program = newton_program(data, s)
    out = exported.call(
        "newton", lambda t, u, d, m, ft: _newton_fit(t, u, d, s, max_iter, m, ft),
        (theta0, u0, data, free, first_tol), (s, max_iter), program._options, (NewtonResult,))
    if out is None:
        out = program(theta0, u0, data, s, max_iter=max_iter, free=free, first_tol=first_tol)
    return out


@partial(xla.jit, static_argnames=("s", "max_iter", "fields"))
def newton_fit_many(theta0, u0, data, s, max_iter: int = 100, fields=None, free=None):
    """:func:`newton_fit` vmapped over a leading batch axis of theta0, u0 and data: of
    all the arrays of ``data`` (a NamedTuple), or only of the named ``fields`` (a new
    response for the same model: ``("y", "log_const")``), the others shared; ``free``
    (one mask for all) as in :func:`newton_fit`."""
    axes = 0 if fields is None else data._replace(
        **{f: (0 if f in fields else None) for f in data._fields})
    free = jnp.ones(theta0.shape[1], theta0.dtype) if free is None else free
    return jax.vmap(lambda t, u, d: _newton_fit(t, u, d, s, max_iter, free),
                    in_axes=(0, 0, axes))(theta0, u0, data)


@partial(xla.jit, static_argnames=("s", "max_iter"))
def lbfgs_fit(theta0, u0, data: ClusterData, s: Structure, max_iter: int = 500,
              gtol: float = 1e-6, free=None):
    """Fallback: optax L-BFGS (zoom line search) on -log L from theta0.

    Used when Newton stops early; its result is handed back to Newton for the exact
    Hessian and a final convergence check. Modes are re-solved from u0 at every point.
    The entries where ``free`` is 0 stay at theta0. Returns (theta, number of iterations).
    """
    import optax

    free = jnp.ones_like(theta0) if free is None else free

    def f(t):
        theta = theta0 + free * (t - theta0)
        u, _ = modes(jax.lax.stop_gradient(theta), u0, data, s)
        return negloglik(theta, u, data, s)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def body(c):
        theta, state, _, it = c
        value, grad = value_and_grad(theta, state=state)
        updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(theta, updates), state, jnp.max(jnp.abs(grad)), it + 1

    tol = gtol * (1.0 + jnp.abs(f(theta0)))

    def cond(c):
        return (c[2] > tol) & (c[3] < max_iter)

    with jax.numpy_dtype_promotion("standard"):  # (optax mixes int32 and int64 counters)
        init = (theta0, opt.init(theta0), jnp.asarray(jnp.inf), jnp.asarray(0))
        theta, _, _, it = jax.lax.while_loop(cond, body, init)
    return theta0 + free * (theta - theta0), it
