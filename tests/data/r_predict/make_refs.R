## Regenerates tests/data/r_predict/refs.json: lme4's predictions, fitted values and
## residuals that tests/test_predict.py compares glmm_jax against.
## Run from the repository root:   Rscript tests/data/r_predict/make_refs.R
## Needs R 4, lme4 1.1-31, jsonlite.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

data_dir <- "glmm_jax/datasets/data"  # the package's own copies of the data
rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")),
                              stringsAsFactors = FALSE)

cbpp <- rd("cbpp")
cbpp$herd <- factor(cbpp$herd)  # integer codes: levels 1..15 in numeric order
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))

sleepstudy <- rd("sleepstudy")
sleepstudy$Subject <- factor(as.character(sleepstudy$Subject))

num <- function(x) unname(as.numeric(x))

## cbpp: binomial GLMM by Laplace; the optimizer run to a tight tolerance so that the
## estimates agree with an exact optimum to ~1e-6
m1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp,
            family = binomial,
            control = glmerControl(optimizer = "bobyqa",
                                   optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
cbpp_ref <- list(
  formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
  theta = num(getME(m1, "theta")), fixef = num(fixef(m1)), logLik = num(logLik(m1)),
  fitted = num(fitted(m1)),
  predict_link = num(predict(m1, type = "link")),
  predict_response = num(predict(m1, type = "response")),
  predict_link_re_na = num(predict(m1, re.form = NA, type = "link")),
  predict_response_re_na = num(predict(m1, re.form = NA, type = "response")),
  resid_response = num(residuals(m1, type = "response")),
  resid_pearson = num(residuals(m1, type = "pearson")),
  resid_deviance = num(residuals(m1, type = "deviance")),
  resid_working = num(residuals(m1, type = "working"))
)

## sleepstudy: LMM by REML; predictions for new data, one Subject not in the fit
m2 <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = TRUE)
nd <- data.frame(Subject = c("308", "308", "372", "999", "999"),
                 Days = c(0, 5.5, 9, 3, 0))
sleep_ref <- list(
  formula = "Reaction ~ Days + (Days | Subject)",
  newdata = list(Subject = nd$Subject, Days = nd$Days),
  theta = num(getME(m2, "theta")), fixef = num(fixef(m2)), sigma = sigma(m2),
  predict_newdata = num(predict(m2, newdata = nd, allow.new.levels = TRUE)),
  predict_newdata_re_na = num(predict(m2, newdata = nd, re.form = NA)),
  fitted = num(fitted(m2)),
  resid_response = num(residuals(m2, type = "response")),
  resid_pearson = num(residuals(m2, type = "pearson")),
  resid_deviance = num(residuals(m2, type = "deviance"))
)
err <- tryCatch(predict(m2, newdata = nd), error = function(e) conditionMessage(e))

refs <- list(
  `_provenance` = list(
    script = "tests/data/r_predict/make_refs.R",
    R = R.version.string, lme4 = as.character(packageVersion("lme4")),
    date = as.character(Sys.Date()),
    note = paste("lme4's predict(), fitted() and residuals() (default scaled = FALSE);",
                 "theta is getME(, 'theta') (relative to sigma for the LMM);",
                 "sleepstudy_reml$new_level_error is lme4's message for a new level",
                 "without allow.new.levels")
  ),
  cbpp_laplace = cbpp_ref,
  sleepstudy_reml = c(sleep_ref, list(new_level_error = err))
)
writeLines(toJSON(refs, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/data/r_predict/refs.json")
