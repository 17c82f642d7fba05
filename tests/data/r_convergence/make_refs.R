## Regenerates tests/data/r_convergence/{corr_sim.csv, crossed_sim.csv, refs.json}: the
## boundary (singular) fits and the multi-term model that tests/test_convergence.py checks.
##
## Run from the repository root:  Rscript tests/data/r_convergence/make_refs.R
##
## corr_sim: random intercepts and slopes that are perfectly correlated (b1 = b0 / 2); the
## ML fits (lmer, glmer Poisson) put the correlation at +1: isSingular() is TRUE (lme4's
## rule: a diagonal entry of the relative Cholesky factor below 1e-4).
## same_rows: a binary response in which every cluster holds the same rows, so there is no
## between-cluster variation: glmer's SD is 0 and isSingular() is TRUE.
## crossed_sim: Poisson counts with crossed random intercepts (1 | a) + (1 | b); glmmTMB's
## Laplace log-likelihood (TMB + nlminb reach glmm_jax's optimum to ~1e-6).
## Needs R 4.2 with lme4 1.1-31, glmmTMB 1.1.5, jsonlite.

suppressPackageStartupMessages({library(lme4); library(glmmTMB); library(jsonlite)})
options(warn = 1)
out_dir <- file.path("tests", "data", "r_convergence")
stopifnot(dir.exists(out_dir))

set.seed(20240501)
J <- 12; per <- 8
g <- rep(seq_len(J), each = per)
x <- rep(seq(-1, 1, length.out = per), J)
b0 <- rnorm(J)
b1 <- 0.5 * b0
eta <- 0.5 + 0.3 * x + b0[g] + b1[g] * x
corr_sim <- data.frame(g = sprintf("g%02d", g), x = round(x, 6),
                       y_gauss = round(eta + rnorm(J * per), 5),
                       y_pois = rpois(J * per, exp(eta)))
write.csv(corr_sim, file.path(out_dir, "corr_sim.csv"), row.names = FALSE)
corr_sim <- read.csv(file.path(out_dir, "corr_sim.csv"))

set.seed(7)
na <- 15; nb <- 10
crossed_sim <- expand.grid(a = sprintf("a%02d", seq_len(na)), b = sprintf("b%02d", seq_len(nb)),
                           rep = 1:2, stringsAsFactors = FALSE)
crossed_sim$x <- round(rnorm(nrow(crossed_sim)), 4)
ua <- rnorm(na, 0, 0.6); ub <- rnorm(nb, 0, 0.4)
crossed_sim$y <- rpois(nrow(crossed_sim),
                       exp(0.3 + 0.4 * crossed_sim$x + ua[match(crossed_sim$a, sprintf("a%02d", seq_len(na)))] +
                           ub[match(crossed_sim$b, sprintf("b%02d", seq_len(nb)))]))
write.csv(crossed_sim, file.path(out_dir, "crossed_sim.csv"), row.names = FALSE)
crossed_sim <- read.csv(file.path(out_dir, "crossed_sim.csv"))

# every cluster holds the same 12 rows (x and y as tests/test_convergence.py builds them)
x12 <- c(-1.2, -0.8, -0.5, -0.3, -0.1, 0, 0.2, 0.4, 0.6, 0.9, 1.1, 1.5)
y12 <- c(0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1)
same_rows <- data.frame(g = rep(sprintf("c%02d", 1:25), each = 12), x = rep(x12, 25),
                        y = rep(y12, 25))

vc_list <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  list(sd = vc$sdcor[is.na(vc$var2)], corr = vc$sdcor[!is.na(vc$var2) & vc$grp != "Residual"])
}
m_gauss <- lmer(y_gauss ~ x + (x | g), corr_sim, REML = FALSE)
m_pois <- glmer(y_pois ~ x + (x | g), corr_sim, family = poisson)
m_same <- glmer(y ~ x + (1 | g), same_rows, family = binomial)
m_cross <- glmmTMB(y ~ x + (1 | a) + (1 | b), crossed_sim, family = poisson)
refs <- list(
  corr_gauss = c(list(logLik = as.numeric(logLik(m_gauss)), singular = isSingular(m_gauss),
                      fixef = unname(fixef(m_gauss)), theta = unname(getME(m_gauss, "theta"))),
                 vc_list(m_gauss)),
  corr_pois = c(list(logLik = as.numeric(logLik(m_pois)), singular = isSingular(m_pois),
                     fixef = unname(fixef(m_pois)), theta = unname(getME(m_pois, "theta"))),
                vc_list(m_pois)),
  same_rows = list(logLik = as.numeric(logLik(m_same)), singular = isSingular(m_same),
                   fixef = unname(fixef(m_same)), theta = unname(getME(m_same, "theta"))),
  crossed = list(logLik = as.numeric(logLik(m_cross)), fixef = unname(fixef(m_cross)$cond),
                 sd = unname(sapply(VarCorr(m_cross)$cond, function(v) attr(v, "stddev")))),
  `_provenance` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                       glmmTMB = as.character(packageVersion("glmmTMB")),
                       date = as.character(Sys.Date()),
                       script = "tests/data/r_convergence/make_refs.R")
)
writeLines(toJSON(refs, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path(out_dir, "refs.json"))
str(refs)
