"""G.711 (ITU-T Recommendation G.711, 1988): PCMU (mu-law) and PCMA (A-law) to and from 16-bit linear PCM.

The companding follows G.711 §2 and §3 exactly: mu-law works on 14-bit magnitudes with a bias of 33 and eight
segments (decoded value ``((2q + 33) << s) - 33``), A-law on 13-bit magnitudes (segment 0: ``2q + 1``, segment s:
``(2q + 33) << (s - 1)``), A-law's even bits inverted (XOR 0x55, §3 Table 1b note). Decoded values are scaled to
16 bits (mu-law x4, A-law x8), the way every RTP stack and rtpengine present them.

Cost: both directions are table look-ups built once at import (a 16384-entry encode table per law indexed by the
sample's top 14 bits, 256-entry decode tables of ready-made little-endian byte pairs), so a 20 ms frame (160
samples) is one ``bytes()`` over a generator or one ``b"".join``: cheap enough for hundreds of calls at 50
packets per second.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

__all__ = [
    "PCMA",
    "PCMU",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_linear",
    "decode",
    "decode_pcm",
    "encode",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_linear",
]

PCMU = "PCMU"  # RTP payload type 0 (RFC 3551 §6)
PCMA = "PCMA"  # RTP payload type 8

_ULAW_BIAS = 33  # G.711 Table 2a: mu-law magnitudes are biased by 33 (in 14-bit units)
_ULAW_CLIP = 8158  # the largest 14-bit magnitude mu-law represents (8159 - 1 after the bias, Table 2a)


def ulaw_to_linear(code: int) -> int:
    """One mu-law code (0..255) as a 16-bit linear sample (G.711 Table 2a decoder output, scaled x4)."""
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    magnitude = (((2 * step + _ULAW_BIAS) << segment) - _ULAW_BIAS) * 4
    return -magnitude if code & 0x80 else magnitude


def alaw_to_linear(code: int) -> int:
    """One A-law code (0..255) as a 16-bit linear sample (G.711 Table 1a decoder output, scaled x8)."""
    code ^= 0x55
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    magnitude = 2 * step + 1 if segment == 0 else (2 * step + 33) << (segment - 1)
    magnitude *= 8
    return magnitude if code & 0x80 else -magnitude


def _ulaw_from_linear(sample: int) -> int:
    """The mu-law code of a 16-bit sample: the segment whose decision interval holds the biased magnitude."""
    value = sample >> 2  # 14-bit
    sign = 0x80 if value < 0 else 0x00
    magnitude = min(-value if value < 0 else value, _ULAW_CLIP) + _ULAW_BIAS
    segment = max(0, magnitude.bit_length() - 6)  # 33..64 -> 0, 65..128 -> 1, ...
    step = (magnitude >> (segment + 1)) & 0x0F
    return ~(sign | (segment << 4) | step) & 0xFF


def _alaw_from_linear(sample: int) -> int:
    value = sample >> 3  # 13-bit
    sign = 0x80 if value >= 0 else 0x00  # A-law: bit 1 set is positive (Table 1a)
    magnitude = min(-value - 1 if value < 0 else value, 4095)
    if magnitude < 32:
        segment, step = 0, magnitude >> 1
    else:
        segment = magnitude.bit_length() - 5  # 32..63 -> 1, 64..127 -> 2, ...
        step = (magnitude >> segment) & 0x0F
    return (sign | (segment << 4) | step) ^ 0x55


# Encode tables are indexed by the sample's top 14 bits (sample >> 2, as unsigned): A-law uses 13 of them, and
# every 16-bit sample in one 14-bit bucket has the same mu-law and A-law code.
_ULAW_ENCODE = bytes(_ulaw_from_linear(((i ^ 0x2000) - 0x2000) << 2) for i in range(16384))
_ALAW_ENCODE = bytes(_alaw_from_linear(((i ^ 0x2000) - 0x2000) << 2) for i in range(16384))
_ULAW_DECODE = tuple(ulaw_to_linear(c) for c in range(256))
_ALAW_DECODE = tuple(alaw_to_linear(c) for c in range(256))
_ULAW_PCM = tuple(v.to_bytes(2, "little", signed=True) for v in _ULAW_DECODE)
_ALAW_PCM = tuple(v.to_bytes(2, "little", signed=True) for v in _ALAW_DECODE)


def ulaw_encode(samples: Iterable[int]) -> bytes:
    """16-bit samples (clipped to -32768..32767) as mu-law bytes."""
    table = _ULAW_ENCODE
    return bytes(table[(s >> 2) & 0x3FFF] for s in samples)


def alaw_encode(samples: Iterable[int]) -> bytes:
    table = _ALAW_ENCODE
    return bytes(table[(s >> 2) & 0x3FFF] for s in samples)


def ulaw_decode(payload: bytes) -> array[int]:
    """mu-law bytes as 16-bit samples (``array('h')``)."""
    table = _ULAW_DECODE
    return array("h", [table[b] for b in payload])


def alaw_decode(payload: bytes) -> array[int]:
    table = _ALAW_DECODE
    return array("h", [table[b] for b in payload])


def encode(codec: str, samples: Iterable[int]) -> bytes:
    """Encode with ``codec`` ("PCMU" or "PCMA")."""
    if codec == PCMU:
        return ulaw_encode(samples)
    if codec == PCMA:
        return alaw_encode(samples)
    raise ValueError(f"not a G.711 codec: {codec!r}")


def decode(codec: str, payload: bytes) -> array[int]:
    if codec == PCMU:
        return ulaw_decode(payload)
    if codec == PCMA:
        return alaw_decode(payload)
    raise ValueError(f"not a G.711 codec: {codec!r}")


def decode_pcm(codec: str, payload: bytes) -> bytes:
    """Decode straight to little-endian 16-bit PCM bytes (what a WAV file holds)."""
    if codec == PCMU:
        table = _ULAW_PCM
    elif codec == PCMA:
        table = _ALAW_PCM
    else:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    return b"".join([table[b] for b in payload])
