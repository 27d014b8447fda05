"""Shared test helpers: quiet TF, run `main.py` as a user would, small model configs."""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_main(*args, env=None, timeout=600, check=True, cwd=None):
    """Run `python main.py ARGS` in a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or REPO_ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"main.py {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def run_python(code: str, env=None, timeout=600):
    """Run a Python snippet in a fresh process (one tf.distribute strategy per process)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"snippet exited {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


# A tiny network for fast tests: B0 topology at width 0.25, one repeat per stage.
TINY = dict(width_coefficient=0.25, depth_coefficient=0.2, resolution=32)


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    import keras
    keras.backend.clear_session()
