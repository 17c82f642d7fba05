"""Satterthwaite degrees of freedom and t-tests for the fixed effects of Gaussian fits,
as lmerTest's ``summary(lmer(...))``, from exact derivatives.

For a contrast l of the fixed effects with variance v(ψ) = l'C(ψ)l, where C(ψ) =
σ² (X'V⁻¹X)⁻¹ is the fixed effects' covariance as a function of the variance parameters
ψ (each term's covariance factor entries and log σ),

    df = 2 v(ψ̂)² / (∇v' A ∇v),

with A the asymptotic covariance of ψ̂: the inverse Hessian of -log L in ψ (REML), or
of the ML -log L with β profiled out (ML: the ψ block of ``res.cov_theta``). The df is
the same in any parameterization of ψ, so ψ is the fit's own (theta without beta).
lmerTest differentiates the deviance and C numerically (numDeriv, in lme4's relative
factors and σ); here the Jacobian of C is exact (JAX autodiff of lmm.fixed_cov), so the
df agree with lmerTest's to its numerical accuracy (about 1e-5 relative on sleepstudy).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import lmm, xla
from .dist import t_sf
from .errors import ConvergenceWarning, GLMMInputError, warn
from .lmm import LmmStructure
from .objective import unpack

EIGEN_TOL = 1e-8  # eigenvalues of the ψ Hessian below this times the largest are dropped


def satterthwaite(res) -> pd.DataFrame:
    """The fixed effects' t-tests with Satterthwaite degrees of freedom (lmerTest).

    Columns ``estimate``, ``se``, ``df``, ``t`` and ``p`` (two-sided, from the t
    distribution with ``df`` degrees of freedom), one row per fixed effect.

    ``se`` is sqrt(diag C(ψ̂)) with C = σ² (X'V⁻¹X)⁻¹, lmerTest's (and lme4's) vcov:
    under REML that is ``res.se``; for ML fits ``res.se`` comes from the inverse
    Hessian in all parameters (glmmTMB's convention), which is at least as large (equal
    on balanced data such as sleepstudy; 0.1% larger with half of its first 100 rows
    dropped). As in
    lmerTest, a ψ Hessian that is not positive definite (a singular fit) is inverted
    on its positive eigenvalues only, with a warning. A model without random terms gets
    the t-tests of R's ``lm`` and ``summary(glm(..., gaussian))``: se from RSS / (n - p),
    n - p df (what the formula gives under REML), for ML fits too.

    >>> import glmm_jax as gj
    >>> res = gj.fit("Reaction ~ Days + (Days | Subject)", gj.datasets.load("sleepstudy"),
    ...              family="gaussian")
    >>> satterthwaite(res)["df"].round(2).tolist()
    [17.0, 17.0]
    """
    if res.family.name != "gaussian":
        raise GLMMInputError(f"satterthwaite: Satterthwaite degrees of freedom are for "
                             f"Gaussian fits; this fit is {res.family.name} (its "
                             "coef_table has Wald z tests)")
    if res.hessian is None or res.model is None:
        raise GLMMInputError("satterthwaite: the result has no Hessian or fitted model")
    if res.model.frame.groups:
        C, dC = _cov_jacobian(res)
        A = _varpar_cov(res)
        var = np.diag(C)
        grad = np.einsum("kkm->km", dC)  # ∇ of each C_kk in ψ
        with np.errstate(divide="ignore", invalid="ignore"):
            df = 2.0 * var**2 / np.einsum("km,mn,kn->k", grad, A, grad)
    else:
        var, df = _lm(res)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var)
        t = res.beta / se
    return pd.DataFrame({"estimate": res.beta, "se": se, "df": df, "t": t,
                         "p": 2.0 * t_sf(np.abs(t), df)}, index=list(res.x_names))


def _psi(res) -> np.ndarray:
    """The variance parameters: theta without the fixed effects (in theta under ML)."""
    return np.asarray(res.theta)[0 if res.reml else len(res.x_names):]


def _cov_jacobian(res):
    """C(ψ̂) [p, p] and its Jacobian [p, p, m] in ψ."""
    psi = _psi(res)
    model, frame = res.model, res.model.frame
    if not (isinstance(model.structure, LmmStructure) and model.structure.reml):
        # the REML model of the same frame: its theta is ψ (same term order and names)
        from .model import model_from_frame  # (model.py imports results.py, which this)

        try:
            model = model_from_frame(res.formula, frame, res.family, res.nagq, None,
                                     reml=True, engine="lmm")
        except GLMMInputError as exc:
            raise GLMMInputError(f"satterthwaite: the covariance of the fixed effects is "
                                 f"differentiated by the cross-product engine: {exc}") from None
        names = res.theta_names[len(res.theta_names) - len(psi):]
        assert model.theta_names == names, (model.theta_names, names)
    # a small model's padded program (lmmpad.py: the padded fixed effects an identity
    # block of their own, after the p real ones), shared by refits of the same terms
    C, dC = _jac(jnp.asarray(psi), model.data, model.structure)
    p = len(res.x_names)
    return np.asarray(C)[:p, :p], np.asarray(dC)[:p, :p]


@partial(xla.jit, static_argnames="s")
def _jac(psi, data, s):
    def cov(psi):
        return lmm.fixed_cov(unpack(psi, s), data, s)

    return cov(psi), jax.jacfwd(cov)(psi)


def _lm(res):
    """Without random terms: lm's exact t-tests, variances RSS/(n - p) (X'WX)⁻¹ on
    n - p df (the REML Satterthwaite df, for ML fits too)."""
    f = res.model.frame
    n, p = f.X.shape
    r = f.y - f.offset - f.X @ res.beta
    s2 = float(np.sum(f.trials * r * r)) / (n - p)
    var = s2 * np.diag(np.linalg.inv(f.X.T @ (f.trials[:, None] * f.X)))
    return var, np.full(p, float(n - p))


def _varpar_cov(res) -> np.ndarray:
    """A: the inverse Hessian of -log L in ψ (β profiled out under ML), on its positive
    eigenvalues (lmerTest's generalized inverse)."""
    H = np.asarray(res.hessian, dtype=float)
    p = 0 if res.reml else len(res.x_names)
    if p:  # the Hessian of the profile in ψ: the Schur complement of the β block
        H = H[p:, p:] - H[p:, :p] @ np.linalg.solve(H[:p, :p], H[:p, p:])
    ev, V = np.linalg.eigh(0.5 * (H + H.T))
    pos = ev > EIGEN_TOL * max(ev[-1], 0.0)
    if not pos.all():
        warn(f"satterthwaite: the Hessian in the variance parameters has {int((~pos).sum())} "
             f"eigenvalue(s) not positive (smallest {ev[0]:.1e}, largest {ev[-1]:.1e}): "
             "inverted on the positive ones, as lmerTest does", ConvergenceWarning)
    return (V[:, pos] / ev[pos]) @ V[:, pos].T
