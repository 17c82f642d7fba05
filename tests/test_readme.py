"""Every example of README.md runs as written, and the first prints what the README
shows."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```(python|bash|text)\n(.*?)```", README, flags=re.S)
PYTHON = [code for kind, code in BLOCKS if kind == "python"]


def test_first_example_prints_what_the_readme_shows():
    kinds = [kind for kind, _ in BLOCKS]
    i = kinds.index("python")
    assert kinds[i + 1] == "text"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[i][1], "README.md", "exec"), {})
    printed = [line.rstrip() for line in out.getvalue().splitlines()]
    assert printed == BLOCKS[i + 1][1].rstrip("\n").splitlines()


@pytest.mark.parametrize("k", range(1, len(PYTHON)))
def test_python_example_runs(k, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(PYTHON[k], f"README.md python block {k}", "exec"), {})


@pytest.mark.slow
def test_shell_examples_run(tmp_path):
    for kind, code in BLOCKS:
        if kind != "bash" or "glmm-jax " not in code:
            continue
        for command in code.replace("\\\n", " ").splitlines():
            command = command.split("#")[0].strip()
            if command.startswith("glmm-jax"):
                proc = subprocess.run(command, shell=True, cwd=tmp_path, text=True,
                                      capture_output=True, timeout=300)
                assert proc.returncode == 0, (command, proc.stderr[-2000:])
