"""The conditional modes, shared by the engines: one damped-Newton solver, and the
implicit-mode rule that makes converged modes differentiable in the parameters."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def implicit_mode_rule(grad_neg_hess, solve, canon=lambda u: u):
    """``implicit_mode(u_hat, eta0, L, log_phi, data, s)``: the converged modes ``u_hat``
    (any pytree; ``canon`` puts it in the solver's form), differentiable in (eta0, L,
    log_phi).

    The gradient g of h(u) vanishes at the mode, g(u(theta), theta) = 0, so
    du = (-H)^{-1} dg/dtheta, with ``(h, g, -H) = grad_neg_hess(u, eta0, L, log_phi, data,
    s)`` and ``solve(-H, v, data, s) = (-H)^{-1} v``. The rule evaluates the modes through
    this function again, so derivatives of any order are exact.
    """

    @partial(jax.custom_jvp, nondiff_argnums=(5,))
    def implicit_mode(u_hat, eta0, L, log_phi, data, s):
        return jax.lax.stop_gradient(canon(u_hat))

    @implicit_mode.defjvp
    def _jvp(s, primals, tangents):
        u_hat, eta0, L, log_phi, data = primals
        u = implicit_mode(u_hat, eta0, L, log_phi, data, s)

        def gradient(e0, LL, lp):
            _, g, nh = grad_neg_hess(u, e0, LL, lp, data, s)
            return g, nh

        (_, nh), (dg, _) = jax.jvp(gradient, (eta0, L, log_phi), tangents[1:4])
        return u, solve(nh, dg, data, s)

    return implicit_mode


MAX_INNER_ITER = 100
TOL_INNER = 1e-6  # largest mode step at which the inner Newton stops (modes ~ TOL_INNER**2)


def damped_newton(u0, evaluate, solve, per_cluster: bool, tol: float = TOL_INNER,
                  max_iter: int = MAX_INNER_ITER):
    """Conditional modes by damped Newton on a strictly concave h(u).

    ``evaluate(u) = (h, g, -H)``; ``solve(-H, g)`` is the Newton step. Each iteration
    makes one pass over the rows at the trial point u + alpha * step and accepts it where
    h did not decrease (then the next step is solved there), else shrinks alpha. With
    ``per_cluster``, u is [J, q] and h [J]: every cluster accepts or shrinks (by 4) on
    its own; otherwise u is a list of arrays, h a number, and a rejected step is halved.
    Stops when every step is below ``tol`` and applies that last step unevaluated
    (quadratic convergence: the modes are then accurate to about ``tol**2``). Returns the
    modes and the iterations used.
    """
    tree = jax.tree_util

    def scaled(alpha, step):
        if per_cluster:
            return alpha[:, None] * step
        return tree.tree_map(lambda d: alpha * d, step)

    def add(u, d):
        return tree.tree_map(lambda a, b: a + b, u, d)

    def body(state):
        u, h_u, step, alpha, _, it = state
        trial = add(u, scaled(alpha, step))
        h, g, nh = evaluate(trial)
        ok = h >= h_u - 1e-12 * (1.0 + jnp.abs(h_u))
        if per_cluster:
            new_step = solve(nh, g)
            u = jnp.where(ok[:, None], trial, u)
            h_u = jnp.where(ok, h, h_u)
            step = jnp.where(ok[:, None], new_step, step)
            alpha = jnp.where(ok, 1.0, 0.25 * alpha)
        else:  # the joint solve only for an accepted point
            u, h_u, step, alpha = jax.lax.cond(
                ok, lambda: (trial, h, solve(nh, g), jnp.ones(())),
                lambda: (u, h_u, step, 0.5 * alpha))
        size = jnp.max(jnp.concatenate([jnp.abs(d).reshape(-1)
                                        for d in tree.tree_leaves(scaled(alpha, step))]))
        return u, h_u, step, alpha, size, it + 1

    if per_cluster:
        J = u0.shape[0]
        h0, alpha0 = jnp.full(J, -jnp.inf), jnp.ones(J)
    else:
        u0, h0, alpha0 = list(u0), jnp.asarray(-jnp.inf), jnp.ones(())
    init = (u0, h0, tree.tree_map(jnp.zeros_like, u0), alpha0, jnp.asarray(jnp.inf),
            jnp.asarray(0))
    u, _, step, alpha, _, it = jax.lax.while_loop(
        lambda st: (st[4] > tol) & (st[5] < max_iter), body, init)
    return add(u, scaled(alpha, step)), it
