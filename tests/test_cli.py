"""The ``glmm-jax`` command: end to end by subprocess (fit, save, predict, exit codes), and
each input format and class of bad input through ``cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import glmm_jax as gj
from glmm_jax import cli

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "glmm_jax", *args], capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def cbpp_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cbpp.csv"
    gj.datasets.load("cbpp").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cbpp_fit():
    return gj.fit(CBPP, gj.datasets.load("cbpp"))


@pytest.mark.slow
def test_fit_save_predict_end_to_end(cbpp_csv, cbpp_fit, tmp_path):
    out = tmp_path / "fit.glmm"
    # (a CSV's period column is read as numbers, as R's read.csv does: --factor)
    rc, stdout, stderr = run("fit", CBPP, str(cbpp_csv), "--factor", "period", "--format",
                             "json", "--out", str(out))
    assert rc == 0, stderr
    got = json.loads(stdout)
    assert got["loglik"] == pytest.approx(cbpp_fit.loglik, abs=1e-9)
    assert got["converged"] is True and got["aic"] == pytest.approx(cbpp_fit.aic)
    assert [r["term"] for r in got["coefficients"]] == list(cbpp_fit.x_names)
    est = [r["estimate"] for r in got["coefficients"]]
    np.testing.assert_allclose(est, cbpp_fit.beta, atol=1e-9)
    assert got["variance_components"][0]["group"] == "herd"
    new = tmp_path / "new.csv"
    gj.datasets.load("cbpp").iloc[:5].to_csv(new, index=False)
    rc, stdout, stderr = run("predict", str(out), str(new), "--type", "response",
                             "--factor", "period")
    assert rc == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0] == "row,fit" and len(lines) == 6
    want = cbpp_fit.predict(gj.datasets.load("cbpp").iloc[:5], type="response")
    np.testing.assert_allclose([float(x.split(",")[1]) for x in lines[1:]], want, atol=1e-12)


@pytest.mark.slow
def test_exit_codes_by_subprocess(cbpp_csv, tmp_path):
    rc, stdout, stderr = run("fit", CBPP, str(tmp_path / "missing.csv"))
    assert rc == 2 and stderr.strip() == f"glmm-jax: error: {tmp_path / 'missing.csv'}: " \
        "no such file" and "Traceback" not in stderr
    rc, stdout, stderr = run("fit", CBPP, str(cbpp_csv), "--max-iter", "1")
    assert rc == 1 and "did not converge" in stderr and "WARNING" in stdout
    rc, _, stderr = run("fit", CBPP, str(cbpp_csv), "--max-iter", "1",
                        "--allow-nonconverged")
    assert rc == 0
    rc, stdout, _ = run("--help")
    assert rc == 0 and "Exit codes" in stdout and "``" not in stdout


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "name"])
def test_input_formats(fmt, cbpp_fit, tmp_path, capsys):
    df = gj.datasets.load("cbpp")
    if fmt == "name":
        source = "cbpp"
    else:
        source = tmp_path / f"cbpp.{fmt}"
        {"csv": lambda: df.to_csv(source, index=False),
         "tsv": lambda: df.to_csv(source, sep="\t", index=False),
         "parquet": lambda: df.to_parquet(source)}[fmt]()
    assert cli.main(["fit", CBPP, str(source), "--format", "csv", "--factor", "period"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split(",")[:3] == ["term", "estimate", "se"]
    assert float(lines[1].split(",")[1]) == pytest.approx(cbpp_fit.beta[0], abs=1e-9)


def test_text_output_and_options(tmp_path, capsys):
    path = tmp_path / "ticks.csv"
    gj.datasets.load("grouseticks").to_csv(path, index=False)
    assert cli.read_data(str(path))["YEAR"].dtype.kind == "i"  # a number, as in R
    assert cli.main(["fit", "TICKS ~ YEAR + (1 | BROOD)", str(path), "--family",
                     "poisson", "--factor", "YEAR"]) == 0
    text = capsys.readouterr().out
    assert "YEAR96" in text and "Family: poisson  ( log )" in text
    assert cli.main(["fit", "Reaction ~ Days + (1 | Subject)", "sleepstudy", "--family",
                     "gaussian", "--ml", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["reml"] is False
    ref = gj.fit("Reaction ~ Days + (1 | Subject)", gj.datasets.load("sleepstudy"),
                 family="gaussian", reml=False)
    assert got["loglik"] == pytest.approx(ref.loglik, abs=1e-9)
    assert cli.main(["datasets"]) == 0
    assert "cbpp" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["fit", CBPP, "data.xlsx"], "unknown file type '.xlsx'"),
    (["fit", "incidence ~ nosuch + (1 | herd)", "cbpp", "--family", "poisson"], "nosuch"),
    (["fit", CBPP, "cbpp", "--factor", "nosuch"], "--factor 'nosuch': no such column"),
    (["fit", CBPP, "cbpp", "--nagq", "0"], "nagq"),
    (["fit", CBPP, "cbpp", "--reml"], "reml"),
    (["predict", "missing.glmm", "cbpp"], "no such file"),
])
def test_bad_input_is_one_error_line(args, message, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glmm-jax: error: ") and message in err and "\n" not in err


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("this is not parquet")
    assert cli.main(["fit", CBPP, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"glmm-jax: error: {bad}: cannot read it")


def test_bad_choice_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit", CBPP, "cbpp", "--family", "tweedie"])
    assert exc.value.code == 2
    assert "invalid choice: 'tweedie'" in capsys.readouterr().err


def test_progress_line_on_stderr_for_long_jobs(capsys):
    import time

    with cli.Progress("fitting 5 rows", delay=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err
    assert err.startswith("glmm-jax: fitting 5 rows ... ") and err.endswith(" s\n")
    with cli.Progress("quick", delay=5.0):
        pass
    assert capsys.readouterr().err == ""  # nothing for a job shorter than the delay


def test_weights_column_gives_the_cbind_fit(cbpp_fit, capsys):
    # binomial proportions with the trials as prior weights (lme4's weights = size)
    assert cli.main(["fit", "incidence/size ~ period + (1 | herd)", "cbpp", "--weights",
                     "size", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["loglik"] == pytest.approx(cbpp_fit.loglik, abs=1e-9)
    assert cli.main(["fit", CBPP, "cbpp", "--weights", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_factor_levels_sorted_as_r_sorts_them(tmp_path):
    path = tmp_path / "n.csv"
    pd.DataFrame({"x": [8, 9, 10, 11, 12, 10]}).to_csv(path, index=False)
    df = cli.read_data(str(path), ["x"])
    assert list(df["x"].cat.categories) == ["8", "9", "10", "11", "12"]  # not "10" first


def test_json_has_no_nan_tokens(capsys):
    assert cli.main(["fit", "Reaction ~ Days + (1 | Subject)", "sleepstudy", "--family",
                     "gaussian", "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["variance_components"][0]["corr"] is None


def test_demo_and_datasets_commands(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "=== cbpp (56 rows) ===" in out and "=== hospital (5000 rows) ===" in out
    assert out.count("Generalized linear mixed model fit by maximum likelihood") == 2
