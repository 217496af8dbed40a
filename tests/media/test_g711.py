"""G.711 codecs against the values of ITU-T G.711 Tables 1a/2a (A-law, mu-law), and their round trips."""

from __future__ import annotations

import pytest

from callbridge.media.g711 import (
    alaw_decode,
    alaw_encode,
    alaw_to_linear,
    decode,
    decode_pcm,
    encode,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_linear,
)

# mu-law (Table 2a): character transmitted -> decoder output in 14-bit units (x4 in 16-bit). The bytes on the line
# are the complement of the table's character (§2.4: all bits inverted).
ULAW_TABLE = [
    (0xFF, 0), (0x7F, 0),             # +0 and -0
    (0xFE, 2), (0x7E, -2),            # segment 0, step 1: (2*1+33) - 33
    (0xF0, 30), (0xEF, 33),           # end of segment 0, first of segment 1: (2*0+33)*2 - 33
    (0xDF, 99), (0xCF, 231),          # first of segments 2 and 3: (33 << s) - 33
    (0x8F, 4191), (0x80, 8031),       # first and last of segment 7: the largest magnitude
    (0x00, -8031),
]
# A-law (Table 1a): character on the line (even bits inverted) -> decoder output in 13-bit units (x8 in 16-bit).
ALAW_TABLE = [
    (0xD5, 1), (0x55, -1),            # the smallest magnitudes, segment 0 step 0
    (0xD4, 3), (0xC5, 33),            # segment 0 step 1 (2*1+1); segment 1 step 0 (2*0+33)
    (0xF5, 66), (0xE5, 132),          # first of segments 2 and 3
    (0xAA, 4032), (0x2A, -4032),      # the largest magnitude: segment 7 step 15, (2*15+33) << 6
]


@pytest.mark.parametrize(("code", "value14"), ULAW_TABLE)
def test_mu_law_decoder_outputs(code: int, value14: int) -> None:
    assert ulaw_to_linear(code) == value14 * 4
    assert list(ulaw_decode(bytes([code]))) == [value14 * 4]


@pytest.mark.parametrize(("code", "value13"), ALAW_TABLE)
def test_a_law_decoder_outputs(code: int, value13: int) -> None:
    assert alaw_to_linear(code) == value13 * 8
    assert list(alaw_decode(bytes([code]))) == [value13 * 8]


def test_encoders_pick_the_decision_interval() -> None:
    # mu-law: 14-bit magnitudes 0 and 1 decode to 0, 2..3 to 2 (decision value 1 in Table 2a is at 1 -> step 1
    # starts at x=1); clipping at full scale; zero is 0xFF (positive zero), A-law zero 0xD5.
    assert ulaw_encode([0, 4, 8, -4, 32767, -32768]) == bytes([0xFF, 0xFE, 0xFE, 0x7E, 0x80, 0x00])
    assert alaw_encode([0, 8, 16, -8, 32767, -32768]) == bytes([0xD5, 0xD5, 0xD4, 0x55, 0xAA, 0x2A])
    # the first value of segment 1 (mu-law 14-bit 31 -> character 0xEF decodes to 33)
    assert ulaw_encode([31 * 4]) == bytes([0xEF])


def test_every_code_round_trips() -> None:
    codes = bytes(range(256))
    assert ulaw_encode(ulaw_decode(codes)) == codes.replace(b"\x7f", b"\xff")  # -0 comes back as +0
    assert alaw_encode(alaw_decode(codes)) == codes


def test_encoding_is_monotonic_and_error_is_bounded() -> None:
    for law_encode, law_decode, step in ((ulaw_encode, ulaw_decode, 0.0625), (alaw_encode, alaw_decode, 0.0625)):
        samples = list(range(-32768, 32768, 7))
        decoded = list(law_decode(law_encode(samples)))
        assert decoded == sorted(decoded)  # a larger input never decodes smaller
        for s, d in zip(samples, decoded, strict=True):
            # companding error: at most half a step of the segment, i.e. ~1/32 of the magnitude plus the smallest
            # step near zero (mu-law 8, A-law 16 in 16-bit units)
            assert abs(s - d) <= abs(s) * step + 16 + (256 if abs(s) > 32000 else 0), (s, d)


def test_generic_entry_points_and_refusal() -> None:
    assert encode("PCMU", [1000]) == ulaw_encode([1000])
    assert encode("PCMA", [1000]) == alaw_encode([1000])
    assert list(decode("PCMA", b"\xd5")) == [8]
    assert decode_pcm("PCMU", b"\x80\x00") == (32124).to_bytes(2, "little", signed=True) + (-32124).to_bytes(
        2, "little", signed=True)
    with pytest.raises(ValueError, match=r"not a G\.711 codec: .G729."):
        encode("G729", [0])
    with pytest.raises(ValueError, match=r"not a G\.711 codec"):
        decode_pcm("L16", b"")
