"""The page's microphone and ear for browser tests with audio: a tone WAV that Chromium's fake capture device
plays, the launch flags that go with it, and a WebAudio analyser on the page's remote track."""

from __future__ import annotations

import math
import struct
import time
import wave
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"

__all__ = ["CHROMIUM", "assert_page_hears", "launch", "page_hears", "tone_wav", "until_page_hears"]


# The page's ear: the dominant frequency of the remote track every 100 ms for `ms` (after a full window), with its
# level (dB).
ANALYSE = """async (ms) => {
  const stream = document.querySelector("#remote-audio").srcObject;
  if (!stream || stream.getAudioTracks().length === 0) return [];
  const ctx = window.testAudio || (window.testAudio = new AudioContext());
  await ctx.resume();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  source.connect(analyser);
  const data = new Float32Array(analyser.frequencyBinCount);
  await new Promise((resolve) => setTimeout(resolve, 250));  // a full FFT window (8192 samples) of the track first
  const peaks = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    analyser.getFloatFrequencyData(data);
    let best = 1;
    for (let i = 2; i < data.length; i++) if (data[i] > data[best]) best = i;
    peaks.push([best * ctx.sampleRate / analyser.fftSize, data[best]]);
  }
  source.disconnect();
  return peaks;
}"""


def tone_wav(path: Path, hz: float, seconds: float = 4.0, rate: int = 48000) -> Path:
    """A mono 16-bit WAV of a pure tone at -12 dBFS, a whole number of cycles long (Chromium loops it)."""
    amplitude = 32767 * 10 ** (-12 / 20)
    frames = b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * n / rate)))
                      for n in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def launch(playwright: Playwright, wav: Path) -> Browser:
    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required"]
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)


# The page's phone has a remote track: its call is established on the SIP side too (the page's live view may show
# the call a moment before the B2BUA's ACK reaches the phone that answered).
HAS_TRACK = """() => {
  const stream = document.querySelector("#remote-audio").srcObject;
  return !!stream && stream.getAudioTracks().length > 0;
}"""


def page_hears(page: Page, seconds: float) -> list[tuple[float, float]]:
    page.wait_for_function(HAS_TRACK, timeout=5000)
    peaks: list[list[float]] = page.evaluate(ANALYSE, int(seconds * 1000))
    return [(hz, db) for hz, db in peaks]


def assert_page_hears(peaks: list[tuple[float, float]], hz: float) -> None:
    """Every reading's loudest bin is `hz` (bins of 48000/8192 = 5.9 Hz) and well above the noise."""
    assert len(peaks) >= 5, peaks
    assert all(abs(peak - hz) <= 6 and db > -50 for peak, db in peaks), peaks


def until_page_hears(page: Page, hz: float, timeout: float = 5.0) -> None:
    """Wait, at most `timeout`, for `hz` to reach the page's ear: media a re-INVITE sets up (a consultation) takes
    a few SIP and relay round trips and the browser's DTLS handshake, longer on a loaded machine. What follows
    asserts the steady state; running out here leaves that assertion to say what was heard."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        peaks = page_hears(page, 0.3)
        if peaks and abs(peaks[-1][0] - hz) <= 6 and peaks[-1][1] > -50:
            return
