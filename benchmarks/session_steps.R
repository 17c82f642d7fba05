# What peers_interactive.R and peers_lmm_session.R share: fit a notebook session's steps
# (formula, subset or NULL) in turn, timing each, and print the one RESULT_JSON line
# (total_s from t0, taken before library(lme4); load_s; per-step times and logLiks).

run_session <- function(steps, df, fit_one, t0, load_s, subset = function(d) d) {
  times <- numeric(0)
  logliks <- numeric(0)
  for (s in steps) {
    t <- proc.time()[["elapsed"]]
    d <- if (is.null(s[[2]])) df else subset(df[eval(s[[2]], df), ])
    fit <- fit_one(s[[1]], d)
    times <- c(times, proc.time()[["elapsed"]] - t)
    logliks <- c(logliks, as.numeric(logLik(fit)))
  }
  total_s <- proc.time()[["elapsed"]] - t0
  num <- function(x) paste(sprintf("%.10g", x), collapse = ", ")
  cat(sprintf(paste0('RESULT_JSON: {"total_s": %.4f, "load_s": %.4f, "step_s": [%s], ',
                     '"logliks": [%s]}\n'), total_s, load_s, num(times), num(logliks)))
}
