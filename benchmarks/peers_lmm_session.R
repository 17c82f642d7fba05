# The Gaussian notebook session of bench_lmm_session.py with lme4: the same seven lmer
# fits (REML, lmer's default; the same formulas and subsets), timed from before
# library(lme4) to the end of the last fit.
#
# Usage: Rscript benchmarks/peers_lmm_session.R HOSPITAL_CSV
# Prints one line "RESULT_JSON: {...}": total_s, load_s, per-step times and REML criteria.

t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
load_s <- proc.time()[["elapsed"]] - t0
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
df$hospital <- factor(df$hospital)
first40 <- levels(df$hospital)[1:40]
steps <- list(
  list(age ~ sex + (1 | hospital), NULL),
  list(age ~ sex + comorb + (1 | hospital), NULL),
  list(age ~ sex * teaching + comorb + (1 | hospital), NULL),
  list(age ~ comorb + I(comorb^2) + (1 | hospital), quote(sex == 1)),
  list(age ~ sex + (1 | hospital), quote(hospital %in% first40)),
  list(age ~ sex + comorb + (comorb | hospital), NULL),
  list(age ~ sex + (comorb | hospital), quote(teaching == 1))
)
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(here, "session_steps.R"))
run_session(steps, df, function(f, d) suppressMessages(lmer(f, data = d)), t0, load_s,
            subset = droplevels)
