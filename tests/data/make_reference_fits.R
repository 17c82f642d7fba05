## Regenerates tests/data/reference_fits.json: the lme4 / glmmTMB reference fits of the
## real datasets in glmm_jax/datasets/data/ (see /work/shared/reference/README.md) and the
## brute-force marginal log-likelihoods at the reference estimates.
##
## Run from the repository root:
##     Rscript tests/data/make_reference_fits.R [OUTPUT] [--no-timing]
##
##   OUTPUT       where to write the JSON (default tests/data/reference_fits.json)
##   --no-timing  (or env REFFITS_NO_TIMING=1) fit each model once and time that fit,
##                instead of the median of 3 timed fits. Timings ("seconds") are the only
##                numbers that differ between runs; everything else is deterministic.
##
## Needs R 4.2 with lme4 1.1-31, glmmTMB 1.1.5 (TMB 1.9.2, Matrix 1.5-3) and jsonlite.
## Review a regenerated file with `git diff` before committing it.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(jsonlite)
})
options(warn = 1)

## ---------------------------------------------------------------------------
## arguments and paths

args <- commandArgs(trailingOnly = TRUE)
no_timing <- "--no-timing" %in% args ||
  tolower(Sys.getenv("REFFITS_NO_TIMING", "")) %in% c("1", "true", "yes")
args <- args[!startsWith(args, "--")]
## the repository root: the working directory, or two levels above this script
root <- "."
if (!dir.exists(file.path(root, "glmm_jax", "datasets", "data"))) {
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f) == 1) root <- file.path(dirname(f), "..", "..")
}
data_dir <- file.path(root, "glmm_jax", "datasets", "data")
stopifnot(dir.exists(data_dir))
out_file <- if (length(args) >= 1) args[[1]] else
  file.path(root, "tests", "data", "reference_fits.json")
n_repeats <- if (no_timing) 1L else 3L

## ---------------------------------------------------------------------------
## data (factor level orders as in the R packages; sorted otherwise)

rd <- function(file) read.csv(file.path(data_dir, file), stringsAsFactors = FALSE)

cbpp <- rd("cbpp.csv")
cbpp$herd <- factor(cbpp$herd)                               # 1..15, numeric order
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))

grouseticks <- rd("grouseticks.csv")
grouseticks$INDEX <- factor(grouseticks$INDEX)               # 1..403, numeric order
grouseticks$BROOD <- factor(grouseticks$BROOD)
grouseticks$LOCATION <- factor(grouseticks$LOCATION)
grouseticks$YEAR <- factor(as.character(grouseticks$YEAR), levels = c("95", "96", "97"))
## cHEIGHT (HEIGHT centred) is a column of the CSV

VerbAgg <- rd("VerbAgg.csv")
VerbAgg$y <- VerbAgg$r2 == "Y"
VerbAgg$id <- factor(VerbAgg$id)                             # 1..316, numeric order
VerbAgg$item <- factor(VerbAgg$item)                         # sorted
VerbAgg$Gender <- factor(VerbAgg$Gender, levels = c("F", "M"))
VerbAgg$btype <- factor(VerbAgg$btype, levels = c("curse", "scold", "shout"))
VerbAgg$situ <- factor(VerbAgg$situ, levels = c("other", "self"))

Owls <- rd("Owls.csv")
Owls$Nest <- factor(Owls$Nest)                               # sorted
Owls$FoodTreatment <- factor(Owls$FoodTreatment, levels = c("Deprived", "Satiated"))
Owls$SexParent <- factor(Owls$SexParent, levels = c("Female", "Male"))

Salamanders <- rd("Salamanders.csv")
Salamanders$site <- factor(Salamanders$site)                 # sorted
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))

toenail <- rd("toenail.csv")
toenail$y <- toenail$outcome == "moderate or severe"
toenail$patientID <- factor(toenail$patientID)               # numeric order
toenail$treatment <- factor(toenail$treatment, levels = c("itraconazole", "terbinafine"))

sleepstudy <- rd("sleepstudy.csv")
sleepstudy$Subject <- factor(sleepstudy$Subject)

stopifnot(nrow(cbpp) == 56, nrow(grouseticks) == 403, nrow(VerbAgg) == 7584,
          nrow(Owls) == 599, nrow(Salamanders) == 644, nrow(toenail) == 1908,
          nrow(sleepstudy) == 180)

## ---------------------------------------------------------------------------
## fitting with timing

## fit once per repeat; return the last fit and the median elapsed seconds
timed <- function(expr_fun) {
  secs <- numeric(n_repeats)
  for (i in seq_len(n_repeats)) {
    t0 <- proc.time()[["elapsed"]]
    fit <- expr_fun()
    secs[i] <- proc.time()[["elapsed"]] - t0
  }
  list(fit = fit, seconds = median(secs))
}

fstr <- function(f) paste(deparse(f), collapse = " ")
named <- function(x) as.list(x)                      # named vector -> JSON object
se_of <- function(v) { s <- sqrt(diag(as.matrix(v))); names(s) <- colnames(v); s }

varcorr_rows <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i], var1 = vc$var1[i], var2 = vc$var2[i],
    vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}

lme4_glmm_block <- function(t) {
  fit <- t$fit
  ll <- logLik(fit)
  re <- ranef(fit)
  th <- unname(getME(fit, "theta"))
  list(
    logLik = as.numeric(ll),
    deviance = deviance(fit),
    AIC = AIC(fit),
    BIC = BIC(fit),
    df = attr(ll, "df"),
    fixef = named(fixef(fit)),
    se = named(se_of(vcov(fit))),
    theta = if (length(th) == 1) th else as.list(th),
    varcorr = varcorr_rows(fit),
    ranef_head = lapply(re, function(d) {
      m <- as.matrix(d)[seq_len(min(5, nrow(d))), , drop = FALSE]
      lapply(seq_len(nrow(m)), function(i) as.list(unname(m[i, ])))
    }),
    messages = fit@optinfo$conv$lme4$messages,       # NULL (written {}) when none
    seconds = t$seconds,
    version = as.character(packageVersion("lme4")))
}

tmb_block <- function(t, extra = NULL) {
  fit <- t$fit
  c(list(logLik = as.numeric(logLik(fit)),
         fixef = named(fixef(fit)$cond),
         se = named(se_of(vcov(fit)$cond))),
    extra,
    list(seconds = t$seconds,
         version = as.character(packageVersion("glmmTMB"))))
}

## ---------------------------------------------------------------------------
## brute-force marginal log-likelihood of a random-intercept model:
## per cluster, the trapezoid rule with 4001 points on b in [-10 sd, 10 sd]
## (b ~ N(0, sd^2)), summed in log space. row_logpdf(b) returns the conditional
## log density of every row at eta0 + b for the grid b: an [n_rows, 4001] matrix.

bruteforce_ri_loglik <- function(row_logpdf, cluster, sd, n_grid = 4001, width = 10) {
  b <- seq(-width * sd, width * sd, length.out = n_grid)
  per_cluster <- rowsum(row_logpdf(b), as.integer(cluster), reorder = TRUE)  # [J, G]
  dx <- b[2] - b[1]
  logw <- rep(log(dx), n_grid)
  logw[c(1, n_grid)] <- log(dx / 2)
  logf <- sweep(per_cluster, 2, dnorm(b, 0, sd, log = TRUE) + logw, "+")
  m <- apply(logf, 1, max)
  sum(m + log(rowSums(exp(logf - m))))
}

binomial_rows <- function(y, n, eta0) function(b) {
  eta <- outer(eta0, b, "+")
  lp <- plogis(eta, log.p = TRUE)                   # log p
  lq <- plogis(-eta, log.p = TRUE)                  # log (1 - p)
  lchoose(n, y) + y * lp + (n - y) * lq             # lp, lq finite on the grid
}
poisson_rows <- function(y, eta0) function(b) {
  eta <- outer(eta0, b, "+")
  y * eta - exp(eta) - lgamma(y + 1)
}
nbinom2_rows <- function(y, eta0, theta) function(b) {
  eta <- outer(eta0, b, "+")
  matrix(dnbinom(y, size = theta, mu = exp(eta), log = TRUE), nrow = length(y))
}

## eta0 = X beta + offset at the given fixed effects
eta0_of <- function(formula, data, beta) {
  fr <- model.frame(lme4::subbars(formula), data)
  X <- model.matrix(lme4::nobars(formula), fr)
  off <- model.offset(fr)
  stopifnot(identical(colnames(X), names(beta)))
  drop(X %*% beta) + (if (is.null(off)) 0 else off)
}

## lme4 fixef and random-intercept SD of a glmer fit
lme4_est <- function(fit) list(beta = fixef(fit), sd = as.data.frame(VarCorr(fit))$sdcor[1])
tmb_est <- function(fit) list(beta = fixef(fit)$cond,
                              sd = sqrt(VarCorr(fit)$cond[[1]][1, 1]))

## ---------------------------------------------------------------------------
## cases

cases <- list()
cbind_f <- cbind(incidence, size - incidence) ~ period + (1 | herd)

glmm_case <- function(name, formula, data, family, nAGQ = 1, tmb = TRUE, note = NULL) {
  fam <- family()
  t_lme4 <- timed(function() glmer(formula, data = data, family = fam, nAGQ = nAGQ))
  out <- list(name = name, n = nobs(t_lme4$fit), nAGQ = nAGQ,
              family = fam$family, link = fam$link, formula = fstr(formula),
              lme4 = lme4_glmm_block(t_lme4))
  if (!is.null(note)) out$lme4$logLik_note <- note
  if (tmb) {
    t_tmb <- timed(function() glmmTMB(formula, data = data, family = fam))
    out$glmmTMB <- tmb_block(t_tmb)
    attr(out, "tmb_fit") <- t_tmb$fit
  }
  attr(out, "lme4_fit") <- t_lme4$fit
  out
}

message("cbpp_laplace")
cs <- glmm_case("cbpp_laplace", cbind_f, cbpp, binomial)
e <- lme4_est(attr(cs, "lme4_fit"))
cs$exact_logLik_at_reference_estimates <- bruteforce_ri_loglik(
  binomial_rows(cbpp$incidence, cbpp$size, eta0_of(cbind_f, cbpp, e$beta)), cbpp$herd, e$sd)
cases$cbpp_laplace <- cs

message("cbpp_agq25")
cs <- glmm_case("cbpp_agq25", cbind_f, cbpp, binomial, nAGQ = 25, tmb = FALSE,
                note = paste("lme4 reports logLik for nAGQ>1 binomial fits on a different",
                             "scale (without the saturated-model constant); use",
                             "exact_logLik_at_reference_estimates instead"))
e <- lme4_est(attr(cs, "lme4_fit"))
cs$exact_logLik_at_reference_estimates <- bruteforce_ri_loglik(
  binomial_rows(cbpp$incidence, cbpp$size, eta0_of(cbind_f, cbpp, e$beta)), cbpp$herd, e$sd)
cases$cbpp_agq25 <- cs

message("grouseticks_olre")
cases$grouseticks_olre <- glmm_case(
  "grouseticks_olre",
  TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks, poisson)

message("verbagg_crossed")
cases$verbagg_crossed <- glmm_case(
  "verbagg_crossed", y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), VerbAgg, binomial)

owls_f <- SiblingNegotiation ~ FoodTreatment * SexParent + offset(logBroodSize) + (1 | Nest)
message("owls_poisson")
cs <- glmm_case("owls_poisson", owls_f, Owls, poisson)
e <- lme4_est(attr(cs, "lme4_fit"))
cs$exact_logLik_at_reference_estimates <- bruteforce_ri_loglik(
  poisson_rows(Owls$SiblingNegotiation, eta0_of(owls_f, Owls, e$beta)), Owls$Nest, e$sd)
cases$owls_poisson <- cs

message("owls_nbinom2")
t_nb <- timed(function() glmmTMB(owls_f, data = Owls, family = nbinom2))
fit_nb <- t_nb$fit
e <- tmb_est(fit_nb)
cases$owls_nbinom2 <- list(
  name = "owls_nbinom2", n = nobs(fit_nb), nAGQ = 1,
  family = family(fit_nb)$family, link = family(fit_nb)$link, formula = fstr(owls_f),
  glmmTMB = tmb_block(t_nb, list(dispersion = sigma(fit_nb), re_sd = e$sd)),
  exact_logLik_at_reference_estimates = bruteforce_ri_loglik(
    nbinom2_rows(Owls$SiblingNegotiation, eta0_of(owls_f, Owls, e$beta), sigma(fit_nb)),
    Owls$Nest, e$sd))

message("salamanders_poisson")
cases$salamanders_poisson <- glmm_case(
  "salamanders_poisson", count ~ spp + mined + (1 | site), Salamanders, poisson)

message("toenail_laplace")
toe_f <- y ~ treatment * visit + (1 | patientID)
cs <- glmm_case("toenail_laplace", toe_f, toenail, binomial)
e <- lme4_est(attr(cs, "lme4_fit"))
yt <- as.numeric(toenail$y)
cs$exact_logLik_at_reference_estimates <- bruteforce_ri_loglik(
  binomial_rows(yt, rep(1, length(yt)), eta0_of(toe_f, toenail, e$beta)),
  toenail$patientID, e$sd)
cases$toenail_laplace <- cs

sleep_f <- Reaction ~ Days + (Days | Subject)
for (reml in c(FALSE, TRUE)) {
  name <- if (reml) "sleepstudy_reml" else "sleepstudy_ml"
  message(name)
  t <- timed(function() lmer(sleep_f, data = sleepstudy, REML = reml))
  fit <- t$fit
  cases[[name]] <- list(
    name = name, n = nobs(fit), family = "gaussian", link = "identity", REML = reml,
    formula = fstr(sleep_f),
    lme4 = list(logLik = as.numeric(logLik(fit)), fixef = named(fixef(fit)),
                se = named(se_of(vcov(fit))), sigma = sigma(fit),
                varcorr = varcorr_rows(fit), seconds = t$seconds))
}

## ---------------------------------------------------------------------------
## JSON writer. The file's layout is that of Python's json.dump(indent=1): one space per
## level, every array element on its own line, no trailing newline. Numbers from the
## fits are stored to 15 significant digits (as jsonlite's toJSON(digits = NA) writes
## them); the brute-force log-likelihoods with full (shortest round-trip) precision.

shortest <- function(x) {
  if (x == round(x) && abs(x) < 1e15) return(sprintf("%.0f", x))
  for (d in 1:17) {
    s <- sprintf("%.*g", d, x)
    if (as.numeric(s) == x) return(s)
  }
  sprintf("%.17g", x)
}
num15 <- function(x) shortest(as.numeric(sprintf("%.15g", x)))

full_precision <- "exact_logLik_at_reference_estimates"

to_json <- function(x, level = 0, full = FALSE) {
  pad <- strrep(" ", level + 1)
  end <- strrep(" ", level)
  if (is.null(x)) return("{}")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    if (is.null(names(x))) {
      items <- vapply(x, to_json, "", level = level + 1)
      return(paste0("[\n", paste0(pad, items, collapse = ",\n"), "\n", end, "]"))
    }
    items <- vapply(seq_along(x), function(i) {
      paste0(jsonlite::toJSON(names(x)[i], auto_unbox = TRUE), ": ",
             to_json(x[[i]], level + 1, full = names(x)[i] %in% full_precision))
    }, "")
    return(paste0("{\n", paste0(pad, items, collapse = ",\n"), "\n", end, "}"))
  }
  if (is.factor(x)) x <- as.character(x)
  if (length(x) != 1) return(to_json(as.list(unname(x)), level))
  if (is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(as.character(jsonlite::toJSON(x, auto_unbox = TRUE)))
  if (is.numeric(x)) return(if (full) shortest(x) else num15(x))
  stop("cannot write ", class(x))
}

cases <- lapply(cases, function(cs) { attributes(cs) <- list(names = names(cs)); cs })
dir.create(dirname(out_file), showWarnings = FALSE, recursive = TRUE)
writeChar(to_json(cases), out_file, eos = NULL, useBytes = TRUE)
message("wrote ", out_file, if (no_timing) " (single timed fit per model)" else "")
