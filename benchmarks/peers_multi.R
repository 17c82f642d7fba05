# Fit one of the multi-term reference models with lme4 and glmmTMB; print JSON.
# Usage: Rscript peers_multi.R CASE DATA.csv ENGINE
args <- commandArgs(trailingOnly = TRUE)
case <- args[1]; path <- args[2]; engine <- args[3]
suppressPackageStartupMessages({
  ok <- requireNamespace(engine, quietly = TRUE)
  if (!ok) quit(status = 3)
  library(engine, character.only = TRUE)
})
d <- read.csv(path)
if (case == "verbagg_crossed") {
  d$y <- as.integer(d$r2 == "Y")
  d$Gender <- factor(d$Gender, levels = c("F", "M"))
  d$btype <- factor(d$btype, levels = c("curse", "scold", "shout"))
  d$situ <- factor(d$situ, levels = c("other", "self"))
  d$id <- factor(d$id); d$item <- factor(d$item)
  f <- y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item); fam <- binomial()
} else if (case %in% c("insteval_sim", "insteval", "insteval_ml")) {
  for (v in c("s", "d", "dept", "service")) d[[v]] <- factor(d[[v]])
  f <- y ~ service + (1 | s) + (1 | d) + (1 | dept:service); fam <- gaussian()
} else {
  for (v in c("YEAR", "BROOD", "INDEX", "LOCATION")) d[[v]] <- factor(d[[v]])
  f <- TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION); fam <- poisson()
}
gaussian_case <- case %in% c("insteval_sim", "insteval", "insteval_ml")
reml <- gaussian_case && case != "insteval_ml"  # REML, as glmm_jax's default for Gaussian
fit_once <- function() {
  if (engine == "lme4") {
    if (gaussian_case) lmer(f, data = d, REML = reml) else glmer(f, data = d, family = fam)
  } else {
    glmmTMB(f, data = d, family = fam, REML = reml)
  }
}
m <- fit_once()  # warm up (package code loaded, as for glmm_jax's warm fit)
times <- replicate(3, system.time(fit_once())[["elapsed"]])
cat(sprintf('RESULT_JSON: {"engine": "%s", "time_s": %.4f, "loglik": %.8f}\n',
            engine, median(times), as.numeric(logLik(m))))
