"""The `Media` port (`callbridge.b2bua.ports.Media`) on rtpengine's ng protocol: one rtpengine call per call.

Mapping (found with rtpengine 10.5 on loopback, docs/design.md "Media")
- The ng ``call-id`` is the call's `conn_id`; the ng tags are leg ids. The customer's leg is one monologue for
  the whole call; each agent or transfer target is a monologue of its own.
- `offer(conn_id, from_leg, to_leg, sdp)` is ng ``offer`` with ``from-tag`` = `from_leg` and ``to-tag`` = `to_leg`
  (omitted for a first INVITE, whose answerer is not known yet); `answer(conn_id, offerer, answerer, sdp)` is ng
  ``answer`` with ``from-tag`` = offerer, ``to-tag`` = answerer. A transfer target's offer toward the customer
  (RFC 3725 flow I) is thus ``offer from-tag=target to-tag=customer``: rtpengine re-targets the customer's media to
  the target.
- Every offer and answer carries the flag ``port latching``: without it rtpengine 10.5 gives the customer's
  monologue NEW local ports on each re-targeting, so the customer's SDP would change port at every transfer; with
  it the customer keeps the address and ports it was first given.
- `drop_leg` is ng ``delete`` with ``from-tag`` = the leg alone and ``delete delay`` 0: that monologue's ports are
  freed and the others stay (with a ``to-tag`` too, rtpengine deletes the whole call).
- `play_wav` is ng ``play media`` with the audio as a ``blob`` (10.5 takes ``file``, ``blob`` and ``db-id``; a
  blob needs nothing on the relay's disk, so a relay on another machine plays it too). It must fit one ng datagram
  (`MAX_BLOB`): the B2BUA sends G.711 mu-law WAV (8 kHz, 8 bits: 8 s in 64 kB), which rtpengine decodes with
  ffmpeg. ``play media`` toward a leg does not silence the others: hold music is ``block media`` on the other party
  (directional with ``to-tag``: only toward the held customer) and then ``play media`` to the held one.
- ``inject DTMF`` is in the flags of every offer and answer when `inject_dtmf` is on: rtpengine 10.5's
  ``play DTMF`` sends nothing unless both the offer and the answer had it. It engages the transcoding path, where
  rtpengine drops packets with repeated sequence numbers. `send_dtmf` is ``play DTMF`` with ``from-tag`` = the
  party the events seem to come from: 10.5 injects them into that party's stream, toward its peer (found on
  loopback: with the customer's own tag, nothing reaches the customer), and queues digits sent one after another.
- `packets` is ng ``query``: per tag, the RTP packets the relay received (10.5's per-stream ``last packet`` is a
  whole second of the relay's wall clock; counters compared between two polls need no clock of the relay's).
- A call sticks to the relay that took its first offer (`RelaySet.assign`); `delete` frees it there.
"""

from __future__ import annotations

from typing import Any

from callbridge.b2bua.ports import MediaRefused, MediaUnavailable
from callbridge.media.relays import RelaySet
from callbridge.media.shell import NgCommandFailed, NgShell, NgTimeout

__all__ = ["MAX_BLOB", "RtpengineMedia", "rtp_packets"]

# One ng command is one UDP datagram (at most 65,507 bytes of payload); the rest of a `play media` is well under 500.
MAX_BLOB = 65000


class RtpengineMedia:
    def __init__(self, shell: NgShell, *, inject_dtmf: bool = True) -> None:
        self.shell = shell
        self.relays: RelaySet = shell.relays
        self.flags = ["port latching", *(["inject DTMF"] if inject_dtmf else [])]

    def available(self) -> bool:
        return any(relay.up for relay in self.relays.relays.values())

    async def offer(self, conn_id: str, from_leg: str, to_leg: str | None, sdp: bytes) -> bytes:
        message: dict[str, Any] = {"command": "offer", "call-id": conn_id, "from-tag": from_leg, "sdp": sdp,
                                   "flags": self.flags, "ICE": "remove"}
        if to_leg is not None:
            message["to-tag"] = to_leg
        return _sdp(await self._send(conn_id, message, new_call=True))

    async def answer(self, conn_id: str, offerer: str, answerer: str, sdp: bytes) -> bytes:
        message = {"command": "answer", "call-id": conn_id, "from-tag": offerer, "to-tag": answerer, "sdp": sdp,
                   "flags": self.flags, "ICE": "remove"}
        return _sdp(await self._send(conn_id, message))

    async def drop_leg(self, conn_id: str, leg_id: str) -> None:
        await self._send(conn_id, {"command": "delete", "call-id": conn_id, "from-tag": leg_id, "delete delay": 0})

    async def block(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None:
        await self._send(conn_id, _directed({"command": "block media", "call-id": conn_id, "from-tag": leg_id},
                                            toward))

    async def unblock(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None:
        await self._send(conn_id, _directed({"command": "unblock media", "call-id": conn_id, "from-tag": leg_id},
                                            toward))

    async def play(self, conn_id: str, leg_id: str, file: str, *, repeat: int | None = None) -> None:
        message: dict[str, Any] = {"command": "play media", "call-id": conn_id, "from-tag": leg_id, "file": file}
        if repeat is not None:
            message["repeat-times"] = repeat
        await self._send(conn_id, message)

    async def play_wav(self, conn_id: str, leg_id: str, wav: bytes, *, repeat: int | None = None) -> None:
        if len(wav) > MAX_BLOB:
            raise MediaRefused(f"{len(wav)} bytes of audio do not fit one ng message (at most {MAX_BLOB})")
        message: dict[str, Any] = {"command": "play media", "call-id": conn_id, "from-tag": leg_id, "blob": wav}
        if repeat is not None:
            message["repeat-times"] = repeat
        await self._send(conn_id, message)

    async def stop_playing(self, conn_id: str, leg_id: str) -> None:
        await self._send(conn_id, {"command": "stop media", "call-id": conn_id, "from-tag": leg_id})

    async def send_dtmf(self, conn_id: str, leg_id: str, digit: str, *, duration_ms: int = 100) -> None:
        await self._send(conn_id, {"command": "play DTMF", "call-id": conn_id, "from-tag": leg_id, "code": digit,
                                   "duration": duration_ms})

    async def packets(self, conn_id: str) -> dict[str, int]:
        return rtp_packets(await self._send(conn_id, {"command": "query", "call-id": conn_id}))

    async def start_recording(self, conn_id: str) -> None:
        await self._send(conn_id, {"command": "start recording", "call-id": conn_id})

    async def stop_recording(self, conn_id: str) -> None:
        await self._send(conn_id, {"command": "stop recording", "call-id": conn_id})

    async def delete(self, conn_id: str) -> None:
        if self.relays.relay_of(conn_id) is None:
            return
        try:
            await self._send(conn_id, {"command": "delete", "call-id": conn_id})
        except MediaRefused:
            pass  # already gone on the relay (its own timeout, a restart): nothing left to free
        finally:
            self.relays.release(conn_id)

    async def _send(self, conn_id: str, message: dict[str, Any], *, new_call: bool = False) -> dict[str, Any]:
        fresh = self.relays.relay_of(conn_id) is None
        relay = self.relays.assign(conn_id) if new_call else self.relays.relay_of(conn_id)
        if relay is None:
            reason = "no rtpengine relay is up" if new_call else f"call {conn_id} has no media relay"
            raise MediaUnavailable(reason)
        try:
            return await self.shell.command(relay.address, message)
        except (NgTimeout, NgCommandFailed) as exc:
            if fresh and new_call:  # the relay never took the call: it must not count there
                self.relays.release(conn_id)
            if isinstance(exc, NgTimeout):
                raise MediaUnavailable(str(exc)) from None
            raise MediaRefused(str(exc)) from None


def rtp_packets(reply: dict[str, Any]) -> dict[str, int]:
    """RTP packets received from each tag, from a ``query`` reply (10.5: ``tags`` -> tag -> ``medias`` ->
    ``streams``, each with ``flags`` naming ``RTP`` or ``RTCP`` and ``stats`` -> ``packets``)."""
    out: dict[str, int] = {}
    tags = reply.get("tags")
    if not isinstance(tags, dict):
        return out
    for tag, monologue in tags.items():
        if not isinstance(monologue, dict):
            continue
        count = 0
        for media in monologue.get("medias") or ():
            for stream in (media.get("streams") or ()) if isinstance(media, dict) else ():
                if not isinstance(stream, dict) or b"RTP" not in (stream.get("flags") or ()):
                    continue
                stats = stream.get("stats")
                packets = stats.get("packets") if isinstance(stats, dict) else None
                if isinstance(packets, int):
                    count += packets
        out[tag.decode("utf-8", "replace") if isinstance(tag, bytes) else str(tag)] = count
    return out


def _directed(message: dict[str, Any], toward: str | None) -> dict[str, Any]:
    if toward is not None:
        message["to-tag"] = toward  # 10.5: only the media from from-tag to to-tag (directional blocking)
    return message


def _sdp(reply: dict[str, Any]) -> bytes:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes) or not sdp:
        raise MediaRefused("rtpengine answered without an SDP")
    return sdp
