"""`callbridge demo` as a user runs it: the command in a subprocess, every step's line checked; a deliberately broken
step (the gateway answers the busy number) makes it exit 1 naming that step; `--keep` leaves a call up that the
printed curl command acts on, until SIGINT."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from callbridge.cli.demo import BUSY_NUMBER, STEP_TITLES, play

pytestmark = pytest.mark.timeout(120)

CALLBRIDGE = [sys.executable, "-m", "callbridge"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def test_demo_plays_every_step_and_exits_0(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([*CALLBRIDGE, "demo"], capture_output=True, text=True, timeout=60, env=_env(),
                          cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for number, title in enumerate(STEP_TITLES, 1):
        assert any(line.startswith(f"✓ {number:>2} {title}: ") for line in lines), f"no line for step {number}"
    assert "✗" not in done.stdout
    assert f"all {len(STEP_TITLES)} steps happened as expected" in done.stdout
    assert "486 Busy Here" in done.stdout and "1002 (ready longest) answered" in done.stdout
    # the CDR table: one row per leg, the busy number's with its cause
    assert any(BUSY_NUMBER in line and "486" in line for line in lines if line.startswith("│"))
    assert done.stderr == ""
    assert elapsed < 30
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory


async def test_a_broken_step_fails_the_demo_naming_it() -> None:
    out = io.StringIO()
    code = await play(Console(file=out, width=200), busy_status=200)  # the gateway answers the "busy" number
    text = out.getvalue()
    assert code == 1, text
    assert "✓  9 transfer to another agent: " in text
    assert ("✗ 10 transfer to a busy number comes back to the agent: the transfer to 3105550486 ended "
            "transfer.completed") in text
    assert "demo failed at step 10 (transfer to a busy number comes back to the agent)" in text
    assert "✓ 10" not in text and "✓ 11" not in text


class _Lines:
    """The lines a process prints, read by a thread (a pipe read with select would miss buffered lines)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.text = ""
        self._lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=lambda: [self._lines.put(line) for line in proc.stdout or ()],
                                       daemon=True)
        self.reader.start()

    def until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            try:
                self.text += self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {timeout} s in:\n{self.text}") from None
        return self.text


def test_keep_leaves_a_call_up_for_the_printed_curl_commands() -> None:
    with subprocess.Popen([*CALLBRIDGE, "demo", "--keep"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=_env()) as proc:
        output = _Lines(proc)
        try:
            shown = output.until("Ctrl-C stops everything", 60)
            lines = shown.splitlines()
            hold = lines[lines.index("# hold (again to unhold)") + 1]
            argv = shlex.split(hold)
            assert argv[:4] == ["curl", "-sS", "-X", "POST"] and "-d" not in argv and "--data" not in argv
            assert argv.count("-H") == 2 and argv[argv.index("-H") + 1].startswith("wolkvox-token: ")
            assert "wolkvox_server: 0042" in argv
            answer = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout)
            assert (answer["code"], answer["error"], answer["msg"]) == ("200", None, "Call has been put on hold")
            output.until("call.held", 10)  # the event stream printed live
            page = re.search(r"the agent's page (http://127\.0\.0\.1:\d+/agent) \(operation 0042, extension 1004, "
                             r"password (\S+);", output.text)
            assert page is not None, output.text
            signin = {"operation": "0042", "extension": "1004", "password": page.group(2)}
            answer = json.loads(subprocess.run(
                ["curl", "-sS", "-X", "POST", "-H", "content-type: application/json", "--data", json.dumps(signin),
                 page.group(1).replace("/agent", "/agent/signin")], capture_output=True, text=True, timeout=10,
                check=True).stdout)
            assert answer["ok"] is True and answer["agent"]["extension"] == "1004"
            proc.send_signal(signal.SIGINT)
            output.until("stopping", 10)
            assert proc.wait(timeout=20) == 0, output.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.reader.join(10)
