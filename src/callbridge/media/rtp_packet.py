"""RTP packets (RFC 3550 §5.1): the fixed header, and the payload after the CSRC list, extension and padding.

`parse` refuses, with `RtpError`, anything that is not an RTP version 2 packet whose CSRC list, header extension
and padding fit in the datagram (RFC 3550 §5.1, §5.3.1, A.1). Shared by the phone's RTP endpoint and the recording
converter.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["HEADER", "RtpError", "RtpPacket", "build", "is_rtcp", "parse"]

HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def build(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, *,
          marker: bool = False) -> bytes:
    """One RTP packet: version 2, no padding, no extension, no CSRC."""
    return HEADER.pack(0x80, (0x80 if marker else 0) | (payload_type & 0x7F), sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


def parse(data: bytes) -> RtpPacket:
    if len(data) < 12:
        raise RtpError(f"{len(data)} bytes: shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, not 2")
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension (§5.3.1): 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise RtpError("header extension beyond the packet")
        offset += 4 + 4 * int.from_bytes(data[offset + 2: offset + 4], "big")
    end = len(data)
    if first & 0x20:  # padding: the last octet counts the padding octets, itself included
        padding = data[-1]
        if padding == 0:
            raise RtpError("padding bit set with a padding count of 0")
        end -= padding
    if offset > end:
        raise RtpError("CSRC list, extension or padding longer than the packet")
    return RtpPacket(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, data[offset:end])


def is_rtcp(data: bytes) -> bool:
    """An RTCP packet multiplexed on the RTP port: its second octet is a packet type 192..223 (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223
