## Regenerates tests/data/r_marginal/refs.json: performance::icc, performance::r2_nakagawa
## and insight::get_variance for the models tests/test_marginal.py checks.
##
## Run from the repository root:  Rscript tests/data/r_marginal/make_refs.R
##
## Each model is fitted twice: by glmmTMB (TMB + nlminb: within ~3e-5 of the optimum of
## the Laplace likelihood that glmm_jax's Newton iterations reach) and by lme4 (whose
## glmer optimizers stop further from it: cbpp's theta 0.64207 against 0.64226). Every
## entry has the estimates (fixef, G per term, sigma), so a test can evaluate glmm_jax's
## formulas at exactly these estimates (to 1e-6) as well as compare the fits' numbers
## (to the optimizers' gap).
## Needs R 4.2 with lme4 1.1-31, glmmTMB 1.1.5, performance 0.10.2, insight 0.19.0, jsonlite.

suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(performance); library(insight); library(jsonlite)
})
options(warn = 1)

data_dir <- file.path("glmm_jax", "datasets", "data")
stopifnot(dir.exists(data_dir))
rd <- function(file) read.csv(file.path(data_dir, file), stringsAsFactors = FALSE)

cbpp <- rd("cbpp.csv")
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))
Salamanders <- rd("Salamanders.csv")
Salamanders$site <- factor(Salamanders$site)
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))
sleepstudy <- rd("sleepstudy.csv")
sleepstudy$Subject <- factor(sleepstudy$Subject)
Owls <- rd("Owls.csv")
Owls$Nest <- factor(Owls$Nest)
Owls$FoodTreatment <- factor(Owls$FoodTreatment, levels = c("Deprived", "Satiated"))
Owls$SexParent <- factor(Owls$SexParent, levels = c("Female", "Male"))

summarise <- function(fit) {
  v <- insight::get_variance(fit, verbose = FALSE)
  ic <- performance::icc(fit)
  r2 <- performance::r2_nakagawa(fit)
  vc <- if (inherits(fit, "glmmTMB")) VarCorr(fit)$cond else VarCorr(fit)
  list(
    fixef = as.list(if (inherits(fit, "glmmTMB")) fixef(fit)$cond else fixef(fit)),
    G = lapply(vc, function(g) unname(as.matrix(g)[, , drop = FALSE])),
    sigma = sigma(fit),  # residual SD (Gaussian), theta (nbinom2), CV = 1/sqrt(shape) (Gamma)
    logLik = as.numeric(logLik(fit)),
    var_fixed = v$var.fixed, var_random = v$var.random,
    var_distribution = v$var.distribution,
    var_dispersion = if (is.null(v$var.dispersion)) 0 else v$var.dispersion,
    icc_adjusted = ic$ICC_adjusted, icc_conditional = ic$ICC_conditional,
    r2_marginal = unname(r2$R2_marginal), r2_conditional = unname(r2$R2_conditional))
}

## a simulated Gamma model (no shipped dataset has one); written beside refs.json
set.seed(14)
gamma_sim <- data.frame(g = rep(seq_len(30), each = 8), x = round(rnorm(240), 3))
b <- rnorm(30, sd = 0.5)
gamma_sim$y <- round(rgamma(240, shape = 3, rate = 3 / exp(1 + 0.5 * gamma_sim$x +
                                                              b[gamma_sim$g])), 4)
write.csv(gamma_sim, file.path("tests", "data", "r_marginal", "gamma_sim.csv"),
          row.names = FALSE)
gamma_sim$g <- factor(gamma_sim$g)

cases <- list(
  cbpp_logit = list(
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
    family = "binomial", link = "logit", reml = FALSE,
    tmb = function() glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd),
                             cbpp, family = binomial),
    lme4 = function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                            cbpp, family = binomial)),
  cbpp_probit = list(
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
    family = "binomial", link = "probit", reml = FALSE,
    tmb = function() glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd),
                             cbpp, family = binomial(link = "probit")),
    lme4 = function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                            cbpp, family = binomial(link = "probit"))),
  salamanders_poisson = list(
    formula = "count ~ spp + mined + (1 | site)", family = "poisson", link = "log",
    reml = FALSE,
    tmb = function() glmmTMB(count ~ spp + mined + (1 | site), Salamanders,
                             family = poisson),
    lme4 = function() glmer(count ~ spp + mined + (1 | site), Salamanders,
                            family = poisson)),
  owls_nbinom2 = list(
    formula = paste("SiblingNegotiation ~ FoodTreatment * SexParent +",
                    "offset(logBroodSize) + (1 | Nest)"),
    family = "negative_binomial", link = "log", reml = FALSE,
    tmb = function() glmmTMB(SiblingNegotiation ~ FoodTreatment * SexParent +
                               offset(logBroodSize) + (1 | Nest), Owls,
                             family = nbinom2)),
  gamma_sim = list(
    formula = "y ~ x + (1 | g)", family = "gamma", link = "log", reml = FALSE,
    tmb = function() glmmTMB(y ~ x + (1 | g), gamma_sim, family = Gamma(link = "log"))),
  sleepstudy_intercept = list(
    formula = "Reaction ~ Days + (1 | Subject)", family = "gaussian", link = "identity",
    reml = FALSE,  # (by ML; the slopes model below by REML)
    tmb = function() glmmTMB(Reaction ~ Days + (1 | Subject), sleepstudy),
    lme4 = function() lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = FALSE)),
  sleepstudy_slopes = list(
    formula = "Reaction ~ Days + (Days | Subject)", family = "gaussian", link = "identity",
    reml = TRUE,
    tmb = function() glmmTMB(Reaction ~ Days + (Days | Subject), sleepstudy, REML = TRUE),
    lme4 = function() lmer(Reaction ~ Days + (Days | Subject), sleepstudy))
)

out <- list(`_provenance` = paste0(
  "R ", getRversion(), ", lme4 ", packageVersion("lme4"), ", glmmTMB ",
  packageVersion("glmmTMB"), ", performance ", packageVersion("performance"), ", insight ",
  packageVersion("insight"), "; made by tests/data/r_marginal/make_refs.R (run from the ",
  "repository root). 'glmmTMB': the model fitted by glmmTMB; 'lme4': ",
  "by glmer/lmer with default controls. Numbers: insight::get_variance components, ",
  "performance::icc (adjusted, conditional) and performance::r2_nakagawa."))
for (name in names(cases)) {
  cs <- cases[[name]]
  entry <- cs[c("formula", "family", "link", "reml")]
  entry$glmmTMB <- summarise(cs$tmb())
  if (!is.null(cs$lme4)) entry$lme4 <- summarise(cs$lme4())
  out[[name]] <- entry
}
out_file <- file.path("tests", "data", "r_marginal", "refs.json")
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), out_file)
cat("wrote", out_file, "\n")
