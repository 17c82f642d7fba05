## Reference numbers quoted in notebooks/5_gee_and_meta_analysis.ipynb: geepack's GEE of the
## toenail data (exchangeable working correlation), rows ordered by patient and visit.
## Run from the repository root: Rscript notebooks/r/gee_toenail.R   (R 4.2.2, geepack)
suppressPackageStartupMessages(library(geepack))
d <- read.csv(file.path("glmm_jax", "datasets", "data", "toenail.csv"), stringsAsFactors = FALSE)
d$y <- as.integer(d$outcome == "moderate or severe")
d$treatment <- factor(d$treatment)
d <- d[order(d$patientID, d$visit), ]
fit <- geeglm(y ~ treatment * visit, id = patientID, family = binomial, data = d,
              corstr = "exchangeable")
print(coef(fit), digits = 15)
print(summary(fit)$coefficients[, "Std.err"], digits = 15)
cat("geepack", as.character(packageVersion("geepack")), "\n")
