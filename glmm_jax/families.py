"""Response families and link functions.

A family is a small frozen dataclass: hashable (so it can be a static argument of
``jax.jit``) and pure. The conditional log density of one observation given its linear
predictor is ``logpdf(y, eta, trials, log_phi) + log_const(y, trials)``: the first part is
evaluated in every iteration, the second (normalizing constants that depend on the data
only, e.g. log binomial coefficients) once per fit, so log-likelihoods carry every
constant and are comparable with lme4/glmmTMB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jax.scipy.special import gammaln, log_ndtr

from .errors import GLMMInputError
from .lazy import special


def _xp(x):
    """The array library of ``x``: JAX for JAX arrays and tracers (so autodiff works),
    NumPy/SciPy otherwise (start values and tables, without dispatching JAX)."""
    return (jnp, jsp) if isinstance(x, jax.Array) else (np, special)


def _asarray(x):
    return x if isinstance(x, jax.Array) else np.asarray(x, dtype=float)


def _expit_slope(mu):
    return mu * (1.0 - mu)


# link: (g(mu), g^-1(eta), d mu / d eta), each given the array and (xp, special)
_LINKS = {
    "logit": (lambda mu, xp, sp: sp.logit(mu), lambda eta, xp, sp: sp.expit(eta),
              lambda eta, xp, sp: _expit_slope(sp.expit(eta))),
    "probit": (lambda mu, xp, sp: sp.ndtri(mu), lambda eta, xp, sp: sp.ndtr(eta),
               lambda eta, xp, sp: xp.exp(-0.5 * eta * eta) / np.sqrt(2.0 * np.pi)),
    "cloglog": (lambda mu, xp, sp: xp.log(-xp.log1p(-mu)),
                lambda eta, xp, sp: -xp.expm1(-xp.exp(eta)),
                lambda eta, xp, sp: xp.exp(eta - xp.exp(eta))),
    "log": (lambda mu, xp, sp: xp.log(mu), lambda eta, xp, sp: xp.exp(eta),
            lambda eta, xp, sp: xp.exp(eta)),
    "identity": (lambda mu, xp, sp: mu * 1.0, lambda eta, xp, sp: eta * 1.0,
                 lambda eta, xp, sp: xp.ones_like(eta)),
}


LINKS = tuple(_LINKS)  # the link functions' names


@dataclass(frozen=True)
class Family:
    """Base class: name, link, and whether a dispersion parameter is estimated."""

    link: str
    name: ClassVar[str] = "family"
    title: ClassVar[str] = "family"  # for messages
    links: ClassVar[tuple[str, ...]] = ()
    dispersion_name: ClassVar[str | None] = None

    def __post_init__(self):
        if self.link not in self.links:
            allowed = ", ".join(repr(k) for k in self.links)
            raise GLMMInputError(
                f"link {self.link!r} is not available for family {self.name!r}; "
                f"link must be one of {allowed}"
            )

    @property
    def has_dispersion(self) -> bool:
        return self.dispersion_name is not None

    def linkfun(self, mu):
        """The link g(mu); JAX in, JAX out (differentiable), NumPy in, NumPy out."""
        mu = _asarray(mu)
        return _LINKS[self.link][0](mu, *_xp(mu))

    def linkinv(self, eta):
        """The inverse link (the conditional mean of one trial) at ``eta``.

        >>> round(float(Binomial().linkinv(0.35)), 4)
        0.5866
        """
        eta = _asarray(eta)
        return _LINKS[self.link][1](eta, *_xp(eta))

    def mu_eta(self, eta):
        """d mean / d eta."""
        eta = _asarray(eta)
        return _LINKS[self.link][2](eta, *_xp(eta))

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        """Draws of y given its conditional mean ``mu`` (per trial for the binomial), the
        log dispersion and the trials (Gaussian: precision weights); JAX."""
        raise NotImplementedError  # pragma: no cover - each family defines it

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        """P(Y <= y) given the conditional mean (JAX)."""
        raise NotImplementedError  # pragma: no cover - each family defines it

    def logpdf(self, y, eta, trials, log_phi):  # pragma: no cover - abstract
        """Log density less ``log_const`` (JAX, elementwise)."""
        raise NotImplementedError

    def log_const(self, y: np.ndarray, trials: np.ndarray) -> np.ndarray:
        """Data-only part of the log density (NumPy, elementwise)."""
        return np.zeros_like(np.asarray(y, dtype=float))

    def invalid_response(self, y: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, str]:
        """Rows whose response is impossible for this family, and what is required."""
        return np.zeros(len(y), dtype=bool), ""

    def start_dispersion(self, y, mu) -> float:
        """Starting value of the log dispersion parameter."""
        return 0.0

    def variance(self, mu, log_phi: float):  # pragma: no cover - abstract
        """Variance of one observation (one trial) with mean ``mu`` (NumPy; start values)."""
        raise NotImplementedError



def _not_count(y):
    return (y < 0) | (np.abs(y - np.round(y)) > 1e-8)


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial: 0/1 responses or successes out of ``trials``."""

    link: str = "logit"
    name: ClassVar[str] = "binomial"
    title: ClassVar[str] = "binomial"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")

    def logpdf(self, y, eta, trials, log_phi):
        if self.link == "logit":
            # y*eta - n*log(1+exp(eta)), stable for large |eta|
            softplus = jnp.maximum(eta, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(eta)))
            return y * eta - trials * softplus
        if self.link == "probit":
            return y * log_ndtr(eta) + (trials - y) * log_ndtr(-eta)
        # cloglog: p = 1 - exp(-exp(eta))
        e = jnp.exp(eta)
        log_p = jnp.log(-jnp.expm1(-e))
        return jnp.where(y > 0, y * log_p, 0.0) - (trials - y) * e

    def variance(self, mu, log_phi):
        return mu * (1.0 - mu)

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        n = jnp.broadcast_to(jnp.asarray(trials, float), jnp.shape(mu))
        return jax.random.binomial(key, n, mu).astype(float)

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        n = jnp.asarray(trials, float)
        inside = jsp.betainc(jnp.maximum(n - y, 1e-300), y + 1.0, 1.0 - mu)
        return jnp.where(y < 0, 0.0, jnp.where(y >= n, 1.0, inside))

    def log_const(self, y, trials):
        if np.all(trials == 1.0):  # 0/1 responses: log C(1, y) = 0
            return np.zeros(np.shape(y))
        return special.gammaln(trials + 1.0) - special.gammaln(y + 1.0) - \
            special.gammaln(trials - y + 1.0)

    def invalid_response(self, y, trials):
        bad = (y < 0) | (y > trials) | (np.abs(y - np.round(y)) > 1e-8)
        return bad, "must be integer successes between 0 and the number of trials"


@dataclass(frozen=True)
class _LogLink(Family):
    """Families with the log link only."""

    link: str = "log"
    links: ClassVar[tuple[str, ...]] = ("log",)


@dataclass(frozen=True)
class Poisson(_LogLink):
    """Poisson counts with log link."""

    name: ClassVar[str] = "poisson"
    title: ClassVar[str] = "Poisson"

    def logpdf(self, y, eta, trials, log_phi):
        return y * eta - jnp.exp(eta)

    def variance(self, mu, log_phi):
        return mu

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        return jax.random.poisson(key, mu, jnp.shape(mu)).astype(float)

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        return jnp.where(y < 0, 0.0, jsp.gammaincc(jnp.floor(y) + 1.0, mu))

    def log_const(self, y, trials):
        return -special.gammaln(y + 1.0)

    def invalid_response(self, y, trials):
        return _not_count(y), "must be non-negative integer counts"


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response; the dispersion is the residual standard deviation. ``trials``
    are precision weights w (the variance of a row is sigma^2 / w; 1 without weights)."""

    link: str = "identity"
    name: ClassVar[str] = "gaussian"
    title: ClassVar[str] = "Gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)
    dispersion_name: ClassVar[str | None] = "sigma"

    def logpdf(self, y, eta, trials, log_phi):
        r = (y - eta) * jnp.exp(-log_phi)
        return -0.5 * trials * r * r - log_phi

    def variance(self, mu, log_phi):
        xp = _xp(mu)[0]
        return xp.zeros_like(mu) + xp.exp(2.0 * log_phi)

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        sd = jnp.exp(log_phi) / jnp.sqrt(trials)
        return mu + sd * jax.random.normal(key, jnp.shape(mu))

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        return jsp.ndtr((y - mu) * jnp.sqrt(trials) / jnp.exp(log_phi))

    def log_const(self, y, trials):
        return 0.5 * np.log(trials) - 0.5 * np.log(2.0 * np.pi)

    def start_dispersion(self, y, mu):
        return float(np.log(max(np.std(y - mu), 1e-8)))


def _gamma_draw(key, mu, log_shape):
    """Gamma draws of mean ``mu`` and shape exp(log_shape)."""
    shape = jnp.exp(log_shape)
    return jax.random.gamma(key, shape * jnp.ones(jnp.shape(mu))) * mu / shape


@dataclass(frozen=True)
class Gamma(_LogLink):
    """Gamma with log link; the dispersion is the shape (1 / coefficient of variation²)."""

    name: ClassVar[str] = "gamma"
    title: ClassVar[str] = "Gamma"
    dispersion_name: ClassVar[str | None] = "shape"

    def logpdf(self, y, eta, trials, log_phi):
        nu = jnp.exp(log_phi)
        return nu * (log_phi - eta + jnp.log(y)) - nu * y * jnp.exp(-eta) - gammaln(nu)

    def variance(self, mu, log_phi):
        return mu * mu * _xp(mu)[0].exp(-log_phi)

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        return _gamma_draw(key, mu, log_phi)

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        shape = jnp.exp(log_phi)
        return jnp.where(y <= 0, 0.0, jsp.gammainc(shape, shape * jnp.maximum(y, 0.0) / mu))

    def log_const(self, y, trials):
        return -np.log(y)

    def invalid_response(self, y, trials):
        return y <= 0, "must be positive"

    def start_dispersion(self, y, mu):
        cv2 = np.mean((y / mu - 1.0) ** 2)
        return float(np.log(1.0 / max(cv2, 1e-3)))


@dataclass(frozen=True)
class NegativeBinomial(_LogLink):
    """Negative binomial NB2: var = mu + mu²/theta, theta estimated (glmmTMB's nbinom2)."""

    dispersion_name: ClassVar[str | None] = "theta"
    name: ClassVar[str] = "negative_binomial"
    title: ClassVar[str] = "negative binomial"

    def logpdf(self, y, eta, trials, log_phi):
        log_th_mu = jnp.logaddexp(log_phi, eta)  # log(theta + mu)
        th = jnp.exp(log_phi)
        return gammaln(y + th) - gammaln(th) + th * (log_phi - log_th_mu) + y * (eta - log_th_mu)

    def variance(self, mu, log_phi):
        return mu + mu * mu * _xp(mu)[0].exp(-log_phi)

    def sample(self, key, mu, log_phi=0.0, trials=1.0):
        k1, k2 = jax.random.split(key)  # a Poisson count of a Gamma(theta) rate of mean mu
        return jax.random.poisson(k2, _gamma_draw(k1, mu, log_phi), jnp.shape(mu)).astype(float)

    def cdf(self, y, mu, log_phi=0.0, trials=1.0):
        theta = jnp.exp(log_phi)
        p = theta / (theta + mu)
        return jnp.where(y < 0, 0.0, jsp.betainc(theta, jnp.floor(y) + 1.0, p))

    def log_const(self, y, trials):
        return -special.gammaln(y + 1.0)

    def invalid_response(self, y, trials):
        return _not_count(y), "must be non-negative integer counts"

    def start_dispersion(self, y, mu):
        excess = np.mean((y - mu) ** 2 - mu)
        theta = np.mean(mu) ** 2 / excess if excess > 0 else 10.0
        return float(np.log(np.clip(theta, 0.05, 100.0)))


FAMILIES = {
    "binomial": Binomial,
    "poisson": Poisson,
    "gaussian": Gaussian,
    "gamma": Gamma,
    "negative_binomial": NegativeBinomial,
}
_ALIASES = {"nbinom2": "negative_binomial", "negbin": "negative_binomial", "normal": "gaussian"}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """Resolve a family name (and optional link) or pass a Family object through.

    >>> get_family("binomial", "probit")
    Binomial(link='probit')
    """
    if isinstance(family, Family):
        if link is not None and link != family.link:
            raise GLMMInputError("give the link inside the family object or as link=, not both")
        return family
    if not isinstance(family, str):
        raise GLMMInputError(f"family must be a name or a glmm_jax.families.Family, not {family!r}")
    key = _ALIASES.get(family.lower(), family.lower())
    if key not in FAMILIES:
        allowed = ", ".join(repr(k) for k in FAMILIES)
        raise GLMMInputError(f"unknown family {family!r}; family must be one of {allowed}")
    cls = FAMILIES[key]
    return cls() if link is None else cls(link=link)
