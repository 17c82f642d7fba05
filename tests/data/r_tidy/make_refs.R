## Regenerates tests/data/r_tidy/refs.json: broom.mixed's tidy(), glance() and augment()
## of lme4 (and glmmTMB) fits, for tests/test_tidy.py (glmm_jax/tidy.py).
##
## Run from the repository root:  Rscript tests/data/r_tidy/make_refs.R
##
## Each entry holds broom.mixed's tables (columns as broom names them: std.error,
## p.value, conf.low, ...; NA as null) and the fit's estimates (fixef, theta in glmm_jax's
## parameterization: the lower Cholesky factor of each term's covariance, not lme4's
## relative one, and sigma), so a test can compare glmm_jax both at its own optimum (to
## the optimizers' gap) and at exactly lme4's estimates.
## Needs R 4.2 with lme4 1.1-31, glmmTMB 1.1.5, broom.mixed 0.2.9.4, lmerTest, jsonlite.

suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(broom.mixed); library(jsonlite)
})
options(warn = 1)

data_dir <- file.path("glmm_jax", "datasets", "data")
stopifnot(dir.exists(data_dir))
rd <- function(file) read.csv(file.path(data_dir, file), stringsAsFactors = FALSE)

cbpp <- rd("cbpp.csv")
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))
sleepstudy <- rd("sleepstudy.csv")
sleepstudy$Subject <- factor(sleepstudy$Subject)
Salamanders <- rd("Salamanders.csv")
Salamanders$site <- factor(Salamanders$site)
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))

tab <- function(x) {
  x <- as.data.frame(x)
  for (k in names(x)) if (is.factor(x[[k]])) x[[k]] <- as.character(x[[k]])
  as.list(x)
}
## glmm_jax's theta for a merMod: per term the lower-triangle (column-major) entries of
## the Cholesky factor of its covariance (lme4's relative factor times sigma), then
## log(sigma) for Gaussian fits
jax_theta <- function(m) {
  s <- sigma(m)
  th <- unlist(lapply(getME(m, "Tlist"), function(T) T[lower.tri(T, diag = TRUE)] * s))
  unname(if (isGLMM(m)) th else c(th, log(s)))
}
aug_cols <- c(".fitted", ".resid", ".fixed", ".mu", ".offset", ".sqrtXwt", ".sqrtrwt",
              ".weights", ".wtres", ".eta")
aug <- function(m) {
  a <- as.data.frame(augment(m))
  tab(a[intersect(aug_cols, names(a))])
}

out <- list()

m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial)
out$cbpp_glmer <- list(
  formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
  fixef = unname(fixef(m)), theta = jax_theta(m),
  tidy = tab(tidy(m)),
  tidy_wald = tab(tidy(m, conf.int = TRUE, conf.level = 0.9)),
  tidy_exp = tab(tidy(m, effects = "fixed", conf.int = TRUE, exponentiate = TRUE)),
  ran_vals = tab(tidy(m, effects = "ran_vals", conf.int = TRUE)),
  ran_coefs = tab(tidy(m, effects = "ran_coefs")),
  glance = tab(glance(m)),
  augment = suppressWarnings(aug(m)),
  ## last: lme4's profile() of a glmer fit leaves the fit's modes at zero afterwards
  tidy_profile = tab(suppressMessages(tidy(m, conf.int = TRUE, conf.method = "profile"))))

t <- glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
             family = binomial)
out$cbpp_glmmTMB <- list(tidy = tab(tidy(t, conf.int = TRUE)))

m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
out$sleep_lmer <- list(
  formula = "Reaction ~ Days + (Days | Subject)",
  fixef = unname(fixef(m)), theta = jax_theta(m),
  tidy = tab(tidy(m)),
  tidy_vcov = tab(tidy(m, scales = c("vcov", NA))),
  ran_vals = tab(tidy(m, effects = "ran_vals")),
  ran_coefs = tab(tidy(m, effects = "ran_coefs")),
  glance = tab(glance(m)),
  augment = aug(m),
  tidy_profile = tab(suppressMessages(tidy(m, conf.int = TRUE, conf.method = "profile"))))

m <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
out$sleep_lmerTest <- list(tidy = tab(tidy(m, effects = "fixed", conf.int = TRUE)))

m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
out$sleep_lmer_ml <- list(glance = tab(glance(m)))

m <- lmer(Reaction ~ Days + (Days || Subject), sleepstudy)
out$sleep_uncorrelated <- list(formula = "Reaction ~ Days + (Days || Subject)",
                               tidy = tab(tidy(m)),
                               ran_vals = tab(tidy(m, effects = "ran_vals")))

m <- glmer(count ~ spp + mined + (1 | site), Salamanders, family = poisson)
out$salamanders_glmer <- list(
  formula = "count ~ spp + mined + (1 | site)",
  fixef = unname(fixef(m)), theta = jax_theta(m),
  tidy_exp = tab(tidy(m, conf.int = TRUE, exponentiate = TRUE)),
  glance = tab(glance(m)))

out[["_provenance"]] <- list(
  script = "tests/data/r_tidy/make_refs.R", date = as.character(Sys.Date()),
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  glmmTMB = as.character(packageVersion("glmmTMB")),
  broom.mixed = as.character(packageVersion("broom.mixed")),
  lmerTest = as.character(packageVersion("lmerTest")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null", pretty = FALSE),
           file.path("tests", "data", "r_tidy", "refs.json"))
