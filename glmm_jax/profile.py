"""Profile-likelihood intervals, as lme4's ``confint(method = "profile")``.

For each parameter x, the signed root deviance zeta(x) = sign(x - x_hat)
sqrt(2 (logLik_hat - logLik_p(x))), where logLik_p(x) maximizes the likelihood over all
other parameters with x held fixed, is solved for zeta = +-z_{(1+level)/2} by a
safeguarded secant search, each refit warm-started from the previous point of the path.
lme4 instead interpolates a spline through a grid of profile points; both find the same
ends (to about 1e-4 on cbpp).

Two kinds of refit: a parameter that is one entry of theta (a fixed effect, a scalar
term's SD = |L|, the dispersion = exp(theta)) is held by the compiled Newton program's
``free`` mask (as ``Model.fit(fixed=)``); an SD or correlation of a vector term is one
coordinate of the term's SD/correlation parameterization (sdcor.py), held by a Newton
iteration in those coordinates on ``Model.value_grad_hess`` (chain rule by autodiff).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import sdcor, varpar
from .dist import z_quantile
from .errors import ConvergenceWarning, GLMMInputError, warn
from .model import ml_fit
from .objective import zero_modes

ZETA_TOL = 1e-5  # |zeta - target| at which a profile end is accepted
MAX_PROFILE_STEPS = 30
MAX_NEWTON = 50  # iterations of one reparameterized refit
ATANH_MAX = 10.0  # |arctanh(correlation)| beyond which a correlation's end is +-1


def profile(res, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals for the parameters of ``varpar.names`` (columns
    estimate, lower, upper). An SD whose profile stays within the bound down to 0 has
    lower end 0, a correlation's ends are at most +-1 (as lme4). A REML fit is profiled
    at its ML fit, as lme4 does. The refits used, the time taken and any notes are in
    ``.attrs``."""
    return _profile(res, level)[0]


def profile_points(res, level: float = 0.95, parameters=None) -> pd.DataFrame:
    """The points of the profile that :func:`profile` evaluates on its way to the
    interval ends: columns ``parameter``, ``value`` (on the scale of the intervals),
    ``zeta`` (the signed root deviance), sorted by value within each parameter, with
    the estimate at zeta = 0 (for a REML fit, the ML estimate its profile is made
    at) and each end at zeta = +-z_{(1+level)/2} (or the bound zeta does not reach).
    ``parameters``: names of ``varpar.names`` to profile (default all).

    >>> import glmm_jax as gj
    >>> res = gj.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              gj.datasets.load("cbpp"))
    >>> pts = profile_points(res, parameters=["period2"])
    >>> end = pts.loc[(pts["zeta"] - 1.96).abs().idxmin()]  # the upper end
    >>> round(float(end["value"]), 4)
    -0.4078
    """
    known = varpar.names(res)
    wanted = known if parameters is None else list(parameters)
    bad = [p for p in wanted if p not in known]
    if bad:
        raise GLMMInputError(f"parameters: {', '.join(map(repr, bad))} not among the "
                             f"model's parameters ({', '.join(known)})")
    return _profile(res, level, set(wanted))[1]


def _profile(res, level: float, wanted: set | None = None):
    """The intervals table, and the points evaluated for the parameters in ``wanted``
    (all by default; the table is NaN for the others)."""
    if not res.converged:
        raise GLMMInputError("profile intervals need a converged fit "
                             f"({res.convergence.message})")
    t0 = time.perf_counter()
    z = z_quantile(level)
    names = varpar.names(res)
    est = varpar.values(res.theta, res, beta=res.beta)
    notes: list[str] = []
    if res.reml:  # as lme4: the profile of the ML fit
        notes.append("profiled at the maximum likelihood fit (as lme4's profile of a "
                     "REML fit); the estimates are the REML ones")
        res = ml_fit(res)
    lower, upper = np.full(len(est), np.nan), np.full(len(est), np.nan)
    n_refits = 0
    sd_theta = np.sqrt(np.abs(np.diag(res.cov_theta)))
    points = []
    for i, (kind, where) in enumerate(_parameters(res)):
        if wanted is not None and names[i] not in wanted:
            continue
        if kind == "theta":
            k, how = where
            path = ThetaPath(res, notes)
            t_hat = path.psi_hat[k]
            se = sd_theta[k]
        else:
            term, order, k, how = where
            path = SdCorPath(res, term, order, notes)
            t_hat = path.psi_hat[k]
            se = np.nan
        step = z * se if np.isfinite(se) and se > 0 else 0.25 * max(abs(t_hat), 0.1)
        lo_bound = 0.0 if how == "sd" else (-ATANH_MAX if how == "tanh" else None)
        hi_bound = ATANH_MAX if how == "tanh" else None
        record = [(t_hat, 0.0)]  # (t, zeta) evaluated
        lo = _end(path, k, -z, -step, lo_bound, names[i], notes, record)
        hi = _end(path, k, z, step, hi_bound, names[i], notes, record)
        n_refits += path.n_refits
        f = {"id": lambda x: x, "sd": lambda x: x, "exp": np.exp, "tanh": np.tanh}[how]
        pts = np.array(sorted(record))
        points.append(pd.DataFrame({"parameter": names[i], "value": f(pts[:, 0]),
                                    "zeta": pts[:, 1]}))
        lower[i], upper[i] = f(lo), f(hi)
        if how == "tanh":
            lower[i] = -1.0 if lo == -ATANH_MAX else lower[i]
            upper[i] = 1.0 if hi == ATANH_MAX else upper[i]
    out = pd.DataFrame({"estimate": est, "lower": lower, "upper": upper},
                       index=pd.Index(names, name="parameter"))
    out.attrs.update(n_refits=n_refits, seconds=time.perf_counter() - t0,
                     notes=list(dict.fromkeys(notes)))
    done = [n for n in names if wanted is None or n in wanted]
    if np.isnan(out.loc[done, ["lower", "upper"]].to_numpy()).any():
        warn("profile: some interval ends are NaN: " + "; ".join(out.attrs["notes"]),
             ConvergenceWarning)
    cols = ["parameter", "value", "zeta"]
    return out, (pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=cols))


def _parameters(res) -> list:
    """Per reported parameter: ("theta", (entry, how)) for one entry of theta (how:
    "id", "sd" for a scalar term's |L|, "exp" for the dispersion); ("sdcor", (term,
    order, coordinate, how)) for a vector term's SD ("sd") or correlation ("tanh")."""
    lay = res.model.layout
    out: list = []
    for t, (sl, q) in enumerate(zip(lay.factor_slices(), lay.qs, strict=True)):
        if q == 1:
            out.append(("theta", (sl.start, "sd")))
            continue
        ident = tuple(range(q))
        out += [("sdcor", (t, ident, sl.start + i, "sd")) for i in range(q)]
        for i in range(q):
            for j in range(i + 1, q):  # corr(i, j): coordinate w[1, 0] with i, j first
                order = ident if i == 0 else (i, j, *[k for k in ident if k not in (i, j)])
                pos = sdcor.pairs(q).index((j, 0) if i == 0 else (1, 0))
                out.append(("sdcor", (t, order, sl.start + q + pos, "tanh")))
    if lay.dispersion:
        out.append(("theta", (lay.size - 1, "exp")))
    return out + [("theta", (k, "id")) for k in range(len(res.x_names))]


class ThetaPath:
    """Refits holding one entry of theta (the compiled Newton program, ``free`` mask)."""

    def __init__(self, res, notes: list):
        m = res.model
        self.model, self.notes, self.n_refits = m, notes, 0
        self.f_hat = -res.loglik
        psi = np.asarray(res.theta, dtype=float).copy()
        for sl, q in zip(m.layout.factor_slices(), m.layout.qs, strict=True):
            if q == 1:  # L and -L fit alike: profile SD = L >= 0
                psi[sl.start] = abs(psi[sl.start])
        self.psi_hat = psi
        self.u_hat = zero_modes(m.structure, m.data, np)

    def refit(self, k: int, t: float, psi0, u0):
        psi0 = np.array(psi0, dtype=float)
        psi0[k] = t
        free = np.ones(len(psi0))
        free[k] = 0.0
        m = self.model
        out = m.newton(psi0, u0, free=free)
        self.n_refits += 1
        return float(out.f), out.theta, out.u, bool(out.converged)


class SdCorPath(ThetaPath):
    """Refits holding one SD/correlation coordinate of a vector term: Newton in
    psi = theta with the term's factor replaced by its sdcor coordinates."""

    def __init__(self, res, term: int, order: tuple, notes: list):
        super().__init__(res, notes)
        lay = res.model.layout
        self.sl, self.q, self.order = lay.factor_slices()[term], lay.qs[term], order
        phi = sdcor.from_cov(res.terms[term].G, order)
        th = np.asarray(res.theta, dtype=float)
        self.psi_hat = np.concatenate([th[: self.sl.start], phi, th[self.sl.stop:]])
        self.theta_of, self._jac, self._curv = _maps(self.sl.start, self.sl.stop, self.q,
                                                     order)

    def refit(self, k: int, t: float, psi0, u0):
        m = self.model
        psi = np.array(psi0, dtype=float)
        psi[k] = t
        free = np.ones(len(psi), bool)
        free[k] = False
        self.n_refits += 1
        theta = np.asarray(self.theta_of(psi))
        f, g, H = m.value_grad_hess(theta, u0)
        for _ in range(MAX_NEWTON):
            J = np.asarray(self._jac(psi))
            gp = J.T @ g
            Hp = J.T @ H @ J + np.asarray(self._curv(psi, g))
            d = np.zeros(len(psi))
            d[free] = _direction(gp[free], Hp[np.ix_(free, free)])
            dec = -(gp @ d)
            if dec < 1e-10 * (1.0 + abs(f)):
                return f, psi, u0, bool(np.all(np.isfinite(psi)))
            alpha = 1.0
            while alpha > 1e-10:
                trial = psi + alpha * d
                th = np.asarray(self.theta_of(trial))
                f_try = m.negloglik(th, u0)
                if f_try <= f - 1e-4 * alpha * dec:
                    break
                alpha *= 0.5
            else:
                return f, psi, u0, dec < 1e-6 * (1.0 + abs(f))
            psi, theta = trial, th
            u0 = _to_numpy(m.modes(theta, u0))
            f, g, H = m.value_grad_hess(theta, u0)
        return f, psi, u0, False


@functools.cache
def _maps(start: int, stop: int, q: int, order: tuple):
    """psi -> theta (a term's sdcor coordinates in psi[start:stop] to its factor), its
    Jacobian, and the Hessian of g' theta(psi): jitted, once per layout."""

    def theta_of(psi):
        L = sdcor.to_factor(psi[start:stop], order)
        rows, cols = np.tril_indices(q)
        return jnp.concatenate([psi[:start], L[rows, cols], psi[stop:]])

    return (jax.jit(theta_of), jax.jit(jax.jacfwd(theta_of)),
            jax.jit(jax.hessian(lambda p, g: g @ theta_of(p))))


def _direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Newton direction with H's eigenvalues replaced by their absolute values (floored),
    as optimize's."""
    ev, V = np.linalg.eigh(H)
    floor = 1e-8 * max(1.0, float(np.max(np.abs(ev))))
    return -V @ ((V.T @ g) / np.maximum(np.abs(ev), floor))


def _end(path: ThetaPath, k: int, target: float, step: float, bound, name: str,
         notes: list, record: list | None = None) -> float:
    """The value of coordinate k where zeta = target, or ``bound`` where zeta does not
    reach it before; NaN where a refit fails. Appends each point (t, zeta) evaluated to
    ``record``."""
    record = [] if record is None else record
    t_hat = path.psi_hat[k]
    pts = [(t_hat, 0.0)]  # (t, zeta) along this side
    psi, u = path.psi_hat, path.u_hat
    beyond = (lambda t: t <= bound) if target < 0 else (lambda t: t >= bound)
    t = t_hat + step
    for _ in range(MAX_PROFILE_STEPS):
        if bound is not None and beyond(t):
            t = bound
        f, psi_new, u_new, ok = path.refit(k, t, psi, u)
        if not ok:
            notes.append(f"{name}: a profile refit did not converge at {t:.6g}")
            return np.nan
        psi, u = psi_new, u_new
        if f < path.f_hat - 1e-6 * (1.0 + abs(path.f_hat)):
            notes.append(f"{name}: the profile found a better fit than the estimates "
                         f"(-logLik {f:.6f} < {path.f_hat:.6f}): refit the model")
        z = float(np.sign(t - t_hat) * np.sqrt(max(0.0, 2.0 * (f - path.f_hat))))
        record.append((t, z))
        if abs(z - target) < ZETA_TOL:
            return t
        if bound is not None and t == bound and abs(z) < abs(target):
            return bound  # zeta does not reach the target before the boundary
        pts.append((t, z))
        t = _next_point(pts, target)
    notes.append(f"{name}: the profile did not reach zeta = {target:.3f} in "
                 f"{MAX_PROFILE_STEPS} refits")
    return np.nan


def _next_point(pts, target: float) -> float:
    """Safeguarded secant: interpolate within a bracket of the target, else extrapolate
    from the last two points (at most doubling the distance covered)."""
    ts, zs = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    above = (zs - target) * np.sign(target) >= 0
    if above.any() and (~above).any():  # bracketed: the closest points either side
        i_in = np.flatnonzero(~above)[np.argmax(np.abs(zs[~above]))]
        i_out = np.flatnonzero(above)[np.argmin(np.abs(zs[above]))]
        t0, z0, t1, z1 = ts[i_in], zs[i_in], ts[i_out], zs[i_out]
        t = t0 + (target - z0) * (t1 - t0) / (z1 - z0)
        lo, hi = sorted((t0, t1))
        margin = 0.01 * (hi - lo)  # strictly inside (regula falsi without stalling)
        return float(np.clip(t, lo + margin, hi - margin))
    (t0, z0), (t1, z1) = pts[-2], pts[-1]
    slope = (z1 - z0) / (t1 - t0) if t1 != t0 and z1 != z0 else np.nan
    t = t1 + (target - z1) / slope if np.isfinite(slope) and slope != 0 else t1 + 2 * (t1 - t0)
    span = t1 - ts[0]
    return float(t1 + np.clip(t - t1, -2 * abs(span), 2 * abs(span)))


def _to_numpy(u):
    """Modes as NumPy (a JAX array would compile the Newton program anew)."""
    return [np.asarray(a) for a in u] if isinstance(u, list) else np.asarray(u)
