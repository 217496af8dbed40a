"""A classic pcap writer for tests: UDP datagrams over IPv4 or IPv6, as link type 101 (raw IP) or 1 (Ethernet),
with microsecond or nanosecond timestamps, in either byte order: the files rtpengine writes, made to measure."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

LINK_ETHERNET = 1
LINK_RAW = 101

Address = tuple[str, int]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_udp(source: Address, destination: Address, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' family) carrying one UDP datagram."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + udp
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, src.packed, dst.packed) + udp


def ethernet(ip_packet: bytes, *, vlan: int | None = None) -> bytes:
    ethertype = 0x0800 if ip_packet[0] >> 4 == 4 else 0x86DD
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + tag + struct.pack("!H", ethertype) + ip_packet


@dataclass
class PcapWriter:
    link_type: int = LINK_RAW
    nanoseconds: bool = False
    big_endian: bool = False
    vlan: int | None = None
    records: list[bytes] = field(default_factory=list)

    def add(self, time: float, source: Address, destination: Address, payload: bytes) -> None:
        packet = ip_udp(source, destination, payload)
        frame = ethernet(packet, vlan=self.vlan) if self.link_type == LINK_ETHERNET else packet
        self.add_frame(time, frame)

    def add_frame(self, time: float, frame: bytes) -> None:
        order = ">" if self.big_endian else "<"
        seconds = int(time)
        fraction = round((time - seconds) * (1e9 if self.nanoseconds else 1e6))
        self.records.append(struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame)

    def to_bytes(self) -> bytes:
        order = ">" if self.big_endian else "<"
        magic = 0xA1B23C4D if self.nanoseconds else 0xA1B2C3D4
        header = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, self.link_type)
        return header + b"".join(self.records)
