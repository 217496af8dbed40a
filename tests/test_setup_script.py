"""`scripts/setup` without `--test` installs what running needs and nothing of the test tools.

The venv is made in a temporary directory (CALLBRIDGE_VENV), the package installed into it as a user would, and then
`callbridge demo` runs from it: a real call through the API, so "what running needs" is proven by running, not by a
list. pip's own cache makes the second run of this test quick; the first downloads the run-time dependencies.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ("pytest", "mypy", "ruff", "hypothesis", "atheris", "schemathesis", "sipvicious", "playwright")


@pytest.mark.timeout(600)
def test_setup_for_running_installs_the_package_without_test_tools(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CALLBRIDGE_VENV"] = str(venv)
    subprocess.run(["bash", str(ROOT / "scripts" / "setup")], env=env, check=True, timeout=540)
    python = venv / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u, sys; "
         "print(' '.join(n for n in sys.argv[1:] if u.find_spec(n)))", *TEST_TOOLS],
        env=env, capture_output=True, text=True, check=True)
    assert found.stdout.split() == []
    demo = subprocess.run([str(venv / "bin" / "callbridge"), "demo"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "happened as expected" in demo.stdout
