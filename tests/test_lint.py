"""The repository passes its linter (ruff.toml): CI runs the suite, so CI lints."""
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed "
                    "(pip install -e '.[test]' installs it)")
def test_ruff_is_clean():
    proc = subprocess.run(["ruff", "check", "."], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
