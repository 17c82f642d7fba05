## Regenerates tests/data/r_checks/refs.json: performance::check_overdispersion (Pearson
## chi-square, dispersion ratio, residual df, p-value) for the models that
## tests/test_dispersion.py checks, and the fits' estimates; R's ks.test and binom.test
## numbers for tests/test_dharma.py (DHARMa's uniformity and outlier tests use them).
##
## Run from the repository root:  Rscript tests/data/r_checks/make_refs.R
##
## check_overdispersion.glmmTMB / .merMod (performance 0.10.2) compute
##   chisq = sum(residuals(m, "pearson")^2)    (conditional on the random effects' modes)
##   rdf   = df.residual(m) = nobs - (fixed effects + variance parameters [+ dispersion])
##   ratio = chisq / rdf,  p = pchisq(chisq, rdf, lower.tail = FALSE)
## Each model is fitted by glmmTMB (whose optimum is the one glmm_jax reaches, to ~1e-5) and,
## where lme4 fits it, by glmer (whose optimizer stops a little further from it).
## Needs R 4.2 with lme4 1.1-31, glmmTMB 1.1.5, performance 0.10.2, jsonlite. (DHARMa is not
## installed here: its tests are checked against simulation truth and brute force.)

suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(performance); library(jsonlite)
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
Owls <- rd("Owls.csv")
Owls$Nest <- factor(Owls$Nest)
Owls$FoodTreatment <- factor(Owls$FoodTreatment, levels = c("Deprived", "Satiated"))
Owls$SexParent <- factor(Owls$SexParent, levels = c("Female", "Male"))

owls_f <- SiblingNegotiation ~ FoodTreatment * SexParent + offset(logBroodSize) + (1 | Nest)
cbpp_f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
sal_f <- count ~ spp + mined + (1 | site)
cases <- list(
  cbpp_binomial = list(
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
    dataset = "cbpp", family = "binomial",
    tmb = function() glmmTMB(cbpp_f, cbpp, family = binomial),
    lme4 = function() glmer(cbpp_f, cbpp, family = binomial)),
  salamanders_poisson = list(
    formula = "count ~ spp + mined + (1 | site)", dataset = "salamanders",
    family = "poisson",
    tmb = function() glmmTMB(sal_f, Salamanders, family = poisson),
    lme4 = function() glmer(sal_f, Salamanders, family = poisson)),
  owls_poisson = list(
    formula = paste("SiblingNegotiation ~ FoodTreatment * SexParent +",
                    "offset(logBroodSize) + (1 | Nest)"),
    dataset = "owls", family = "poisson",
    tmb = function() glmmTMB(owls_f, Owls, family = poisson),
    lme4 = function() glmer(owls_f, Owls, family = poisson)),
  owls_nbinom2 = list(
    formula = paste("SiblingNegotiation ~ FoodTreatment * SexParent +",
                    "offset(logBroodSize) + (1 | Nest)"),
    dataset = "owls", family = "negative_binomial",
    tmb = function() glmmTMB(owls_f, Owls, family = nbinom2))
)

summarise <- function(fit) {
  co <- performance::check_overdispersion(fit)
  printed <- capture.output(print(co), type = "output")
  msg <- tryCatch({ capture.output(print(co)); "" },
                  message = function(m) conditionMessage(m))
  tmb <- inherits(fit, "glmmTMB")
  vc <- if (tmb) VarCorr(fit)$cond else VarCorr(fit)
  rp <- residuals(fit, type = "pearson")
  list(
    chisq = co$chisq_statistic, ratio = co$dispersion_ratio, rdf = co$residual_df,
    p = co$p_value, printed = printed, message = sub("\n$", "", msg),
    pearson_head = unname(head(rp, 5)),
    fixef = as.list(if (tmb) fixef(fit)$cond else fixef(fit)),
    sd = unname(sapply(vc, function(g) attr(g, "stddev"))),
    sigma = sigma(fit), logLik = as.numeric(logLik(fit)))
}

out <- list(`_provenance` = paste0(
  "R ", getRversion(), ", lme4 ", packageVersion("lme4"), ", glmmTMB ",
  packageVersion("glmmTMB"), ", performance ", packageVersion("performance"), "; ",
  format(Sys.Date()), "; made by tests/data/r_checks/make_refs.R (run from the repository ",
  "root). 'glmmTMB': the model fitted by glmmTMB; 'lme4': by glmer with default controls. ",
  "chisq, ratio, rdf, p: performance::check_overdispersion; printed/message: its print ",
  "method's output and message; pearson_head: residuals(fit, 'pearson')[1:5]."))
for (name in names(cases)) {
  cs <- cases[[name]]
  entry <- cs[c("formula", "dataset", "family")]
  entry$glmmTMB <- summarise(cs$tmb())
  if (!is.null(cs$lme4)) entry$lme4 <- summarise(cs$lme4())
  out[[name]] <- entry
}
## Bernoulli responses are refused (performance: "Overdispersion checks cannot be used for
## Bernoulli models.")
cbpp$any <- as.integer(cbpp$incidence > 0)
out$bernoulli_error <- tryCatch({
  performance::check_overdispersion(glmer(any ~ period + (1 | herd), cbpp, family = binomial))
  "no error"
}, error = function(e) conditionMessage(e))
## R's ks.test (DHARMa's testUniformity: ks.test(residuals, "punif")) and binom.test
## (testOutliers(type = "binomial"): binom.test(outliers, n, 2 / (nsim + 1))) on fixed
## inputs: u_i = ((i * golden ratio) mod 1)^power, i = 1..n (the tests rebuild them)
golden <- function(n, power) ((seq_len(n) * 0.6180339887498949) %% 1)^power
ks <- function(n, power) {
  t <- suppressWarnings(ks.test(golden(n, power), "punif"))
  list(n = n, power = power, D = unname(t$statistic), p = t$p.value, method = t$method)
}
out$ks_test <- list(ks(56, 1.3), ks(240, 1.15), ks(240, 1.6), ks(99, 1.1))
bt <- function(k, n, nsim) list(k = k, n = n, nsim = nsim,
                                p = binom.test(k, n, 2 / (nsim + 1))$p.value)
out$binom_test <- list(bt(0, 240, 250), bt(3, 240, 250), bt(7, 240, 250), bt(1, 56, 250),
                       bt(40, 644, 100))
out_file <- file.path("tests", "data", "r_checks", "refs.json")
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), out_file)
cat("wrote", out_file, "\n")
