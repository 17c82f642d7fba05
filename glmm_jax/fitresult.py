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
        if not self.methods:  # (Newton's start: engine.start_point of the start values)
            self.theta_start = np.asarray(out.theta0, dtype=float)
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


def _convergence(out, run: Run, free: np.ndarray, cov_theta: np.ndarray,
                 names=None) -> Convergence:
    """The convergence record; ``message`` says what failed, with the numbers (``names``:
    theta's entry names, to name the largest gradient entry)."""
    g, H = np.asarray(out.grad, dtype=float), np.asarray(out.hess, dtype=float)
    all_free = bool(free.all())
    gf, Hf = (g, H) if all_free else (g[free], H[np.ix_(free, free)])
    ev = np.linalg.eigvalsh(Hf) if Hf.size else np.zeros(1)
    finite = bool(np.all(np.isfinite(np.asarray(out.theta)))) and np.isfinite(float(out.f))
    decrement = float("nan")
    if not gf.size:
        scaled = 0.0
    elif not ev[0] > 0:
        scaled = float("inf")
    else:  # the Newton step H^-1 g (the inverse is at hand where nothing is fixed)
        step = cov_theta @ g if all_free else np.linalg.solve(Hf, gf)
        scaled = float(np.max(np.abs(step)))
        decrement = float(gf @ step)
    max_grad = float(np.max(np.abs(gf))) if gf.size else 0.0
    which = ""
    if gf.size and names is not None and np.all(np.isfinite(gf)):
        which = f" (at {np.asarray(names, dtype=object)[free][int(np.argmax(np.abs(gf)))]})"
    tol = TOL * (1.0 + abs(float(out.f))) if finite else float("nan")
    numbers = (f"max|gradient| = {max_grad:.2e}{which}, scaled gradient max|H^-1 g| = "
               f"{scaled:.2e}, Newton decrement g'H^-1 g = {decrement:.2e} (tolerance "
               f"{tol:.2e})")
    if not finite:
        status, msg = "not_finite", "the estimates or the log-likelihood are not finite"
    elif not bool(out.inner_converged):
        status, msg = "modes_not_converged", (
            f"the conditional modes did not converge at the final estimates (within "
            f"{MAX_INNER_ITER} iterations to {TOL_INNER:.0e}): {numbers}")
    elif bool(out.converged):
        status, msg = "converged", "converged"
    elif bool(out.line_search_failed):
        status, msg = "line_search_failed", (
            f"the line search failed after {run.n_iter} Newton iterations: {numbers}")
    else:
        lbfgs = f" and {run.n_lbfgs} L-BFGS" if run.n_lbfgs else ""
        status, msg = "iteration_limit", (
            f"no convergence in {run.n_iter} Newton{lbfgs} iterations "
            f"(max_iter={run.max_iter} per Newton run): {numbers}")
    if status not in ("converged", "not_finite") and not ev[0] > 0:
        msg += f"; the Hessian is not positive definite (smallest eigenvalue {ev[0]:.3g})"
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


def boundary_parts(terms, scale: float = 1.0, tol: float = SINGULAR_TOL) -> list[str]:
    """What is at the boundary in each term, by lme4's rule (``isSingular``: a diagonal
    entry of the term's Cholesky factor below ``tol``, relative to sigma for Gaussian
    models (``scale``), absolute otherwise): an SD of ~0, or an effect whose correlation
    with an earlier one is ~±1 (in general: a linear combination of the earlier ones)."""
    parts = []
    for t in terms:
        L = np.asarray(t.L, dtype=float)
        small = np.abs(np.diag(L)) < tol * scale
        if not small.any():
            continue
        G = L @ L.T
        sd = np.sqrt(np.diag(G))
        z = list(t.z_names)
        for k in np.flatnonzero(small):
            if sd[k] < tol * scale:
                parts.append(f"{t.group}: the SD of {z[k]} is ~0 ({sd[k]:.2g})")
                continue
            live = [j for j in range(k) if sd[j] >= tol * scale]
            if not live:
                continue
            r = np.array([G[j, k] / (sd[j] * sd[k]) for j in live])
            j = live[int(np.argmax(np.abs(r)))]
            rj = float(r[int(np.argmax(np.abs(r)))])
            if len(live) == 1 or abs(rj) > 1.0 - 1e-3:
                parts.append(f"{t.group}: the correlation of {z[j]} and {z[k]} is "
                             f"~{'+' if rj > 0 else '-'}1 ({rj:.6f})")
            else:
                parts.append(f"{t.group}: {z[k]} is ~a linear combination of "
                             f"{', '.join(z[i] for i in live)} (the covariance is singular)")
    return parts


def make_result(formula: str, frame: ModelFrame, fam: Family, s, out, run: Run,
                notes: tuple[str, ...] = (), clusters: tuple | None = None,
                model=None, builder=None) -> GLMMResult:
    """The GLMMResult of a fit; ``clusters`` = (block, slot) of each cluster of a single
    grouping factor (default: all in block 0, in order). ``model`` is the fitted Model,
    or ``builder()`` makes it when first asked for. Issues no warnings (see
    :func:`issue_warnings`)."""
    theta = np.asarray(out.theta)
    # out is in the model's theta; a term's effects are the first of its program's
    qs = [len(g.z_names) for g in frame.groups]
    lay = s.theta.of_model(len(frame.x_names), qs)
    beta, Ls, log_phi = lay.unpack_np(theta)
    per_term = engine(s).per_term(out.u, out.u_cov, clusters,
                                  [len(g.levels) for g in frame.groups])
    per_term = [(u[:, :q], c[:, :q, :q]) for (u, c), q in zip(per_term, qs, strict=False)
                ] + per_term[len(qs):]
    reml = bool(getattr(s, "reml", False))
    us, covs = [u for u, _ in per_term], [c for _, c in per_term]
    H = np.asarray(out.hess)
    messages = list(notes)
    cov_theta = inverse_hessian(H, messages)
    if reml:  # the fixed effects are the modes of the last pseudo-term (its padding cut)
        p = len(frame.x_names)
        beta = np.asarray(us[-1])[0][:p]
        beta_cov = np.asarray(covs[-1])[0][:p, :p]
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
    names = lay.names(frame.x_names, [(g.name, g.z_names) for g in frame.groups],
                          fam.dispersion_name)
    conv = _convergence(out, run, free, cov_theta, names)
    converged = conv.status == "converged"
    if not converged:
        messages.append(conv.message)
    scale = float(np.exp(log_phi)) if fam.name == "gaussian" else 1.0
    boundary = boundary_parts(terms, scale)
    singular = bool(boundary)
    if singular:
        messages.append(f"boundary (singular) fit: {'; '.join(boundary)} "
                        "(see result.varcorr)")
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
    """The ConvergenceWarning and SingularFitWarning of a fit: what failed, with the
    numbers (see :func:`_convergence`, :func:`boundary_parts`), and what to try."""
    if not res.converged:
        c = res.convergence
        warn(f"{res.formula}: {c.message}. Try: {'; '.join(convergence_hints(res))}",
             ConvergenceWarning)
    if res.singular:
        parts = "; ".join(boundary_parts(res.terms, res.sigma))
        warn(f"{res.formula}: boundary (singular) fit: {parts}. The random effects may be "
             "simpler than the model (drop the term or its slope, or use (x || g) for "
             "uncorrelated effects); see result.varcorr", SingularFitWarning)


def convergence_hints(res: GLMMResult) -> list[str]:
    """What to try after a fit that did not converge, by its status."""
    c = res.convergence
    hints = []
    if c.status == "iteration_limit":
        hints.append(f"raise max_iter (it was {c.tolerances.get('max_iter')}): "
                     "gj.fit(..., max_iter=500)")
    if c.status in ("modes_not_converged", "not_finite", "line_search_failed"):
        hints.append("check for separation (a covariate or factor level that predicts the "
                     "response perfectly)")
    wide = badly_scaled_columns(res)
    if wide:
        hints.append("rescale covariates (e.g. scale(x)): " + ", ".join(
            f"{n} has SD {sd:.3g}" for n, sd in wide))
    elif c.status == "line_search_failed":
        hints.append("rescale covariates")
    if res.terms and (c.status == "line_search_failed" or not c.min_eigenvalue > 0):
        hints.append("simplify the random effects (a variance may be ~0 or a correlation "
                     "~+-1)")
    elif res.terms:
        hints.append("simplify the random effects")
    hints.append("compare other starting values: gj.check_convergence(result)")
    return hints


def badly_scaled_columns(res: GLMMResult, big: float = 1e3, small: float = 1e-3) -> list:
    """(name, SD) of the fixed-effect columns whose SD is above ``big`` or below
    ``small`` (constant columns, such as the intercept, left out)."""
    X = getattr(res.frame, "X", None)
    if X is None or not len(X):
        return []
    sd = np.std(np.asarray(X, dtype=float), axis=0)
    return [(n, float(v)) for n, v in zip(res.x_names, sd, strict=False)
            if v > big or 0 < v < small]
