from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from callbridge import __version__
from callbridge.cli import app


def test_version_through_the_runner() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"callbridge {__version__}\n"


def test_version_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "callbridge", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"callbridge {__version__}\n"
