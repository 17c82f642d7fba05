"""The Laplace value, gradient and Hessian of one block for one scalar random effect
(q = 1, Laplace, no dispersion parameter), from the rows' Taylor coefficients.

Autodiff through every row (laplace.py) pushes p + 1 second-order tangents through each
row's derivatives (and compiles a large program). Here each row contributes once its log
density's first four derivatives in eta (by autodiff, ``laplace.row_derivs``), and the chain
rule through the modes runs per cluster. With theta = (beta, sigma) and the converged
modes u_hat, a row moves by delta_i = x_i . v + z_i e (v = beta - beta_hat,
e = sigma u - sigma_hat u_hat). Replacing each row's log density by its Taylor
polynomial in delta_i leaves the value, gradient and Hessian at theta_hat exact when it
is kept to second order in h, in d h / d u (whose second derivatives move the modes to
second order) and in the curvature sum c = sum_i z_i^2 a''(eta_i). Every sum over rows is
then a cluster's moment,

    sum_i a_k(eta_i) z_i^m              (scalars),
    sum_i a_k(eta_i) z_i^m x_i          (three p-vectors: v enters by their linear forms
                                         s2, s3, s4),
    sum_i a_k(eta_i) z_i^m x_i x_i'     (three p x p: by quadratic forms qS, qA, qB),

with qS = v' (sum_i a''_i x_i x_i') v / 2 and so on (the factor 1/2 of a Taylor term), so
each cluster's log marginal likelihood is a function of seven scalars, differentiated
per cluster (:func:`_cluster_derivs`). A quadratic form's gradient vanishes at v = 0, so
its matrix enters the Hessian only as dl/dq times the matrix, and the three Gram
matrices of every cluster collapse into one X' diag(r) X over the rows. The tests
compare all three with the joint engine's autodiff (tests/test_scalar_laplace.py).

The modes are taken as given (no implicit-mode rule): these derivatives are exact, but
not themselves differentiable in theta, as no caller needs.
"""

from __future__ import annotations

import jax.numpy as jnp

from .laplace import ClusterData, Structure, cluster_sum, fixed_eta, row_derivs, row_eta


def applies(s: Structure) -> bool:
    """Models whose Hessian this module computes: one scalar term, Laplace, and no
    dispersion parameter."""
    return s.q == 1 and s.nagq == 1 and not s.family.has_dispersion


def _outer_sym(a, b):
    """a b' + b a' of [J, n] vectors (either may be one [n] vector)."""
    return a[..., :, None] * b[..., None, :] + b[..., :, None] * a[..., None, :]


def _cluster_derivs(consts):
    """Each cluster's log marginal likelihood l [J], its gradient in x = (sigma, s2, s3,
    s4) and (qS, qA, qB) [J, 7], its Hessian in x [J, 4, 4] (module docstring), the
    mode's derivatives in (sigma, s2) [J, 2] and D = -d2h/du2 [J].

    The mode u(x) solves G(u, x) = 0, G = d h / d u to second order; l = Phi(u(x), x),
    Phi = h - log(D) / 2. By the implicit function theorem u_x = -G_x / G_u and
    l_xx = Phi_xx - (Phi_u / G_u) G_xx, each taken along u(x). h, P = (G + u) / sigma
    and the curvature sum c (D = 1 - sigma^2 c) are polynomials in y = (e, s2, s3, s4),
    e = sigma u - sigma_hat u_hat (0 at the point), whose derivatives in
    w = (u, sigma, s2, s3, s4) follow by the chain rule (e_u = sigma, e_sigma = u,
    e_{u sigma} = 1). Everything is written elementwise over the clusters (small batched
    matrix products compile to slow loops on a CPU).
    """
    H0, S1z, S2zz, A3zz, B4zz, u, sigma = consts
    zero, one = jnp.zeros_like(u), jnp.ones_like(u)
    d_u, d_sig = jnp.eye(5, dtype=u.dtype)[:2]  # the directions of u and sigma in w

    def vec(*a):
        return jnp.stack(a, axis=-1)

    def in_w(f_e, f_s, f_ee, k):
        """w-gradient [J, 5] and Hessian [J, 5, 5] of a polynomial in y whose gradient
        at the point is (f_e, *f_s), with d2/de2 = f_ee, d2/de ds_k = 1 (k = 1, 2, 3) and
        no other second derivative."""
        at_k = [[sigma if i == k - 1 else zero for i in range(3)],
                [u if i == k - 1 else zero for i in range(3)]]
        mixed = sigma * u * f_ee + f_e
        rows = [[sigma * sigma * f_ee, mixed, *at_k[0]], [mixed, u * u * f_ee, *at_k[1]]]
        rows += [[at_k[0][i], at_k[1][i], zero, zero, zero] for i in range(3)]
        return vec(sigma * f_e, u * f_e, *f_s), jnp.stack([vec(*r) for r in rows], axis=-2)

    # h = H0 + S1z e + e s2 + S2zz e^2 / 2 - u^2 / 2
    h_w, h_ww = in_w(S1z, (zero, zero, zero), S2zz, 1)
    h_w, h_ww = h_w - u[:, None] * d_u, h_ww - jnp.outer(d_u, d_u)
    # c = S2zz + s3 + A3zz e + e s4 + B4zz e^2 / 2 (c = S2zz at the point)
    c_w, c_ww = in_w(A3zz, (zero, one, zero), B4zz, 3)
    sig = sigma[:, None]
    D = 1.0 - sigma * sigma * S2zz
    D_w = -sig**2 * c_w - 2.0 * (sigma * S2zz)[:, None] * d_sig
    D_ww = (-sig[..., None]**2 * c_ww - 2.0 * sig[..., None] * _outer_sym(c_w, d_sig)
            - 2.0 * S2zz[:, None, None] * jnp.outer(d_sig, d_sig))
    Phi_w = h_w - 0.5 * D_w / D[:, None]
    Phi_ww = h_ww - 0.5 * (D_ww / D[:, None, None]
                           - D_w[:, :, None] * D_w[:, None, :] / (D * D)[:, None, None])
    # G = sigma P - u, P = S1z + s2 + S2zz e + e s3 + A3zz e^2 / 2 (P = S1z at the point)
    P_w, P_ww = in_w(S2zz, (one, zero, zero), A3zz, 2)
    G_w = sig * P_w + S1z[:, None] * d_sig - d_u
    G_ww = sig[..., None] * P_ww + _outer_sym(P_w, d_sig)
    Phi_u, G_u = Phi_w[:, 0], G_w[:, 0]
    u_x = -G_w[:, 1:] / G_u[:, None]

    def along(f_ww):  # d2 f / dx dx' along u(x), less f_u u_xx
        return (f_ww[:, 1:, 1:] + _outer_sym(f_ww[:, 0, 1:], u_x)
                + f_ww[:, 0, 0, None, None] * u_x[:, :, None] * u_x[:, None, :])

    hess = along(Phi_ww) - (Phi_u / G_u)[:, None, None] * along(G_ww)
    grad_x = Phi_w[:, 1:] + Phi_u[:, None] * u_x
    # the quadratic forms: qS enters h (dl/dqS = 1), qA enters G as sigma qA (through the
    # mode only), qB enters c
    grad_q = vec(one, -Phi_u * sigma / G_u, 0.5 * sigma * sigma / D)
    value = H0 - 0.5 * u * u - 0.5 * jnp.log(D)
    return value, jnp.concatenate([grad_x, grad_q], axis=1), hess, u_x[:, :2], D


def block_value_grad_hess(theta, u_hat, data: ClusterData, s: Structure):
    """log L of one block (with its constants), its gradient and Hessian in theta =
    (beta, sigma), at the converged modes ``u_hat`` [J, 1]; and, per cluster, the
    conditional variance of u [J, 1, 1] and the mode's derivatives in theta [J, p + 1]."""
    p, J = s.p, s.n_groups
    beta, sigma = theta[:p], theta[p]
    eta = row_eta(u_hat, fixed_eta(beta, data), sigma.reshape(1, 1), data)
    a0, a1, a2, a3, a4 = row_derivs(eta, data, jnp.zeros((), theta.dtype), s.family, 4)
    z = data.Z[..., 0]
    z2 = z * z
    M, C, _ = data.X.shape
    # the clusters' moments: scalars [J, 5], and the linear forms' vectors [J, 3, p]
    scal = cluster_sum(jnp.sum(jnp.stack([a0, a1 * z, a2 * z2, a3 * z2 * z, a4 * z2 * z2]),
                           axis=-1).T, data, J)
    w = jnp.stack([a2 * z, a3 * z2, a4 * z2 * z], axis=-1)  # [M, C, 3]
    V = cluster_sum(jnp.sum(w[..., :, None] * data.X[..., None, :], axis=1), data, J)
    value, grad, hess, u_x, D = _cluster_derivs((*scal.T, u_hat[:, 0],
                                                 jnp.broadcast_to(sigma, (J,))))
    # the Gram matrices: sum_j dl_j/dq_k sum_i w_ki x_i x_i' = X' diag(r) X, one product
    # with the gradient's X' a1
    cq = grad[:, 4:][data.group]  # [M, 3]
    r = cq[:, None, 0] * a2 + cq[:, None, 1] * a3 * z + cq[:, None, 2] * a4 * z2  # [M, C]
    X = data.X.reshape(M * C, p)
    XtW = X.T @ jnp.concatenate([r.reshape(M * C, 1) * X, a1.reshape(M * C, 1)], axis=1)
    g_beta = XtW[:, p] + jnp.einsum("jk,jkp->p", grad[:, 1:4], V)
    H_bb = XtW[:, :p] + jnp.einsum("jkp,jkl,jlq->pq", V, hess[:, 1:, 1:], V)
    H_bs = jnp.einsum("jkp,jk->p", V, hess[:, 1:, 0])
    g = jnp.concatenate([g_beta, jnp.sum(grad[:, :1], axis=0)])
    H = jnp.block([[H_bb, H_bs[:, None]], [H_bs[None, :], jnp.sum(hess[:, :1, :1], axis=0)]])
    du = jnp.concatenate([u_x[:, 1:2] * V[:, 0], u_x[:, :1]], axis=1)  # (s2 = V[:, 0] . v)
    return jnp.sum(value) + data.log_const, g, H, (1.0 / D)[:, None, None], du
