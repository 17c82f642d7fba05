# The notebook sessions of bench_interactive.py with lme4: the same glmer fits (the same
# formulas and subsets), timed from before library(lme4) to the end of the last fit.
#
# Usage: Rscript benchmarks/peers_interactive.R HOSPITAL_CSV [single|crossed]
# Prints one line "RESULT_JSON: {...}": total_s, load_s, per-step times and logLiks.

t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
load_s <- proc.time()[["elapsed"]] - t0
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
session <- if (length(args) > 1) args[2] else "single"
single <- list(
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
crossed <- list(
  list(y ~ age + (1 | hospital) + (1 | comorb), NULL),
  list(y ~ age + sex + (1 | hospital) + (1 | comorb), NULL),
  list(y ~ age + sex + teaching + (1 | hospital) + (1 | comorb), NULL),
  list(y ~ age * sex + teaching + (1 | hospital) + (1 | comorb), NULL),
  list(y ~ age + sex + teaching + (1 | hospital) + (1 | comorb), quote(age > -0.5)),
  list(y ~ age + sex + teaching + (1 | hospital) + (1 | comorb), quote(comorb < 4)),
  list(y ~ age + sex + (1 | hospital) + (1 | comorb), quote(teaching == 1)),
  list(y ~ age + teaching + (1 | hospital) + (1 | comorb), quote(sex == 0))
)
steps <- list(single = single, crossed = crossed)[[session]]
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(here, "session_steps.R"))
run_session(steps, df, function(f, d) glmer(f, data = d, family = binomial), t0, load_s)
