"""Reading the UDP packets of a classic pcap file (the format rtpengine writes its recordings in).

Format (libpcap, as documented in draft-ietf-opsawg-pcap): a 24-byte global header whose magic number gives the
byte order and the time resolution (0xA1B2C3D4 microseconds, 0xA1B23C4D nanoseconds), the snapshot length and the
link type; then records of a 16-byte header (seconds, fraction, captured length, original length) and the bytes.

Link types read: 101 LINKTYPE_RAW (an IPv4 or IPv6 packet, told apart by its version nibble; rtpengine's
default), 228/229 (raw IPv4/IPv6), 1 Ethernet (EtherType 0x0800 or 0x86DD, behind at most two 802.1Q tags) and 113
Linux cooked capture. Of each packet only UDP over IPv4 or IPv6 is kept (IPv6 hop-by-hop, routing and destination
options headers are skipped); fragments, other protocols and packets cut short by the snapshot length are counted
as skipped. A file cut short inside its last record (a recorder stopped mid-write) keeps what came before and says
so (``truncated``). What is not a classic pcap file at all raises `PcapError` naming the file and the reason.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = ["LINK_ETHERNET", "LINK_RAW", "PcapError", "PcapFile", "UdpPacket", "read_pcap"]

LINK_ETHERNET = 1
LINK_RAW = 101
LINK_LINUX_SLL = 113
LINK_IPV4 = 228
LINK_IPV6 = 229
_SUPPORTED = {LINK_ETHERNET: "Ethernet", LINK_RAW: "raw IP", LINK_LINUX_SLL: "Linux cooked", LINK_IPV4: "raw IPv4",
              LINK_IPV6: "raw IPv6"}
_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
          b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_IPV6_SKIPPABLE = {0, 43, 60}  # hop-by-hop, routing, destination options (RFC 8200 §4)
_UDP = 17

Address = tuple[str, int]


class PcapError(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UdpPacket:
    time: float  # seconds since the epoch, from the record header
    source: Address
    destination: Address
    payload: bytes


@dataclass
class PcapFile:
    name: str
    link_type: int
    packets: list[UdpPacket] = field(default_factory=list)
    skipped: int = 0  # records that are not whole UDP over IPv4/IPv6
    truncated: bool = False  # the file ends inside a record


def _ip(data: bytes, offset: int, time: float) -> UdpPacket | None:
    """The UDP packet in the IP packet at ``offset``, or None."""
    if len(data) <= offset:
        return None
    version = data[offset] >> 4
    if version == 4:
        if len(data) < offset + 20:
            return None
        ihl = (data[offset] & 0x0F) * 4
        total = int.from_bytes(data[offset + 2: offset + 4], "big")
        flags_fragment = int.from_bytes(data[offset + 6: offset + 8], "big")
        if data[offset + 9] != _UDP or flags_fragment & 0x3FFF or ihl < 20:  # MF set or an offset: a fragment
            return None
        source_ip = str(ipaddress.IPv4Address(data[offset + 12: offset + 16]))
        destination_ip = str(ipaddress.IPv4Address(data[offset + 16: offset + 20]))
        udp = offset + ihl
        end = offset + total
    elif version == 6:
        if len(data) < offset + 40:
            return None
        next_header = data[offset + 6]
        end = offset + 40 + int.from_bytes(data[offset + 4: offset + 6], "big")
        source_ip = str(ipaddress.IPv6Address(data[offset + 8: offset + 24]))
        destination_ip = str(ipaddress.IPv6Address(data[offset + 24: offset + 40]))
        udp = offset + 40
        while next_header in _IPV6_SKIPPABLE and len(data) >= udp + 2:
            next_header, length = data[udp], (data[udp + 1] + 1) * 8
            udp += length
        if next_header != _UDP:
            return None
    else:
        return None
    if len(data) < end or len(data) < udp + 8:
        return None  # cut by the snapshot length
    source_port, destination_port, length = struct.unpack_from("!HHH", data, udp)
    if length < 8 or udp + length > end:
        return None
    return UdpPacket(time, (source_ip, source_port), (destination_ip, destination_port), data[udp + 8: udp + length])


def _link_offset(link_type: int, data: bytes) -> int | None:
    """Where the IP packet starts in a record of ``link_type``."""
    if link_type in (LINK_RAW, LINK_IPV4, LINK_IPV6):
        return 0
    if link_type == LINK_ETHERNET:
        offset, ethertype = 12, 0
        for _ in range(3):
            if len(data) < offset + 2:
                return None
            ethertype = int.from_bytes(data[offset: offset + 2], "big")
            if ethertype not in (0x8100, 0x88A8):
                break
            offset += 4
        return offset + 2 if ethertype in (0x0800, 0x86DD) else None
    if link_type == LINK_LINUX_SLL:
        if len(data) < 16 or int.from_bytes(data[14:16], "big") not in (0x0800, 0x86DD):
            return None
        return 16
    return None


def read_pcap(data: bytes, name: str = "<pcap>") -> PcapFile:
    """The UDP packets of a classic pcap file's bytes (see the module docstring)."""
    if data[:4] == _PCAPNG:
        raise PcapError(name, "a pcapng file: only classic pcap is read (rtpengine writes classic pcap)")
    if len(data) < 24:
        raise PcapError(name, f"not a pcap file: {len(data)} bytes, shorter than the 24-byte header")
    try:
        order, resolution = _MAGIC[data[:4]]
    except KeyError:
        raise PcapError(name, f"not a pcap file: magic number {data[:4].hex()}") from None
    major, _minor, _zone, _sigfigs, _snaplen, link_type = struct.unpack_from(order + "HHiIII", data, 4)
    if major != 2:
        raise PcapError(name, f"pcap version {major} (only 2 is read)")
    link_type &= 0x0FFFFFFF  # the top bits may carry an FCS length (draft-ietf-opsawg-pcap §4)
    if link_type not in _SUPPORTED:
        raise PcapError(name, f"unsupported link type {link_type} (read: "
                              f"{', '.join(f'{k} {v}' for k, v in sorted(_SUPPORTED.items()))})")
    result = PcapFile(name, link_type)
    record = struct.Struct(order + "IIII")
    offset = 24
    size = len(data)
    while offset < size:
        if offset + 16 > size:
            result.truncated = True
            break
        seconds, fraction, captured, _original = record.unpack_from(data, offset)
        offset += 16
        if offset + captured > size:
            result.truncated = True
            break
        frame = data[offset: offset + captured]
        offset += captured
        start = _link_offset(link_type, frame)
        packet = _ip(frame, start, seconds + fraction * resolution) if start is not None else None
        if packet is None:
            result.skipped += 1
        else:
            result.packets.append(packet)
    return result
