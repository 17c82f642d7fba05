"""From the optimizer's output to a GLMMResult: estimates, random effects, the
convergence record, and the warnings a fit raises (issued once, by the caller)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .design import ModelFrame
from .errors import ConvergenceWarning, SingularFitWarning, warn
from .families import Family
from .modes import MAX_INNER_ITER, TOL_INNER
from .objective import engine
from .optimize import MAX_STEP, TOL
from .results import Convergence, GLMMResult, TermFit

SINGULAR_TOL = 1e-4  # relative size of a Cholesky diagonal below which a fit is singular


@dataclass
class Run:
    """What the optimizer did, accumulated over Newton and any L-BFGS fallback."""

    theta_start: np.ndarray
    max_iter: int
    methods: list[str] = field(default_factory=list)
    n_iter: int = 0
    n_eval: int = 0
    n_lbfgs: int = 0
    objective_start: float = float("nan")
    fixed: tuple[str, ...] = ()
    time_s: float = 0.0

    def newton(self, out) -> None:
        if not self.methods:
            self.objective_start = float(out.f0)
        self.methods.append("newton")
        self.n_iter += int(out.n_iter)
        self.n_eval += int(out.n_eval)


def inverse_hessian(H: np.ndarray, messages: list) -> np.ndarray:
    try:
        cov = np.linalg.inv(H)
        if np.any(np.diag(cov) < 0):
            raise np.linalg.LinAlgError
        return cov
    except np.linalg.LinAlgError:
        messages.append("Hessian of -logLik is not positive definite: standard errors are NaN")
        return np.full_like(H, np.nan)


def _convergence(out, run: Run, free: np.ndarray, cov_theta: np.ndarray) -> Convergence:
    g, H = np.asarray(out.grad, dtype=float), np.asarray(out.hess, dtype=float)
    all_free = bool(free.all())
    gf, Hf = (g, H) if all_free else (g[free], H[np.ix_(free, free)])
    ev = np.linalg.eigvalsh(Hf) if Hf.size else np.zeros(1)
    finite = bool(np.all(np.isfinite(np.asarray(out.theta)))) and np.isfinite(float(out.f))
    if not gf.size:
        scaled = 0.0
    elif ev[0] <= 0:
        scaled = float("inf")
    else:  # the Newton step H^-1 g (the inverse is at hand where nothing is fixed)
        step = cov_theta @ g if all_free else np.linalg.solve(Hf, gf)
        scaled = float(np.max(np.abs(step)))
    max_grad = float(np.max(np.abs(gf))) if gf.size else 0.0
    if not finite:
        status, msg = "not_finite", "the estimates or the log-likelihood are not finite"
    elif not bool(out.inner_converged):
        status, msg = "modes_not_converged", ("the conditional modes did not converge at "
                                              "the final estimates")
    elif bool(out.converged):
        status, msg = "converged", "converged"
    elif bool(out.line_search_failed):
        status, msg = "line_search_failed", (
            f"the line search failed: max|gradient| = {max_grad:.2e}, scaled gradient "
            f"{scaled:.2e}, smallest Hessian eigenvalue {ev[0]:.2e}")
    else:
        status, msg = "iteration_limit", (
            f"no convergence in {run.n_iter} Newton iterations (max_iter={run.max_iter}): "
            f"max|gradient| = {max_grad:.2e}, smallest Hessian eigenvalue {ev[0]:.2e}")
    if status not in ("converged", "not_finite") and ev[0] <= 0:
        msg += "; the Hessian is not positive definite"
    return Convergence(
        status=status, message=msg, methods=tuple(run.methods),
        theta_start=np.asarray(run.theta_start, dtype=float),
        theta_final=np.asarray(out.theta, dtype=float),
        objective_start=run.objective_start, objective_final=float(out.f),
        n_iter=run.n_iter, n_eval=run.n_eval, n_lbfgs=run.n_lbfgs, grad_norm=scaled,
        max_abs_grad=max_grad, min_eigenvalue=float(ev[0]),
        tolerances={"decrement": TOL, "max_step": MAX_STEP, "max_iter": run.max_iter,
                    "inner": TOL_INNER, "max_inner_iter": MAX_INNER_ITER},
        fixed=run.fixed, time_s=run.time_s)


def make_result(formula: str, frame: ModelFrame, fam: Family, s, out, run: Run,
                notes: tuple[str, ...] = (), clusters: tuple | None = None,
                model=None, builder=None) -> GLMMResult:
    """The GLMMResult of a fit; ``clusters`` = (block, slot) of each cluster of a single
    grouping factor (default: all in block 0, in order). ``model`` is the fitted Model,
    or ``builder()`` makes it when first asked for. Issues no warnings (see
    :func:`issue_warnings`)."""
    theta = np.asarray(out.theta)
    beta, Ls, log_phi = s.theta.unpack_np(theta)
    per_term = engine(s).per_term(out.u, out.u_cov, clusters,
                                  [len(g.levels) for g in frame.groups])
    reml = bool(getattr(s, "reml", False))
    us, covs = [u for u, _ in per_term], [c for _, c in per_term]
    H = np.asarray(out.hess)
    messages = list(notes)
    cov_theta = inverse_hessian(H, messages)
    if reml:  # the fixed effects are the modes of the last pseudo-term
        beta = np.asarray(us[-1])[0]
        beta_cov = np.asarray(covs[-1])[0]
    else:
        beta_cov = cov_theta[: len(beta), : len(beta)]
    terms = []
    for Lk, uk, ck, g in zip(Ls, us, covs, frame.groups, strict=False):
        # b = L u; its conditional covariance is L cov(u) L^T. The diagonal of L is reported
        # non-negative (flipping a column of L and of u leaves the likelihood unchanged).
        Lk, uk, ck = np.asarray(Lk), np.asarray(uk), np.asarray(ck)
        b, b_cov = uk @ Lk.T, np.einsum("ab,jbc,dc->jad", Lk, ck, Lk)
        terms.append(TermFit(g.name, g.z_names, g.levels, Lk * np.where(np.diag(Lk) < 0, -1, 1),
                             b, b_cov))
    free = np.ones(len(theta), bool)
    if run.fixed and model is not None:
        free[[model.theta_names.index(n) for n in run.fixed]] = False
    conv = _convergence(out, run, free, cov_theta)
    converged = conv.status == "converged"
    if not converged:
        messages.append(conv.message)
    scale = float(np.exp(log_phi)) if fam.name == "gaussian" else 1.0
    singular = any(np.any(np.abs(np.diag(t.L)) < SINGULAR_TOL * scale) for t in terms)
    if singular:
        messages.append("boundary (singular) fit: see result.varcorr")
    return GLMMResult(
        formula=formula, family=fam, nagq=s.nagq, nobs=len(frame.y), x_names=frame.x_names,
        terms=tuple(terms), beta=beta, beta_cov=beta_cov, reml=reml,
        dispersion=float(np.exp(log_phi)) if fam.has_dispersion else None,
        theta=theta, cov_theta=cov_theta, loglik=-float(out.f),
        converged=converged, n_iter=run.n_iter, singular=singular,
        messages=tuple(messages), n_dropped=frame.n_dropped, aliased=frame.aliased,
        frame=frame, hessian=H, gradient=np.asarray(out.grad, dtype=float),
        convergence=conv, model_=model, builder=builder,
    )


def issue_warnings(res: GLMMResult) -> None:
    """The ConvergenceWarning and SingularFitWarning of a fit, each saying what to try."""
    if not res.converged:
        c = res.convergence
        hint = {"iteration_limit": "raise max_iter, or simplify the random effects",
                "line_search_failed": "check for separation or a variance at the boundary; "
                                      "try gj.fit(..., max_iter=...) or rescale covariates",
                "modes_not_converged": "the data may be separated or the model too complex",
                "not_finite": "check for separation or extreme covariate values"}[c.status]
        warn(f"{res.formula}: {c.message}; {hint}", ConvergenceWarning)
    if res.singular:
        warn(f"{res.formula}: boundary (singular) fit: a random-effect variance is "
             "estimated as ~0 or a correlation as ~±1 (see result.varcorr)", SingularFitWarning)
