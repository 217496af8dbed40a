"""A small RTP endpoint for tests: sends PCMU packets with continuous sequence numbers and timestamps (RFC 3550
§5.1), and collects what arrives, on a real UDP socket on loopback.

Continuity matters: once rtpengine transcodes (or injects DTMF) it drops packets whose sequence number it has
already seen, so a sender that restarted its numbering would look like media loss. On that path rtpengine also
writes an SSRC of its own, but it passes PCMU payload through unchanged: each packet's payload starts with its
sender's id (`RtpEndpoint.ssrc`, 4 bytes), which is how a receiver tells who sent it (`Packet.sender`).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")
PCMU = 0
SAMPLES = 160  # 20 ms at 8 kHz


@dataclass(frozen=True)
class Packet:
    source: tuple[str, int]
    payload_type: int
    seq: int
    ssrc: int
    sender: int  # the sending RtpEndpoint's id, from the payload


class RtpEndpoint:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssrc: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.ssrc = ssrc if ssrc is not None else self.address[1]
        self.seq = 1000
        self.timestamp = 0

    async def send(self, dest: tuple[str, int], count: int = 10, *, interval: float = 0.002) -> None:
        for _ in range(count):
            header = HEADER.pack(0x80, PCMU, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
            self.sock.sendto(header + struct.pack("!I", self.ssrc) + b"\xff" * (SAMPLES - 4), dest)
            self.seq += 1
            self.timestamp += SAMPLES
            await asyncio.sleep(interval)

    async def receive(self, *, want: int, timeout: float = 2.0) -> list[Packet]:
        """What arrives until `want` packets came or `timeout` passed (then: whatever came)."""
        packets: list[Packet] = []
        deadline = time.monotonic() + timeout
        while len(packets) < want and time.monotonic() < deadline:
            try:
                data, source = self.sock.recvfrom(4096)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            if len(data) >= HEADER.size + 4:
                _, marker_pt, seq, _, ssrc = HEADER.unpack_from(data)
                (sender,) = struct.unpack_from("!I", data, HEADER.size)
                packets.append(Packet((source[0], source[1]), marker_pt & 0x7F, seq, ssrc, sender))
        return packets

    def drain(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recvfrom(4096)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()
