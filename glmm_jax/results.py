"""GLMMResult: the immutable record of a fit, its tidy tables and printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .families import Family


@dataclass(frozen=True)
class GLMMResult:
    """A fitted GLMM. Tables are returned as new pandas objects on every access."""

    formula: str
    family: Family
    nagq: int
    nobs: int
    x_names: tuple[str, ...]
    z_names: tuple[str, ...]
    group_name: str
    levels: pd.Index
    beta: np.ndarray
    L: np.ndarray  # lower Cholesky factor of the random-effects covariance G = L L^T
    dispersion: float | None  # sigma (Gaussian), shape (Gamma), theta (NB); None otherwise
    theta: np.ndarray  # optimizer parameter vector
    cov_theta: np.ndarray  # inverse Hessian of -loglik in theta
    loglik: float
    b: np.ndarray  # [J, q] conditional modes of the random effects
    b_cov: np.ndarray  # [J, q, q] their conditional covariances
    converged: bool
    n_iter: int
    singular: bool
    messages: tuple[str, ...] = field(default=())
    n_dropped: int = 0
    aliased: tuple[str, ...] = ()

    # ---- scalars ---------------------------------------------------------------
    @property
    def df_model(self) -> int:
        """Number of estimated parameters (fixed effects, covariance, dispersion)."""
        q = len(self.z_names)
        return len(self.x_names) + q * (q + 1) // 2 + int(self.dispersion is not None)

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.df_model

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + np.log(self.nobs) * self.df_model

    @property
    def deviance(self) -> float:
        """-2 log-likelihood (the 'deviance' column of lme4's summary)."""
        return -2.0 * self.loglik

    @property
    def df_resid(self) -> int:
        return self.nobs - self.df_model

    @property
    def sigma(self) -> float:
        """Residual standard deviation (Gaussian), 1 otherwise (as lme4's sigma())."""
        return float(self.dispersion) if self.family.name == "gaussian" else 1.0

    # ---- tables ----------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.beta, index=list(self.x_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        p = len(self.x_names)
        names = list(self.x_names)
        return pd.DataFrame(self.cov_theta[:p, :p], index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        p = len(self.x_names)
        return pd.Series(np.sqrt(np.diag(self.cov_theta)[:p]), index=list(self.x_names),
                         name="se")

    @property
    def coef_table(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z statistics and two-sided p-values."""
        est, se = self.fixef, self.se
        z = est / se
        return pd.DataFrame({"estimate": est, "se": se, "z": z,
                             "p": 2.0 * stats.norm.sf(np.abs(z))})

    @property
    def G(self) -> np.ndarray:
        """Random-effects covariance matrix."""
        return self.L @ self.L.T

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``.

        Columns: group, term1, term2, variance, sd, corr. A row with term2 set holds the
        covariance (in ``variance``) and correlation of term1 and term2.
        """
        G, names, rows = self.G, self.z_names, []
        sd = np.sqrt(np.diag(G))
        for i, n in enumerate(names):
            rows.append((self.group_name, n, None, G[i, i], sd[i], np.nan))
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                corr = G[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                rows.append((self.group_name, names[i], names[j], G[i, j], np.nan, corr))
        if self.family.name == "gaussian":
            rows.append(("Residual", None, None, self.sigma**2, self.sigma, np.nan))
        return pd.DataFrame(rows, columns=["group", "term1", "term2", "variance", "sd", "corr"])

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per level, with conditional SDs in ``condsd <term>`` columns."""
        sd = np.sqrt(np.diagonal(self.b_cov, axis1=1, axis2=2))
        cols = {n: self.b[:, k] for k, n in enumerate(self.z_names)}
        cols.update({f"condsd {n}": sd[:, k] for k, n in enumerate(self.z_names)})
        return {self.group_name: pd.DataFrame(cols, index=self.levels.copy())}

    # ---- printing --------------------------------------------------------------
    def summary(self) -> str:
        """A printed summary in the layout of lme4's ``summary(glmer(...))``."""
        method = "Laplace Approximation" if self.nagq == 1 else \
            f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}"
        out = [f"Generalized linear mixed model fit by maximum likelihood ({method}) [glmm_jax]",
               f" Family: {self.family.name}  ( {self.family.link} )",
               f"Formula: {self.formula}", ""]
        ic = pd.DataFrame({"AIC": [self.aic], "BIC": [self.bic], "logLik": [self.loglik],
                           "deviance": [self.deviance], "df.resid": [self.df_resid]})
        out += [ic.to_string(index=False, float_format=lambda v: f"{v:.1f}"), ""]
        out.append("Random effects:")
        vc = self.varcorr
        var = vc[vc.term2.isna()]
        tab = pd.DataFrame({"Groups": var.group, "Name": var.term1.fillna(""),
                            "Variance": var.variance.map(lambda v: f"{v:.4g}"),
                            "Std.Dev.": var.sd.map(lambda v: f"{v:.4g}")})
        cor = vc[vc.term2.notna()]
        if len(cor):
            tab["Corr"] = ""
            for _, r in cor.iterrows():
                i = tab.index[(tab.Name == r.term2) & (tab.Groups == r.group)][0]
                tab.loc[i, "Corr"] = (tab.loc[i, "Corr"] + f" {r['corr']:.2f}").strip()
        out += [tab.to_string(index=False), ""]
        out.append(f"Number of obs: {self.nobs}, groups:  {self.group_name}, {len(self.levels)}")
        if self.dispersion is not None and self.family.name != "gaussian":
            out.append(f"Dispersion parameter ({self.family.dispersion_name}): "
                       f"{self.dispersion:.4g}")
        out += ["", "Fixed effects:"]
        ct = self.coef_table
        ct.columns = ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
        out.append(ct.to_string(formatters={"Estimate": "{:.5g}".format,
                                             "Std. Error": "{:.5g}".format,
                                             "z value": "{:.3f}".format,
                                             "Pr(>|z|)": "{:.3g}".format}))
        if not self.converged:
            out += ["", "WARNING: the fit did NOT converge; estimates are not reliable."]
        if self.singular:
            out += ["", "boundary (singular) fit: a variance is ~0 or a correlation ~±1"]
        out += [f"  note: {m}" for m in self.messages]
        return "\n".join(out)

    def __repr__(self) -> str:
        status = "converged" if self.converged else "NOT converged"
        return (f"<GLMMResult {self.family.name}({self.family.link}) {self.formula!r}: "
                f"logLik={self.loglik:.4f}, {status}>")
