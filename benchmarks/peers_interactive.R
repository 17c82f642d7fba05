# The notebook session of bench_interactive.py with lme4: the same ten glmer fits (the
# same formulas and subsets), timed from before library(lme4) to the end of the last fit.
#
# Usage: Rscript benchmarks/peers_interactive.R HOSPITAL_CSV
# Prints one line "RESULT_JSON: {...}": total_s, load_s, per-step times and logLiks.

t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
load_s <- proc.time()[["elapsed"]] - t0
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
steps <- list(
  list(y ~ age + (1 | hospital), NULL),
  list(y ~ age + sex + (1 | hospital), NULL),
  list(y ~ age + sex + comorb + (1 | hospital), NULL),
  list(y ~ age + sex + comorb + teaching + (1 | hospital), NULL),
  list(y ~ age * sex + comorb + teaching + (1 | hospital), NULL),
  list(y ~ age + I(age^2) + sex + comorb + teaching + (1 | hospital), NULL),
  list(y ~ age + sex + comorb + teaching + (1 | hospital), quote(age > -0.5)),
  list(y ~ age + sex + comorb + teaching + (1 | hospital), quote(comorb < 3)),
  list(y ~ age + sex + teaching + (1 | hospital), quote(sex == 0 | teaching == 1)),
  list(y ~ age + sex + comorb + teaching + (age | hospital), NULL)
)
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(here, "session_steps.R"))
run_session(steps, df, function(f, d) glmer(f, data = d, family = binomial), t0, load_s)
