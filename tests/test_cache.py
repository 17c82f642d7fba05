"""The persistent compilation cache: on by default, in the user's cache, switchable off."""

import os
import subprocess
import sys

SNIPPET = "import glmm_jax, jax; print(jax.config.jax_compilation_cache_dir)"


def _cache_dir_seen(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLMM_JAX_CACHE")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_cache_on_by_default_in_user_cache_dir(tmp_path):
    seen = _cache_dir_seen({"XDG_CACHE_HOME": str(tmp_path)})
    assert seen == str(tmp_path / "glmm_jax" / "xla")


def test_cache_dir_can_be_chosen_or_switched_off(tmp_path):
    assert _cache_dir_seen({"GLMM_JAX_CACHE_DIR": str(tmp_path / "c")}) == str(tmp_path / "c")
    assert _cache_dir_seen({"GLMM_JAX_CACHE": "0"}) in ("None", "")
