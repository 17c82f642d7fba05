"""Starting values of theta: a linearized GLM for the fixed effects and moment
estimates of the random-effects covariances, on the conditional scale."""

from __future__ import annotations

import numpy as np

from . import nested
from .design import ModelFrame
from .families import Family
from .theta import ThetaLayout

START_ROWS = 20_000  # start coefficients from at most about this many rows (a strided sample)
START_SD = (0.1, 5.0)  # a random intercept's start SD, link scale, in units of `scale`


def start_values(frame: ModelFrame, fam: Family, lay: ThetaLayout) -> np.ndarray:
    """Starting theta (in the layout ``lay``).

    Fixed effects from least squares: with an intercept and no offset, slopes on the mean
    scale divided by dmu/deta at the mean (a linearized GLM); otherwise on the
    link-transformed response; then (not Gaussian) one IRLS step towards the GLM fit.
    Beyond ``START_ROWS`` rows they come from a strided sample of about that many rows.
    Random effects: L = 0.5 * scale / rms(Z column), except random intercepts, whose
    SDs are moment estimates (below, moved to the conditional scale), term by term, and
    (not Gaussian) vector terms, whose whole covariance is a moment estimate; then
    the fixed effects are moved from their marginal to their conditional scale, or
    (Gaussian) the residual variance is what the random intercepts leave of the total.
    """
    y, n, X = frame.y, frame.trials, frame.X
    beta = None
    stride = -(-len(y) // START_ROWS)
    if stride > 1:  # large data: the coefficients from every stride-th row
        try:  # (a column all zero in the sample: LinAlgError; strided views copied once)
            beta = _start_beta(fam, np.ascontiguousarray(X[::stride]), y[::stride],
                               n[::stride], frame.offset[::stride], frame.x_names)
        except np.linalg.LinAlgError:
            beta = None
    if beta is None or not np.all(np.isfinite(beta)):
        beta = _start_beta(fam, X, y, n, frame.offset, frame.x_names)
    eta = X @ beta + frame.offset
    scale = float(np.std(_link_response(fam, y, n) - eta)) if fam.name == "gaussian" else 1.0
    Ls = []
    for g in frame.groups:
        rms = np.sqrt(np.mean(g.Z**2, axis=0))
        Ls.append(np.diag(0.5 * scale / np.where(rms > 0, rms, 1.0)))
    mu = fam.linkinv(eta)
    log_phi = fam.start_dispersion(y, mu * (n if fam.name == "binomial" else 1.0))
    d_eta = mu * (1.0 - mu) if fam.link == "logit" else fam.mu_eta(eta)  # (no second expit)
    # moment estimates of each random intercept's variance; a term nested in another
    # (a ward in its hospital, an observation in its ward) estimates the sum of its own
    # and its ancestors' variances, so the nearest ancestor's estimate is subtracted
    raw = {i: _conditional_var(fam, _intercept_sd(fam, y, n, mu, d_eta, log_phi, g.codes,
                                                   len(g.levels)) ** 2)
           for i, g in enumerate(frame.groups) if "(Intercept)" in g.z_names}
    var_sum = 0.0
    for i, var in raw.items():
        g, L = frame.groups[i], Ls[i]
        parents = [m for m in raw if len(frame.groups[m].levels) < len(g.levels)
                   and nested.parent(g.codes, len(g.levels), frame.groups[m].codes) is not None]
        if parents:
            var -= raw[max(parents, key=lambda m: len(frame.groups[m].levels))]
        k = g.z_names.index("(Intercept)")
        sd = np.sqrt(max(var, 0.0))
        L[k, k] = np.clip(sd, START_SD[0] * scale, START_SD[1] * scale) if np.isfinite(sd) \
            else scale
        var_sum += L[k, k] ** 2
    # vector terms: their whole covariance by moments (not nested-corrected; not Gaussian,
    # whose start sigma is the total SD, which makes the sampling covariances too large)
    for i, g in enumerate(frame.groups if fam.name != "gaussian" else ()):
        G = _moment_covariance(fam, y, n, mu, d_eta, log_phi, g.Z, g.codes, len(g.levels))
        if G is None:
            continue
        if "(Intercept)" in g.z_names:
            k = g.z_names.index("(Intercept)")
            G = G * (_conditional_var(fam, G[k, k]) / G[k, k])
            G = G * min(1.0, (START_SD[1] * scale) ** 2 / G[k, k])  # as scalar intercepts
            var_sum += G[k, k] - Ls[i][k, k] ** 2
        Ls[i] = np.linalg.cholesky(G)
    if fam.name == "gaussian":  # the residual variance is what the groups leave
        log_phi = 0.5 * np.log(max(scale**2 - var_sum, 0.05 * scale**2))
    elif X.shape[1] and var_sum:
        beta = _conditional_beta(fam, beta, frame.x_names, var_sum)
    return lay.pack(beta, Ls, log_phi)


def _start_beta(fam: Family, X, y, n, offset, x_names):
    """Start coefficients (see :func:`start_values`)."""
    if not X.shape[1]:
        return np.zeros(0)
    G = X.T @ X
    if np.any(np.diag(G) == 0.0):
        raise np.linalg.LinAlgError("a column of X is zero on every row")
    if x_names[0] == "(Intercept)" and not np.any(offset):
        mean = np.mean(y / n)
        mean = np.clip(mean, 0.01, 0.99) if fam.name == "binomial" else max(mean, 1e-3)
        eta_bar = float(fam.linkfun(mean))
        beta = np.linalg.solve(G, X.T @ (y / n)) / float(fam.mu_eta(eta_bar))
        beta[0] = eta_bar - G[0, 1:] @ beta[1:] / len(y)  # (G's first row: the column sums)
    else:
        beta = np.linalg.solve(G, X.T @ (_link_response(fam, y, n) - offset))
    return beta if fam.name == "gaussian" else _glm_step(fam, X, y, n, offset, beta)


def _link_response(fam: Family, y, n):
    """The response on the link scale, kept finite (binomial: empirical logits)."""
    if fam.name == "binomial":
        return fam.linkfun((y + 0.5) / (n + 1.0))
    if fam.link == "log":
        return np.log(y + 0.5) if fam.name != "gamma" else np.log(y)
    return y


def _glm_step(fam: Family, X, y, n, offset, beta):
    """One IRLS step from ``beta`` towards the GLM fit without random effects (the
    marginal coefficients); ``beta`` itself if the step is not finite."""
    eta = X @ beta + offset
    mu, d = fam.linkinv(eta), np.maximum(fam.mu_eta(eta), 1e-10)
    w = n * d * d / np.maximum(fam.variance(mu, 0.0), 1e-10)
    z = eta - offset + (y / n - mu) / d
    try:
        new = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * z))
    except np.linalg.LinAlgError:
        return beta
    return new if np.all(np.isfinite(new)) else beta


def _intercept_sd(fam: Family, y, n, mu, d, log_phi: float, codes, J: int) -> float:
    """Moment estimate of a random intercept's SD on the link scale: the SD of the
    clusters' estimates (:func:`_cluster_estimates`) less their sampling variances v_j,
    weighted by 1 / (sd^2 + v_j) (two passes)."""
    b, V = _cluster_estimates(fam, y, n, mu, d, log_phi, None, codes, J)
    r, v = b[:, 0], V[:, 0, 0]
    var = max(np.mean(r * r - v), 0.0)
    for _ in range(2):
        w = 1.0 / (var + v + 1e-12)
        var = max(np.sum(w * (r * r - v)) / np.sum(w), 0.0)
    return float(np.sqrt(var))


def _cluster_estimates(fam: Family, y, n, mu, d, log_phi: float, Z, codes, J: int):
    """Each cluster's linearized random effects b_j = A_j^-1 sum z (y - n mu), with
    A_j = sum n dmu/deta z z' (``mu``, ``d = dmu/deta`` at the fixed-effects start, per
    row), and their sampling covariances V_j = A_j^-1 (sum n V(mu) z z') A_j^-1, over the
    clusters whose A_j is well conditioned: b [J', q], V [J', q, q]. ``Z=None``: z = 1."""
    q = 1 if Z is None else Z.shape[1]

    def cluster_sums(v):
        out = np.empty((J, q, q))
        for a in range(q):
            for c in range(a, q):
                zz = v if Z is None else v * Z[:, a] * Z[:, c]
                out[:, a, c] = out[:, c, a] = np.bincount(codes, zz, J)
        return out

    A, B = cluster_sums(n * d), cluster_sums(n * fam.variance(mu, log_phi))
    res = y - n * mu
    r = np.stack([np.bincount(codes, res if Z is None else res * Z[:, a], J)
                  for a in range(q)], axis=1)
    ev = np.linalg.eigvalsh(A)
    ok = (ev[:, 0] > 1e-8 * ev[:, -1]) & (ev[:, -1] > 0)
    Ainv = np.linalg.inv(A[ok])
    return np.einsum("jab,jb->ja", Ainv, r[ok]), Ainv @ B[ok] @ Ainv


def _attenuation(fam: Family) -> float:
    """c^2 in the marginal/conditional attenuation 1 / sqrt(1 + c^2 var) of a logit or
    probit coefficient under a random intercept of variance var (Zeger et al. 1988)."""
    return {"logit": (16.0 * np.sqrt(3.0) / (15.0 * np.pi)) ** 2, "probit": 1.0}.get(
        fam.link, 0.0)


def _moment_covariance(fam: Family, y, n, mu, d, log_phi: float, Z, codes, J: int):
    """Moment estimate of a vector random term's covariance on the link scale (q >= 2;
    None for a scalar term or when too few clusters inform it): as
    :func:`_intercept_sd`, the weighted mean of b_j b_j' - V_j over the clusters'
    estimates (:func:`_cluster_estimates`), with eigenvalues kept above 1e-3 of the
    largest.
    """
    q = Z.shape[1]
    if q < 2:
        return None
    b, V = _cluster_estimates(fam, y, n, mu, d, log_phi, Z, codes, J)
    if len(b) < max(10, 2 * q):
        return None
    dev = b[:, :, None] * b[:, None, :] - V
    G = dev.mean(axis=0)
    for _ in range(2):
        w = 1.0 / np.maximum(np.trace(G) + np.trace(V, axis1=1, axis2=2), 1e-12)
        G = np.einsum("j,jab->ab", w, dev) / w.sum()
    lam, vec = np.linalg.eigh(0.5 * (G + G.T))
    if not np.all(np.isfinite(lam)) or lam[-1] <= 0:
        return None
    return (vec * np.maximum(lam, 1e-3 * lam[-1])) @ vec.T


def _conditional_var(fam: Family, var: float) -> float:
    """A random intercept's variance from its moment estimate ``var`` at the marginal
    fit, where the cluster effects are linearized: attenuated like a coefficient under
    logit and probit (var = v / (1 + c^2 v)); under a log link they are exp(b) / E exp(b)
    - 1, of variance exp(v) - 1."""
    if fam.link == "log":
        return float(np.log1p(var))
    return var / (1.0 - min(_attenuation(fam) * var, 0.9))


def _conditional_beta(fam: Family, beta, x_names, var: float):
    """Marginal (population-averaged) start coefficients moved to the conditional scale
    for a random intercept of variance ``var`` (logit, probit: scaled up; log: intercept
    lowered by var/2)."""
    beta = beta.copy()
    if fam.link in ("logit", "probit"):
        beta *= np.sqrt(1.0 + _attenuation(fam) * var)
    elif fam.link == "log" and x_names[0] == "(Intercept)":
        beta[0] -= 0.5 * var
    return beta

