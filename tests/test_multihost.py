"""Several hosts: two processes joined by ``jax.distributed`` (gloo collectives on CPU),
each with two devices, fit the same data sharded over all four devices and get the
single-device answer."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import glmm_jax as gj

pytestmark = pytest.mark.slow

WORKER = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="localhost:" + sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]))
import glmm_jax as gj
sys.path.insert(0, "tests")
from test_multihost import MODELS, load
out = {}
for name, (formula, family) in MODELS.items():
    df = load(name)
    res = gj.fit(formula, df, family=family)
    shards = len(gj.build_model(formula, df, family=family).data.X.sharding.device_set)
    out[name] = {"loglik": res.loglik, "theta": [float(t) for t in res.theta],
                 "se": [float(v) for v in res.se], "shards": shards,
                 "converged": bool(res.converged)}
print("RESULT" + json.dumps({"devices": len(jax.devices()), "fits": out}), flush=True)
"""

MODELS = {
    "cbpp": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial"),
    "grouseticks": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                    "poisson"),
}


def load(name):
    df = gj.datasets.load(name)
    if name == "grouseticks":
        df = df.assign(**{c: df[c].astype(str) for c in ("BROOD", "INDEX", "LOCATION")})
    return df


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_device():
    root = Path(__file__).resolve().parents[1]
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two processes did not finish")
        assert p.returncode == 0, stderr[-3000:]
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")][-1]
        outs.append(json.loads(line[len("RESULT"):]))
    for out in outs:
        assert out["devices"] == 4
        for name, (formula, family) in MODELS.items():
            got = out["fits"][name]
            one = gj.fit(formula, load(name), family=family)
            assert got["shards"] == 4 and got["converged"], name
            assert got["loglik"] == pytest.approx(one.loglik, abs=1e-8), name
            np.testing.assert_allclose(got["theta"], one.theta, atol=1e-8, err_msg=name)
            np.testing.assert_allclose(got["se"], one.se.to_numpy(), rtol=1e-7, err_msg=name)
