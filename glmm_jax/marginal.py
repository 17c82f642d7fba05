"""Conditional vs marginal: population-averaged means and coefficients, the marginal
covariance of a cluster's responses, the intra-class correlation and Nakagawa's R².

For any random-effects structure the random part of row i's linear predictor,
z_i'b = sum_k z_ik' b_k, is normal with mean 0 and variance s_i² = sum_k z_ik' G_k z_ik,
so the marginal (population-averaged) mean of row i is the one-dimensional integral

    E[y_i] = ∫ g^{-1}(eta_i + s_i x) φ(x) dx,    eta_i = x_i'beta + offset_i,

done here by Gauss-Hermite quadrature (exact for the identity link; for the log link it
equals exp(eta + s²/2); for the probit link Φ(eta / sqrt(1 + s²))). Everything is a
pure function of a fitted result; delta-method standard errors come from JAX autodiff
through the quadrature in theta.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import laplace, rows, xla
from .dist import z_quantile
from .errors import ConvergenceWarning, GLMMInputError, warn

GH_NODES = rows.GH_NODES
MAX_COV_NODES = 20_000  # nodes of the product rule of marginal_covariance (all dimensions)


def marginal_means(res, theta=None, X=None, Zs=None, offset=None, n_nodes: int = GH_NODES):
    """The marginal means E[y_i] = ∫ g^{-1}(eta_i + s_i x) φ(x) dx (per trial, for the
    binomial) of rows with fixed-effects design ``X``, random-effects designs ``Zs`` (one
    per term, as from ``res.model.design``) and ``offset`` (default: the fit's rows; 0
    with a new ``X``), at the parameter vector ``theta`` (default ``res.theta``), by
    ``n_nodes``-point Gauss-Hermite quadrature (``rows.marginal_mean``). With a JAX
    ``theta`` the result is JAX and differentiable in theta (delta-method standard
    errors); under REML, where theta holds no fixed effects, ``res.beta`` is used.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> marginal_means(res)[:2].round(4).tolist()  # at b = 0: 0.198, 0.0905
    [0.2161, 0.097]
    """
    f = res.frame
    if offset is None:
        offset = f.offset if X is None else 0.0
    X = f.X if X is None else np.asarray(X, dtype=float)
    Zs = [g.Z for g in f.groups] if Zs is None else [np.asarray(Z, float) for Z in Zs]
    offset = np.broadcast_to(np.asarray(offset, dtype=float), (len(X),))
    out = _means_jit(res.theta if theta is None else theta, X, Zs, offset, res.beta,
                     res.family, res.model.layout, n_nodes)
    return out if isinstance(theta, jax.Array) else np.asarray(out)


def _means(theta, X, Zs, offset, beta, family, layout, n_nodes: int = GH_NODES):
    """Marginal means at ``theta`` (JAX); ``beta`` is used where theta holds no fixed
    effects (REML)."""
    beta_t, Ls, _ = layout.unpack(jnp.asarray(theta, dtype=float))
    beta = beta_t if layout.p else beta
    return rows.integrated_mean(family, X @ beta + offset, Zs, Ls, n_nodes)[0]


_means_jit = xla.jit(_means, static_argnames=("family", "layout", "n_nodes"))


def marginal_coefficients(res, level: float = 0.95) -> pd.DataFrame:
    """Population-averaged (marginal) coefficients, as GLMMadaptive's ``marginal_coefs``:
    the marginal means of the fit's rows (by Gauss-Hermite quadrature, see
    :func:`marginal_means`) projected on X on the link scale,

        beta_M = (X'X)^{-1} X' (g(mu_M) - offset),

    with delta-method standard errors (cov = J cov_theta J', J the autodiff Jacobian of
    beta_M in theta), Wald intervals estimate ± z SE at ``level``, the conditional
    coefficients and the attenuation beta_M / beta.

    Where GLMMadaptive differs: it integrates by Monte Carlo (M = 3000 draws per
    cluster) and its standard errors are the spread of beta_M over K = 100 draws of the
    parameters from their estimated sampling distribution; ours are exact quadrature and
    the delta method. GLMMadaptive also projects g(mu_M) with the offset left in; we
    subtract it (with an offset its intercept would absorb the offset's mean). The
    projection is unweighted (binomial rows count once whatever their trials), as
    GLMMadaptive's. Under REML (Gaussian, identity link) the marginal coefficients are
    the conditional ones exactly, and so is their covariance: the conditional table is
    returned (attenuation 1).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> marginal_coefficients(res)[["estimate", "conditional"]].round(3).iloc[:2]
                 estimate  conditional
    (Intercept)    -1.289       -1.399
    period2        -0.942       -0.992
    """
    z = _z_quantile(level)
    f = res.frame
    layout = res.model.layout
    if layout.p == 0:  # REML: identity link, beta_M = beta exactly
        est, cov = np.asarray(res.beta, float), np.asarray(res.beta_cov, float)
    else:
        project = np.linalg.solve(f.X.T @ f.X, f.X.T)
        est, J = map(np.asarray, _coefficients_jacobian(
            jnp.asarray(res.theta, dtype=float), f.X, [g.Z for g in f.groups], f.offset,
            project, res.family, layout))
        cov = J @ res.cov_theta @ J.T
    se = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        attenuation = est / res.beta
    return pd.DataFrame({"estimate": est, "se": se, "lower": est - z * se,
                         "upper": est + z * se, "conditional": np.asarray(res.beta, float),
                         "attenuation": attenuation}, index=list(res.x_names))


@partial(xla.jit, static_argnames=("family", "layout"))
def _coefficients_jacobian(theta, X, Zs, offset, project, family, layout):
    """beta_M at theta and its Jacobian in theta (one compiled program per shape)."""

    def beta_marginal(th):
        mu = _means(th, X, Zs, offset, jnp.zeros(X.shape[1]), family, layout)
        return project @ (family.linkfun(mu) - offset)

    return beta_marginal(theta), jax.jacfwd(beta_marginal)(theta)


class MarginalCovariance(NamedTuple):
    """One cluster's marginal moments: ``mean`` (Series), ``cov`` and ``corr``
    (DataFrames), indexed by the caller's row labels of the cluster's rows."""

    mean: pd.Series
    cov: pd.DataFrame
    corr: pd.DataFrame


def marginal_covariance(res, cluster, group: str | None = None,
                        n_nodes: int | None = None) -> MarginalCovariance:
    """The marginal mean, covariance and correlation matrix of the responses of one
    cluster (level ``cluster`` of the grouping factor ``group``; default: the model's
    only grouping factor), integrating over that cluster's random effects b ~ N(0, G):

        Cov(y_i, y_k) = Cov_b(m_i(b), m_k(b)) + δ_ik E_b[Var(y_i | b)],

    by a product Gauss-Hermite rule (``n_nodes`` per dimension; default 100 for one
    random effect, fewer for several, at most 20,000 nodes in all). The response is y as
    fitted: successes for the binomial, with m = trials·p and Var(y | b) = trials·p(1-p);
    Gaussian sigma²/w (w the precision weights); Poisson mu, negative binomial
    mu + mu²/theta, Gamma mu²/shape; prior weights divide Var(y | b). With several terms
    of the same grouping factor (``(1 | g) + (0 + x | g)``) all are integrated over;
    the random effects of other grouping factors are held at 0 (the covariance given
    them, not over them).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> mc = marginal_covariance(res, 1)
    >>> mc.corr.shape, round(float(mc.corr.iloc[0, 1]), 3)
    ((4, 4), 0.392)
    """
    terms, k = _cluster_terms(res, group)
    f, fam = res.frame, res.family
    name = res.terms[k[0]].group
    if cluster not in res.terms[k[0]].levels:
        levels = res.terms[k[0]].levels
        shown = ", ".join(map(repr, levels[:5])) + (", ..." if len(levels) > 5 else "")
        raise GLMMInputError(f"cluster {cluster!r} is not a level of {name!r} "
                             f"(levels: {shown})")
    codes = f.groups[k[0]].codes
    idx = np.flatnonzero(codes == res.terms[k[0]].levels.get_loc(cluster))
    qs = [t.L.shape[0] for t in terms]
    q = sum(qs)
    n_nodes = min(GH_NODES, int(MAX_COV_NODES ** (1.0 / q))) if n_nodes is None else n_nodes
    if not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
        raise GLMMInputError(f"n_nodes must be a positive integer, not {n_nodes!r}")
    t, log_w = laplace.gh_rule(int(n_nodes), q)
    w = np.exp(log_w)
    eta = f.X[idx] @ res.beta + f.offset[idx]
    zb = np.zeros((len(w), len(idx)))
    start = 0
    for kk, term, qk in zip(k, terms, qs, strict=True):
        b = t[:, start:start + qk] @ term.L.T  # [K, q_k] draws of b ~ N(0, G_k)
        zb = zb + b @ f.groups[kk].Z[idx].T
        start += qk
    mu = fam.linkinv(eta + zb)  # [K, m]
    log_phi = rows.log_dispersion(res)
    if fam.name == "binomial":
        mean_b, var_b = f.trials[idx] * mu, f.trials[idx] * mu * (1.0 - mu)
    elif fam.name == "gaussian":
        mean_b, var_b = mu, fam.variance(mu, log_phi) / f.trials[idx]
    else:
        mean_b, var_b = mu, fam.variance(mu, log_phi)
    var_b = var_b / f.weights[idx]
    mean = w @ mean_b
    dev = mean_b - mean
    cov = (dev * w[:, None]).T @ dev + np.diag(w @ var_b)
    sd = np.sqrt(np.diag(cov))
    labels = f.row_index[idx]
    return MarginalCovariance(pd.Series(mean, index=labels, name="mean"),
                              pd.DataFrame(cov, index=labels, columns=labels),
                              pd.DataFrame(cov / np.outer(sd, sd), index=labels,
                                           columns=labels))


def _cluster_terms(res, group):
    """The terms of grouping factor ``group`` (default: the only one) and their indices."""
    names = list(dict.fromkeys(t.group for t in res.terms))
    if not names:
        raise GLMMInputError("the model has no random effects")
    if group is None:
        if len(names) > 1:
            raise GLMMInputError("the model has several grouping factors; choose one with "
                                 f"group= (one of {', '.join(map(repr, names))})")
        group = names[0]
    if group not in names:
        raise GLMMInputError(f"group {group!r} is not a grouping factor of the model "
                             f"(one of {', '.join(map(repr, names))})")
    k = [i for i, t in enumerate(res.terms) if t.group == group]
    return [res.terms[i] for i in k], k


def icc(res, eta: float | None = None) -> pd.Series:
    """The intra-class correlation, as ``performance::icc`` (latent scale) and on the
    response scale.

    ``adjusted`` = var_random / (var_random + var_residual) and ``conditional`` =
    var_random / (var_fixed + var_random + var_residual), with the variance components of
    ``insight::get_variance`` (see :func:`r2`). For a model with one random intercept
    (and no other random effect) also ``response``: the correlation of two responses
    (two trials, for the binomial) of the same cluster at the fixed linear predictor
    ``eta`` (default: the mean of x_i'beta + offset over the fit's rows),

        Var_b(mu(eta + b)) / (Var_b(mu(eta + b)) + E_b[Var(y | b)]),   b ~ N(0, sigma_b²),

    by Gauss-Hermite quadrature; for a Gaussian model it equals ``adjusted``.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> icc(res).round(4).to_dict()
    {'adjusted': 0.1114, 'conditional': 0.1019, 'response': 0.0399}
    """
    v = _variances(res)
    out = {"adjusted": v["random"] / (v["random"] + v["residual"]),
           "conditional": v["random"] / (v["fixed"] + v["random"] + v["residual"])}
    if len(res.terms) == 1 and res.terms[0].z_names == ("(Intercept)",):
        f = res.frame
        eta = float(np.mean(f.X @ res.beta + f.offset)) if eta is None else float(eta)
        t, log_w = laplace.gh_rule(GH_NODES, 1)
        w = np.exp(log_w)
        mu = res.family.linkinv(eta + float(res.terms[0].L[0, 0]) * t[:, 0])
        between = w @ (mu - w @ mu) ** 2
        within = w @ res.family.variance(mu, rows.log_dispersion(res))
        out["response"] = between / (between + within)
    return pd.Series(out, name="icc")


def r2(res) -> pd.Series:
    """Nakagawa's marginal and conditional R², as ``performance::r2_nakagawa``:

        marginal = var_fixed / total,  conditional = (var_fixed + var_random) / total,
        total = var_fixed + var_random + var_distribution + var_dispersion,

    with the components of ``insight::get_variance`` (insight 0.19): var_fixed the sample
    variance (n - 1) of x_i'beta (offset excluded); var_random the mean over rows of
    z_i'G z_i summed over the random terms (observation-level terms, with one level per
    row, go to var_dispersion instead); var_distribution pi²/3 (logit), 1 (probit),
    pi²/6 (cloglog), sigma² (Gaussian), 1/shape (Gamma: insight's sigma²), and for the
    log-link count families the lognormal approximation log(1 + 1/mu0) (Poisson) or
    log(1 + 1/mu0 + 1/theta) (negative binomial), where mu0 = exp(intercept) of the null
    model (the fixed effects replaced by an intercept, random terms, offset and weights
    kept), which is refitted here, as insight does.

    Where R differs: insight takes z_i from the columns of X named as the random
    effects (a random slope without its fixed effect is dropped, with a warning); we use
    the model's Z, the same where every random slope is also a fixed effect. R returns
    NA for a singular fit (a variance component ~0); we compute the value. R's lme4
    optimizers stop short of the optimum (cbpp: theta 0.64207 against 0.64226), so our
    numbers match glmmTMB fits of the same model more closely than lme4 ones.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> r2(res).round(4).to_dict()
    {'marginal': 0.0854, 'conditional': 0.1873}
    """
    v = _variances(res)
    total = v["fixed"] + v["random"] + v["residual"]
    return pd.Series({"marginal": v["fixed"] / total,
                      "conditional": (v["fixed"] + v["random"]) / total}, name="r2")


def _variances(res) -> dict:
    """insight::get_variance's var.fixed, var.random and var.residual (distribution +
    dispersion) of a fit."""
    f = res.frame
    if not res.terms:
        raise GLMMInputError("the model has no random effects: the ICC and Nakagawa's R² "
                             "need at least one random term")
    random = dispersion = 0.0
    for g, t in zip(f.groups, res.terms, strict=True):
        v = float(np.mean(np.einsum("ia,ab,ib->i", g.Z, t.G, g.Z)))  # mean z'Gz
        if len(t.levels) == len(f.y):  # an observation-level term
            dispersion += v
        else:
            random += v
    return {"fixed": float(np.var(f.X @ res.beta, ddof=1)), "random": random,
            "residual": _distribution_variance(res) + dispersion}


def _distribution_variance(res) -> float:
    fam = res.family
    if fam.name == "binomial":
        return {"logit": np.pi**2 / 3.0, "probit": 1.0, "cloglog": np.pi**2 / 6.0}[fam.link]
    if fam.name == "gaussian":
        return float(res.dispersion) ** 2
    if fam.name == "gamma":
        return 1.0 / float(res.dispersion)
    mu0 = float(np.exp(_null_intercept(res)))  # poisson, negative binomial: log link
    extra = 1.0 / float(res.dispersion) if fam.name == "negative_binomial" else 0.0
    return float(np.log1p(1.0 / mu0 + extra))


def _null_intercept(res) -> float:
    """The intercept of the null model: the fit's rows, random terms, offset and weights
    with the fixed effects replaced by an intercept (insight::null_model)."""
    from .model import fit_model, model_from_frame  # model -> results: imported late

    f = res.frame
    frame = replace(f, X=np.ones((len(f.y), 1)), x_names=("(Intercept)",), aliased=(),
                    encoding=None)
    null = fit_model(model_from_frame(res.formula, frame, res.family, res.nagq))
    if not null.converged:
        warn(f"{res.formula}: the null model (fixed effects ~ 1) for the distribution-"
             f"specific variance did not converge ({null.convergence.message})",
             ConvergenceWarning)
    return float(null.beta[0])


def _z_quantile(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise GLMMInputError(f"level must be a number between 0 and 1, not {level!r}")
    return z_quantile(level)
