"""An in-memory `Media` port (`callbridge.b2bua.ports.Media`) for unit tests: no relay, no socket.

It behaves the way rtpengine does for what callbridge relies on (docs/design.md, "Media"): the SDP it returns names
its relay address, with one port per party of a call that stays that party's for the whole call (so the customer's
side does not move when an agent or a transfer target comes), and every call made of it is recorded in `ops`
in callbridge's terms. `up = False` makes it unavailable for new calls; a command named in `failing` raises
`MediaUnavailable` (a relay that stopped answering), one named in `refusing` raises `MediaRefused`; `counters` are
what `packets` answers.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from callbridge.b2bua.ports import MediaRefused, MediaUnavailable

RELAY = "127.0.0.99"


class FakeMedia:
    def __init__(self, *, up: bool = True, first_port: int = 30000) -> None:
        self.up = up
        self.busy = False  # `backlogged`: the relay has commands waiting behind its window
        self.failing: set[str] = set()
        self.refusing: set[str] = set()  # commands answered with an error (`MediaRefused`: e.g. an unknown call)
        self.ops: list[tuple[object, ...]] = []
        self.calls: set[str] = set()
        self.counters: dict[str, dict[str, int]] = {}  # conn_id -> RTP packets per leg (`packets`)
        self._ports: dict[tuple[str, str], int] = {}
        self._next = itertools.count(first_port, 2)
        self.recording_dir: str | None = "/spool"  # None: recordings cannot be read here (`can_record`)
        self.segments: dict[str, list[str]] = {}  # conn_id -> the segment files a start made

    def available(self) -> bool:
        return self.up

    def backlogged(self, conn_id: str) -> bool:
        return self.busy

    def port_for(self, conn_id: str, party: str) -> int:
        """The relay port that faces `party` in `conn_id` (allocated on first use, then kept)."""
        key = (conn_id, party)
        if key not in self._ports:
            self._ports[key] = next(self._next)
        return self._ports[key]

    def _check(self, command: str, conn_id: str, *, new: bool = False) -> None:
        if command in self.failing:
            raise MediaUnavailable(f"fake relay did not answer {command!r}")
        if command in self.refusing:
            raise MediaRefused(f"fake relay refused {command!r}")
        if new and conn_id not in self.calls:
            if not self.up:
                raise MediaUnavailable("no rtpengine relay is up")
            self.calls.add(conn_id)
        elif conn_id not in self.calls:
            raise MediaUnavailable(f"call {conn_id} has no media relay")

    def _rewrite(self, sdp: bytes, port: int) -> bytes:
        text = sdp.decode()
        if not re.search(r"^m=audio \d+", text, re.M):
            raise MediaRefused("fake relay: no audio stream in the SDP")
        text = re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {RELAY}", text, flags=re.M)
        return re.sub(r"^m=audio \d+", f"m=audio {port}", text, flags=re.M).encode()

    async def offer(self, conn_id: str, from_leg: str, to_leg: str | None, sdp: bytes, *,
                    from_browser: bool = False, to_browser: bool = False) -> bytes:
        self.ops.append(("offer", conn_id, from_leg, to_leg))
        self._check("offer", conn_id, new=True)
        return self._rewrite(sdp, self.port_for(conn_id, to_leg or f"answerer-of-{from_leg}"))

    async def answer(self, conn_id: str, offerer: str, answerer: str, sdp: bytes, *,
                     offerer_browser: bool = False, answerer_browser: bool = False) -> bytes:
        self.ops.append(("answer", conn_id, offerer, answerer))
        self._check("answer", conn_id)
        return self._rewrite(sdp, self.port_for(conn_id, offerer))

    async def drop_leg(self, conn_id: str, leg_id: str) -> None:
        self.ops.append(("drop_leg", conn_id, leg_id))
        self._check("drop_leg", conn_id)

    async def block(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None:
        self.ops.append(("block", conn_id, leg_id) if toward is None else ("block", conn_id, leg_id, toward))
        self._check("block", conn_id)

    async def unblock(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None:
        self.ops.append(("unblock", conn_id, leg_id) if toward is None else ("unblock", conn_id, leg_id, toward))
        self._check("unblock", conn_id)

    async def play_wav(self, conn_id: str, leg_id: str, wav: bytes, *, repeat: int | None = None) -> None:
        self.ops.append(("play_wav", conn_id, leg_id, wav, repeat))
        self._check("play_wav", conn_id)

    async def play(self, conn_id: str, leg_id: str, file: str, *, repeat: int | None = None) -> None:
        self.ops.append(("play", conn_id, leg_id, file, repeat))
        self._check("play", conn_id)

    async def stop_playing(self, conn_id: str, leg_id: str) -> None:
        self.ops.append(("stop_playing", conn_id, leg_id))
        self._check("stop_playing", conn_id)

    async def subscribe(self, conn_id: str, parties: Sequence[str], listener: str, *, webrtc: bool = False) -> bytes:
        self.ops.append(("subscribe", conn_id, tuple(parties), listener, *(("webrtc",) if webrtc else ())))
        self._check("subscribe", conn_id)
        return b"v=0\r\n"

    async def subscribe_answer(self, conn_id: str, listener: str, sdp: bytes) -> None:
        self.ops.append(("subscribe_answer", conn_id, listener, sdp))
        self._check("subscribe_answer", conn_id)

    async def unsubscribe(self, conn_id: str, listener: str) -> None:
        self.ops.append(("unsubscribe", conn_id, listener))
        self._check("unsubscribe", conn_id)

    async def send_dtmf(self, conn_id: str, leg_id: str, digit: str, *, duration_ms: int = 100) -> None:
        self.ops.append(("send_dtmf", conn_id, leg_id, digit, duration_ms))
        self._check("send_dtmf", conn_id)

    async def packets(self, conn_id: str) -> dict[str, int]:
        self.ops.append(("packets", conn_id))
        self._check("packets", conn_id)
        return dict(self.counters.get(conn_id, {}))

    async def start_recording(self, conn_id: str) -> None:
        self.ops.append(("start_recording", conn_id))
        self._check("start_recording", conn_id)
        files = self.segments.setdefault(conn_id, [])
        files.append(f"{self.recording_dir}/{conn_id}-{len(files)}.pcap")

    def can_record(self) -> bool:
        return self.recording_dir is not None

    def recording_files(self, conn_id: str) -> tuple[list[str], list[str]]:
        self.ops.append(("recording_files", conn_id))
        files = self.segments.get(conn_id, [])
        return list(files), [f.replace(".pcap", ".meta") for f in files]

    async def stop_recording(self, conn_id: str) -> None:
        self.ops.append(("stop_recording", conn_id))
        self._check("stop_recording", conn_id)

    async def delete(self, conn_id: str) -> None:
        self.ops.append(("delete", conn_id))
        self.calls.discard(conn_id)

    def lost(self, conn_id: str) -> None:
        self.ops.append(("lost", conn_id))
        self.calls.discard(conn_id)
        for key in [k for k in self._ports if k[0] == conn_id]:
            del self._ports[key]  # a new relay gives the call new ports

    def relay_of(self, conn_id: str) -> str | None:
        return f"{RELAY}:2223" if conn_id in self.calls else None

    def restore(self, conn_id: str, relay: str) -> bool:
        self.ops.append(("restore", conn_id, relay))
        if relay != f"{RELAY}:2223":
            return False
        self.calls.add(conn_id)
        return True

    def forget(self, conn_id: str) -> None:
        self.ops.append(("forget", conn_id))
        self.calls.discard(conn_id)
