# lme4 1.1-31 condVar SDs of a two-term REML fit (printed; used in tests/test_posterior.py).
# Run from tests/data/r_inference: Rscript condvar_two_terms.R
suppressMessages(library(lme4))
sl <- read.csv("../../../glmm_jax/datasets/data/sleepstudy.csv"); sl$Subject <- factor(sl$Subject)
m <- lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sl)
r <- ranef(m, condVar = TRUE)$Subject
pv <- attr(r, "postVar")
print(r[1:2,]); print(str(attr(r,"postVar"))); print(sqrt(sapply(pv, function(a) a[1,1,1:2])))
