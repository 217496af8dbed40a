"""The frequency and level detector on synthetic blocks: tones, a G.711 round trip, noise, silence, two tones."""

from __future__ import annotations

import math
import random

import pytest

from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.phone.spectrum import SILENCE_DBFS, analyse, level_dbfs


def tone(hz: float, peak: float = 8000.0, n: int = 800, phase: float = 0.3) -> list[float]:
    return [peak * math.sin(2 * math.pi * hz * i / 8000 + phase) for i in range(n)]


@pytest.mark.parametrize("hz", [300.0, 425.0, 440.0, 697.0, 1000.0, 1209.0, 1633.0, 2600.0, 3400.0, 1234.5])
def test_a_pure_tone_is_found_within_one_hertz(hz: float) -> None:
    spectrum = analyse(tone(hz))
    assert spectrum.dominant is not None
    assert spectrum.dominant.hz == pytest.approx(hz, abs=1.0)
    assert spectrum.dominant.share > 0.99
    assert spectrum.level_dbfs == pytest.approx(20 * math.log10(8000 / 32768), abs=0.05)  # -12.25 dBFS


def test_level_follows_the_aes17_definition() -> None:
    assert level_dbfs(tone(1000, 32767.0, 8000)) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(tone(1000, 32768 / 2, 8000)) == pytest.approx(-6.02, abs=0.01)
    assert level_dbfs([0] * 10) == -math.inf
    assert level_dbfs([]) == -math.inf


def test_a_tone_through_mu_law_keeps_its_frequency_and_level() -> None:
    samples = list(ulaw_decode(ulaw_encode(int(s) for s in tone(1000, 8231))))  # -12 dBFS
    spectrum = analyse(samples)
    assert spectrum.dominant_hz == pytest.approx(1000, abs=1.0)
    assert spectrum.level_dbfs == pytest.approx(-12.0, abs=0.2)


def test_white_noise_has_no_dominant_tone() -> None:
    rng = random.Random(7)
    for _ in range(5):
        spectrum = analyse([rng.gauss(0, 3000) for _ in range(800)])
        assert spectrum.dominant is None
        assert spectrum.level_dbfs == pytest.approx(20 * math.log10(3000 * math.sqrt(2) / 32768), abs=0.5)


def test_a_tone_in_noise_is_still_found() -> None:
    rng = random.Random(3)
    samples = [s + rng.gauss(0, 800) for s in tone(697, 8000)]  # ~17 dB signal-to-noise
    assert analyse(samples).dominant_hz == pytest.approx(697, abs=2.0)


def test_silence_has_no_tone_and_low_level() -> None:
    assert analyse([0] * 800).dominant is None
    quiet = analyse(tone(1000, peak=20))  # -64 dBFS: below the silence threshold
    assert quiet.level_dbfs < SILENCE_DBFS and quiet.dominant is None


def test_two_mixed_tones_are_both_found_strongest_first() -> None:
    mixed = [a + b for a, b in zip(tone(440, 9000), tone(1000, 5000), strict=True)]
    spectrum = analyse(mixed)
    first, second = spectrum.peaks(2)
    assert first.hz == pytest.approx(440, abs=1.5) and second.hz == pytest.approx(1000, abs=1.5)
    assert first.share > second.share > 0.2
    assert spectrum.dominant_hz == pytest.approx(440, abs=1.5)
    # DTMF 1 (697 + 1209 Hz, RFC 4733 / ITU-T Q.23): both of the pair
    dtmf = [a + b for a, b in zip(tone(697, 6000), tone(1209, 6000), strict=True)]
    assert sorted(round(p.hz) for p in analyse(dtmf).peaks(2)) == [697, 1209]
