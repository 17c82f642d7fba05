## Regenerates refs.json (lme4's conditional modes and conditional SDs) for
## tests/test_posterior.py.  Run from this folder:   Rscript make_refs.R
## Needs R 4.2, lme4 1.1-31, jsonlite; reads the CSVs shipped with the package.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
data_dir <- "../../../glmm_jax/datasets/data"
rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = FALSE)

modes <- function(m, group) {
  r <- ranef(m, condVar = TRUE)[[group]]
  pv <- attr(r, "postVar")
  list(levels = rownames(r), mode = unname(r[, 1]), condsd = sqrt(unname(pv[1, 1, ])),
       beta = unname(fixef(m)), sd = unname(attr(VarCorr(m)[[group]], "stddev")),
       sigma = sigma(m))
}

cbpp <- rd("cbpp"); cbpp$herd <- factor(cbpp$herd); cbpp$period <- factor(cbpp$period)
call_cbpp <- "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)"
m_cbpp <- eval(parse(text = call_cbpp))

sleep <- rd("sleepstudy"); sleep$Subject <- factor(sleep$Subject)
call_sleep <- "lmer(Reaction ~ Days + (1 | Subject), sleep)"  # REML
m_sleep <- eval(parse(text = call_sleep))

out <- list(
  `_provenance` = list(
    script = "tests/data/r_posterior/make_refs.R",
    R = R.version.string, lme4 = as.character(packageVersion("lme4")),
    date = format(Sys.time(), "%Y-%m-%d"),
    note = "ranef(m, condVar = TRUE): conditional modes and sqrt(postVar), given the fixed effects"),
  cbpp = c(list(model = call_cbpp), modes(m_cbpp, "herd")),
  sleepstudy_reml = c(list(model = call_sleep), modes(m_sleep, "Subject")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "refs.json")
