## Regenerates tests/data/r_separation/refs.json: separation of the binomial models that
## tests/test_separation.py checks, by two independent routes in R.
##
## Run from the repository root:  Rscript tests/data/r_separation/make_refs.R
##
## 1. The "primal" linear program of Konis (2007) as R's safeBinaryRegression::separator
##    and detectseparation::detect_separation (purpose "find") solve it: maximize
##    -colSums(x.bar) %*% beta subject to x.bar %*% beta <= 0 and -1 <= beta <= 1, with
##    x.bar = -sign(y - 0.5) * x; a coefficient is infinite where |beta| > 1e-3
##    (detectseparation's tolerance), with the sign of beta. detectseparation itself is
##    not packaged for this R (Debian bookworm has brglm2 0.9, whose detect_separation
##    only says it moved), so the program is written out here and solved by lpSolve
##    (beta = u - v, 0 <= u, v <= 1) instead of ROI. A successes/trials row gives a
##    success row (y > 0) and a failure row (y < n), as detectseparation expands them.
## 2. R's glm with maxit = 100: the separated coefficients run off to huge values (and
##    glm warns "fitted probabilities numerically 0 or 1 occurred").
## The data are deterministic functions of the row number (no RNG), rebuilt identically
## in the test, and cbpp from glmm_jax/datasets/data/cbpp.csv.
## Needs R 4.2 with lpSolve and jsonlite.

suppressPackageStartupMessages({ library(lpSolve); library(jsonlite) })

separator_find <- function(x, y) {
  p <- ncol(x)
  x.bar <- -sign(y - 0.5) * x
  obj <- -colSums(x.bar)
  A <- rbind(cbind(x.bar, -x.bar), diag(2 * p))
  res <- lp("max", c(obj, -obj), A, rep("<=", nrow(A)), c(rep(0, nrow(x)), rep(1, 2 * p)))
  stopifnot(res$status == 0)
  beta <- res$solution[seq_len(p)] - res$solution[p + seq_len(p)]
  names(beta) <- colnames(x)
  inf <- ifelse(abs(beta) > 1e-3, sign(beta) * Inf, 0)
  list(beta = as.list(beta), infinite = as.list(ifelse(is.finite(inf), 0, sign(inf))))
}

expand <- function(X, s, n) {  # successes/trials rows -> 0/1 rows
  succ <- s > 0; fail <- s < n
  list(x = rbind(X[succ, , drop = FALSE], X[fail, , drop = FALSE]),
       y = c(rep(1, sum(succ)), rep(0, sum(fail))))
}

one <- function(formula, data, cbind = FALSE) {
  fit <- suppressWarnings(glm(formula, binomial, data, control = list(maxit = 100)))
  X <- model.matrix(fit)
  if (cbind) {
    yy <- model.response(model.frame(fit))
    e <- expand(X, yy[, 1], rowSums(yy))
  } else {
    e <- list(x = X, y = model.response(model.frame(fit)))
  }
  out <- separator_find(e$x, e$y)
  out$glm_coef <- as.list(coef(fit))
  out
}

i <- 1:40
A <- data.frame(x = 2 * sin(1.7 * (1:30))); A$y <- as.integer(A$x > 0.3)
B <- data.frame(x1 = 1.5 * sin(0.9 * i), x2 = cos(1.3 * i))
B$y <- as.integer(B$x1 + B$x2 > 0.2)
j <- 1:36
C <- data.frame(f = c("a", "b", "c")[(j - 1) %% 3 + 1], x = cos(0.7 * j))
C$y <- as.integer(sin(2.3 * j) > 0); C$y[C$f == "b"] <- 0
cbpp <- read.csv(file.path("glmm_jax", "datasets", "data", "cbpp.csv"))
cbpp$period <- factor(as.character(cbpp$period), levels = c("1", "2", "3", "4"))
cbpp$x <- as.numeric(cbpp$incidence > 0)

refs <- list(
  complete_x = one(y ~ x, A),
  combination = one(y ~ x1 + x2, B),
  combination_x1 = one(y ~ x1, B),
  combination_x2 = one(y ~ x2, B),
  factor_level = one(y ~ f + x, C),
  cbpp_x = one(cbind(incidence, size - incidence) ~ x, cbpp, cbind = TRUE),
  cbpp_period = one(cbind(incidence, size - incidence) ~ period, cbpp, cbind = TRUE),
  `_provenance` = list(R = R.version.string,
                       lpSolve = as.character(packageVersion("lpSolve")),
                       date = as.character(Sys.Date()),
                       script = "tests/data/r_separation/make_refs.R")
)
writeLines(toJSON(refs, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "data", "r_separation", "refs.json"))
