## Regenerates refs.json in tests/data/r_satterthwaite/: lmerTest's Satterthwaite
## degrees of freedom and t-tests of the fixed effects (summary(lmerTest::lmer(...))).
## Run from this folder:   cd tests/data/r_satterthwaite && Rscript make_refs.R
## Needs R 4.2, lme4 1.1-31, lmerTest 3.1-3, jsonlite. Reads the sleepstudy CSV shipped
## with the Python package (glmm_jax/datasets/data/).
##
## lmerTest differentiates the deviance and vcov(beta) numerically (numDeriv) in
## (theta, sigma); the REML (Days | Subject) case is the one of
## /work/shared/reference/inference/reference_inference.json (the same numbers).

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})

data_dir <- "../../../glmm_jax/datasets/data"
stopifnot(dir.exists(data_dir))
sl <- read.csv(file.path(data_dir, "sleepstudy.csv"), stringsAsFactors = FALSE)
sl$Subject <- factor(sl$Subject)
sl$g <- factor((seq_len(nrow(sl)) - 1) %% 6)  # a grouping without variance: a singular fit
sl$w <- 1 + 0.1 * sl$Days  # precision weights

case <- function(formula, REML, data_note = "", weights = NULL) {
  m <- lmerTest::lmer(as.formula(formula), sl, REML = REML, weights = weights)
  cf <- summary(m)$coefficients
  list(model = paste0(sprintf("summary(lmerTest::lmer(%s, sleepstudy, REML = %s))",
                              formula, REML), "$coefficients", data_note),
       rows = rownames(cf), estimate = unname(cf[, "Estimate"]),
       se = unname(cf[, "Std. Error"]), df = unname(cf[, "df"]),
       t = unname(cf[, "t value"]), p = unname(cf[, "Pr(>|t|)"]),
       logLik = as.numeric(logLik(m)))
}

out <- list(
  `_provenance` = list(
    script = "tests/data/r_satterthwaite/make_refs.R",
    R = R.version.string,
    lme4 = as.character(packageVersion("lme4")),
    lmerTest = as.character(packageVersion("lmerTest")),
    data = "glmm_jax/datasets/data/sleepstudy.csv",
    method = "lmerTest's Satterthwaite df from numerical derivatives (numDeriv)"),
  slope_reml = case("Reaction ~ Days + (Days | Subject)", TRUE),
  slope_ml = case("Reaction ~ Days + (Days | Subject)", FALSE),
  intercept_reml = case("Reaction ~ Days + (1 | Subject)", TRUE),
  intercept_ml = case("Reaction ~ Days + (1 | Subject)", FALSE),
  uncorrelated_reml = case("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", TRUE),
  singular_reml = case("Reaction ~ Days + (1 | Subject) + (1 | g)", TRUE,
                       "; g = factor((row number - 1) %% 6), variance 0 (singular)"),
  weighted_reml = case("Reaction ~ Days + (Days | Subject)", TRUE,
                       "; weights = 1 + 0.1 * Days", weights = sl$w)
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "refs.json")
