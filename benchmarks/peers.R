# Fit one benchmark case with lme4 or glmmTMB and print the result as JSON.
#
# Usage: Rscript benchmarks/peers.R PEER CSV FORMULA FAMILY
#   PEER     lme4 | glmmTMB
#   CSV      data file with columns y, age, sex, comorb, teaching, hospital
#   FORMULA  e.g. "y ~ age + sex + comorb + teaching + (1 | hospital)"
#   FAMILY   binomial | poisson
#
# Prints a single line "RESULT_JSON: {...}" with the elapsed time of the fit
# call alone (CSV reading excluded), logLik, fixed effects, convergence and
# warnings. Exits with status 3 if the package is not installed.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 4) stop("usage: peers.R PEER CSV FORMULA FAMILY")
peer <- args[1]
csv <- args[2]
form <- as.formula(args[3])
fam <- switch(args[4], binomial = binomial(), poisson = poisson(),
              stop("unknown family ", args[4]))

# Minimal JSON writer (avoids a jsonlite dependency).
json_value <- function(x) {
  if (is.null(x) || length(x) == 0) return("null")
  if (!is.null(names(x))) {
    items <- vapply(seq_along(x), function(i) json_value(x[[i]]), "")
    return(paste0("{", paste0('"', names(x), '": ', items, collapse = ", "), "}"))
  }
  if (is.list(x) || length(x) > 1) {
    return(paste0("[", paste(vapply(x, json_value, ""), collapse = ", "), "]"))
  }
  if (is.na(x)) return("null")
  if (is.logical(x)) return(tolower(as.character(x)))
  if (is.numeric(x)) return(if (is.finite(x)) sprintf("%.10g", x) else "null")
  paste0('"', gsub('(["\\\\])', "\\\\\\1", gsub("\n", " ", as.character(x))), '"')
}
emit <- function(x) cat("RESULT_JSON: ", json_value(x), "\n", sep = "")

if (!requireNamespace(peer, quietly = TRUE)) {
  emit(list(peer = peer, error = paste("R package", peer, "is not installed")))
  quit(status = 3)
}
suppressPackageStartupMessages(library(peer, character.only = TRUE))

dat <- read.csv(csv)
dat$hospital <- factor(dat$hospital)

# Fit, keeping warnings (e.g. lme4 convergence checks) instead of printing them.
warns <- character(0)
keep_warning <- function(w) {
  warns <<- c(warns, conditionMessage(w))
  invokeRestart("muffleWarning")
}
fit_once <- function() {
  if (peer == "lme4") glmer(form, data = dat, family = fam)
  else glmmTMB(form, data = dat, family = fam)
}
elapsed <- withCallingHandlers(
  system.time(fit <- fit_once())[["elapsed"]],
  warning = keep_warning
)

if (peer == "lme4") {
  fixed <- lme4::fixef(fit)
  converged <- length(fit@optinfo$conv$lme4$messages) == 0 && isTRUE(fit@optinfo$conv$opt == 0)
  re_cov <- lme4::VarCorr(fit)$hospital
} else {
  fixed <- glmmTMB::fixef(fit)$cond
  converged <- fit$fit$convergence == 0 && isTRUE(fit$sdr$pdHess)
  re_cov <- glmmTMB::VarCorr(fit)$cond$hospital
}
re_cov <- matrix(re_cov, nrow(re_cov), dimnames = dimnames(re_cov))  # drop attributes
re_cor <- if (ncol(re_cov) > 1) cov2cor(re_cov)[lower.tri(re_cov)] else NULL

emit(list(
  peer = peer,
  version = as.character(packageVersion(peer)),
  r_version = paste(R.version$major, R.version$minor, sep = "."),
  time_s = elapsed,
  loglik = as.numeric(logLik(fit)),
  fixef = as.list(fixed),
  converged = converged,
  re_var = as.list(diag(re_cov)),
  re_cor = re_cor,
  warnings = as.list(warns),
  blas = tryCatch(extSoftVersion()[["BLAS"]], error = function(e) NA)
))
