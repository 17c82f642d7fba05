"""Independent numerical references for the test suite (NumPy/SciPy only), and a count
of XLA compilations.

Nothing here calls glmm_jax: these are the brute-force integrals, log densities and
parameter-vector helpers the tests compare glmm_jax against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jax import monitoring
from scipy import optimize, special, stats

_COMPILED = [0]


def _on_event(name: str, secs: float, **kwargs) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILED[0] += 1


monitoring.register_event_duration_secs_listener(_on_event)


def compilations() -> int:
    """XLA programs compiled (or loaded from the persistent cache) so far in this
    process, by JAX's own event: whatever path a program takes, it counts."""
    return _COMPILED[0]


CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
OWLS_FORMULA = ("SiblingNegotiation ~ FoodTreatment * SexParent + offset(logBroodSize) "
                "+ (1 | Nest)")

# ---------------------------------------------------------------------------------------
# conditional log densities with every constant (vectorized over arbitrary shapes)


def expit(eta):
    return special.expit(eta)


def inverse_link(link: str, eta):
    eta = np.asarray(eta, dtype=float)
    if link == "logit":
        return special.expit(eta)
    if link == "probit":
        return special.ndtr(eta)
    if link == "cloglog":
        return -np.expm1(-np.exp(eta))
    if link == "log":
        return np.exp(eta)
    if link == "identity":
        return eta
    raise ValueError(link)


def binomial_logpmf(y, n, eta, link="logit"):
    """log Binomial(y | n, p = inverse_link(eta)) with the binomial coefficient."""
    y, n, eta = (np.asarray(a, dtype=float) for a in (y, n, eta))
    log_choose = special.gammaln(n + 1) - special.gammaln(y + 1) - special.gammaln(n - y + 1)
    if link == "logit":
        # log p = -log(1 + e^-eta), log(1-p) = -log(1 + e^eta)
        log_p, log_q = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
    else:
        p = inverse_link(link, eta)
        log_p, log_q = np.log(p), np.log1p(-p)
    with np.errstate(invalid="ignore"):
        return (log_choose + np.where(y > 0, y * log_p, 0.0)
                + np.where(n - y > 0, (n - y) * log_q, 0.0))


def poisson_logpmf(y, eta):
    y, eta = np.asarray(y, dtype=float), np.asarray(eta, dtype=float)
    return y * eta - np.exp(eta) - special.gammaln(y + 1)


# ---------------------------------------------------------------------------------------
# brute-force marginal likelihoods


def _trapezoid_logint(logf, dx, axis=-1):
    """log of the trapezoid integral of exp(logf) on a uniform grid along ``axis``."""
    logf = np.moveaxis(np.asarray(logf), axis, -1)
    logw = np.full(logf.shape[-1], np.log(dx))
    logw[0] = logw[-1] = np.log(dx / 2)
    return special.logsumexp(logf + logw, axis=-1)


def bruteforce_ri_loglik(cluster_logpdf, codes, sd, n_grid=4001, width=10.0):
    """Marginal log-likelihood of a random-intercept model by grid quadrature.

    ``cluster_logpdf(b)`` takes a grid ``b`` [G] and returns the conditional log density of
    every row at eta + b, shape [n_rows, G]. The integral over each cluster's intercept
    b ~ N(0, sd^2) uses a ``n_grid``-point trapezoid rule on [-width*sd, width*sd].
    """
    b = np.linspace(-width * sd, width * sd, n_grid)
    rows = cluster_logpdf(b)  # [n, G]
    n_clusters = codes.max() + 1
    per_cluster = np.zeros((n_clusters, n_grid))
    np.add.at(per_cluster, codes, rows)
    logf = per_cluster + stats.norm.logpdf(b, 0.0, sd)[None, :]
    return float(np.sum(_trapezoid_logint(logf, b[1] - b[0])))


def laplace_ri_loglik(row_logpdf, row_d2, codes, sd):
    """Laplace approximation of a random-intercept model computed with SciPy.

    ``row_logpdf(b, idx)`` and ``row_d2(b, idx)`` give the rows' log densities and their
    second derivatives in eta at intercept ``b`` for the rows ``idx`` of one cluster.
    """
    total = 0.0
    for j in range(codes.max() + 1):
        idx = np.flatnonzero(codes == j)

        def negf(b, idx=idx):
            return -(np.sum(row_logpdf(b, idx)) + stats.norm.logpdf(b, 0.0, sd))

        res = optimize.minimize_scalar(negf, bracket=(-1.0, 1.0), tol=1e-14)
        b_hat = res.x
        curv = -np.sum(row_d2(b_hat, idx)) + 1.0 / sd**2
        total += -negf(b_hat) + 0.5 * np.log(2 * np.pi) - 0.5 * np.log(curv)
    return float(total)


def bruteforce_2d_loglik(row_logpdf_eta, eta0, Z, codes, L, n_grid=201, width=8.0):
    """Marginal log-likelihood with a 2-D random effect b = L u, u ~ N(0, I), by a
    ``n_grid`` x ``n_grid`` trapezoid rule over u in [-width, width]^2 per cluster.

    ``row_logpdf_eta(idx, eta)`` gives the log densities of rows ``idx`` at linear
    predictors ``eta`` [len(idx), G].
    """
    g = np.linspace(-width, width, n_grid)
    U1, U2 = np.meshgrid(g, g, indexing="ij")
    U = np.stack([U1.ravel(), U2.ravel()], axis=1)  # [G, 2]
    B = U @ np.asarray(L).T  # [G, 2]
    log_prior = stats.norm.logpdf(U).sum(axis=1)
    dx = g[1] - g[0]
    logw1 = np.full(n_grid, np.log(dx))
    logw1[0] = logw1[-1] = np.log(dx / 2)
    logw = (logw1[:, None] + logw1[None, :]).ravel()
    total = 0.0
    for j in range(codes.max() + 1):
        idx = np.flatnonzero(codes == j)
        eta = eta0[idx, None] + Z[idx] @ B.T  # [n_j, G]
        logf = row_logpdf_eta(idx, eta).sum(axis=0) + log_prior
        total += special.logsumexp(logf + logw)
    return float(total)


# ---------------------------------------------------------------------------------------
# parameter vectors from a fit's public tables


def theta_from_result(res) -> np.ndarray:
    """The documented theta vector [beta, lower triangle of L row-wise, log dispersion]
    rebuilt from ``fixef``, ``varcorr`` and ``dispersion`` only."""
    vc = res.varcorr
    vc = vc[vc["group"] != "Residual"]
    var = vc[vc["term2"].isna()]
    names = list(var["term1"])
    sd = var["sd"].to_numpy(float)
    q = len(names)
    R = np.eye(q)
    for _, r in vc[vc["term2"].notna()].iterrows():
        i, j = names.index(r["term1"]), names.index(r["term2"])
        R[i, j] = R[j, i] = r["corr"]
    G = R * np.outer(sd, sd)
    L = np.linalg.cholesky(G)
    parts = [res.fixef.to_numpy(float), L[np.tril_indices(q)]]
    if res.dispersion is not None:
        parts.append([np.log(res.dispersion)])
    return np.concatenate(parts)


def theta_vector(beta, L, log_phi=None) -> np.ndarray:
    L = np.atleast_2d(np.asarray(L, dtype=float))
    parts = [np.asarray(beta, float), L[np.tril_indices(L.shape[0])]]
    if log_phi is not None:
        parts.append([float(log_phi)])
    return np.concatenate(parts)


def r_sorted(levels) -> list:
    """Levels in R's default (locale, case-insensitive) sort order, as R's factor()."""
    return sorted(levels, key=lambda s: (str(s).lower(), str(s)))


def cbpp_arrays(df: pd.DataFrame):
    """cbpp as plain arrays: successes, trials, period design (treatment coding), herd code."""
    y = df["incidence"].to_numpy(float)
    n = df["size"].to_numpy(float)
    period = df["period"].astype(str).to_numpy()
    X = np.column_stack([np.ones(len(df))] + [(period == k).astype(float) for k in "234"])
    codes = pd.factorize(df["herd"], sort=True)[0]
    return y, n, X, codes
