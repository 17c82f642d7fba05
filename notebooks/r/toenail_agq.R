## Reference numbers quoted in notebooks/3_laplace_vs_aghq.ipynb: lme4's Laplace and
## nAGQ = 25 fits of the toenail data. Run from the repository root:
## Rscript notebooks/r/toenail_agq.R   (R 4.2.2, lme4 1.1-31)
suppressPackageStartupMessages(library(lme4))
d <- read.csv(file.path("glmm_jax", "datasets", "data", "toenail.csv"), stringsAsFactors = FALSE)
d$y <- as.integer(d$outcome == "moderate or severe")
for (q in c(1, 25)) {
  m <- glmer(y ~ treatment * visit + (1 | patientID), data = d, family = binomial, nAGQ = q)
  cat(sprintf("nAGQ %d: logLik %.4f  sd %.4f\n", q, logLik(m), sqrt(VarCorr(m)$patientID[1])))
}
cat("lme4", as.character(packageVersion("lme4")), "\n")
