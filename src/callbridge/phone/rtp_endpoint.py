"""A call's RTP endpoint: it sends what the call plays to where the far end's SDP says, and records what it hears.

    phone = await Phone.start(..., media=True)          # each call gets its own RTP socket and `call.rtp`
    call.rtp.play_tone(1000)                            # or play_tone(440, 480), play_silence(), play(audio), stop()
    t0 = phone.now(); await asyncio.sleep(1)
    heard = call.rtp.heard(t0, phone.now())             # `listen.Heard`: heard.dominant_hz, heard.share(1000) ...
    await call.rtp.send_digits("12#")                   # RFC 4733 events; call.rtp.events lists those received
    call.rtp.stats                                      # `rtp.ReceiverStats`: received, lost, duplicates, jitter_ms

Theory of operation
- Sending: one `RtpClock` per phone ticks every 20 ms on the loop (one timer for all the phone's calls, scheduled
  at absolute times so it does not drift) and each endpoint sends the frames that are due: normally one, a few when
  the loop was late (the rate stays 50 packets per second on average; more than 5 late frames are skipped).
- Sequence numbers go up by exactly one per packet sent and the timestamp by 160 per 20 ms frame, sent or not
  (RFC 3550 §5.1; both start random). A stream that stops (hold) and starts again keeps both continuous: rtpengine
  drops repeated sequence numbers once it transcodes.
- Where and whether (read from the call's SDP state at each tick, cached by identity, so re-INVITEs are followed
  with no hook): the far end's first accepted audio stream gives the address (media c=, else session c=) and the
  port; a port of 0 or no stream sends nothing. We send only while the call is established, our own last
  description says sendrecv or sendonly and the far end's sendrecv or recvonly (RFC 3264 §6.1, §8.4: the held
  side answers recvonly and stops; inactive stops both). The codec is the first of the far end's formats we
  offered (PCMU, PCMA).
- Symmetric RTP (``symmetric_rtp=True``, RFC 4961; what rtpengine calls comedia): once a packet arrives we send to
  its source instead of the SDP's address, which is how a peer behind NAT is reached. A new remote description
  forgets the learned address.
- Every destination passes the phone's destination policy (loopback only in tests); a refused one is counted
  (``refused``) and not sent to.
- Receiving: the socket is read with ``loop.add_reader`` (no protocol object per call); each datagram is parsed
  (`rtp.parse`), counted per SSRC (`rtp.ReceiverStats`), and either fed to the `TelephoneEventReceiver` (its
  payload type is the telephone-event one of either side's SDP) or decoded (G.711 by payload type 0/8) into the
  `listen.Listener`, and into one `Listener` per SSRC (at most `MAX_SOURCES`), so that two sources sharing the port
  (a supervisor listening to both parties) are measured apart (`heard_from`). Malformed datagrams are counted
  (``malformed``) and dropped.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import TYPE_CHECKING

from callbridge.media.g711 import PCMA, PCMU
from callbridge.phone.listen import Heard, Listener, Window
from callbridge.phone.media import parse_remote, remote_direction, telephone_event_type
from callbridge.phone.rtp import ReceiverStats, RtpError, build, parse
from callbridge.phone.states import CallState
from callbridge.phone.telephone_event import ReceivedEvent, TelephoneEventReceiver, event_packets
from callbridge.phone.tone import FRAME, FrameSource, silence, tone

if TYPE_CHECKING:

    from callbridge.media.audio import Audio
    from callbridge.phone.call import Call
    from callbridge.sip.sdp import SessionDescription

__all__ = ["RtpClock", "RtpEndpoint"]

TICK = 0.020
MAX_CATCH_UP = 5
MAX_SOURCES = 8  # SSRCs heard apart per call (memory stays bounded: each keeps `Listener`'s window of time)
_PT_CODEC = {0: PCMU, 8: PCMA}
_CODEC_PT = {PCMU: 0, PCMA: 8}
Address = tuple[str, int]


class RtpClock:
    """The phone's 20 ms tick for all its endpoints; runs only while one is registered."""

    def __init__(self) -> None:
        self._endpoints: dict[RtpEndpoint, None] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def add(self, endpoint: RtpEndpoint) -> None:
        self._endpoints[endpoint] = None
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + TICK
            self._handle = loop.call_at(self._next, self._tick)

    def discard(self, endpoint: RtpEndpoint) -> None:
        self._endpoints.pop(endpoint, None)
        if not self._endpoints and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for endpoint in list(self._endpoints):
            endpoint._on_tick(now)
        self._next += TICK
        if self._next < now - MAX_CATCH_UP * TICK:
            self._next = now + TICK  # far behind (a stalled loop): resume from now
        self._handle = loop.call_at(self._next, self._tick) if self._endpoints else None


class RtpEndpoint:
    """The RTP side of one call (see the module docstring)."""

    def __init__(self, call: Call, sock: socket.socket, *, symmetric: bool = False, window: float = 0.1,
                 rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.call = call
        self.socket = sock
        self.symmetric = symmetric
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.packets_sent = 0
        self.refused = 0
        self.malformed = 0
        self.send_errors = 0
        self.last_destination: Address | None = None
        # Where packets physically go instead of their destination (a NAT gateway's inside address in tests); the
        # destination policy judges this address then.
        self.next_hop: Address | None = None
        self.listener = Listener(window=window)
        self._window = window
        self.sources: dict[int, Listener] = {}  # SSRC -> what that source alone sent (a listener gets two)
        self.streams: dict[int, ReceiverStats] = {}
        self.payload_types: dict[int, int] = {}  # packets received per RTP payload type
        self.telephone_events = TelephoneEventReceiver()
        self._source: FrameSource | None = silence()
        self._frame = 0
        self._digits: list[tuple[bool, bytes, int]] = []  # (marker, payload, digit index) queued to send
        self._digit_timestamps: dict[int, int] = {}  # digit index -> the timestamp of its event's start
        self._last_stats: ReceiverStats | None = None
        self._learned_for: SessionDescription | None = None  # the remote description `_learned` was learned under
        self._digits_done: asyncio.Future[None] | None = None
        self._event_waiters: list[asyncio.Future[ReceivedEvent]] = []
        self._learned: Address | None = None
        self._remote_seen: SessionDescription | None = None
        self._local_seen: bytes | None = None
        self._target: tuple[Address, str, int | None] | None = None  # (address, codec, telephone-event pt)
        self._sending = False
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._clock: RtpClock = call.phone._rtp_clock
        self._due = self._loop.time()
        self._clock.add(self)

    # --- what to play ---------------------------------------------------------------------------------------------
    def play_tone(self, *frequencies: float, dbfs: float = -12.0) -> None:
        """Send a tone (several frequencies sound together) from now on, looped."""
        self.play_source(tone(*frequencies, dbfs=dbfs))

    def play_silence(self) -> None:
        """Send digital silence (packets keep flowing)."""
        self.play_source(silence())

    def play(self, audio: Audio | FrameSource, *, loop: bool = True) -> None:
        """Send recorded audio (`callbridge.media.audio.Audio`, 8 kHz mono), looped by default."""
        source = audio if isinstance(audio, FrameSource) else FrameSource(audio.samples, loop=loop)
        self.play_source(source)

    def play_source(self, source: FrameSource) -> None:
        self._source = source
        self._frame = 0

    def stop(self) -> None:
        """Send no packets at all (the timestamp keeps advancing, RFC 3550 §5.1)."""
        self._source = None

    async def send_digits(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60, volume: int = 10,
                          timeout: float = 10.0) -> None:
        """Send each digit as an RFC 4733 event (audio pauses meanwhile), ``gap_ms`` of audio between digits;
        returns when the last packet left. Raises ValueError for a non-DTMF digit before sending anything."""
        plans = [list(event_packets(d, duration_ms, volume=volume)) for d in digits]
        if self._digits_done is not None and not self._digits_done.done():
            raise RuntimeError("digits are already being sent")
        gap_frames = max(0, gap_ms // 20)
        queue: list[tuple[bool, bytes, int]] = []
        for index, plan in enumerate(plans):
            queue.extend((marker, payload, index) for marker, payload in plan)
            queue.extend((False, b"", index) for _ in range(gap_frames if index < len(plans) - 1 else 0))
        self._digits = queue
        self._digit_timestamps = {}
        self._digits_done = self._loop.create_future()
        await asyncio.wait_for(asyncio.shield(self._digits_done), timeout)

    # --- what was heard -------------------------------------------------------------------------------------------
    def heard(self, since: float, until: float) -> Heard:
        """Windows heard between ``since`` and ``until`` (the phone's clock, ``phone.now()``)."""
        return self.listener.heard(since, until)

    def heard_from(self, ssrc: int, since: float, until: float) -> Heard:
        """What the source `ssrc` alone sent between ``since`` and ``until`` (several sources may share the port:
        a supervisor listening gets both parties of a call, each with its own SSRC)."""
        return self.sources[ssrc].heard(since, until) if ssrc in self.sources else Listener().heard(since, until)

    def windows(self, since: float = float("-inf"), until: float = float("inf")) -> list[Window]:
        return self.listener.windows(since, until)

    def packets_between(self, since: float, until: float) -> int:
        return self.listener.packets_between(since, until)

    @property
    def stats(self) -> ReceiverStats | None:
        """The stream heard most recently (by SSRC), or None before any."""
        return self._last_stats

    @property
    def packets_received(self) -> int:
        return sum(s.received for s in self.streams.values())

    @property
    def events(self) -> list[ReceivedEvent]:
        """RFC 4733 events received, in the order they started."""
        return self.telephone_events.events

    async def wait_digits(self, count: int, timeout: float = 5.0) -> str:
        """Until ``count`` events have ended; their digits."""
        async def ended() -> str:
            while True:
                done = [e for e in self.events if e.ended]
                if len(done) >= count:
                    return "".join(e.digit for e in done[:count])
                fut: asyncio.Future[ReceivedEvent] = self._loop.create_future()
                self._event_waiters.append(fut)
                await fut

        return await asyncio.wait_for(ended(), timeout)

    @property
    def local_address(self) -> Address:
        name = self.socket.getsockname()
        return (name[0], name[1])

    # --- where to send ----------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute the target from the call's descriptions (called when either changed)."""
        media = self.call.media
        remote, local = media.remote, media.local
        self._remote_seen, self._local_seen = remote, local
        if remote is not self._learned_for:
            self._learned = None  # a new description: forget the address learned by symmetric RTP
            self._learned_for = remote
        self._target = None
        self._sending = False
        if remote is None or local is None:
            return
        # Both ends must agree (RFC 3264 §6.1): we send when our description says sendrecv or sendonly and theirs
        # says sendrecv or recvonly (an inactive answer to our sendonly offer stops us too).
        self._sending = (remote_direction(parse_remote(local)) in ("sendrecv", "sendonly")
                         and remote_direction(remote) in ("sendrecv", "recvonly"))
        for section in remote.media:
            if section.media != "audio" or section.rejected:
                continue
            codec = next((_PT_CODEC[int(pt)] for pt in section.formats
                          if pt in ("0", "8") and pt in media.formats), None)
            connection = remote.connection_for(section)
            if codec is None or connection is None:
                return
            event_pt = telephone_event_type(section)
            self._target = ((connection.address, section.port), codec, event_pt)
            return

    @property
    def destination(self) -> Address | None:
        """Where packets go now (the learned address under symmetric RTP, else the SDP's), or None."""
        self._maybe_refresh()
        if self._target is None:
            return None
        return self._learned if self._learned is not None else self._target[0]

    def _maybe_refresh(self) -> None:
        media = self.call.media
        if media.remote is not self._remote_seen or media.local is not self._local_seen:
            self._refresh()

    # --- the tick ----------------------------------------------------------------------------------------------------
    def _on_tick(self, now: float) -> None:
        due = 0
        while self._due <= now and due < MAX_CATCH_UP:
            self._due += TICK
            due += 1
        if self._due <= now:
            skipped = int((now - self._due) / TICK) + 1
            self._due += skipped * TICK
            self.timestamp = (self.timestamp + skipped * FRAME) & 0xFFFFFFFF
        for _ in range(due):
            self._send_frame()

    def _send_frame(self) -> None:
        timestamp = self.timestamp
        self.timestamp = (timestamp + FRAME) & 0xFFFFFFFF
        call = self.call
        if call.state is not CallState.ESTABLISHED:
            return
        self._maybe_refresh()
        target = self._target
        if self._digits:
            self._send_digit_packet(timestamp, target)
            return
        if target is None or not self._sending or self._source is None:
            return
        payload = self._source.payload(target[1], self._frame)
        self._frame += 1
        if payload is None:
            self._source = None
            return
        self._send(build(_CODEC_PT[target[1]], self.sequence, timestamp, self.ssrc, payload), target)

    def _send_digit_packet(self, timestamp: int, target: tuple[Address, str, int | None] | None) -> None:
        marker, payload, index = self._digits.pop(0)
        if index not in self._digit_timestamps:
            self._digit_timestamps[index] = timestamp  # every packet of an event carries its start (RFC 4733 §2.3.1)
        if payload and target is not None and self._sending:
            event_pt = target[2] if target[2] is not None else self.call.media.telephone_event
            if event_pt is not None:
                self._send(build(event_pt, self.sequence, self._digit_timestamps[index], self.ssrc, payload,
                                 marker=marker), target)
        if not self._digits and self._digits_done is not None and not self._digits_done.done():
            self._digits_done.set_result(None)

    def _send(self, packet: bytes, target: tuple[Address, str, int | None]) -> None:
        destination = self._learned if self._learned is not None else target[0]
        hop = self.next_hop or destination
        if self.call.phone.runtime.policy.refusal_reason(hop) is not None:
            self.refused += 1
            return
        try:
            self.socket.sendto(packet, hop)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1  # the socket buffer is full: the packet is lost, as on a real network
            return
        except OSError:
            self.send_errors += 1
            return
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.last_destination = destination

    # --- receiving ---------------------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        sock = self.socket
        now = self._loop.time()
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: nothing to read
                return
            self._on_datagram(data, (addr[0], addr[1]), now)

    def _on_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            packet = parse(data)
        except RtpError:
            self.malformed += 1
            return
        if self.symmetric:
            self._learned = addr
        stats = self.streams.get(packet.ssrc)
        if stats is None:
            stats = self.streams[packet.ssrc] = ReceiverStats(packet.ssrc)
        self._last_stats = stats
        if not stats.on_packet(packet.sequence, packet.timestamp, now):
            return
        pt = packet.payload_type
        self.payload_types[pt] = self.payload_types.get(pt, 0) + 1
        codec = _PT_CODEC.get(pt)
        if codec is not None:
            self.listener.feed(now, packet.payload, codec)
            source = self.sources.get(packet.ssrc)
            if source is None and len(self.sources) < MAX_SOURCES:
                source = self.sources[packet.ssrc] = Listener(window=self._window)
            if source is not None:
                source.feed(now, packet.payload, codec)
            return
        self._maybe_refresh()
        event_pts = {self.call.media.telephone_event, self._target[2] if self._target else None}
        if pt in event_pts:
            try:
                ended = self.telephone_events.on_payload(packet.payload, packet.timestamp, now)
            except RtpError:
                self.malformed += 1
                return
            if ended is not None:
                waiters, self._event_waiters = self._event_waiters, []
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(ended)

    # --- end ---------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._clock.discard(self)
        try:
            self._loop.remove_reader(self.socket.fileno())
        except (ValueError, RuntimeError):  # the loop is closing
            pass
        self.socket.close()
        if self._digits_done is not None and not self._digits_done.done():
            self._digits_done.cancel()
        for fut in self._event_waiters:
            fut.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<RtpEndpoint {self.local_address} -> {self.destination} sent={self.packets_sent}>"
