"""`callbridge demo --keep --rtpengine ...` as a person uses it to take a call in their own browser: the command in a
subprocess with a real rtpengine, its printed page address and sign-in used in a real Chromium (headless, a fake
microphone), its printed curl command bringing the kept call to the page, the page answering and hearing the demo
customer's 440 Hz tone through the relay."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from deskaudio import CHROMIUM, assert_page_hears, launch, page_hears, tone_wav  # noqa: E402

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: run scripts/setup --test (it installs Debian's chromium)",
                allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from callbridge.cli.demo import CUSTOMER_TONE_HZ  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

WAIT_MS = 8000


class Lines:
    """The lines a process prints, read by a thread."""

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


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Rtpengine]:
    with Rtpengine(workdir=tmp_path / "rtpengine") as rtpe:
        yield rtpe


def test_demo_keep_with_a_relay_lets_a_person_take_the_call_on_the_page_with_audio(
        relay: Rtpengine, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    argv = [sys.executable, "-m", "callbridge", "demo", "--keep", "--rtpengine", f"udp:{relay.host}:{relay.ng_port}"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        output = Lines(proc)
        try:
            shown = output.until("Ctrl-C stops everything", 45)
            assert f"media anchored on udp:{relay.host}:{relay.ng_port}" in shown
            # a relay the user runs gets the measured steps too
            assert ("✓  7 heard after the answer: customer hears 1002's 1000 Hz, 1002 hears the customer's 700 Hz"
                    in shown)
            page_at = re.search(r"the agent's page (http://127\.0\.0\.1:\d+/agent) \(operation (\d+), extension "
                                r"(\d+), password (\S+);", shown)
            assert page_at is not None, shown
            url, operation, extension, password = page_at.groups()
            assert f"The customer's phone plays a {CUSTOMER_TONE_HZ:.0f} Hz tone" in shown
            lines = shown.splitlines()
            transfer = shlex.split(lines[lines.index("# transfer to the agent's page (signed in and ready)") + 1])
            assert f"customer_phone={extension}" in transfer[-1]

            with sync_playwright() as playwright:
                browser = launch(playwright, tone_wav(tmp_path / "mic.wav", 1000.0))
                try:
                    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
                    page.set_default_timeout(WAIT_MS)
                    page.goto(url)
                    page.fill("#f-operation", operation)
                    page.fill("#f-extension", extension)
                    page.fill("#f-password", password)
                    page.click("#signin button[type=submit]")
                    expect(page.get_by_test_id("phone")).to_have_text("Phone: registered", timeout=WAIT_MS)
                    page.get_by_test_id("state-ready").click()
                    expect(page.get_by_test_id("agent-state")).to_have_text("ready", timeout=WAIT_MS)

                    done = subprocess.run(transfer, capture_output=True, text=True, timeout=10, check=True)
                    assert '"Call has been transferred"' in done.stdout or '"code":"200"' in done.stdout, done.stdout
                    expect(page.get_by_test_id("answer")).to_be_enabled(timeout=WAIT_MS)
                    page.get_by_test_id("answer").click()
                    expect(page.locator("#call")).to_be_visible(timeout=WAIT_MS)
                    output.until("transfer.completed", 10)
                    assert_page_hears(page_hears(page, 1.0), CUSTOMER_TONE_HZ)
                finally:
                    browser.close()
            proc.send_signal(signal.SIGINT)
            output.until("stopping", 10)
            assert proc.wait(timeout=20) == 0, output.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.reader.join(10)
