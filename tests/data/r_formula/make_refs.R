## Regenerates every file in tests/data/r_formula/.
## Run from the repository root:   Rscript tests/data/r_formula/make_refs.R
## Needs R 4, lme4 1.1-31, glmmTMB 1.1.5, jsonlite.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(jsonlite)
})
options(width = 80, warn = 1)

out_dir <- "tests/data/r_formula"
data_dir <- "/work/shared/reference/data"
if (!dir.exists(out_dir)) dir.create(out_dir, recursive = TRUE)
outp <- function(f) file.path(out_dir, f)

## ---------------------------------------------------------------------------
## data

rd <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")),
                              stringsAsFactors = FALSE)

cbpp <- rd("cbpp")
cbpp$herd <- factor(cbpp$herd)                     # integer codes -> levels 1..15 in numeric order
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))

sleepstudy <- rd("sleepstudy")
sleepstudy$Days <- as.integer(sleepstudy$Days)
sleepstudy$Subject <- factor(as.character(sleepstudy$Subject),
                             levels = sort(unique(as.character(sleepstudy$Subject))))

Owls <- rd("Owls")
Owls$Nest <- factor(Owls$Nest)
Owls$FoodTreatment <- factor(Owls$FoodTreatment, levels = c("Deprived", "Satiated"))
Owls$SexParent <- factor(Owls$SexParent, levels = c("Female", "Male"))

Salamanders <- rd("Salamanders")
Salamanders$site <- factor(Salamanders$site)
Salamanders$spp <- factor(Salamanders$spp,
                          levels = c("GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"))
Salamanders$mined <- factor(Salamanders$mined, levels = c("yes", "no"))

grouseticks <- rd("grouseticks")
grouseticks$BROOD <- factor(grouseticks$BROOD)
grouseticks$INDEX <- factor(grouseticks$INDEX)
grouseticks$LOCATION <- factor(grouseticks$LOCATION)
grouseticks$YEAR <- as.integer(grouseticks$YEAR)  # kept numeric (95, 96, 97)

## lme4's Arabidopsis, exported and re-read from the CSV
write.csv(lme4::Arabidopsis, outp("Arabidopsis.csv"), row.names = FALSE)
Arabidopsis <- read.csv(outp("Arabidopsis.csv"), stringsAsFactors = FALSE)
ara_levels_R <- list(
  reg = levels(lme4::Arabidopsis$reg),
  popu = levels(lme4::Arabidopsis$popu),
  gen = levels(factor(lme4::Arabidopsis$gen)),
  rack = levels(factor(lme4::Arabidopsis$rack)),
  nutrient = levels(factor(lme4::Arabidopsis$nutrient)),
  amd = levels(lme4::Arabidopsis$amd),
  status = levels(lme4::Arabidopsis$status))
for (v in names(ara_levels_R)) {
  Arabidopsis[[v]] <- factor(Arabidopsis[[v]], levels = ara_levels_R[[v]])
  stopifnot(!anyNA(Arabidopsis[[v]]))
}
stopifnot(all.equal(as.numeric(Arabidopsis$total.fruits),
                    as.numeric(lme4::Arabidopsis$total.fruits)))

## derived columns (the Python tests recompute them from these expressions)
sleepstudy$Dayf <- sleepstudy$Days + 0.5
sleepstudy$w <- 1 + (sleepstudy$Days %% 3) / 2
Salamanders$w <- 1 + (seq_len(nrow(Salamanders)) %% 2)
cbpp$wc <- 1 + (seq_len(nrow(cbpp)) %% 3)
Owls$wo <- 1 + (seq_len(nrow(Owls)) %% 2)

derived_columns <- list(
  list(dataset = "sleepstudy", column = "Dayf", expr = "Dayf = Days + 0.5"),
  list(dataset = "sleepstudy", column = "w", expr = "w = 1 + (Days %% 3) / 2"),
  list(dataset = "Salamanders", column = "w",
       expr = "w = 1 + (seq_len(nrow(Salamanders)) %% 2)  # row 1 -> 2, row 2 -> 1, ..."),
  list(dataset = "cbpp", column = "wc",
       expr = "wc = 1 + (seq_len(56) %% 3)  # rows 1,2,3 -> 2,3,1, ..."),
  list(dataset = "Owls", column = "wo",
       expr = "wo = 1 + (seq_len(nrow(Owls)) %% 2)  # row 1 -> 2, row 2 -> 1, ..."),
  list(dataset = "cbpp", column = "per", expr = "per = factor(period, ordered = TRUE)"),
  list(dataset = "Owls", column = "late", expr = "late = ArrivalTime > 24  # logical"),
  list(dataset = "Owls", column = "Nest2",
       expr = "Nest2 = as.character(Nest)  # character vector; only Owls[1:60, ]"))

lv <- function(d) {
  r <- list()
  for (v in names(d)) if (is.factor(d[[v]])) r[[v]] <- as.list(levels(d[[v]]))
  r
}
factor_levels <- list(cbpp = lv(cbpp), sleepstudy = lv(sleepstudy), Owls = lv(Owls),
                      Salamanders = lv(Salamanders),
                      grouseticks = lv(grouseticks[, c("LOCATION"), drop = FALSE]),
                      Arabidopsis = lv(Arabidopsis))
factor_levels$grouseticks$note <- paste(
  "BROOD and INDEX are factors too (levels = sorted integer codes);",
  "LOCATION levels are the integer codes in numeric order; YEAR is numeric")

## ---------------------------------------------------------------------------
## helpers

named <- function(x) { r <- as.list(unname(x)); names(r) <- names(x); r }

vc_rows <- function(df) {
  lapply(seq_len(nrow(df)), function(i)
    list(grp = df$grp[i], var1 = if (is.na(df$var1[i])) NULL else df$var1[i],
         var2 = if (is.na(df$var2[i])) NULL else df$var2[i],
         vcov = df$vcov[i], sdcor = df$sdcor[i]))
}

## evaluate code capturing warnings and messages
run_capture <- function(code) {
  warns <- character(0); msgs <- character(0)
  val <- withCallingHandlers(
    tryCatch(eval(parse(text = code), envir = globalenv()),
             error = function(e) structure(list(msg = conditionMessage(e)), class = "fit_error")),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") })
  list(value = val, warnings = warns, messages = msgs)
}

models <- list()

merMod_ref <- function(name, code, data_name, notes = NULL) {
  cat("==", name, "\n")
  rc <- run_capture(code)
  m <- rc$value
  if (inherits(m, "fit_error")) {
    cat("   FAILED:", m$msg, "\n")
    return(list(name = name, call = code, dataset = data_name, error = m$msg))
  }
  models[[name]] <<- m
  ll <- logLik(m)
  fe <- fixef(m)
  se <- sqrt(diag(as.matrix(vcov(m))))
  names(se) <- names(fe)
  conv <- m@optinfo$conv$lme4$messages
  r <- list(
    name = name, call = code, dataset = data_name,
    package = "lme4", version = as.character(packageVersion("lme4")),
    class = if (isGLMM(m)) "glmerMod" else "lmerMod",
    REML = isREML(m),
    logLik = as.numeric(ll), logLik_df = attr(ll, "df"),
    AIC = AIC(m), BIC = BIC(m),
    deviance = if (isREML(m)) NULL else deviance(m),
    fixef = named(fe), se = named(se),
    varcorr = vc_rows(as.data.frame(VarCorr(m))),
    theta = named(getME(m, "theta")),
    nobs = nobs(m),
    conv_messages = as.list(if (is.null(conv)) character(0) else conv),
    warnings = as.list(rc$warnings), messages = as.list(rc$messages),
    isSingular = isSingular(m))
  if (!isGLMM(m)) r$sigma <- sigma(m)
  if (isGLMM(m)) r$family <- list(family = family(m)$family, link = family(m)$link)
  if (isREML(m)) {
    r$REMLcrit <- REMLcrit(m)
    r$logLik_note <- "REML fit: logLik is the REML log-likelihood (= -REMLcrit/2)"
    r$logLik_ML_at_REML_estimates <- as.numeric(logLik(m, REML = FALSE))
  }
  if (!is.null(notes)) r$notes <- notes
  cat("   logLik", format(as.numeric(ll), digits = 12), " singular", isSingular(m),
      if (length(conv)) paste(" conv:", paste(conv, collapse = "; ")) else "",
      if (length(rc$warnings)) paste(" warn:", paste(rc$warnings, collapse = "; ")) else "",
      "\n")
  r
}

tmb_ref <- function(name, code, data_name, extra = NULL, notes = NULL) {
  cat("==", name, "\n")
  rc <- run_capture(code)
  m <- rc$value
  if (inherits(m, "fit_error")) {
    cat("   FAILED:", m$msg, "\n")
    return(list(name = name, call = code, dataset = data_name, error = m$msg))
  }
  models[[name]] <<- m
  ll <- logLik(m)
  fe <- fixef(m)$cond
  se <- sqrt(diag(vcov(m)$cond))
  names(se) <- names(fe)
  vc <- VarCorr(m)$cond
  re_sd <- lapply(vc, function(v) named(attr(v, "stddev")))
  r <- list(
    name = name, call = code, dataset = data_name,
    package = "glmmTMB", version = as.character(packageVersion("glmmTMB")),
    logLik = as.numeric(ll), logLik_df = attr(ll, "df"),
    AIC = AIC(m), BIC = BIC(m),
    fixef = named(fe), se = named(se),
    random_sd = re_sd,
    nobs = nobs(m),
    family = list(family = family(m)$family, link = family(m)$link),
    sigma = sigma(m),
    pdHess = m$sdr$pdHess,
    convergence = m$fit$convergence, optimizer_message = m$fit$message,
    warnings = as.list(rc$warnings), messages = as.list(rc$messages))
  if (!is.null(extra)) r <- c(r, extra(m))
  if (!is.null(notes)) r$notes <- notes
  cat("   logLik", format(as.numeric(ll), digits = 12),
      if (length(rc$warnings)) paste(" warn:", paste(rc$warnings, collapse = "; ")) else "",
      "\n")
  r
}

## ---------------------------------------------------------------------------
## model fits

cases <- list()
add <- function(r) cases[[r$name]] <<- r

add(merMod_ref("sleep_I2_int",
  "lmer(Reaction ~ Days + I(Days^2) + (1 | Subject), data = sleepstudy, REML = FALSE)",
  "sleepstudy", notes = "Days is integer"))
add(merMod_ref("sleep_I2_float",
  "lmer(Reaction ~ Dayf + I(Dayf^2) + (1 | Subject), data = sleepstudy, REML = FALSE)",
  "sleepstudy", notes = "Dayf = Days + 0.5 (double)"))
add(merMod_ref("sleep_scale",
  "lmer(Reaction ~ scale(Days) + (1 | Subject), data = sleepstudy, REML = FALSE)",
  "sleepstudy"))
add(merMod_ref("sleep_poly",
  "lmer(Reaction ~ poly(Days, 2) + (1 | Subject), data = sleepstudy, REML = FALSE)",
  "sleepstudy"))
add(merMod_ref("sleep_poly_raw",
  "lmer(Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject), data = sleepstudy, REML = FALSE)",
  "sleepstudy"))
add(merMod_ref("arabidopsis_dotted",
  "glmer(total.fruits ~ nutrient + rack + (1 | popu), data = Arabidopsis, family = poisson)",
  "Arabidopsis", notes = "Arabidopsis read from Arabidopsis.csv; popu, gen, rack, nutrient, amd, status, reg factors (levels in refs.json factor_levels)"))
add(merMod_ref("grouse_factor",
  "glmer(TICKS ~ factor(YEAR) + cHEIGHT + (1 | LOCATION), data = grouseticks, family = poisson)",
  "grouseticks", notes = "YEAR numeric (95, 96, 97)"))
add(merMod_ref("cbpp_cbind",
  "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial)",
  "cbpp"))
add(merMod_ref("cbpp_prop_weights",
  "glmer(incidence/size ~ period + (1 | herd), data = cbpp, weights = size, family = binomial)",
  "cbpp"))
add(merMod_ref("sleep_weights_reml",
  "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, weights = w, REML = TRUE)",
  "sleepstudy", notes = "w = 1 + (Days %% 3) / 2"))
add(merMod_ref("sleep_weights_ml",
  "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, weights = w, REML = FALSE)",
  "sleepstudy", notes = "w = 1 + (Days %% 3) / 2"))
add(merMod_ref("sleep_weights_ri_ml",
  "lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy, weights = w, REML = FALSE)",
  "sleepstudy", notes = "w = 1 + (Days %% 3) / 2"))
sal <- merMod_ref("salamanders_weights",
  "glmer(count ~ spp + mined + (1 | site), data = Salamanders, family = poisson, weights = w)",
  "Salamanders", notes = "w = 1 + (seq_len(nrow(Salamanders)) %% 2)")
sal_tmb <- tmb_ref("salamanders_weights_glmmTMB",
  "glmmTMB(count ~ spp + mined + (1 | site), data = Salamanders, family = poisson, weights = w)",
  "Salamanders", notes = "w = 1 + (seq_len(nrow(Salamanders)) %% 2)")
sal$glmmTMB_logLik <- sal_tmb$logLik
sal$glmmTMB_call <- sal_tmb$call
sal$glmmTMB_fixef <- sal_tmb$fixef
add(sal)
add(sal_tmb)
add(merMod_ref("cbpp_sum",
  "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial, contrasts = list(period = \"contr.sum\"))",
  "cbpp"))
add(merMod_ref("cbpp_helmert",
  "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial, contrasts = list(period = \"contr.helmert\"))",
  "cbpp"))
add(merMod_ref("cbpp_polyc",
  "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial, contrasts = list(period = \"contr.poly\"))",
  "cbpp"))
add(merMod_ref("owls_cross2",
  "glmer(SiblingNegotiation ~ (FoodTreatment + SexParent + ArrivalTime)^2 + offset(logBroodSize) + (1 | Nest), data = Owls, family = poisson)",
  "Owls"))
add(merMod_ref("owls_offset",
  "glmer(SiblingNegotiation ~ FoodTreatment * SexParent + offset(logBroodSize) + (1 | Nest), data = Owls, family = poisson)",
  "Owls"))
add(merMod_ref("sleep_reml",
  "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy)",
  "sleepstudy", notes = "REML (default)"))
add(merMod_ref("cbpp_weights_cbind",
  "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial, weights = wc)",
  "cbpp", notes = "wc = 1 + (seq_len(56) %% 3)"))
## glmmTMB's log-likelihood for every glmer case (its optimizer stops closer to the
## optimum than glmer's; a fitter should reach the higher of the two)
for (nm in names(cases)) {
  cl <- cases[[nm]]$call
  if (startsWith(cl, "glmer(")) {
    m_tmb <- eval(str2lang(sub("^glmer\\(", "glmmTMB(", cl)))
    cases[[nm]]$glmmTMB_logLik <- as.numeric(logLik(m_tmb))
  }
}
add(tmb_ref("owls_gamma_weights",
  "glmmTMB(ArrivalTime ~ FoodTreatment + (1 | Nest), family = Gamma(link = \"log\"), weights = wo, data = Owls)",
  "Owls",
  extra = function(m) list(
    random_intercept_sd = unname(attr(VarCorr(m)$cond$Nest, "stddev")[1]),
    dispersion = sigma(m), shape = 1 / sigma(m)^2),
  notes = "wo = 1 + (seq_len(nrow(Owls)) %% 2); sigma(m) for Gamma is the dispersion (CV), shape = 1/sigma^2"))
add(tmb_ref("owls_nb_weights",
  "glmmTMB(SiblingNegotiation ~ FoodTreatment + offset(logBroodSize) + (1 | Nest), family = nbinom2, weights = wo, data = Owls)",
  "Owls",
  extra = function(m) list(
    random_intercept_sd = unname(attr(VarCorr(m)$cond$Nest, "stddev")[1]),
    theta = sigma(m)),
  notes = "wo = 1 + (seq_len(nrow(Owls)) %% 2); theta = sigma(m) for nbinom2"))

## ---------------------------------------------------------------------------
## printed summaries

summary_files <- list()
for (nm in c("cbpp_cbind", "sleep_reml", "owls_offset", "cbpp_prop_weights", "cbpp_sum")) {
  f <- paste0("summary_", nm, ".txt")
  txt <- capture.output(print(summary(models[[nm]])))
  writeLines(txt, outp(f))
  summary_files[[nm]] <- f
}

## ---------------------------------------------------------------------------
## model matrices

cbpp$per <- factor(cbpp$period, ordered = TRUE)
Owls$late <- Owls$ArrivalTime > 24
Owls60 <- Owls[1:60, ]
Owls60$Nest2 <- as.character(Owls60$Nest)
Owls$Nest2 <- as.character(Owls$Nest)

mm_specs <- list(
  list("mm_cbpp_period", "cbpp", "~ period", NULL),
  list("mm_cbpp_sum", "cbpp", "~ period", list(period = "contr.sum")),
  list("mm_cbpp_helmert", "cbpp", "~ period", list(period = "contr.helmert")),
  list("mm_cbpp_polyc", "cbpp", "~ period", list(period = "contr.poly")),
  list("mm_cbpp_ordered", "cbpp", "~ per", NULL),
  list("mm_sleep_transforms", "sleepstudy",
       "~ Days + I(Days^2) + scale(Days) + poly(Days, 3) + log(Days + 1) + sqrt(Days) + exp(Days/10) + abs(Days - 4)",
       NULL),
  list("mm_sleep_polyraw", "sleepstudy", "~ poly(Days, 2, raw = TRUE)", NULL),
  list("mm_sleep_center", "sleepstudy", "~ scale(Days, scale = FALSE)", NULL),
  list("mm_owls_cross2", "Owls", "~ (FoodTreatment + SexParent + ArrivalTime)^2", NULL),
  list("mm_owls_interaction_only", "Owls", "~ FoodTreatment:SexParent", NULL),
  list("mm_owls_noint", "Owls", "~ 0 + FoodTreatment + SexParent", NULL),
  list("mm_owls_star_minus", "Owls", "~ FoodTreatment * SexParent - SexParent", NULL),
  list("mm_owls_nest_op", "Owls", "~ FoodTreatment / ArrivalTime", NULL),
  list("mm_owls_num_fac", "Owls", "~ ArrivalTime:FoodTreatment", NULL),
  list("mm_owls_logical", "Owls",
       "~ I(ArrivalTime > 24) + as.numeric(FoodTreatment == \"Satiated\")", NULL),
  list("mm_owls_logical_col", "Owls", "~ late", NULL),
  list("mm_sal_star", "Salamanders", "~ spp * mined", NULL),
  list("mm_grouse_factor", "grouseticks", "~ factor(YEAR) + cHEIGHT + factor(YEAR):cHEIGHT", NULL),
  list("mm_sleep_minus1", "sleepstudy", "~ Days - 1", NULL),
  list("mm_owls_3way", "Owls", "~ FoodTreatment * SexParent * ArrivalTime", NULL),
  list("mm_owls_pow3", "Owls",
       "~ (FoodTreatment + SexParent + ArrivalTime)^3 - FoodTreatment:SexParent:ArrivalTime", NULL),
  list("mm_owls_string", "Owls60", "~ Nest2", NULL),
  ## review cases: R's coding rule (the term without a factor within an earlier term),
  ## a factor compared with a number, as.integer, relevel by position, factor() codes,
  ## R 4's round, integer literals in names
  list("mm_owls_subset_rule", "Owls", "~ ArrivalTime:SexParent + ArrivalTime:FoodTreatment", NULL),
  list("mm_sal_cross_sum", "Salamanders", "~ (spp + mined):(cover + DOP)", NULL),
  list("mm_owls_minus_margins", "Owls", "~ FoodTreatment * SexParent * late - FoodTreatment - late:SexParent", NULL),
  list("mm_cbpp_factor_eq", "cbpp", "~ I(period == 1)", NULL),
  list("mm_grouse_asint", "grouseticks", "~ as.integer(cHEIGHT)", NULL),
  list("mm_sleep_relevel", "sleepstudy", "~ relevel(factor(Days), ref = 3)", NULL),
  list("mm_owls_asnum_factor", "Owls", "~ as.numeric(factor(Nest2))", NULL),
  list("mm_sleep_round", "sleepstudy", "~ round(Days * 0.15, 1) + round(Days * 0.35, 1)", NULL),
  list("mm_sleep_intlit", "sleepstudy", "~ I(Days^2L)", NULL))

mm_notes <- list(
  mm_cbpp_ordered = "per = factor(period, ordered = TRUE): default contr.poly for ordered factors",
  mm_owls_logical_col = "late = ArrivalTime > 24 (logical column)",
  mm_owls_string = "Owls[1:60, ] only; Nest2 = as.character(Nest), a character vector (model.matrix makes it a factor with sorted levels)",
  mm_grouse_factor = "YEAR numeric (95, 96, 97)")

model_matrices <- list()
for (s in mm_specs) {
  nm <- s[[1]]; dname <- s[[2]]; fstr <- s[[3]]; ctr <- s[[4]]
  d <- get(dname)
  mm <- if (is.null(ctr)) model.matrix(as.formula(fstr), data = d)
        else model.matrix(as.formula(fstr), data = d, contrasts.arg = ctr)
  f <- paste0(nm, ".csv")
  mm_out <- unclass(mm); attr(mm_out, "assign") <- NULL; attr(mm_out, "contrasts") <- NULL
  rownames(mm_out) <- NULL
  write.table(mm_out, outp(f), sep = ",", dec = ".", qmethod = "double",
              row.names = FALSE, col.names = colnames(mm), quote = TRUE)
  ## check the header survived
  back <- read.csv(outp(f), check.names = FALSE)
  stopifnot(identical(colnames(back), colnames(mm)), nrow(back) == nrow(mm))
  ent <- list(dataset = if (dname == "Owls60") "Owls" else dname,
              formula = fstr, file = f,
              contrasts = if (is.null(ctr)) NULL else ctr,
              colnames = as.list(colnames(mm)),
              nrow = nrow(mm),
              assign = as.list(attr(mm, "assign")))
  if (!is.null(mm_notes[[nm]])) ent$notes <- mm_notes[[nm]]
  if (nm == "mm_owls_string") ent$rows <- "first 60 rows of Owls (Owls[1:60, ])"
  model_matrices[[nm]] <- ent
}

## ---------------------------------------------------------------------------
## JSON

refs <- list(
  generated_by = "tests/data/r_formula/make_refs.R",
  R_version = R.version.string,
  package_versions = list(lme4 = as.character(packageVersion("lme4")),
                          glmmTMB = as.character(packageVersion("glmmTMB")),
                          Matrix = as.character(packageVersion("Matrix")),
                          jsonlite = as.character(packageVersion("jsonlite"))),
  data_dir = data_dir,
  data_prep = list(
    cbpp = "herd = factor(herd); period = factor(period, levels = c('1','2','3','4'))",
    sleepstudy = "Days integer; Subject = factor(as.character(Subject)) (levels sorted as character)",
    Owls = "Nest factor (sorted); FoodTreatment levels Deprived<Satiated; SexParent Female<Male",
    Salamanders = "site factor (sorted, unordered); spp levels GP,PR,DM,EC-A,EC-L,DES-L,DF; mined levels yes,no",
    grouseticks = "BROOD, INDEX, LOCATION factors; YEAR numeric integer 95/96/97",
    Arabidopsis = "write.csv(lme4::Arabidopsis, 'tests/data/r_formula/Arabidopsis.csv', row.names = FALSE), re-read; reg, popu, gen, rack, nutrient, amd, status factors with R's level order"),
  derived_columns = derived_columns,
  factor_levels = factor_levels,
  cases = cases,
  summaries = summary_files,
  model_matrices = model_matrices)

write_json(refs, outp("refs.json"), auto_unbox = TRUE, digits = NA, pretty = TRUE,
           null = "null", na = "null")
cat("wrote", outp("refs.json"), "\n")
