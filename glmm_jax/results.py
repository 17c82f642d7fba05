"""GLMMResult: the immutable record of a fit, its tidy tables and printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .families import Family


@dataclass(frozen=True)
class TermFit:
    """One random-effect term's estimates: covariance factor and conditional modes."""

    group: str  # grouping factor, e.g. "herd" or "hospital:ward"
    z_names: tuple[str, ...]
    levels: pd.Index
    L: np.ndarray  # lower Cholesky factor of the covariance G = L L^T
    b: np.ndarray  # [J, q] conditional modes
    b_cov: np.ndarray  # [J, q, q] conditional covariances

    @property
    def G(self) -> np.ndarray:
        return self.L @ self.L.T


@dataclass(frozen=True)
class GLMMResult:
    """A fitted GLMM. Tables are returned as new pandas objects on every access."""

    formula: str
    family: Family
    nagq: int
    nobs: int
    x_names: tuple[str, ...]
    terms: tuple[TermFit, ...]
    beta: np.ndarray
    beta_cov: np.ndarray  # covariance of the fixed-effect estimates
    reml: bool  # fitted by restricted maximum likelihood
    dispersion: float | None  # sigma (Gaussian), shape (Gamma), theta (NB); None otherwise
    theta: np.ndarray  # optimizer parameter vector
    cov_theta: np.ndarray  # inverse Hessian of -loglik in theta
    loglik: float
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
        n_cov = sum(len(t.z_names) * (len(t.z_names) + 1) // 2 for t in self.terms)
        return len(self.x_names) + n_cov + int(self.dispersion is not None)

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
        names = list(self.x_names)
        return pd.DataFrame(self.beta_cov.copy(), index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.beta_cov)), index=list(self.x_names), name="se")

    @property
    def coef_table(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z statistics and two-sided p-values."""
        est, se = self.fixef, self.se
        z = est / se
        return pd.DataFrame({"estimate": est, "se": se, "z": z,
                             "p": 2.0 * stats.norm.sf(np.abs(z))})

    def _term_labels(self) -> list[str]:
        """Group labels for varcorr: repeated grouping factors get .1, .2 (as lme4)."""
        seen: dict[str, int] = {}
        out = []
        for t in self.terms:
            k = seen.get(t.group, 0)
            seen[t.group] = k + 1
            out.append(t.group if k == 0 else f"{t.group}.{k}")
        return out

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``.

        Columns: group, term1, term2, variance, sd, corr. A row with term2 set holds the
        covariance (in ``variance``) and correlation of term1 and term2.
        """
        rows = []
        for label, t in zip(self._term_labels(), self.terms, strict=True):
            G, names = t.G, t.z_names
            sd = np.sqrt(np.diag(G))
            for i, n in enumerate(names):
                rows.append((label, n, None, G[i, i], sd[i], np.nan))
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    corr = G[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((label, names[i], names[j], G[i, j], np.nan, corr))
        if self.family.name == "gaussian":
            rows.append(("Residual", None, None, self.sigma**2, self.sigma, np.nan))
        return pd.DataFrame(rows, columns=["group", "term1", "term2", "variance", "sd", "corr"])

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per level, with conditional SDs in ``condsd <term>`` columns;
        terms of the same grouping factor (as from ``||``) share one table."""
        out: dict[str, pd.DataFrame] = {}
        for t in self.terms:
            sd = np.sqrt(np.diagonal(t.b_cov, axis1=1, axis2=2))
            cols = {n: t.b[:, k] for k, n in enumerate(t.z_names)}
            cols.update({f"condsd {n}": sd[:, k] for k, n in enumerate(t.z_names)})
            df = pd.DataFrame(cols, index=t.levels.copy())
            out[t.group] = out[t.group].join(df) if t.group in out else df
        return out

    # ---- printing --------------------------------------------------------------
    def summary(self) -> str:
        """A printed summary in the layout of lme4's ``summary(glmer(...))``."""
        method = "Laplace Approximation" if self.nagq == 1 else \
            f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}"
        if self.family.name == "gaussian":
            title = "Linear mixed model fit by " + ("REML" if self.reml else "maximum likelihood")
        else:
            title = f"Generalized linear mixed model fit by maximum likelihood ({method})"
        out = [f"{title} [glmm_jax]",
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
        groups = dict.fromkeys((t.group, len(t.levels)) for t in self.terms)
        out.append(f"Number of obs: {self.nobs}, groups:  "
                   + "; ".join(f"{g}, {n}" for g, n in groups))
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
