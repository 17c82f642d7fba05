## Regenerates refs.json in tests/data/r_anova/: lme4's anova() of nested fits (the
## likelihood-ratio table, its printed form and message), and the 50:50 chi-bar-square
## p-values of the boundary comparisons, 0.5 * pchisq(Chisq, 1, lower.tail = FALSE).
## Run from this folder:   cd tests/data/r_anova && Rscript make_refs.R
## Needs R 4.2, lme4 1.1-31, jsonlite. Reads the CSVs shipped with the Python package
## (glmm_jax/datasets/data/).
##
## lme4's glmer Laplace log-likelihood of cbpp is 2.8e-4 below glmmTMB's (the better
## optimum, as glmm_jax's; /work/shared/reference/README.md), so the cbpp cases also
## have `glmmTMB`: glmmTMB's anova() numbers, and R's print of lme4's anova object with
## them in place of lme4's (`print`), to compare the printed form at the optimum.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(jsonlite)
})
options(width = 80)

data_dir <- "../../../glmm_jax/datasets/data"
stopifnot(dir.exists(data_dir))
rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")),
                              stringsAsFactors = FALSE)
cbpp <- rd("cbpp")
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))
sleepstudy <- rd("sleepstudy")
sleepstudy$Subject <- factor(sleepstudy$Subject)

## anova(...) as a table, its print, and the messages it gave
run <- function(expr, call) {
  msgs <- character(0)
  a <- withCallingHandlers(expr, message = function(m) {
    msgs <<- c(msgs, sub("\n$", "", conditionMessage(m)))
    invokeRestart("muffleMessage")
  })
  tab <- as.data.frame(a)
  chisq <- tab$Chisq
  list(call = call, rows = rownames(tab), npar = tab$npar, AIC = tab$AIC, BIC = tab$BIC,
       logLik = tab$logLik, deviance = tab$deviance, Chisq = chisq, Df = tab$Df,
       `Pr(>Chisq)` = tab[["Pr(>Chisq)"]],
       chibar_p = 0.5 * pchisq(chisq, 1, lower.tail = FALSE),
       messages = I(msgs), print = capture.output(print(a)))
}

## glmmTMB's anova(...) numbers, and lme4's anova object `a` (its row names) printed
## with them
run_tmb <- function(tmb, a, call) {
  tab <- as.data.frame(tmb)
  a$npar <- tab$Df; a$AIC <- tab$AIC; a$BIC <- tab$BIC; a$logLik <- tab$logLik
  a$deviance <- tab$deviance; a$Chisq <- tab$Chisq; a$Df <- tab[["Chi Df"]]
  a[["Pr(>Chisq)"]] <- tab[["Pr(>Chisq)"]]
  list(call = call, rows = rownames(a), npar = tab$Df, AIC = tab$AIC, BIC = tab$BIC,
       logLik = tab$logLik, deviance = tab$deviance, Chisq = tab$Chisq,
       Df = tab[["Chi Df"]], `Pr(>Chisq)` = tab[["Pr(>Chisq)"]],
       chibar_p = 0.5 * pchisq(tab$Chisq, 1, lower.tail = FALSE),
       print = capture.output(print(a)))
}

m0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
g <- glm(cbind(incidence, size - incidence) ~ period, binomial, cbpp)
t0 <- glmmTMB(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial)
tm <- glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
tg <- glmmTMB(cbind(incidence, size - incidence) ~ period, cbpp, binomial)
s1 <- lmer(Reaction ~ Days + (1 | Subject), sleepstudy)
s2 <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
s3 <- lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleepstudy)
s0 <- glm(Reaction ~ Days, gaussian, sleepstudy)

out <- list(
  `_provenance` = list(
    script = "tests/data/r_anova/make_refs.R",
    R = R.version.string,
    lme4 = as.character(packageVersion("lme4")),
    data = "glmm_jax/datasets/data/cbpp.csv, sleepstudy.csv",
    note = paste("chibar_p is 0.5 * pchisq(Chisq, 1, lower.tail = FALSE) of each row",
                 "(meaningful only where the rows differ by one variance at 0)")),
  cbpp = run(anova(m0, m), "anova(m0, m): glmer ~ 1 + (1 | herd) vs ~ period + (1 | herd)"),
  cbpp_glmmTMB = run_tmb(anova(t0, tm), anova(m0, m), "glmmTMB: anova(m0, m)"),
  cbpp_glm = run(anova(m, g), "anova(m, g): glmer ~ period + (1 | herd) vs glm ~ period"),
  cbpp_glm_glmmTMB = run_tmb(anova(tm, tg), anova(m, g), "glmmTMB: anova(m, g)"),
  sleep = run(anova(s2, s1), paste("anova(s2, s1): lmer REML (Days | Subject) vs",
                                   "(1 | Subject), refitted by ML")),
  sleep_three = run(anova(s3, s1, s0), paste(
    "anova(s3, s1, s0): (1 | Subject) + (0 + Days | Subject), (1 | Subject), and",
    "glm(Reaction ~ Days, gaussian)"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), "refs.json")
