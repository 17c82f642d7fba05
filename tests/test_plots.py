"""Model-checking plots (glmm_jax.plots): each draws headless (Agg), holds one point or
interval per thing it shows, and plots the numbers it is drawn from; the per-cluster,
Pearson, conditional and marginal values are recomputed here by brute force from the
data and the estimates."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot (the plots never do)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import CASES  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import integrate, special, stats  # noqa: E402

import glmm_jax as gj  # noqa: E402

Z95 = stats.norm.ppf(0.975)


@pytest.fixture(scope="module")
def cbpp_res(ref_fit):
    return ref_fit("cbpp_laplace")


@pytest.fixture(scope="module")
def sleep_res(ref_fit):
    return ref_fit("sleepstudy_reml")


def _render(fig) -> Figure:
    """Draw the figure to PNG (headless): the layout and every artist must render."""
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"
    return fig


def _labelled(ax, label):
    out = [a for a in [*ax.lines, *ax.collections] if a.get_label() == label]
    assert len(out) == 1, [a.get_label() for a in [*ax.lines, *ax.collections]]
    return out[0]


def test_import_does_not_load_matplotlib_and_missing_matplotlib_is_clear():
    code = (
        "import sys\n"
        "import glmm_jax as gj\n"
        "assert 'matplotlib' not in sys.modules, 'import glmm_jax imported matplotlib'\n"
        "sys.modules['matplotlib'] = None  # as if not installed\n"
        "try:\n"
        "    gj.plots.qq([0.2, 0.5, 0.7])\n"
        "except ImportError as e:\n"
        "    assert 'pip install \"glmm_jax[plot]\"' in str(e), str(e)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n")
    root = str(Path(gj.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


# ---- caterpillar -----------------------------------------------------------------------
def test_caterpillar_cbpp_points_and_intervals(cbpp_res, reference):
    fig = _render(gj.plots.caterpillar(cbpp_res))
    (ax,) = fig.axes
    re = gj.random_effects(cbpp_res)["herd"].sort_values("(Intercept)")
    pts = _labelled(ax, "mode")
    segs = _labelled(ax, "95% interval")
    assert isinstance(segs, LineCollection)
    assert len(pts.get_xdata()) == 15 and len(segs.get_segments()) == 15
    np.testing.assert_allclose(pts.get_xdata(), re["(Intercept)"], rtol=0, atol=1e-14)
    np.testing.assert_array_equal(pts.get_ydata(), np.arange(15))
    ends = np.array([[s[0, 0], s[1, 0]] for s in segs.get_segments()])
    sd = re["condsd (Intercept)"].to_numpy()
    np.testing.assert_allclose(ends[:, 0], re["(Intercept)"] - Z95 * sd, atol=1e-12)
    np.testing.assert_allclose(ends[:, 1], re["(Intercept)"] + Z95 * sd, atol=1e-12)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(v) for v in re.index]
    # herds 1-5 against lme4's ranef (tests/data/reference_fits.json; lme4 stops at a
    # slightly different optimum: measured max difference 3.9e-4)
    (head,) = reference["cbpp_laplace"]["lme4"]["ranef_head"].values()
    first = {str(v): x for v, x in zip(re.index, pts.get_xdata(), strict=True)}
    np.testing.assert_allclose([first[str(h)] for h in range(1, 6)],
                               np.asarray(head, dtype=float)[:, 0], atol=2e-3)


def test_caterpillar_median_uses_posterior_quantiles(cbpp_res):
    fig = _render(gj.plots.caterpillar(cbpp_res, kind="median", level=0.9))
    ax = fig.axes[0]
    re = gj.random_effects(cbpp_res, kind="median", level=0.9)["herd"]
    re = re.sort_values("(Intercept)")
    segs = _labelled(ax, "90% interval").get_segments()
    np.testing.assert_allclose([s[0, 0] for s in segs], re["lower (Intercept)"], atol=1e-12)
    np.testing.assert_allclose([s[1, 0] for s in segs], re["upper (Intercept)"], atol=1e-12)


def test_caterpillar_random_slopes_two_panels(sleep_res):
    fig = _render(gj.plots.caterpillar(sleep_res))
    assert len(fig.axes) == 2
    re = gj.random_effects(sleep_res)["Subject"].sort_values("(Intercept)")
    for ax, name in zip(fig.axes, ["(Intercept)", "Days"], strict=True):
        pts = _labelled(ax, "mode")
        assert len(pts.get_xdata()) == 18
        assert len(_labelled(ax, "95% interval").get_segments()) == 18
        # one order in both panels (by the intercept, as lme4's dotplot)
        np.testing.assert_allclose(pts.get_xdata(), re[name], atol=1e-12)
        assert ax.get_xlabel() == name


def test_caterpillar_bad_term(cbpp_res):
    with pytest.raises(gj.GLMMInputError, match="'pen'"):
        gj.plots.caterpillar(cbpp_res, term="pen")


# ---- QQ ------------------------------------------------------------------------------------
def test_qq_of_an_array():
    rng = np.random.default_rng(3)
    u = rng.uniform(size=40)
    ax = _render(gj.plots.qq(u)).axes[0]
    pts = _labelled(ax, "residuals")
    assert len(pts.get_xdata()) == 40
    np.testing.assert_allclose(pts.get_xdata(), (np.arange(1, 41) - 0.5) / 40, atol=1e-15)
    np.testing.assert_array_equal(pts.get_ydata(), np.sort(u))
    assert f"{stats.kstest(u, 'uniform').pvalue:.3g}" in ax.get_title(loc="left")
    small = _labelled(gj.plots.qq(u[:8]).axes[0], "residuals")  # R's ppoints, n <= 10
    np.testing.assert_allclose(small.get_xdata(), (np.arange(1, 9) - 3 / 8) / (8 + 1 - 3 / 4))


@pytest.mark.parametrize("bad", [[0.2, 1.5], [0.3, np.nan], [], "abc"])
def test_qq_bad_residuals(bad):
    with pytest.raises(gj.GLMMInputError, match="qq"):
        gj.plots.qq(bad)


def test_qq_of_a_fit(cbpp_res):
    pytest.importorskip("glmm_jax.dharma")
    u = gj.quantile_residuals(cbpp_res, nsim=100, seed=4)
    pts = _labelled(_render(gj.plots.qq(cbpp_res, nsim=100, seed=4)).axes[0], "residuals")
    assert len(pts.get_ydata()) == 56
    np.testing.assert_array_equal(pts.get_ydata(), np.sort(np.asarray(u)))


# ---- residuals vs fitted -------------------------------------------------------------------
def test_residuals_vs_fitted_cbpp(cbpp_res, cbpp):
    ax = _render(gj.plots.residuals_vs_fitted(cbpp_res, bins=5)).axes[0]
    pts = _labelled(ax, "rows")
    assert isinstance(pts, PathCollection)
    x, y = pts.get_offsets().T
    assert len(x) == 56
    # brute force: binomial Pearson residuals of the proportions at the fitted means
    mu = cbpp_res.fitted().to_numpy()
    p, n = (cbpp["incidence"] / cbpp["size"]).to_numpy(), cbpp["size"].to_numpy()
    np.testing.assert_allclose(x, mu, atol=1e-14)
    np.testing.assert_allclose(y, (p - mu) / np.sqrt(mu * (1 - mu) / n), atol=1e-10)
    # binned means: 56 rows sorted by fitted value in 5 groups of 12, 11, 11, 11, 11
    order = np.argsort(mu, kind="stable")
    stops = np.cumsum([0, 12, 11, 11, 11, 11])
    line = _labelled(ax, "binned means (5 bins)")
    for k in range(5):
        idx = order[stops[k]:stops[k + 1]]
        assert line.get_xdata()[k] == pytest.approx(mu[idx].mean(), abs=1e-14)
        assert line.get_ydata()[k] == pytest.approx(y[idx].mean(), abs=1e-12)


def test_residuals_vs_fitted_into_an_axes_and_bad_input(sleep_res):
    fig = Figure()
    ax = fig.subplots()
    out = gj.plots.residuals_vs_fitted(sleep_res, type="response", ax=ax)
    assert out is fig and len(_labelled(ax, "rows").get_offsets()) == 180
    assert ax.get_ylabel() == "response residual"
    with pytest.raises(gj.GLMMInputError, match="type"):
        gj.plots.residuals_vs_fitted(sleep_res, type="studentized")
    with pytest.raises(gj.GLMMInputError, match="bins"):
        gj.plots.residuals_vs_fitted(sleep_res, bins=0)
    with pytest.raises(gj.GLMMInputError, match="ax="):
        gj.plots.caterpillar(sleep_res, ax=ax)  # two panels cannot go into one Axes


# ---- shrinkage ---------------------------------------------------------------------------
def test_shrinkage_cbpp(cbpp_res, cbpp):
    ax = _render(gj.plots.shrinkage(cbpp_res)).axes[0]
    sh = gj.shrinkage(cbpp_res)
    pts = _labelled(ax, "clusters")
    assert len(pts.get_offsets()) == 15
    np.testing.assert_allclose(pts.get_offsets(), sh[["own_estimate", "mode"]], atol=1e-14)
    # marker area grows with the herd's total trials (from the data)
    trials = cbpp.groupby("herd")["size"].sum().reindex(sh.index.astype(cbpp["herd"].dtype))
    assert np.all(np.diff(pts.get_sizes()[np.argsort(trials.to_numpy())]) >= 0)


def test_shrinkage_leaves_out_infinite_own_estimates(cbpp_res, cbpp):
    df = cbpp.copy()
    df.loc[df["herd"].astype(str) == "1", "incidence"] = 0  # herd 1: no events
    res = gj.fit(CASES["cbpp_laplace"].formula, df, family="binomial")
    sh = gj.shrinkage(res)
    assert np.isnan(sh.loc[sh.index.astype(str) == "1", "own_estimate"]).all()
    ax = _render(gj.plots.shrinkage(res)).axes[0]
    label = "clusters (1 without a finite own estimate not shown)"
    assert len(_labelled(ax, label).get_offsets()) == 14


def test_shrinkage_random_slopes_and_bad_term(sleep_res):
    fig = _render(gj.plots.shrinkage(sleep_res))
    assert len(fig.axes) == 2
    sh = gj.shrinkage(sleep_res)
    for ax, name in zip(fig.axes, ["(Intercept)", "Days"], strict=True):
        np.testing.assert_allclose(_labelled(ax, "clusters").get_offsets(),
                                   sh[[f"own_estimate {name}", f"mode {name}"]], atol=1e-12)
    with pytest.raises(gj.GLMMInputError, match="'Sbj'"):
        gj.plots.shrinkage(sleep_res, term="Sbj")


# ---- observed vs fitted --------------------------------------------------------------------
def test_observed_vs_fitted_cbpp(cbpp_res, cbpp):
    ax = _render(gj.plots.observed_vs_fitted(cbpp_res)).axes[0]
    pts = _labelled(ax, "levels of herd")
    fit, obs = pts.get_offsets().T
    assert len(obs) == 15
    d = cbpp.assign(mu_n=cbpp["size"] * cbpp_res.fitted().to_numpy())
    g = d.groupby("herd", sort=False).sum(numeric_only=True)
    levels = [str(v) for v in cbpp_res.terms[0].levels]
    g = g.set_axis(g.index.astype(str)).loc[levels]
    np.testing.assert_allclose(obs, g["incidence"] / g["size"], atol=1e-14)
    np.testing.assert_allclose(fit, g["mu_n"] / g["size"], atol=1e-14)


def test_observed_vs_fitted_gaussian_and_bad_group(sleep_res):
    df = CASES["sleepstudy_reml"].data()
    pts = _labelled(gj.plots.observed_vs_fitted(sleep_res).axes[0], "levels of Subject")
    fit, obs = pts.get_offsets().T
    means = df.groupby("Subject")["Reaction"].mean()
    means = means.set_axis(means.index.astype(str)).loc[
        [str(v) for v in sleep_res.terms[0].levels]]
    np.testing.assert_allclose(obs, means, atol=1e-10)
    # brute force: each subject's mean of b0 + b1 Days + its modes (a0 + a1 Days)
    b, re = sleep_res.fixef, sleep_res.ranef["Subject"]
    re = re.set_axis(re.index.astype(str))
    day = df.groupby("Subject")["Days"].mean()
    day = day.set_axis(day.index.astype(str)).loc[re.index]
    np.testing.assert_allclose(fit, b["(Intercept)"] + re["(Intercept)"]
                               + (b["Days"] + re["Days"]) * day, atol=1e-9)
    with pytest.raises(gj.GLMMInputError, match="'subject'"):
        gj.plots.observed_vs_fitted(sleep_res, group="subject")


# ---- profile -----------------------------------------------------------------------------------
def test_profile_panels_and_zeta_points(cbpp_res):
    fig = _render(gj.plots.profile(cbpp_res))
    names = ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3", "period4"]
    assert [ax.get_xlabel() for ax in fig.axes] == names
    ci = cbpp_res.conf_int("profile")
    model = cbpp_res.model
    for ax, name in zip(fig.axes, names, strict=True):
        line = [ln for ln in ax.lines if len(ln.get_xdata()) > 2]
        assert len(line) == 1
        v, z = np.asarray(line[0].get_xdata()), np.asarray(line[0].get_ydata())
        assert np.all(np.diff(v) > 0) and np.all(np.diff(z) > 0)  # zeta increases
        assert v[z == 0.0] == pytest.approx(ci.loc[name, "estimate"], abs=1e-8)
        # the interval's ends are points of the curve at zeta = -+z
        for end, target in (("lower", -Z95), ("upper", Z95)):
            k = np.argmin(np.abs(z - target))
            assert z[k] == pytest.approx(target, abs=1e-5)
            assert v[k] == pytest.approx(ci.loc[name, end], abs=1e-12)
        hlines = sorted(ln.get_ydata()[0] for ln in ax.lines if len(ln.get_xdata()) == 2)
        assert hlines == pytest.approx([-Z95, Z95])
    # brute force: one zeta point of a fixed effect from a refit holding it fixed
    ax = fig.axes[2]
    v, z = ax.lines[-1].get_xdata(), ax.lines[-1].get_ydata()
    k = int(np.argmax(z > 0))  # the first point above the estimate
    held = model.fit(fixed={"period2": float(v[k])})
    zeta = np.sqrt(2 * (cbpp_res.loglik - held.loglik))
    assert z[k] == pytest.approx(zeta, abs=1e-5)


def test_profile_subset_and_bad_parameter(cbpp_res):
    fig = _render(gj.plots.profile(cbpp_res, "period4"))
    assert [ax.get_xlabel() for ax in fig.axes] == ["period4"]
    with pytest.raises(gj.GLMMInputError, match="'period9'"):
        gj.plots.profile(cbpp_res, ["period2", "period9"])


# ---- conditional vs marginal effects ------------------------------------------------------
def test_effects_logit_conditional_and_marginal(ref_fit):
    res = ref_fit("toenail_laplace")  # y ~ treatment * visit + (1 | patientID)
    df = CASES["toenail_laplace"].data()
    ax = _render(gj.plots.effects(res, "visit", df, n=15)).axes[0]
    cond = _labelled(ax, "conditional (b = 0)")
    marg = _labelled(ax, "marginal (population-averaged)")
    x = np.linspace(df["visit"].min(), df["visit"].max(), 15)
    np.testing.assert_allclose(cond.get_xdata(), x, atol=1e-14)
    assert len(marg.get_xdata()) == 15
    # at the reference treatment ("itraconazole", the first level): eta = b0 + b_visit x
    b = res.fixef
    eta = b["(Intercept)"] + b["visit"] * x
    np.testing.assert_allclose(cond.get_ydata(), special.expit(eta), atol=1e-12)
    # marginal: E[expit(eta + sigma u)], u ~ N(0, 1), by adaptive quadrature (QUADPACK);
    # the 100-node Gauss-Hermite rule of predict(marginal=True) is within 2e-6 of it at
    # this large sigma (4.76)
    sigma = float(res.varcorr["sd"].iloc[0])
    brute = [integrate.quad(lambda u, e=e: special.expit(e + sigma * u) * stats.norm.pdf(u),
                            -np.inf, np.inf, epsabs=1e-13)[0] for e in eta]
    np.testing.assert_allclose(marg.get_ydata(), brute, atol=5e-6)
    assert np.all(np.abs(np.asarray(marg.get_ydata()) - 0.5)
                  < np.abs(np.asarray(cond.get_ydata()) - 0.5))  # attenuated towards 1/2
    assert ax.get_title(loc="left") == "treatment = itraconazole"  # only the covariates
    # held at a chosen treatment
    ax2 = gj.plots.effects(res, "visit", df, n=5, at={"treatment": "terbinafine"}).axes[0]
    eta2 = (b["(Intercept)"] + b["treatmentterbinafine"]
            + (b["visit"] + b["treatmentterbinafine:visit"]) * np.linspace(1, 7, 5))
    np.testing.assert_allclose(_labelled(ax2, "conditional (b = 0)").get_ydata(),
                               special.expit(eta2), atol=1e-12)


def test_effects_identity_link_curves_coincide(sleep_res):
    df = CASES["sleepstudy_reml"].data()
    ax = gj.plots.effects(sleep_res, "Days", df, n=10).axes[0]
    cond, marg = (_labelled(ax, lab).get_ydata() for lab in
                  ("conditional (b = 0)", "marginal (population-averaged)"))
    b = sleep_res.fixef
    np.testing.assert_allclose(cond, b["(Intercept)"] + b["Days"] * np.linspace(0, 9, 10),
                               atol=1e-9)
    np.testing.assert_allclose(marg, cond, atol=1e-8)


def test_effects_bad_variable(sleep_res):
    df = CASES["sleepstudy_reml"].data()
    with pytest.raises(gj.GLMMInputError, match="'Dayz'"):
        gj.plots.effects(sleep_res, "Dayz", df)
    with pytest.raises(gj.GLMMInputError, match="'Subject' must be a numeric"):
        gj.plots.effects(sleep_res, "Subject", df.assign(Subject=df["Subject"].astype(str)))
    with pytest.raises(gj.GLMMInputError, match="'junk' does not enter"):
        gj.plots.effects(sleep_res, "junk", df.assign(junk=np.arange(len(df), dtype=float)))
    with pytest.raises(gj.GLMMInputError, match="'Dais'"):
        gj.plots.effects(sleep_res, "Days", df, at={"Dais": 1.0})
    assert list(df.columns) == ["Reaction", "Days", "Subject"]  # the caller's data untouched


# ---- influence -----------------------------------------------------------------------------
def test_influence_from_a_stand_in():
    cooks = pd.Series([0.02, 0.4, 0.1, 0.9, 0.05], index=pd.Index(list("abcde"), name="herd"))
    ax = _render(gj.plots.influence(SimpleNamespace(cooks_distance=cooks), n_label=2)).axes[0]
    (stems,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(stems.get_segments()) == 5
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), cooks.to_numpy())
    assert sorted(t.get_text() for t in ax.texts) == ["b", "d"]  # the two largest
    assert ax.get_xlabel() == "herd"
    with pytest.raises(gj.GLMMInputError, match="cooks_distance"):
        gj.plots.influence(object())


def test_influence_of_a_fit(cbpp_res):
    if not callable(getattr(gj, "influence", None)):
        pytest.skip("glmm_jax.influence is not available")
    infl = gj.influence(cbpp_res, group="herd")
    ax = _render(gj.plots.influence(infl)).axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), infl.cooks_distance.to_numpy())
    assert len(ax.lines[0].get_ydata()) == 15
