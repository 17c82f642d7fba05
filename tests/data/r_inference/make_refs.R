## Regenerates refs.json in tests/data/r_inference/.
## Run from this folder:   cd tests/data/r_inference && Rscript make_refs.R
## Needs R 4.2, lme4 1.1-31, lmerTest 3.1-3, performance 0.10.2, insight 0.19.0, jsonlite.
## Reads the CSVs shipped with the Python package (glmm_jax/datasets/data/).
##
## Every entry carries a `model` string with the exact R call.  Any expression
## that errors is stored as {"error": "<message>"}; warnings are stored beside
## the value under "warnings" (the value is kept, so tests can still use it).
## Timings are wall-clock seconds (system.time()[["elapsed"]]) on the machine in
## _provenance; they are indicative only.

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)     # masks lme4::lmer; lme4::lmer is called explicitly below
  library(performance)
  library(insight)
  library(jsonlite)
})
options(width = 80, warn = 1)

data_dir <- "../../../glmm_jax/datasets/data"
stopifnot(dir.exists(data_dir))
rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")),
                              stringsAsFactors = FALSE)

## ---------------------------------------------------------------------------
## helpers

## evaluate expr; return list(value=, warnings=) or list(error=)
safe <- function(expr) {
  warns <- character(0)
  val <- tryCatch(
    withCallingHandlers(expr, warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }),
    error = function(e) structure(list(msg = conditionMessage(e)), class = "safe_error"))
  if (inherits(val, "safe_error")) return(list(error = val$msg, warnings = warns))
  list(value = val, warnings = warns)
}
## merge the result of safe() into an entry: value fields via f(value)
entry <- function(model, s, f = identity, ...) {
  out <- list(model = model, ...)
  if (!is.null(s$error)) {
    out$error <- s$error
  } else {
    out <- c(out, f(s$value))
  }
  if (length(s$warnings)) out$warnings <- as.list(unique(gsub("\\s+", " ", s$warnings)))
  out
}
## median elapsed seconds of n runs (also returns every run and the last value)
timed <- function(expr_fun, n = 3) {
  times <- numeric(0); val <- NULL
  for (i in seq_len(n)) {
    tt <- system.time(val <- expr_fun())[["elapsed"]]
    times <- c(times, tt)
  }
  list(value = val, seconds_median = median(times), seconds_runs = times)
}
ci_list <- function(ci) list(rows = rownames(ci), lower = unname(ci[, 1]),
                             upper = unname(ci[, 2]))
anova_list <- function(a) {
  a <- as.data.frame(a)
  out <- list(rows = rownames(a))
  for (nm in names(a)) out[[nm]] <- unname(a[[nm]])
  out
}
ranef_list <- function(re, grp) {
  r <- re[[grp]]
  pv <- attr(r, "postVar")
  stopifnot(!is.null(pv))
  terms <- colnames(r)
  modes <- list(); sds <- list()
  for (j in seq_along(terms)) {
    modes[[terms[j]]] <- unname(r[[j]])
    sds[[terms[j]]] <- sqrt(unname(pv[j, j, ]))
  }
  list(group = grp, levels = rownames(r), terms = as.list(terms), modes = modes,
       cond_sd = sds,
       note = "cond_sd = sqrt(diag of attr(ranef(m, condVar=TRUE)[[group]], 'postVar')) per level")
}
icc_list <- function(ic) list(adjusted = ic$ICC_adjusted, conditional = ic$ICC_conditional)
r2_list <- function(r2) list(R2_conditional = unname(r2$R2_conditional),
                             R2_marginal = unname(r2$R2_marginal))
var_list <- function(v) {
  keep <- c("var.fixed", "var.random", "var.residual", "var.distribution",
            "var.dispersion", "var.intercept", "var.slope", "cor.slope_intercept")
  out <- list()
  for (k in keep) if (!is.null(v[[k]])) {
    x <- v[[k]]
    out[[k]] <- if (length(x) > 1 || !is.null(names(x))) as.list(x) else unname(x)
  }
  out
}
coef_table <- function(cf) list(rows = rownames(cf),
                                columns = colnames(cf),
                                values = lapply(colnames(cf), function(cn) unname(cf[, cn])))

## ---------------------------------------------------------------------------
## data (factor levels as in glmm_jax/datasets/__init__.py)

cbpp <- rd("cbpp")
cbpp$herd <- factor(cbpp$herd, levels = as.character(sort(unique(as.integer(cbpp$herd)))))
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))

sl <- rd("sleepstudy")
sl$Subject <- factor(as.character(sl$Subject),
                     levels = sort(unique(as.character(sl$Subject))))

Salamanders <- rd("Salamanders")
Salamanders$site <- factor(Salamanders$site)
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))
stopifnot(!anyNA(Salamanders$spp), !anyNA(Salamanders$mined))

out <- list()
out[["_provenance"]] <- list(
  made_by = "tests/data/r_inference/make_refs.R (run as: cd tests/data/r_inference && Rscript make_refs.R)",
  R = R.version.string,
  packages = sapply(c("lme4", "lmerTest", "performance", "insight", "Matrix", "jsonlite"),
                    function(p) as.character(packageVersion(p)), simplify = FALSE),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
  platform = R.version$platform,
  cpu = tryCatch(sub("^model name\\s*:\\s*", "",
                     grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
                 error = function(e) NA_character_),
  n_cores = parallel::detectCores(),
  loadavg_at_start = tryCatch(readLines("/proc/loadavg"), error = function(e) NA_character_),
  data = "glmm_jax/datasets/data/*.csv read with read.csv(stringsAsFactors=FALSE)",
  factor_levels = list(
    cbpp = "herd: levels 1..15 (numeric order); period: 1,2,3,4",
    sleepstudy = "Subject: sorted character levels 308..372",
    Salamanders = "site: factor() default; spp: GP,PR,DM,EC-A,EC-L,DES-L,DF; mined: yes,no (glmmTMB order, as in glmm_jax.datasets)"),
  conventions = "error -> {error: msg}; warnings kept beside the value under 'warnings'; timings = system.time elapsed seconds")

## ---------------------------------------------------------------------------
## 1. cbpp binomial GLMM

cb_call <- "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)"
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
m0_call <- "glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial)"
m0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial)

out$cbpp_fit <- list(model = cb_call,
                     fixef = as.list(fixef(m)),
                     theta = unname(getME(m, "theta")),
                     sd_herd = unname(attr(VarCorr(m)$herd, "stddev")),
                     logLik = as.numeric(logLik(m)),
                     deviance = deviance(m),
                     AIC = AIC(m), BIC = BIC(m),
                     vcov = unname(as.matrix(vcov(m))),
                     nobs = nobs(m))

out$cbpp_ranef <- entry(paste0("ranef(m, condVar=TRUE); m <- ", cb_call),
                        safe(ranef(m, condVar = TRUE)),
                        function(re) ranef_list(re, "herd"))

s <- safe(timed(function() confint(m, method = "profile"), n = 3))
out$cbpp_confint_profile <- entry(paste0("confint(m, method='profile'); m <- ", cb_call), s,
  function(v) c(ci_list(v$value),
                list(level = 0.95, seconds_median = v$seconds_median,
                     seconds_runs = v$seconds_runs,
                     timing = "system.time elapsed, median of 3 runs")))

out$cbpp_confint_wald <- entry(paste0("confint(m, method='Wald'); m <- ", cb_call),
  safe(confint(m, method = "Wald")),
  function(ci) c(ci_list(ci), list(note = "the .sig01 row is NA in R (Wald CIs are not computed for variance parameters)")))

s <- safe({
  tt <- system.time(b <- bootMer(m, fixef, nsim = 200, seed = 1))[["elapsed"]]
  list(seconds = tt, b = b)
})
out$cbpp_bootMer <- entry(paste0("bootMer(m, fixef, nsim=200, seed=1); m <- ", cb_call), s,
  function(v) list(seconds = v$seconds, timing = "system.time elapsed, 1 run",
                   nsim = 200,
                   n_failed = sum(!stats::complete.cases(v$b$t)),
                   t0 = as.list(v$b$t0),
                   boot_mean = as.list(colMeans(v$b$t, na.rm = TRUE)),
                   boot_sd = as.list(apply(v$b$t, 2, sd, na.rm = TRUE)),
                   note = "boot_mean / boot_sd depend on R's RNG; compare only loosely (Monte Carlo error ~ sd/sqrt(200))"))

vec <- function(expr_str, fun) entry(paste0(expr_str, "; m <- ", cb_call), safe(fun()),
                                     function(x) list(values = unname(as.numeric(x))))
out$cbpp_vectors <- list(
  note = "all vectors in data row order (56 rows)",
  fitted = vec("fitted(m)", function() fitted(m)),
  predict_link = vec("predict(m, type='link')", function() predict(m, type = "link")),
  predict_link_re_NA = vec("predict(m, re.form=NA, type='link')",
                           function() predict(m, re.form = NA, type = "link")),
  predict_response = vec("predict(m, type='response')", function() predict(m, type = "response")),
  resid_pearson = vec("residuals(m, type='pearson')", function() residuals(m, type = "pearson")),
  resid_deviance = vec("residuals(m, type='deviance')", function() residuals(m, type = "deviance")),
  resid_response = vec("residuals(m, type='response')", function() residuals(m, type = "response")),
  resid_working = vec("residuals(m, type='working')", function() residuals(m, type = "working")))

out$cbpp_icc <- entry(paste0("performance::icc(m); m <- ", cb_call), safe(icc(m)), icc_list)
out$cbpp_r2_nakagawa <- entry(paste0("performance::r2_nakagawa(m); m <- ", cb_call),
                              safe(r2_nakagawa(m)), r2_list)
out$cbpp_get_variance <- entry(paste0("insight::get_variance(m); m <- ", cb_call),
                               safe(get_variance(m)), var_list)

g_call <- "glm(cbind(incidence, size - incidence) ~ period, cbpp, family=binomial)"
g <- glm(cbind(incidence, size - incidence) ~ period, cbpp, family = binomial)
out$cbpp_glm <- list(model = g_call, logLik = as.numeric(logLik(g)),
                     df = attr(logLik(g), "df"), coef = as.list(coef(g)),
                     deviance = deviance(g))

lrt <- as.numeric(2 * (logLik(m) - logLik(g)))
out$cbpp_lrt_glmm_vs_glm <- list(
  model = paste0("2*(logLik(m) - logLik(g)); m <- ", cb_call, "; g <- ", g_call),
  statistic = lrt,
  p_chibar = 0.5 * pchisq(lrt, 1, lower.tail = FALSE),
  p_chisq1_naive = pchisq(lrt, 1, lower.tail = FALSE),
  note = "p_chibar = 0.5*pchisq(statistic, 1, lower.tail=FALSE) (50:50 mixture of chi2_0 and chi2_1)")

s <- safe({a <- anova(m0, m); list(a = a, txt = capture.output(print(a)))})
out$cbpp_anova_m0_m <- entry(paste0("anova(m0, m); m0 <- ", m0_call, "; m <- ", cb_call), s,
  function(v) list(table = anova_list(v$a), printed = v$txt))

## ---------------------------------------------------------------------------
## 2. sleepstudy

f1_call <- "lme4::lmer(Reaction ~ Days + (1 | Subject), sl)  # REML"
f2_call <- "lme4::lmer(Reaction ~ Days + (Days | Subject), sl)  # REML"
f2ml_call <- "lme4::lmer(Reaction ~ Days + (Days | Subject), sl, REML=FALSE)"
f1 <- lme4::lmer(Reaction ~ Days + (1 | Subject), sl)
f2 <- lme4::lmer(Reaction ~ Days + (Days | Subject), sl)
f2ml <- lme4::lmer(Reaction ~ Days + (Days | Subject), sl, REML = FALSE)

fitinfo <- function(f, call) list(model = call, fixef = as.list(fixef(f)),
                                  theta = unname(getME(f, "theta")), sigma = sigma(f),
                                  logLik = as.numeric(logLik(f)),
                                  REML = isREML(f))
out$sleep_fits <- list(f1 = fitinfo(f1, f1_call), f2 = fitinfo(f2, f2_call),
                       f2_ML = fitinfo(f2ml, f2ml_call))

msgs <- character(0)
s <- safe(withCallingHandlers({
  a <- anova(f1, f2)
  list(a = a, txt = capture.output(print(a)))
}, message = function(mm) {
  msgs <<- c(msgs, sub("\n$", "", conditionMessage(mm)))
  invokeRestart("muffleMessage")
}))
out$sleep_anova_f1_f2 <- entry(paste0("anova(f1, f2); f1 <- ", f1_call, "; f2 <- ", f2_call), s,
  function(v) list(table = anova_list(v$a), printed = v$txt, message = msgs))

satt <- function(call, REML) {
  s <- safe(summary(lmerTest::lmer(Reaction ~ Days + (Days | Subject), sl, REML = REML))$coefficients)
  entry(call, s, function(cf) list(rows = rownames(cf),
                                   estimate = unname(cf[, "Estimate"]),
                                   se = unname(cf[, "Std. Error"]),
                                   df = unname(cf[, "df"]),
                                   t = unname(cf[, "t value"]),
                                   p = unname(cf[, "Pr(>|t|)"])))
}
out$sleep_satterthwaite_ML <- satt(
  "summary(lmerTest::lmer(Reaction ~ Days + (Days | Subject), sl, REML=FALSE))$coefficients; Satterthwaite df", FALSE)
out$sleep_satterthwaite_REML <- satt(
  "summary(lmerTest::lmer(Reaction ~ Days + (Days | Subject), sl))$coefficients (REML); Satterthwaite df", TRUE)

prof_entry <- function(f, call) {
  s <- safe(timed(function() confint(f, method = "profile"), n = 3))
  entry(paste0("confint(f, method='profile'); f <- ", call), s,
        function(v) c(ci_list(v$value),
                      list(level = 0.95, seconds_median = v$seconds_median,
                           seconds_runs = v$seconds_runs,
                           timing = "system.time elapsed, median of 3 runs")))
}
out$sleep_confint_profile_REML <- prof_entry(f2, f2_call)
out$sleep_confint_profile_ML <- prof_entry(f2ml, f2ml_call)

out$sleep_icc_f1 <- entry(paste0("performance::icc(f1); f1 <- ", f1_call), safe(icc(f1)), icc_list)
out$sleep_icc_f2 <- entry(paste0("performance::icc(f2); f2 <- ", f2_call), safe(icc(f2)), icc_list)
out$sleep_r2_nakagawa_f1 <- entry(paste0("performance::r2_nakagawa(f1); f1 <- ", f1_call),
                                  safe(r2_nakagawa(f1)), r2_list)
out$sleep_r2_nakagawa_f2 <- entry(paste0("performance::r2_nakagawa(f2); f2 <- ", f2_call),
                                  safe(r2_nakagawa(f2)), r2_list)
out$sleep_get_variance_f1 <- entry(paste0("insight::get_variance(f1); f1 <- ", f1_call),
                                   safe(get_variance(f1)), var_list)
out$sleep_get_variance_f2 <- entry(paste0("insight::get_variance(f2); f2 <- ", f2_call),
                                   safe(get_variance(f2)), var_list)

out$sleep_ranef_f1 <- entry(paste0("ranef(f1, condVar=TRUE); f1 <- ", f1_call),
                            safe(ranef(f1, condVar = TRUE)),
                            function(re) ranef_list(re, "Subject"))

nd <- data.frame(Days = c(0, 5), Subject = c("308", "999"))
out$sleep_predict_newdata <- entry(
  paste0("predict(f2, newdata=data.frame(Days=c(0,5), Subject=c('308','999')), allow.new.levels=TRUE); f2 <- ", f2_call),
  safe(predict(f2, newdata = nd, allow.new.levels = TRUE)),
  function(p) list(Days = nd$Days, Subject = nd$Subject, values = unname(as.numeric(p)),
                   note = "Subject 999 is a new level: population-level prediction"))

## ---------------------------------------------------------------------------
## 3. Salamanders Poisson GLMM

sa_call <- "glmer(count ~ spp + mined + (1 | site), Salamanders, poisson)"
sa <- glmer(count ~ spp + mined + (1 | site), Salamanders, poisson)
out$sal_fit <- list(model = sa_call, fixef = as.list(fixef(sa)),
                    theta = unname(getME(sa, "theta")),
                    logLik = as.numeric(logLik(sa)), deviance = deviance(sa),
                    AIC = AIC(sa), nobs = nobs(sa))

## one timed run first; repeat to 3 only if it is not too slow
s <- safe({
  tt1 <- system.time(ci1 <- confint(sa, method = "profile"))[["elapsed"]]
  times <- tt1
  if (tt1 < 120) for (i in 1:2)
    times <- c(times, system.time(confint(sa, method = "profile"))[["elapsed"]])
  list(value = ci1, seconds_median = median(times), seconds_runs = times)
})
out$sal_confint_profile <- entry(paste0("confint(s, method='profile'); s <- ", sa_call), s,
  function(v) c(ci_list(v$value),
                list(level = 0.95, seconds_median = v$seconds_median,
                     seconds_runs = v$seconds_runs,
                     timing = "system.time elapsed; median of 3 runs (1 run if the first took >= 120 s)")))
out$sal_confint_wald <- entry(paste0("confint(s, method='Wald'); s <- ", sa_call),
                              safe(confint(sa, method = "Wald")), ci_list)

out$sal_icc <- entry(paste0("performance::icc(s); s <- ", sa_call), safe(icc(sa)), icc_list)
out$sal_r2_nakagawa <- entry(paste0("performance::r2_nakagawa(s); s <- ", sa_call),
                             safe(r2_nakagawa(sa)), r2_list)
out$sal_get_variance <- entry(paste0("insight::get_variance(s); s <- ", sa_call),
                              safe(get_variance(sa)), var_list)

## ---------------------------------------------------------------------------
## 4. GLMs without random effects

pg <- glm(count ~ spp + mined, Salamanders, family = poisson)
out$sal_glm_poisson <- list(model = "glm(count ~ spp + mined, Salamanders, family=poisson)",
                            logLik = as.numeric(logLik(pg)), df = attr(logLik(pg), "df"),
                            coef = as.list(coef(pg)), deviance = deviance(pg))
gg <- glm(Reaction ~ Days, sl, family = gaussian)
out$sleep_glm_gaussian <- list(model = "glm(Reaction ~ Days, sl, family=gaussian)",
                               logLik = as.numeric(logLik(gg)), df = attr(logLik(gg), "df"),
                               coef = as.list(coef(gg)),
                               dispersion = summary(gg)$dispersion,
                               sigma_ml = sqrt(mean(residuals(gg)^2)),
                               note = "logLik uses the ML variance sigma_ml^2 = RSS/n")

## ---------------------------------------------------------------------------

out[["_provenance"]]$loadavg_at_end <- tryCatch(readLines("/proc/loadavg"),
                                                error = function(e) NA_character_)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null",
                  null = "null"),
           "refs.json")
cat("wrote refs.json\n")
