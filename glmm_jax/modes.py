"""The implicit-mode rule shared by the engines: converged conditional modes made
differentiable in the parameters by the implicit function theorem."""

from __future__ import annotations

from functools import partial

import jax


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
