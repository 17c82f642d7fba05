"""Sharding clusters (one random term) or rows (several terms) across several devices gives
the single-device fit (CPU devices forced with XLA_FLAGS in a subprocess, since the flag
must be set before JAX starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, warnings
import jax, numpy as np, pandas as pd
import glmm_jax as gj
assert len(jax.devices()) == 4, jax.devices()
rng = np.random.default_rng(3)
g = np.repeat(np.arange(60), rng.integers(2, 40, 60))
x = rng.normal(size=g.size)
b = rng.normal(size=(60, 2)) * [0.7, 0.3]
y = rng.poisson(np.exp(0.3 + 0.5 * x + b[g, 0] + b[g, 1] * x))
df = pd.DataFrame({"y": y, "x": x, "g": g})
cb = gj.datasets.load("cbpp")
gt = gj.datasets.load("grouseticks")
gt = gt.assign(**{c: gt[c].astype(str) for c in ("BROOD", "INDEX", "LOCATION")})
va = gj.datasets.load("verbagg").assign(y=lambda d: (d.r2 == "Y").astype(int))
out = {}
for name, args in {
    "cbpp": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb, "binomial"),
    "slope": ("y ~ x + (1 + x | g)", df, "poisson"),
    "nested": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", gt,
               "poisson"),
    "crossed": ("y ~ Anger + Gender + (1 | id) + (1 | item)", va, "binomial"),
}.items():
    one = gj.fit(*args, devices=jax.devices()[:1])
    four = gj.fit(*args)  # default: all four devices
    shards = len(gj.build_model(*args).data.X.sharding.device_set)
    out[name] = {"shards": shards, "converged": bool(four.converged),
                 "dtheta": float(np.max(np.abs(one.theta - four.theta))),
                 "dloglik": abs(one.loglik - four.loglik)}
for name in ("cbpp", "nested"):  # a batch of responses in one vmapped, sharded program
    args = {"cbpp": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb,
                     "binomial"),
            "nested": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                       gt, "poisson")}[name]
    sharded = gj.build_model(*args)
    Y = gj.fit(*args).simulate(3, seed=1).T
    four = sharded.fit_responses(Y, batch_size=3)
    one = gj.build_model(*args, devices=jax.devices()[:1]).fit_responses(Y, batch_size=3)
    out[name + "_responses"] = {
        "shards": len(sharded.data.X.sharding.device_set),
        "converged": all(r.converged for r in four),
        "dtheta": max(float(np.max(np.abs(a.theta - b.theta))) for a, b in zip(four, one)),
        "dloglik": max(abs(a.loglik - b.loglik) for a, b in zip(four, one))}
gj.laplace.BLOCK_ROWS = 128  # several blocks, each sharded over the four devices
gj.sizes.SMALL_ROWS = 0  # (small models take one block: sizes.py)
blocks = gj.fit("y ~ x + (1 + x | g)", df, family="poisson")
one = gj.fit("y ~ x + (1 + x | g)", df, family="poisson", devices=jax.devices()[:1])
model = gj.build_model("y ~ x + (1 + x | g)", df, family="poisson")
out["blocks"] = {"shards": len(model.data.X.sharding.device_set),
                 "converged": bool(blocks.converged) and model.data.X.shape[0] > 4,
                 "dtheta": float(np.max(np.abs(one.theta - blocks.theta))),
                 "dloglik": abs(one.loglik - blocks.loglik)}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    res = json.loads(line[len("RESULT"):])
    for name, r in res.items():
        assert r["shards"] == 4, name
        assert r["converged"], name
        assert r["dtheta"] < 1e-8, (name, r)
        assert r["dloglik"] < 1e-8, (name, r)
