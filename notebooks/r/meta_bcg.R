## Reference numbers quoted in notebooks/5_gee_and_meta_analysis.ipynb: the binomial-normal
## random-effects meta-analysis of metafor's dat.bcg (13 BCG vaccine trials) with fixed
## study intercepts and a random treatment effect (metafor's model = "UM.FS", fitted by
## lme4::glmer with the Laplace approximation).
## Run: Rscript notebooks/r/meta_bcg.R   (R 4.2.2, metafor, lme4 1.1-31)
suppressPackageStartupMessages(library(metafor))
fit <- rma.glmm(measure = "OR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg,
                model = "UM.FS")
cat(sprintf("log OR %.6f  se %.6f  tau2 %.6f  logLik %.6f\n", fit$beta[1], fit$se, fit$tau2,
            logLik(fit)))
cat("metafor", as.character(packageVersion("metafor")), " lme4",
    as.character(packageVersion("lme4")), "\n")
