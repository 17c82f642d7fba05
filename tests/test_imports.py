"""``import glmm_jax`` loads what every fit needs and no more: scipy.stats,
scipy.optimize, scipy.special, scipy.sparse and matplotlib (about 0.8 s of imports
together) come in when a function that needs them runs."""

import subprocess
import sys

LAZY = ("scipy.stats", "scipy.optimize", "scipy.special", "scipy.sparse", "matplotlib",
        "optax")


def test_import_leaves_the_slow_modules_for_later():
    code = ("import sys, glmm_jax; print(','.join(m for m in " + repr(LAZY)
            + " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
