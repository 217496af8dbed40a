"""`callbridge demo` as a user runs it: the command in a subprocess, every step's line checked; a deliberately broken
step (the gateway answers the busy number) makes it exit 1 naming that step; `--keep` leaves a call up that the
printed curl command acts on, until SIGINT.

With rtpengine installed the demo starts its own (a real userspace rtpengine on loopback) and measures what each
party heard: those tests are skipped only when the binary is missing (`scripts/setup --test` installs it). Without
the binary (PATH without it) or with `--no-relay`, it runs the signalling-only scenario and says why."""

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

from callbridge.cli.demo import BUSY_NUMBER, HEARING_TITLES, STEP_TITLES, play
from callbridge.media.local_relay import find_binary, ng_ping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.rtpengine import require_rtpengine

pytestmark = pytest.mark.timeout(120)

CALLBRIDGE = [sys.executable, "-m", "callbridge"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _signalling_only(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    steps = [line for line in lines if line.startswith("✓ ") and not line.startswith("✓ all")]
    assert len(steps) == len(STEP_TITLES), done.stdout
    for number, (line, title) in enumerate(zip(steps, STEP_TITLES, strict=True), 1):
        assert line.startswith(f"✓ {number:>2} {title}: "), f"step {number}: {line}"
    assert "✗" not in done.stdout and "heard" not in done.stdout and "media anchored" not in done.stdout
    assert "customer and 1002 exchange SDP directly" in done.stdout
    assert f"all {len(STEP_TITLES)} steps happened as expected" in done.stdout
    assert "486 Busy Here" in done.stdout and "1002 (ready longest) answered" in done.stdout
    # the CDR table: one row per leg, the busy number's with its cause
    assert any(BUSY_NUMBER in line and "486" in line for line in lines if line.startswith("│"))
    assert done.stderr == ""


@pytest.mark.serial  # bounded in time (30 s)
def test_demo_with_no_relay_plays_every_step_and_exits_0(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([*CALLBRIDGE, "demo", "--no-relay"], capture_output=True, text=True, timeout=60,
                          env=_env(), cwd=tmp_path)
    elapsed = time.monotonic() - started
    _signalling_only(done)
    assert "No media relay (--no-relay): the demo checks the signalling only." in done.stdout
    assert elapsed < 30
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory


def test_demo_without_rtpengine_installed_says_so_and_plays_the_signalling(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([*CALLBRIDGE, "demo"], capture_output=True, text=True, timeout=60,
                          env={**_env(), "PATH": str(empty)}, cwd=empty)
    _signalling_only(done)
    assert ("No media relay: rtpengine is not installed (on Debian: apt-get install rtpengine-daemon); the demo "
            "checks the signalling only.") in done.stdout


def test_no_relay_and_a_relay_given_contradict(tmp_path: Path) -> None:
    done = subprocess.run([*CALLBRIDGE, "demo", "--no-relay", "--rtpengine", "udp:127.0.0.1:2223"],
                          capture_output=True, text=True, timeout=30, env=_env(), cwd=tmp_path)
    assert done.returncode == 2
    assert "--no-relay and --rtpengine contradict each other" in done.stdout + done.stderr
    assert "callbridge demo:" not in done.stdout  # nothing started


def _measured_steps() -> list[str]:
    """The step titles in order with a relay: each hearing step after the step whose outcome it measures."""
    after = {"longest-idle agent answers": 0, "hold": 1, "unhold": 2, "transfer to another agent": 3,
             "transfer to a busy number comes back to the agent": 4, "transfer to an outside number": 5}
    titles: list[str] = []
    for title in STEP_TITLES:
        titles.append(title)
        if title in after:
            titles.append(HEARING_TITLES[after[title]])
    return titles


@pytest.mark.serial  # measures ringback's length (0.5-1.2 s) and is bounded in time
def test_demo_starts_its_own_relay_and_measures_what_each_party_heard(tmp_path: Path) -> None:
    require_rtpengine()
    started = time.monotonic()
    done = subprocess.run([*CALLBRIDGE, "demo"], capture_output=True, text=True, timeout=60,
                          env={**_env(), "TMPDIR": str(tmp_path)}, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    steps = [line for line in out.splitlines() if line.startswith("✓ ") and not line.startswith("✓ all")]
    titles = _measured_steps()
    assert len(steps) == len(titles) == len(STEP_TITLES) + len(HEARING_TITLES), out
    for number, (line, title) in enumerate(zip(steps, titles, strict=True), 1):
        assert line.startswith(f"✓ {number:>2} {title}: "), f"step {number}: {line}"
    assert f"all {len(titles)} steps happened as expected" in out and "✗" not in out
    assert "Media relay: rtpengine started by the demo on loopback." in out
    relay = re.search(r"media anchored on udp:127\.0\.0\.1:(\d+) \(rtpengine started by the demo: userspace, "
                      r"media ports (\d+)-(\d+) on 127\.0\.0\.1\)", out)
    assert relay is not None, out
    assert "customer and 1002 exchange media through the relay" in out

    def measured(number: int) -> str:
        return steps[number - 1].split(": ", 1)[1].rsplit(" (", 1)[0]

    both = "customer hears 1002's 1000 Hz, 1002 hears the customer's 700 Hz"
    assert measured(7) == both and measured(11) == both
    hold = re.fullmatch(r"customer hears the hold music \(its notes ([\d, ]+) Hz in 1\.2 s\), none of 1002's "
                        r"1000 Hz; 1002 hears none of the customer's \(held, its phone stopped sending\)", measured(9))
    assert hold is not None, measured(9)
    notes = {int(n) for n in hold.group(1).split(", ")}
    assert len(notes) >= 2 and notes <= {400, 600, 800}
    rang = []
    for number, target, left, now in (
            (13, "1001", "1002's 1000 Hz", "1001's 1500 Hz, 1001 hears the customer's 700 Hz"),
            (15, BUSY_NUMBER, "1001's 1500 Hz", "1001's 1500 Hz, 1001 hears the customer's 700 Hz"),
            (17, "3105550199", "1001's 1500 Hz", "the outside party's 1300 Hz, the outside party hears the customer's "
                                                 "700 Hz")):
        line = re.fullmatch(rf"while {target} rang the customer heard ringback \(425 Hz, (\d\.\d) s\), none of "
                            rf"{left}; now it hears {re.escape(now)}", measured(number))
        assert line is not None, measured(number)
        rang.append(float(line.group(1)))
    assert all(0.5 <= seconds <= 1.2 for seconds in rang), rang  # the phones ring 1.2 s
    assert done.stderr == ""
    assert elapsed < 60
    assert not ng_ping(("127.0.0.1", int(relay.group(1))))  # the demo's relay was stopped
    assert list(tmp_path.iterdir()) == []  # and its folder (in the demo's temporary directory) removed


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


def _relay_port(output: _Lines) -> int:
    found = re.search(r"media anchored on udp:127\.0\.0\.1:(\d+) \(rtpengine started by the demo", output.text)
    assert found is not None, output.text
    return int(found.group(1))


@pytest.mark.serial  # the relay's pong within ng_ping's 0.2 s while the demo's media runs
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_demo_stopped_midway_takes_its_relay_along(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM: the demo stops cleanly (phones, server, relay, temporary directory) and exits 143; SIGKILL: the
    kernel ends the relay with it (PR_SET_PDEATHSIG), so no rtpengine is left behind either way."""
    require_rtpengine()
    with subprocess.Popen([*CALLBRIDGE, "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**_env(), "TMPDIR": str(tmp_path)}, cwd=tmp_path) as proc:
        output = _Lines(proc)
        try:
            output.until("✓  7 heard after the answer", 45)
            port = _relay_port(output)
            assert ng_ping(("127.0.0.1", port))
            proc.send_signal(sig)
            if sig == signal.SIGTERM:
                output.until("stopped by SIGTERM: phones hang up, the server closes", 20)
            code = proc.wait(timeout=20)
            output.reader.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if sig == signal.SIGTERM:
        assert code == 143, output.text
        assert not ng_ping(("127.0.0.1", port))
        assert list(tmp_path.iterdir()) == []
    else:
        assert code == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while ng_ping(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ng_ping(("127.0.0.1", port))  # its temporary directory stays: nothing runs to remove it


async def test_a_wrong_tone_fails_the_demo_at_its_hearing_step_with_what_was_heard() -> None:
    require_rtpengine()
    out = io.StringIO()
    code = await play(Console(file=out, width=200), own_relay=True, played={"1001": 900.0})  # 1001 sounds wrong
    text = out.getvalue()
    assert code == 1, text
    assert "✓ 12 transfer to another agent: " in text
    failed = re.search(r"✗ 13 heard while the transfer rang, then the new agent: customer heard 900 Hz in (\d+) of "
                       r"(\d+) windows, not 1001's 1500 Hz", text)
    assert failed is not None, text
    assert int(failed.group(1)) >= 8  # a second of it
    assert "demo failed at step 13 (heard while the transfer rang, then the new agent)" in text
    assert "✓ 13" not in text


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
            relay = re.search(r"media anchored on udp:127\.0\.0\.1:(\d+) \(rtpengine started by the demo", output.text)
            if find_binary() is not None:  # installed: the demo ran its own relay, and stopped it
                assert relay is not None and not ng_ping(("127.0.0.1", int(relay.group(1)))), output.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.reader.join(10)
