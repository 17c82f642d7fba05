"""GLMMResult: the immutable record of a fit, its tidy tables and printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import infinite, rformat, rows
from .design import ModelFrame
from .dist import norm_sf
from .families import Family
from .rsyntax import deparse_lines, fill, parse


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
class Convergence:
    """How a fit ended, as MixedModels.jl's OptSummary.

    ``status`` is "converged", "iteration_limit", "line_search_failed",
    "modes_not_converged" or "not_finite", with ``message`` saying what failed.
    ``methods``: the optimizers run in order (Newton, and after an early stop the L-BFGS
    fallback and Newton again). Objectives are -log L. ``grad_norm`` is the largest
    entry of the Newton step H^-1 g (lme4's scaled gradient; inf where H is not positive
    definite), ``max_abs_grad`` the largest gradient entry, ``min_eigenvalue`` the
    smallest eigenvalue of the Hessian (of the free entries, when some are ``fixed``).
    ``theta_start`` is where Newton started: the start values, except that a Gaussian
    model fitted by ML from cross products (the "lmm" engine) with no fixed effect held
    starts from the fixed effects' GLS estimates at the start's covariance parameters.
    """

    status: str
    message: str
    methods: tuple[str, ...]
    theta_start: np.ndarray
    theta_final: np.ndarray
    objective_start: float
    objective_final: float
    n_iter: int  # Newton iterations (accepted points), over all Newton runs
    n_eval: int  # points Newton evaluated
    n_lbfgs: int  # L-BFGS iterations
    grad_norm: float
    max_abs_grad: float
    min_eigenvalue: float
    tolerances: dict
    fixed: tuple[str, ...]  # theta entries held fixed
    time_s: float  # wall time of the fit, start values included


@dataclass(frozen=True)
class GLMMResult:
    """A fitted GLMM. Tables are returned as new pandas objects on every access.

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> res
    <GLMMResult binomial(logit) 'cbind(incidence, size - incidence) ~ period + (1 | herd)': \
logLik=-92.0263, converged>
    >>> res.fixef.round(3).tolist(), round(float(res.varcorr["sd"][0]), 3)
    ([-1.399, -0.992, -1.129, -1.58], 0.642)
    >>> res.wald_table.columns.tolist(), res.df_model, res.converged, res.singular
    (['estimate', 'se', 'z', 'p'], 5, True, False)
    >>> res.fitted().round(3).head(2).tolist(), res.residuals("pearson").shape
    ([0.308, 0.142], (56,))
    """

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
    frame: ModelFrame | None = field(default=None, repr=False, compare=False)
    hessian: np.ndarray | None = None  # exact Hessian of -loglik in theta (also where not PD)
    gradient: np.ndarray | None = None  # gradient of -loglik in theta at the estimates
    convergence: Convergence | None = None
    model_: object = field(default=None, repr=False, compare=False)
    builder: object = field(default=None, repr=False, compare=False)
    separation: object = field(default=None, repr=False, compare=False)  # see separation.py

    @property
    def model(self):
        """The fitted Model (built on first access for fits from ``fit_many``)."""
        if self.model_ is None and self.builder is not None:
            object.__setattr__(self, "model_", self.builder())
        return self.model_

    @property
    def theta_names(self) -> list[str]:
        """Names of the entries of ``theta`` (as ``Model.theta_names``)."""
        return self.model.theta_names

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
    # Separated data (fitted with on_separation="warn"): the tables show the infinite
    # estimates as +-Inf with NaN SEs; ``beta``/``beta_cov`` keep the optimizer's values.
    def _infinite(self) -> np.ndarray:
        return infinite.infinite_of(self.separation, self.x_names)

    def _shown_beta(self) -> tuple[np.ndarray, np.ndarray]:
        return infinite.shown(self._infinite(), self.beta, self.beta_cov)

    def _mark_intervals(self, table: pd.DataFrame, exp: bool = False) -> pd.DataFrame:
        return infinite.mark_intervals(table, self._infinite(), self.x_names, exp)

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._shown_beta()[0], index=list(self.x_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        names = list(self.x_names)
        return pd.DataFrame(self._shown_beta()[1], index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._shown_beta()[1])), index=list(self.x_names),
                         name="se")

    @property
    def coef_table(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z statistics and two-sided p-values; for
        Gaussian fits t statistics with Satterthwaite degrees of freedom as lmerTest
        (columns estimate, se, df, t, p: see :func:`glmm_jax.satterthwaite.satterthwaite`;
        for ML fits its se is lmerTest's, sqrt(diag(sigma^2 (X'V^-1 X)^-1)))."""
        if self.family.name == "gaussian":
            from .errors import GLMMInputError
            from .satterthwaite import satterthwaite

            try:
                return satterthwaite(self)
            except GLMMInputError as exc:  # too large for the cross-product engine
                table = self.wald_table
                table.attrs["note"] = f"Wald z tests: no Satterthwaite df ({exc})"
                return table
        return self.wald_table

    @property
    def wald_table(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z statistics and two-sided p-values."""
        est, se = self.fixef, self.se
        z = est / se
        table = pd.DataFrame({"estimate": est, "se": se, "z": z,
                              "p": 2.0 * norm_sf(np.abs(z))})
        if np.any(self._infinite() != 0):
            table.attrs["note"] = "infinite estimates (separation): see result.separation"
        return table

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

    # ---- residuals -------------------------------------------------------------
    def pearson_residuals(self) -> np.ndarray:
        """Scaled Pearson residuals as lme4's ``residuals(m, "pearson", scaled = TRUE)``:
        (y - mu) sqrt(prior weight) / sqrt(Var(y)), with the dispersion in Var(y)."""
        f, fam = self.frame, self.family
        mu = fam.linkinv(rows.linear_predictor(self))
        if fam.name == "binomial":
            return (f.y / f.trials - mu) * np.sqrt(f.weights * f.trials) / \
                np.sqrt(mu * (1.0 - mu))
        log_phi = np.log(self.dispersion) if self.dispersion is not None else 0.0
        var = fam.variance(mu, log_phi) / (f.trials if fam.name == "gaussian" else f.weights)
        return (f.y - mu) / np.sqrt(var)

    # ---- inference (functions of the result; see intervals.py, simulate.py) ---------
    def conf_int(self, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Confidence intervals: see :func:`glmm_jax.intervals.conf_int`."""
        from .intervals import conf_int

        return self._mark_intervals(conf_int(self, method, level, **kwargs))

    def odds_ratios(self, method: str = "wald", level: float = 0.95, **kwargs):
        """exp(estimates and intervals) of a logit model: see
        :func:`glmm_jax.intervals.odds_ratios`."""
        from .intervals import odds_ratios

        with infinite.quiet_overflow(self._infinite()):  # exp of a huge finite value
            return self._mark_intervals(odds_ratios(self, method, level, **kwargs), exp=True)

    def rate_ratios(self, method: str = "wald", level: float = 0.95, **kwargs):
        """exp(estimates and intervals) of a log-link model: see
        :func:`glmm_jax.intervals.rate_ratios`."""
        from .intervals import rate_ratios

        with infinite.quiet_overflow(self._infinite()):
            return self._mark_intervals(rate_ratios(self, method, level, **kwargs), exp=True)

    def simulate(self, nsim: int = 1, seed: int = 0, random_effects: str = "new"):
        """Simulated responses [rows, nsim]: see :func:`glmm_jax.simulate.simulate`."""
        from .simulate import simulate

        return simulate(self, nsim, seed, random_effects)

    # ---- prediction (see predict.py) ---------------------------------------------
    def predict(self, newdata: pd.DataFrame | None = None, type: str = "link",
                random_effects: bool = True, marginal: bool = False,
                allow_new_levels: bool = False, se_fit: bool = False,
                level: float | None = None):
        """Conditional, b = 0 or marginal predictions, with delta-method standard errors
        and intervals: see :func:`glmm_jax.predict.predict`."""
        from .predict import predict

        return predict(self, newdata, type, random_effects, marginal, allow_new_levels,
                       se_fit, level)

    def fitted(self) -> pd.Series:
        """Conditional fitted means (lme4's ``fitted``): see :func:`glmm_jax.predict.fitted`."""
        from .predict import fitted

        return fitted(self)

    def residuals(self, type: str = "response") -> pd.Series:
        """Response, Pearson, deviance or working residuals (lme4's ``residuals``): see
        :func:`glmm_jax.predict.residuals`."""
        from .predict import residuals

        return residuals(self, type)

    # ---- printing --------------------------------------------------------------
    def tidy(self, effects=("fixed", "ran_pars"), conf_int: bool = False, **kwargs):
        """A tidy table as broom.mixed's ``tidy``: see :func:`glmm_jax.tidy`."""
        from .tidy import tidy

        return tidy(self, effects=effects, conf_int=conf_int, **kwargs)

    def glance(self) -> pd.DataFrame:
        """One row of fit statistics as broom.mixed's ``glance``: :func:`glmm_jax.glance`."""
        from .tidy import glance

        return glance(self)

    def augment(self, data: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
        """The model's rows with fitted values, residuals and random effects, as
        broom.mixed's ``augment``: see :func:`glmm_jax.augment`."""
        from .tidy import augment

        return augment(self, data, **kwargs)

    def save(self, path, data: bool = True) -> None:
        """Write the fit to ``path`` (JSON and npz in a zip, no pickle; ``data=False``
        leaves out the model frame's rows): see :func:`glmm_jax.load`."""
        from .persist import save

        save(self, path, data=data)

    def _family_label(self) -> str:
        fam = self.family
        if fam.name == "negative_binomial":
            # MASS::negative.binomial's name: format(round(theta, 4))
            theta = rformat.format_real([round(self.dispersion, 4)])[0]
            return f"Negative Binomial({theta})"
        return {"gamma": "Gamma"}.get(fam.name, fam.name)

    def _varcorr_lines(self, digits: int) -> list[str]:
        labels, names, sds, corrs = [], [], [], []
        for label, t in zip(self._term_labels(), self.terms, strict=True):
            G = t.G
            sd = np.sqrt(np.diag(G))
            q = len(t.z_names)
            with np.errstate(invalid="ignore", divide="ignore"):
                C = G / np.outer(sd, sd)
            C[~np.isfinite(C)] = 0.0
            cf = np.asarray(rformat.format_real(np.round(C, 2).ravel(), 7, nsmall=2)).reshape(q, q)
            for i in range(q):
                labels.append(label if i == 0 else "")
                names.append(t.z_names[i])
                sds.append(sd[i])
                corrs.append([cf[i, j] for j in range(i)])
        if self.family.name in ("gaussian", "gamma"):
            labels.append("Residual")
            names.append("")
            sds.append(self.sigma if self.family.name == "gaussian"
                       else 1.0 / np.sqrt(self.dispersion))
            corrs.append([])
        sds = np.asarray(sds)
        cols = ["Groups", "Name", "Variance", "Std.Dev."]
        cells = [list(r) for r in zip(labels, names, rformat.format_real(sds**2, digits),
                                      rformat.format_real(sds, digits), strict=True)]
        ncorr = max(len(c) for c in corrs)
        if ncorr:
            cols += ["Corr"] + [""] * (ncorr - 1)
            for row, c in zip(cells, corrs, strict=True):
                row += c + [""] * (ncorr - len(c))
        return rformat.print_matrix([""] * len(cells), cols, cells)

    def _fixef_correlation(self) -> list[str]:
        p = len(self.x_names)
        if p < 2:
            return []
        if p > 12:
            return ["", f"Correlation matrix not shown by default, as p = {p} > 12.",
                    "Use res.vcov if you need it"]
        cov = self._shown_beta()[1]
        sd = np.sqrt(np.diag(cov))
        corr = cov / np.outer(sd, sd)
        cf = np.asarray(rformat.format_real(np.round(corr, 3).ravel(), 7, nsmall=3)).reshape(p, p)
        rows = rformat.abbreviate_all(self.x_names, 11)
        cols = rformat.abbreviate_all(self.x_names, 6)
        cells = [[cf[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
        return ["", "Correlation of Fixed Effects:",
                *rformat.print_matrix(rows[1:], cols[:-1], cells)]

    def summary(self) -> str:
        """A printed summary in the layout and number formatting of lme4's
        ``summary(glmer(...))`` / ``summary(lmer(...))``.

        Standard errors come from the exact Hessian of the marginal log-likelihood in
        all parameters (glmmTMB's convention; lme4's glmer differs by about 1% on
        cbpp), or under REML from the fixed effects' conditional covariance (as lmer).
        A model without random terms has no "Random effects:" block: "Number of obs: n"
        (and for Gaussian models "Residual Std.Dev.: sigma").

        >>> import glmm_jax as gj
        >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...              gj.datasets.load("cbpp"))
        >>> print(res.summary().splitlines()[6].rstrip())
           194.1    204.2    -92.0    184.1       51
        """
        digits = 4
        method = "Laplace Approximation" if self.nagq == 1 else \
            f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}"
        gaussian = self.family.name == "gaussian"
        mixed = " mixed" if self.terms else ""
        if gaussian:
            title = f"Linear{mixed} model fit by " + ("REML" if self.reml else
                                                       "maximum likelihood ")  # (lme4's space)
        else:
            title = f"Generalized linear{mixed} model fit by maximum likelihood" + (
                f" ({method})" if self.terms else "")
        out = _wrap(title, 78, "  ", " [glmm_jax]")
        if not gaussian:
            out.append(f" Family: {self._family_label()}  ( {self.family.link} )")
        out += fill(["Formula:", *deparse_lines(parse(self.formula))])
        f = self.frame
        if f is not None and f.weights_label is not None:
            out.append(f"Weights: {f.weights_label}")
        if f is not None and f.offset_label is not None:
            out.append(f" Offset: {f.offset_label}")
        if f is not None and f.response_note is not None:
            out.append(f"Response: {f.response_note}")
        out.append("")
        if self.reml:
            crit = rformat.format_real([round(self.deviance, 1)])[0]
            out.append(f"REML criterion at convergence: {crit}")
        else:
            vals = rformat.format_real(np.round([self.aic, self.bic, self.loglik,
                                                 self.deviance, self.df_resid], 1))
            vals[-1] = str(int(self.df_resid))
            out += rformat.print_named(["AIC", "BIC", "logLik", "deviance", "df.resid"], vals)
        out.append("")
        if f is not None:
            q = np.quantile(self.pearson_residuals(), [0, 0.25, 0.5, 0.75, 1])
            mx = np.max(np.abs(q))  # R 4.2's zapsmall(q, digits + 1)
            if mx > 0:
                q = np.round(q, max(0, int(np.floor(digits + 1 - np.log10(mx) + 0.5))))
            out.append("Scaled residuals: ")
            out += rformat.print_named(["Min", "1Q", "Median", "3Q", "Max"],
                                       rformat.format_real(q, digits))
            out.append("")
        if self.terms:
            out.append("Random effects:")
            out += self._varcorr_lines(digits)
            groups = dict.fromkeys((t.group, len(t.levels)) for t in self.terms)
            out.append(f"Number of obs: {self.nobs}, groups:  "
                       + "; ".join(f"{g}, {n}" for g, n in groups))
        else:  # no random terms: no random-effects block
            out.append(f"Number of obs: {self.nobs}")
            if gaussian:
                out.append(f"Residual Std.Dev.: "
                           f"{rformat.format_real([self.sigma], digits)[0].strip()}")
        if self.family.name == "gamma":
            out.append(f"Dispersion parameter (shape): "
                       f"{rformat.format_real([self.dispersion], digits)[0].strip()}")
        if len(self.x_names):
            out += ["", "Fixed effects:"]
            est, cov = self._shown_beta()
            se = np.sqrt(np.diag(cov))
            with np.errstate(invalid="ignore", divide="ignore"):
                stat = est / se
            if gaussian:
                out += rformat.coefmat(self.x_names, est, se, stat, "t value", digits=digits)
            else:
                p = 2.0 * norm_sf(np.abs(stat))
                out += rformat.coefmat(self.x_names, est, se, stat, "z value", p, digits)
            out += self._fixef_correlation()
        out += infinite.summary_note(self.separation, self._infinite(), self.x_names)
        if not self.converged:
            out += ["", "WARNING: the fit did NOT converge; estimates are not reliable."]
        if self.messages:
            out += [""] + list(self.messages)  # (lme4 prints its messages at the end)
        return "\n".join(out)

    def __repr__(self) -> str:
        status = "converged" if self.converged else "NOT converged"
        return (f"<GLMMResult {self.family.name}({self.family.link}) {self.formula!r}: "
                f"logLik={self.loglik:.4f}, {status}>")


def _wrap(text: str, width: int, indent: str, tail: str) -> list[str]:
    """``text + tail`` broken at spaces into lines shorter than ``width`` (lme4's
    title: R's strwrap with an exdent)."""
    if len(text) + len(tail) <= width:
        return [text + tail]
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) >= width - 2:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line + tail)
    return lines
