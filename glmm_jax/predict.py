"""Predictions, fitted values and residuals of a fitted GLMM (lme4's ``predict``,
``fitted`` and ``residuals``), with delta-method standard errors and intervals.

A prediction is a function of the parameters phi: theta for maximum-likelihood fits, and
(beta, theta) under REML, where beta is not in theta. Conditional predictions use the
conditional modes b(phi) = L u(phi), u(phi) the mode of the log-integrand h(u; phi); by the
implicit function theorem du/dphi = (-H_uu)^{-1} d(grad_u h)/dphi, with the sparse
negative Hessian -H_uu = I - V' diag(d2) V (V the rows' derivatives of eta in u, d2 the
second derivatives of the rows' log densities in eta) and the cross derivatives by JAX
autodiff. The standard error of a prediction is then sqrt(J cov(phi) J') with J its exact
gradient in phi.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import linalg, special
from scipy.sparse import linalg as splinalg

from . import rows, xla
from .design import group_columns, interaction
from .dist import z_quantile
from .errors import GLMMInputError
from .formula import parse_formula
from .laplace import row_derivs
from .rvalues import evaluate

TYPES = ("link", "response")
RESIDUAL_TYPES = ("response", "pearson", "deviance", "working")


class _Rows(NamedTuple):
    """The rows to predict: designs, offsets, each term's level codes, the labels."""

    X: np.ndarray
    offset: np.ndarray
    Zs: list  # [m, q_k] per term; zero rows for levels not in the fit
    codes: list  # [m] level per term (0 for levels not in the fit)
    labels: pd.Index


def predict(res, newdata: pd.DataFrame | None = None, type: str = "link",
            random_effects: bool = True, marginal: bool = False,
            allow_new_levels: bool = False, se_fit: bool = False,
            level: float | None = None):
    """Predictions for the rows of the fit (``newdata=None``, indexed by
    ``res.frame.row_index``) or for ``newdata`` (indexed as ``newdata``).

    Returns a Series named "fit", or with ``se_fit``/``level`` a DataFrame.

    Conditional on the predicted random effects (their conditional modes, as lme4's
    ``predict``); at b = 0 with ``random_effects=False`` (lme4's ``re.form = NA``); or,
    with ``marginal=True``, the mean integrated over the random-effects distribution,
    E[g^-1(x'beta + z'b)] with z'b ~ N(0, sum_k z_k' G_k z_k), by Gauss-Hermite
    quadrature (on the link scale its link, g(E[y]); ``random_effects`` is then not
    used). ``type="response"`` is the mean (per trial for a binomial response).

    ``newdata`` is coded as the data of the fit (levels, contrasts, ``scale``/``poly``
    centres; formula offsets are evaluated on it). A level of a grouping factor not in
    the fit is an error unless ``allow_new_levels=True``, which predicts it at b = 0 (as
    lme4). Missing values in the columns a prediction needs are an error naming the
    number of rows (lme4's default ``na.action = na.pass`` would return NA for them).

    ``se_fit=True`` or a ``level`` (e.g. 0.95) returns a DataFrame with columns fit and
    se (and lower, upper): delta-method standard errors through the exact gradient of
    the prediction in the parameters, the conditional modes' dependence on them
    included, with ``res.cov_theta``. Under REML the parameters are (beta, theta), beta
    with its conditional covariance ``res.beta_cov`` and uncorrelated with theta. The
    Wald interval is formed on the link scale and transformed (as glmmTMB recommends;
    for marginal predictions the link scale is g(E[y])); ``se`` on the response scale
    is |d mu / d eta| times the link scale's. lme4 gives no standard errors for
    predictions; glmmTMB's ``se.fit`` also adds the conditional variance of b given y,
    which these do not include (they are conditional on the predicted random effects).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> new = pd.DataFrame({"period": ["1", "4"], "herd": [1, 99]})
    >>> p = predict(res, new, type="response", allow_new_levels=True, level=0.95)
    >>> p.round(3).values.tolist()
    [[0.308, 0.032, 0.25, 0.373], [0.048, 0.02, 0.021, 0.106]]
    >>> round(float(predict(res, new.iloc[1:], type="response", marginal=True).iloc[0]), 4)
    0.0573
    """
    _choice(type, TYPES, "type")
    if level is not None and not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise GLMMInputError(f"level must be a number between 0 and 1, not {level!r}")
    kind = "marginal" if marginal else ("conditional" if random_effects else "fixed")
    kind = kind if res.terms else "fixed"  # (a model without random terms)
    new = _rows(res, newdata, kind, allow_new_levels)
    phi0, cov = _parameters(res)
    with_se = se_fit or level is not None
    if with_se and not np.all(np.isfinite(cov)):
        raise GLMMInputError("se_fit: the parameters' covariance is not available (the "
                             "Hessian of -logLik is not positive definite; see res.messages)")
    eta, jac = _link(phi0, _modes(res, phi0, kind, with_se), new.X, new.offset, new.Zs,
                     new.codes, res.family, res.model.layout, kind, with_se)
    eta, fam = np.asarray(eta), res.family
    fit = np.asarray(fam.linkinv(eta)) if type == "response" else eta
    if not with_se:
        return pd.Series(fit, index=new.labels, name="fit")
    jac = np.asarray(jac)
    se = np.sqrt(np.maximum(np.einsum("it,ts,is->i", jac, cov, jac), 0.0))
    out = {"fit": fit, "se": se * np.abs(np.asarray(fam.mu_eta(eta))) if type == "response"
           else se}
    if level is not None:
        z = z_quantile(level)
        ends = [eta - z * se, eta + z * se]
        if type == "response":
            ends = [np.asarray(fam.linkinv(e)) for e in ends]
        out["lower"], out["upper"] = np.minimum(*ends), np.maximum(*ends)
    return pd.DataFrame(out, index=new.labels)


def fitted(res) -> pd.Series:
    """Conditional fitted means of the rows of the fit, as lme4's ``fitted()`` (per trial
    for a binomial response).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> round(float(fitted(res).iloc[0]), 4)
    0.3082
    """
    return predict(res, type="response").rename("fitted")


def residuals(res, type: str = "response") -> pd.Series:
    """Residuals of the rows of the fit, as lme4's ``residuals()``: y - mu ("response"),
    (y - mu) / (d mu / d eta) ("working"), sign(y - mu) sqrt(prior weight x unit
    deviance) with R's family deviances ("deviance"), and the Pearson residuals of
    :meth:`GLMMResult.pearson_residuals` ("pearson"). A binomial response is the
    proportion y / n with prior weight n, as in R.

    The Pearson residuals include the dispersion (lme4's ``scaled = TRUE``): they equal
    lme4's default for binomial, Poisson and negative binomial fits, and lme4's divided
    by sigma for Gaussian ones (for Gamma, by sqrt(1 / shape), lme4's dispersion being a
    different estimate). Deviance residuals never include the dispersion (as R).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> round(float(residuals(res, "deviance").iloc[0]), 4)
    -1.438
    """
    _choice(type, RESIDUAL_TYPES, "type")
    f, fam = res.frame, res.family
    if type == "pearson":
        return pd.Series(res.pearson_residuals(), index=f.row_index, name="pearson")
    eta = rows.linear_predictor(res)
    mu = np.asarray(fam.linkinv(eta))
    y = f.y / f.trials if fam.name == "binomial" else f.y
    if type == "response":
        r = y - mu
    elif type == "working":
        r = (y - mu) / np.asarray(fam.mu_eta(eta))
    else:
        dev = f.weights * f.trials * _unit_deviance(fam.name, y, mu, res.dispersion)
        r = np.sign(y - mu) * np.sqrt(np.maximum(dev, 0.0))
    return pd.Series(r, index=f.row_index, name=type)


def _choice(value, options: tuple[str, ...], what: str) -> None:
    if value not in options:
        raise GLMMInputError(f"{what} must be one of {', '.join(map(repr, options))}, "
                             f"not {value!r}")


def _unit_deviance(name: str, y, mu, dispersion):
    """R's ``family()$dev.resids`` with unit prior weights."""
    if name == "binomial":
        return 2.0 * (special.xlogy(y, y / mu) + special.xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
    if name == "poisson":
        return 2.0 * (special.xlogy(y, y / mu) - (y - mu))
    if name == "gaussian":
        return (y - mu) ** 2
    if name == "gamma":
        return -2.0 * (np.log(y / mu) - (y - mu) / mu)
    th = dispersion  # negative binomial (MASS::negative.binomial(theta))
    return 2.0 * (special.xlogy(y, y / mu) - (y + th) * np.log((y + th) / (mu + th)))


# ---- the rows to predict ----------------------------------------------------------------
def _rows(res, newdata, kind: str, allow_new_levels: bool) -> _Rows:
    f = res.frame
    if newdata is None:
        return _Rows(f.X, f.offset, [g.Z for g in f.groups], [g.codes for g in f.groups],
                     f.row_index)
    if not isinstance(newdata, pd.DataFrame):
        raise GLMMInputError(f"newdata must be a DataFrame, not {type(newdata).__name__}")
    if kind == "conditional":
        cols = dict.fromkeys(c for g in f.groups for c in group_columns(g.name))
        missing = [c for c in cols if c not in newdata.columns]
        if missing:
            raise GLMMInputError(f"newdata has no column {', '.join(map(repr, missing))} "
                                 "(a grouping factor; for predictions at b = 0 use "
                                 "random_effects=False)")
    X, Zs = res.model.design(newdata)
    codes = [np.zeros(len(newdata), np.int64)] * len(Zs)
    if kind == "conditional":
        for k, g in enumerate(f.groups):
            codes[k], Zs[k] = _level_codes(g, newdata, Zs[k], allow_new_levels)
    return _Rows(X, _offset(res, newdata), Zs, codes, newdata.index)


def _level_codes(g, newdata: pd.DataFrame, Z: np.ndarray, allow_new_levels: bool):
    """The fit's level of each row of ``newdata`` in grouping factor ``g`` (labelled as
    design.py labels them), and Z with zero rows where the level is new."""
    cols = group_columns(g.name)
    na = newdata[cols].isna().any(axis=1).to_numpy()
    if na.any():
        raise GLMMInputError(f"newdata: the grouping factor {g.name!r} has missing values in "
                             f"{int(na.sum())} rows")
    labels = newdata[cols[0]].to_numpy() if len(cols) == 1 else \
        np.asarray(interaction(newdata, cols), dtype=object)
    codes = g.levels.get_indexer(pd.Index(labels))
    if (codes < 0).any():  # labels as text (R's levels are strings): "3" is level 3
        as_text = pd.Index(g.levels.astype(str)).get_indexer(pd.Index(labels).astype(str))
        codes = np.where(codes < 0, as_text, codes)
    new = codes < 0
    if new.any() and not allow_new_levels:
        levels = list(dict.fromkeys(labels[new]))
        more = f" and {len(levels) - 5} more" if len(levels) > 5 else ""
        raise GLMMInputError(f"newdata: new levels of the grouping factor {g.name!r}: "
                             f"{', '.join(map(str, levels[:5]))}{more}; use "
                             "allow_new_levels=True to predict them at b = 0")
    return np.where(new, 0, codes), np.where(new[:, None], 0.0, Z)


def _offset(res, newdata: pd.DataFrame) -> np.ndarray:
    """The offsets of the formula evaluated on ``newdata``, plus the fit's ``offset=``
    column (an offset given to the fit as an array cannot be evaluated on new rows)."""
    f = res.frame
    parts = [np.asarray(evaluate(o, newdata, f.encoding.state, fitting=False).data, float)
             for o in parse_formula(res.formula).offsets]
    if f.offset_label is not None:
        if f.offset_label not in newdata.columns:
            raise GLMMInputError(f"newdata: the fit's offset= ({f.offset_label}) is not a "
                                 "column of newdata; refit with offset='<column name>'")
        parts.append(newdata[f.offset_label].to_numpy(dtype=float, na_value=np.nan))
    off = np.sum(parts, axis=0) if parts else np.zeros(len(newdata))
    if not np.all(np.isfinite(off)):
        raise GLMMInputError(f"newdata: the offset has missing or infinite values in "
                             f"{int((~np.isfinite(off)).sum())} rows")
    return off


# ---- predictions as functions of the parameters ----------------------------------------
class _Modes(NamedTuple):
    """The conditional modes b_k = L_k u_k (per term, [J_k, q_k]) to first order in phi
    about phi0: b_k(phi) = b_k + (u_k + du_k) L_k(phi)' - u_k L_k(phi0)', with
    du = ``jac`` (phi - phi0) (stacked level-major); ``u`` and ``jac`` are empty where no
    derivative is needed."""

    b: list
    u: list
    jac: np.ndarray  # [N, T]


def _parameters(res):
    """phi (theta; (beta, theta) under REML) and its covariance."""
    if res.model.layout.p == len(res.beta):
        return np.asarray(res.theta, dtype=float), res.cov_theta
    return np.concatenate([res.beta, res.theta]), linalg.block_diag(res.beta_cov,
                                                                     res.cov_theta)


def _unpack(phi, lay, p: int):
    """phi -> (beta, [L_k], log dispersion) (JAX)."""
    _, Ls, log_phi = lay.unpack(phi[p - lay.p:])
    return phi[:p], Ls, log_phi


@partial(xla.jit, static_argnames=("fam", "lay", "kind", "jac"))
def _link(phi0, modes: _Modes, X, offset, Zs, codes, fam, lay, kind: str, jac: bool):
    """The link-scale predictions at ``phi0`` of rows (X, offset, Zs, codes), and with
    ``jac`` their gradients in phi [m, T]."""
    L0s = _unpack(phi0, lay, X.shape[1])[1]

    def link(ph):
        beta, Ls, _ = _unpack(ph, lay, X.shape[1])
        eta = X @ beta + offset
        if kind == "conditional":
            bs, i = list(modes.b), 0
            if modes.jac.shape[0]:  # (no Jacobian: the fitted modes)
                du = modes.jac @ (ph - phi0)
                for k, (u, L, L0) in enumerate(zip(modes.u, Ls, L0s, strict=True)):
                    bs[k] = bs[k] + (u + du[i:i + u.size].reshape(u.shape)) @ L.T - u @ L0.T
                    i += u.size
            eta = eta + rows.random_part(None, bs, codes, Zs, xp=jnp)
        elif kind == "marginal":
            m, pos = rows.integrated_mean(fam, eta, Zs, Ls)
            eta = jnp.where(pos, fam.linkfun(m), eta)
        return eta

    return link(phi0), (jax.jacfwd(link)(phi0) if jac else None)


def _modes(res, phi0: np.ndarray, kind: str, with_se: bool) -> _Modes:
    """The fit's modes, with their Jacobian in phi where standard errors need it."""
    bs = [t.b for t in res.terms]
    if kind != "conditional" or not with_se:
        return _Modes(bs, [], np.zeros((0, len(phi0))))
    lay, p = res.model.layout, len(res.beta)
    Ls = _unpack(phi0, lay, p)[1]
    # b = L u; where L is singular the mode has no component in its null space (pinv)
    us = [b @ np.linalg.pinv(np.asarray(L)).T for b, L in zip(bs, Ls, strict=True)]
    f = res.frame
    cross, d2 = _mode_derivatives(us, phi0, f.X, f.offset, [g.Z for g in f.groups],
                                  [g.codes for g in f.groups], _Data(f.y, f.trials, f.weights),
                                  res.family, lay)
    n = len(f.y)
    blocks = []
    for g, L in zip(f.groups, Ls, strict=True):  # V = d eta / d u, one block per term
        q = len(g.z_names)
        cols = g.codes[:, None] * q + np.arange(q)
        blocks.append(sp.csr_matrix(((g.Z @ np.asarray(L)).ravel(),
                                     (np.repeat(np.arange(n), q), cols.ravel())),
                                    shape=(n, len(g.levels) * q)))
    V = sp.hstack(blocks, format="csr")
    neg_hess = sp.identity(V.shape[1], format="csc") - (V.T @ sp.diags(np.asarray(d2)) @ V)
    return _Modes(bs, us, splinalg.splu(sp.csc_matrix(neg_hess)).solve(np.asarray(cross)))


class _Data(NamedTuple):
    y: np.ndarray
    trials: np.ndarray
    weights: np.ndarray


@partial(xla.jit, static_argnames=("fam", "lay"))
def _mode_derivatives(us, phi0, X, offset, Zs, codes, data: _Data, fam, lay):
    """d(grad_u h)/dphi [N, T] at the modes ``us`` and the rows' second derivatives of
    the log density in eta [n]: h(u; phi) = sum_i w_i log p(y_i | eta_i) - |u|^2 / 2 over
    the rows of the fit (its implicit-function Jacobian is (-H_uu)^{-1} times the first)."""

    def eta_of(u, phi):
        beta, Ls, log_phi = _unpack(phi, lay, X.shape[1])
        bs = [uk @ L.T for uk, L in zip(u, Ls, strict=True)]
        return X @ beta + offset + rows.random_part(None, bs, codes, Zs, xp=jnp), log_phi

    def log_integrand(u, phi):
        eta, log_phi = eta_of(u, phi)
        ll = data.weights * fam.logpdf(data.y, eta, data.trials, log_phi)
        return jnp.sum(ll) - 0.5 * sum(jnp.sum(uk * uk) for uk in u)

    cross = jax.jacfwd(jax.grad(log_integrand), argnums=1)(us, phi0)  # per term [J, q, T]
    cross = jnp.concatenate([c.reshape(-1, phi0.shape[0]) for c in cross])
    eta, log_phi = eta_of(us, phi0)
    return cross, row_derivs(eta, data, log_phi, fam)[2]
