"""The atheris fuzz targets (fuzz/) in their bounded CI form: each runs a fixed number of inputs as a subprocess
(the seed corpora first, RFC 4475's torture messages among them) and must exit 0 having run all of them; a target
whose checks are sabotaged must fail, so a clean run means something. Longer runs: fuzz/README.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is the `fuzz` extra: pip install -e '.[fuzz]'")

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "fuzz"
RUNS = 20_000
DONE = re.compile(r"^Done (\d+) in \d+ second", re.MULTILINE)


def run_target(script: str, work: Path, *flags: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """The target as a subprocess, its new inputs and crash files kept in ``work`` (out of the tree)."""
    work.mkdir()
    args = [*flags, f"-artifact_prefix={work}/", str(work)]
    if code is None:
        command = [sys.executable, str(FUZZ / script), *args]
    else:  # ``code`` runs first, in the target's process, then the target's main()
        command = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(FUZZ)!r}); "
                   f"sys.argv = [{script!r}, *{args!r}]; {code}; "
                   f"import {script.removesuffix('.py')} as target; target.main()"]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO)


@pytest.mark.parametrize("script", ["sip_parser.py", "sdp_parser.py"])
def test_bounded_run_is_clean_and_complete(script: str, tmp_path: Path) -> None:
    out = run_target(script, tmp_path / "work", f"-atheris_runs={RUNS}", "-seed=1")
    tail = out.stderr[-3000:]
    assert out.returncode == 0, tail
    assert [int(n) for n in DONE.findall(out.stderr)] == [RUNS], tail
    assert "Uncaught Python exception" not in out.stdout + out.stderr  # atheris reports them on stdout
    assert not list((tmp_path / "work").glob("crash-*"))


def test_sip_seeds_include_the_torture_corpus(tmp_path: Path) -> None:
    out = run_target("sip_parser.py", tmp_path / "work", "-atheris_runs=60", "-seed=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^INFO:\s+50 files found in \S*rfc4475$", out.stderr, re.MULTILINE), out.stderr[-3000:]


@pytest.mark.parametrize(("script", "sabotage", "finding"), [
    # a serialiser that loses the last header line: the SIP round trip must notice
    ("sip_parser.py",
     "import callbridge.sip.message as m; real = m.Message.to_bytes; "
     "m.Message.to_bytes = lambda self: real(self).replace(b'\\r\\nContent-Length', b'\\r\\nX-Lost', 1)",
     "round trip changed the message"),
    # a parser that lets a foreign exception out: only ParseError may leave it
    ("sip_parser.py",
     "import callbridge.sip.parser as p; real = p._build; "
     "p._build = lambda *a: (_ for _ in ()).throw(KeyError('boom')) if a[0].startswith('OPTIONS') else real(*a)",
     "GuardTripped"),
    # an SDP serialiser that drops the last line
    ("sdp_parser.py",
     "import callbridge.sip.sdp as s; real = s.SessionDescription.to_bytes; "
     "s.SessionDescription.to_bytes = lambda self: b''.join(real(self).splitlines(True)[:-1])",
     "round trip changed the description"),
])
def test_a_sabotaged_target_fails(tmp_path: Path, script: str, sabotage: str, finding: str) -> None:
    out = run_target(script, tmp_path / "work", "-atheris_runs=2000", "-seed=1", code=sabotage)
    assert out.returncode != 0
    assert "Uncaught Python exception" in out.stdout
    assert finding in out.stdout, out.stdout[-3000:]
    assert list((tmp_path / "work").glob("crash-*"))


REGRESSIONS = sorted((FUZZ / "corpus" / "sip-regressions").iterdir())


def test_sip_regressions_replay_clean(tmp_path: Path) -> None:
    assert REGRESSIONS
    out = subprocess.run([sys.executable, str(FUZZ / "sip_parser.py"), *map(str, REGRESSIONS)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
