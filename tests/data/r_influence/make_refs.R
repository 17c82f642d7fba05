## Regenerates tests/data/r_influence/refs.json: lme4's leave-one-cluster-out influence
## (influence.merMod with groups =), cooks.distance and dfbetas of it, for the models
## tests/test_influence.py checks.
##
## Run from the repository root:  Rscript tests/data/r_influence/make_refs.R
##
## influence.merMod refits the model without each level of `groups`, one by one, from the
## full fit's theta (and, for glmer, its fixed effects), with maxfun = 1000. Per case it
## stores the full fit's fixed effects and vcov, the fixed effects, variance components
## ("var.cov.comps": sigma^2, then variances/covariances of each term) and vcov of each
## refit, convergence flags, cooks.distance(infl) and dfbetas(infl), and the seconds
## influence() took (printed as well).
## Needs R 4.2 with lme4 1.1-31 and jsonlite.

suppressPackageStartupMessages({library(lme4); library(jsonlite)})
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

summarise <- function(m, group) {
  t0 <- proc.time()[["elapsed"]]
  infl <- if (group == "case") influence(m) else influence(m, groups = group)
  secs <- proc.time()[["elapsed"]] - t0
  cat(sprintf("%s: lme4 influence(groups = \"%s\"), %d refits: %.2f s\n",
              paste(deparse(formula(m)), collapse = ""), group, length(infl$deleted), secs))
  fx <- infl[[paste0("fixed.effects[-", group, "]")]]
  vc <- infl[[paste0("var.cov.comps[-", group, "]")]]
  vl <- infl[[paste0("vcov[-", group, "]")]]
  cd <- cooks.distance(infl)
  db <- tryCatch(dfbetas(infl), error = function(e) NULL)  # fails with one fixed effect
  lev <- as.character(infl$deleted)
  rows <- function(M) setNames(lapply(seq_len(nrow(M)), function(i) as.list(M[i, ])), lev)
  list(
    group = group, levels = lev, x_names = names(fixef(m)),
    fixef = as.list(fixef(m)), vcov = unname(as.matrix(vcov(m))),
    var_cov_comps = as.list(infl$var.cov.comps),
    fixef_without = rows(fx), var_cov_comps_without = rows(vc),
    vcov_without = setNames(lapply(vl, function(V) unname(as.matrix(V))), lev),
    converged = setNames(as.list(infl$converged), lev),
    cooks_distance = setNames(as.list(unname(cd)), lev),
    dfbetas = if (is.null(db)) NULL else
      setNames(lapply(seq_len(nrow(db)), function(i) as.list(db[i, ])), lev),
    seconds = secs)
}

cases <- list()
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp,
           family = binomial)
cases$cbpp <- summarise(m, "herd")
cases$cbpp_case <- summarise(m, "case")  # without each row (rownames 1..56)
cbpp$obs <- factor(seq_len(nrow(cbpp)))
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs), data = cbpp,
           family = binomial)
cases$cbpp_obs <- summarise(m, "herd")
m <- glmer(count ~ spp + mined + (1 | site), data = Salamanders, family = poisson)
cases$salamanders <- summarise(m, "site")
m <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy)
cases$sleepstudy <- summarise(m, "Subject")
m <- lmer(Reaction ~ Days + (Days || Subject), data = sleepstudy)
cases$sleepstudy_uncorrelated <- summarise(m, "Subject")

out <- list(`_provenance` = paste0(
  "R ", getRversion(), ", lme4 ", packageVersion("lme4"), "; ", format(Sys.Date()),
  "; made by tests/data/r_influence/make_refs.R (run from the repository root). ",
  "lme4::influence(m, groups = g) (refits one by one from the full estimates), ",
  "cooks.distance() and dfbetas() of it. cbpp: glmer binomial ",
  "cbind(incidence, size - incidence) ~ period + (1 | herd); salamanders: glmer poisson ",
  "count ~ spp + mined + (1 | site); sleepstudy: lmer (REML) ",
  "Reaction ~ Days + (Days | Subject); cbpp_case: the cbpp model, influence(m) (each ",
  "row); cbpp_obs: glmer binomial cbind(incidence, size - incidence) ~ period + ",
  "(1 | herd) + (1 | obs) (obs = row number 1..56: nested in herd), groups = \"herd\"; ",
  "sleepstudy_uncorrelated: lmer Reaction ~ Days + (Days || Subject)."))
out <- c(out, cases)
out_file <- file.path("tests", "data", "r_influence", "refs.json")
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), out_file)
cat("wrote", out_file, "\n")
