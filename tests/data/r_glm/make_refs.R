## Regenerates tests/data/r_glm/refs.json: R's GLM fits of the models without random
## terms that tests/test_glm.py fits with glmm_jax.
## Run from the repository root:   Rscript tests/data/r_glm/make_refs.R
## Needs R 4, MASS, nlme, numDeriv, jsonlite. Reads the CSVs shipped in glmm_jax/datasets/data.
##
## Per case: the R call, logLik, coefficients and standard errors:
## - `logLik`: the maximized log-likelihood. logLik(glm) for binomial, Poisson and
##   Gaussian (ML sigma); logLik(glm.nb) for the negative binomial; for Gamma, glm's
##   coefficients (they do not depend on the shape) with the ML shape, since
##   logLik(glm(family = Gamma)) uses the shape 1 / (deviance / n) (stored as
##   `logLik_glm`). REML: the restricted log-likelihood of lme4's REML criterion
##   without random terms, -((n-p) (1 + log(2 pi RSS / (n-p))) + log det X'WX) / 2,
##   which is also nlme::gls's REML logLik (stored as `logLik_gls`).
## - `se_vcov`: sqrt(diag(vcov(fit, dispersion = ...))) where it is the inverse observed
##   information of the ML fit: canonical links (logit, log-Poisson), Gaussian with the
##   ML dispersion, REML with R's (REML) dispersion; absent elsewhere.
## - `se_observed`: every case, from the inverse of numDeriv::hessian of the negative
##   log-likelihood in (coefficients, log dispersion) at the estimates (glmm_jax's
##   standard errors: the exact Hessian in all parameters). For probit, cloglog, Gamma
##   and NB it differs from vcov(), which is the expected information of the
##   coefficients alone (and, for Gamma, R's Pearson dispersion).

suppressPackageStartupMessages({
  library(MASS)
  library(numDeriv)
  library(jsonlite)
})
options(warn = 1)

out_file <- "tests/data/r_glm/refs.json"
data_dir <- "glmm_jax/datasets/data"
rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")),
                              stringsAsFactors = TRUE)

cbpp <- rd("cbpp")
cbpp$period <- factor(cbpp$period, levels = 1:4)
toenail <- rd("toenail")
toenail$y <- as.integer(toenail$outcome == "moderate or severe")
Salamanders <- rd("Salamanders")
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))
sleepstudy <- rd("sleepstudy")

ctrl <- "control = glm.control(epsilon = 1e-14, maxit = 100)"

cases <- list(
  cbpp_logit = list(family = "binomial", call = paste0(
    "glm(cbind(incidence, size - incidence) ~ period, family = binomial, data = cbpp, ",
    ctrl, ")")),
  cbpp_cloglog = list(family = "binomial", call = paste0(
    "glm(cbind(incidence, size - incidence) ~ period + size, ",
    "family = binomial(link = \"cloglog\"), ",
    "data = cbpp, ", ctrl, ")")),
  toenail_probit = list(family = "binomial", call = paste0(
    "glm(y ~ treatment * visit, family = binomial(link = \"probit\"), data = toenail, ",
    ctrl, ")")),
  salamanders_poisson = list(family = "poisson", call = paste0(
    "glm(count ~ spp + mined, family = poisson, data = Salamanders, ", ctrl, ")")),
  salamanders_weights_offset = list(family = "poisson", call = paste0(
    "glm(count ~ spp + mined + offset(log(sample)), family = poisson, data = Salamanders, ",
    "weights = cover + 2, offset = Wtemp / 5, ", ctrl, ")")),
  sleepstudy_gaussian = list(family = "gaussian", call = paste0(
    "glm(Reaction ~ Days, family = gaussian, data = sleepstudy, ", ctrl, ")")),
  sleepstudy_gaussian_reml = list(family = "gaussian_reml", call = paste0(
    "glm(Reaction ~ Days, family = gaussian, data = sleepstudy, ", ctrl, ")"),
    gls_call = "nlme::gls(Reaction ~ Days, data = sleepstudy, method = \"REML\")"),
  sleepstudy_gamma = list(family = "gamma", call = paste0(
    "glm(Reaction ~ Days, family = Gamma(link = \"log\"), data = sleepstudy, ", ctrl, ")")),
  salamanders_nb = list(family = "negative_binomial", call = paste0(
    "glm.nb(count ~ spp + mined, data = Salamanders, ",
    "control = glm.control(epsilon = 1e-14, maxit = 100))"))
)

## -log L in (coefficients, log dispersion): the same parametrization as glmm_jax
negloglik <- function(fit, family) {
  X <- model.matrix(fit)
  y <- fit$y
  w <- fit$prior.weights
  off <- if (is.null(fit$offset)) 0 else fit$offset
  p <- ncol(X)
  function(par) {
    eta <- drop(X %*% par[1:p]) + off
    mu <- fit$family$linkinv(eta)
    ll <- switch(family,
      binomial = dbinom(round(y * w), round(w), mu, log = TRUE),  # (y: proportions, w: trials)
      poisson = w * dpois(y, mu, log = TRUE),
      gaussian = w * dnorm(y, mu, exp(par[p + 1]), log = TRUE),
      gamma = w * dgamma(y, shape = exp(par[p + 1]), scale = mu / exp(par[p + 1]), log = TRUE),
      negative_binomial = w * dnbinom(y, size = exp(par[p + 1]), mu = mu, log = TRUE))
    -sum(ll)
  }
}

refs <- list()
for (name in names(cases)) {
  cs <- cases[[name]]
  fit <- eval(parse(text = cs$call))
  family <- if (cs$family == "gaussian_reml") "gaussian" else cs$family
  X <- model.matrix(fit)
  n <- nrow(X)
  p <- ncol(X)
  beta <- coef(fit)
  r <- list(call = cs$call, family = family, link = fit$family$link, nobs = n,
            coef = as.list(beta))
  log_disp <- NULL
  if (family == "gaussian") {
    sigma_ml <- sqrt(sum(fit$prior.weights * residuals(fit, "response")^2) / n)
    log_disp <- log(sigma_ml)
  } else if (family == "gamma") {
    mu <- fitted(fit)
    y <- fit$y
    score <- function(nu) sum(log(nu) + 1 - digamma(nu) - y / mu + log(y / mu))
    nu <- uniroot(score, c(1e-3, 1e6), tol = 1e-14)$root
    log_disp <- log(nu)
    r$shape <- nu
    r$logLik_glm <- as.numeric(logLik(fit))
    r$logLik_note <- "logLik(glm) uses the shape 1 / (deviance / n); logLik is at the ML shape"
  } else if (family == "negative_binomial") {
    log_disp <- log(fit$theta)
    r$theta <- fit$theta
  }
  par <- c(beta, log_disp)
  nll <- negloglik(fit, family)
  if (cs$family == "gaussian_reml") {
    W <- fit$prior.weights
    rss <- sum(W * residuals(fit, "response")^2)
    ld <- as.numeric(determinant(crossprod(X * sqrt(W)))$modulus)
    r$logLik <- -0.5 * ((n - p) * (1 + log(2 * pi * rss / (n - p))) + ld)
    r$logLik_how <- "-((n-p) (1 + log(2 pi RSS / (n-p))) + log det X'WX) / 2"
    r$gls_call <- cs$gls_call  # the same number from nlme
    r$logLik_gls <- as.numeric(logLik(eval(parse(text = cs$gls_call))))
    r$sigma <- sqrt(rss / (n - p))
    r$se_vcov <- as.list(sqrt(diag(vcov(fit))))
  } else {
    r$logLik <- if (family == "gamma") -nll(par) else as.numeric(logLik(fit))
    if (family == "gaussian") r$sigma <- sigma_ml
    H <- numDeriv::hessian(nll, par)
    r$se_observed <- as.list(setNames(sqrt(diag(solve(H)))[1:p], names(beta)))
    canonical <- (family == "binomial" && fit$family$link == "logit") || family == "poisson"
    if (canonical) r$se_vcov <- as.list(sqrt(diag(vcov(fit))))
    if (family == "gaussian") r$se_vcov <- as.list(sqrt(diag(vcov(fit, dispersion = sigma_ml^2))))
  }
  refs[[name]] <- r
}

refs[["_provenance"]] <- list(
  generated_by = "Rscript tests/data/r_glm/make_refs.R",
  R_version = R.version.string,
  package_versions = list(MASS = as.character(packageVersion("MASS")),
                          nlme = as.character(packageVersion("nlme")),
                          numDeriv = as.character(packageVersion("numDeriv")),
                          jsonlite = as.character(packageVersion("jsonlite"))),
  data_dir = data_dir,
  date = format(Sys.Date()))

write_json(refs, out_file, digits = NA, auto_unbox = TRUE, pretty = TRUE)
cat("wrote", out_file, "\n")
