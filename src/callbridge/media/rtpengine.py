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
- A leg toward a browser (a WebSocket-registered agent, the agent's page) gets the WebRTC profile (`WEBRTC`):
  ``transport-protocol`` UDP/TLS/RTP/SAVPF, ``ICE`` force (rtpengine's own host candidate: Chromium hides its
  addresses behind mDNS ``.local`` names, so the browser's checks toward the relay's candidate make the path),
  DTLS-SRTP with the relay's fingerprint and ``setup:actpass`` (Chromium then takes the client's role),
  ``rtcp-mux`` require, no SDES. What a browser sends toward a
  plain-RTP party goes on as RTP/AVP without ICE and with RTCP demuxed (`PLAIN_FROM_BROWSER`). The codecs are the
  customer's, with Opus added by transcoding after them: a browser picks the first it takes, so G.711 passes
  untouched (Chromium answers PCMU) and Opus is there for a customer that offered neither PCMU nor PCMA. Answers
  carry no ``transport-protocol``, DTLS role or codec flags: 10.5 applies ``transport-protocol`` in an answer to the
  answerer's side too (the customer's stream then wanted SRTP), and a forced ``DTLS`` passive role toward a
  browser that offered ``actpass`` left its DTLS unstarted (10.5 answers ``active`` by itself). What the relay
  writes toward a browser loses the ``a=ssrc``/``a=ssrc-group`` lines another browser signalled (`unsignalled`):
  10.5 passes them on but sends its own SSRCs, and a page told another SSRC hears silence (an attended transfer
  between two pages, found with Chromium's getStats).
- `subscribe` is ng ``subscribe request`` with ``from-tags`` = the parties and ``to-tag`` = the listener's leg id
  (10.5 takes the tag given); its SDP has one send-only ``m=audio`` per party, in that order, and 10.5 does not
  mix them (it has no mixer). ``subscribe answer`` with the listener's ``to-tag`` and answer starts the media: each
  party's packets go to the port its stream's answer names, with the party's own SSRC, and what the listener sends
  goes nowhere. ``unsubscribe`` with the ``to-tag`` (or ``delete`` with it as ``from-tag``) stops it and the
  parties' call goes on; ``delete`` with a ``to-tag`` too would end the whole call. Found on loopback with 10.5.
  For a browser (the supervisor's board page) ``subscribe request`` takes the WebRTC profile's flags but its codec
  list: 10.5 then writes each stream as UDP/TLS/RTP/SAVPF with ``setup:actpass``, its fingerprint, ICE
  credentials and its host candidate, and takes the browser's answer as it is in ``subscribe answer``.
- `packets` is ng ``query``: per tag, the RTP packets the relay received (10.5's per-stream ``last packet`` is a
  whole second of the relay's wall clock; counters compared between two polls need no clock of the relay's).
- A call sticks to the relay that took its first offer (`RelaySet.assign`); `delete` frees it there. In a cluster
  the relay is written through as ``host:port`` (`relay_of`) and a node that takes the call over sends its
  commands there (`restore`); the node that handed it over lets it go without a command (`forget`).
- Recording (``--recording-method=pcap``; 10.5 has no ``pause recording``): ``start recording`` and ``stop
  recording`` of the whole call. rtpengine writes one pcap per start, holding every packet it receives for the
  call (both directions, raw IP, each with the sender's address and the relay port it reached), as
  ``<recording dir>/pcaps/<call-id>-<16 hex>.pcap``, with ``<recording dir>/metadata/rtpengine-meta-<same>.txt``
  beside it; ``stop recording`` closes the file at once (a deleted call's are closed about 30 s later).
  `recording_files` finds a call's files by those names in `recording_dir` (rtpengine's ``--recording-dir`` as
  this machine sees it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callbridge.b2bua.ports import MediaRefused, MediaUnavailable
from callbridge.media.relays import RelaySet
from callbridge.media.shell import NgCommandFailed, NgShell, NgTimeout

__all__ = ["MAX_BLOB", "RtpengineMedia", "rtp_packets", "unsignalled"]

# One ng command is one UDP datagram (at most 65,507 bytes of payload); the rest of a `play media` is well under 500.
MAX_BLOB = 65000

# Toward a browser (WebRTC, RFC 8827): DTLS-SRTP over ICE with RTP and RTCP on one port, what Chromium insists on.
WEBRTC: dict[str, Any] = {"transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force", "rtcp-mux": ["require"],
                          "SDES": ["off"], "codec": {"transcode": ["opus"]}}
# From a browser toward a plain-RTP party (a carrier, a desk phone): no ICE, no DTLS, RTCP on its own port.
PLAIN_FROM_BROWSER: dict[str, Any] = {"transport-protocol": "RTP/AVP", "ICE": "remove", "rtcp-mux": ["demux"]}


class RtpengineMedia:
    def __init__(self, shell: NgShell, *, inject_dtmf: bool = True, recording_dir: Path | None = None) -> None:
        self.shell = shell
        self.recording_dir = recording_dir
        self.relays: RelaySet = shell.relays
        self.flags = ["port latching", *(["inject DTMF"] if inject_dtmf else [])]

    def available(self) -> bool:
        return any(relay.up for relay in self.relays.relays.values())

    def backlogged(self, conn_id: str) -> bool:
        relay = self.relays.relay_of(conn_id)
        return relay is not None and self.relays.client.backlogged(relay.address)

    async def offer(self, conn_id: str, from_leg: str, to_leg: str | None, sdp: bytes, *,
                    from_browser: bool = False, to_browser: bool = False) -> bytes:
        message: dict[str, Any] = {"command": "offer", "call-id": conn_id, "from-tag": from_leg, "sdp": sdp,
                                   "flags": self.flags, **_toward(to_browser, from_browser)}
        if to_leg is not None:
            message["to-tag"] = to_leg
        out = _sdp(await self._send(conn_id, message, new_call=True))
        return unsignalled(out) if to_browser else out

    async def answer(self, conn_id: str, offerer: str, answerer: str, sdp: bytes, *,
                     offerer_browser: bool = False, answerer_browser: bool = False) -> bytes:
        message = {"command": "answer", "call-id": conn_id, "from-tag": offerer, "to-tag": answerer, "sdp": sdp,
                   "flags": self.flags, **_toward(offerer_browser, answerer_browser, answer=True)}
        out = _sdp(await self._send(conn_id, message))
        return unsignalled(out) if offerer_browser else out

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

    async def subscribe(self, conn_id: str, parties: Sequence[str], listener: str, *, webrtc: bool = False) -> bytes:
        message: dict[str, Any] = {"command": "subscribe request", "call-id": conn_id, "from-tags": list(parties),
                                   "to-tag": listener}
        if webrtc:  # the codecs stay the parties' (the browser takes PCMU/PCMA): no transcoding for a listener
            message.update({k: v for k, v in WEBRTC.items() if k != "codec"})
        out = _sdp(await self._send(conn_id, message))
        return controlled_by_browser(unsignalled(out)) if webrtc else out

    async def subscribe_answer(self, conn_id: str, listener: str, sdp: bytes) -> None:
        await self._send(conn_id, {"command": "subscribe answer", "call-id": conn_id, "to-tag": listener,
                                   "sdp": sdp})

    async def unsubscribe(self, conn_id: str, listener: str) -> None:
        await self._send(conn_id, {"command": "unsubscribe", "call-id": conn_id, "to-tag": listener})

    async def send_dtmf(self, conn_id: str, leg_id: str, digit: str, *, duration_ms: int = 100) -> None:
        await self._send(conn_id, {"command": "play DTMF", "call-id": conn_id, "from-tag": leg_id, "code": digit,
                                   "duration": duration_ms})

    async def packets(self, conn_id: str) -> dict[str, int]:
        return rtp_packets(await self._send(conn_id, {"command": "query", "call-id": conn_id}))

    async def start_recording(self, conn_id: str) -> None:
        await self._send(conn_id, {"command": "start recording", "call-id": conn_id})

    async def stop_recording(self, conn_id: str) -> None:
        await self._send(conn_id, {"command": "stop recording", "call-id": conn_id})

    def can_record(self) -> bool:
        return self.recording_dir is not None

    def recording_files(self, conn_id: str) -> tuple[list[str], list[str]]:
        if self.recording_dir is None:
            return [], []
        name = re.compile(re.escape(conn_id) + r"-[0-9a-f]{16}")
        pcaps = self.recording_dir / "pcaps"
        segments = sorted(str(path) for path in pcaps.glob(f"{glob_escape(conn_id)}-*.pcap")
                          if name.fullmatch(path.stem))
        metadata = self.recording_dir / "metadata"
        others = [str(metadata / f"rtpengine-meta-{Path(segment).stem}.txt") for segment in segments]
        return segments, [path for path in others if Path(path).exists()]

    async def delete(self, conn_id: str) -> None:
        if self.relays.relay_of(conn_id) is None:
            return
        try:
            # at once (no --delete-delay): callbridge deletes a call only when done with it, and a call anchored
            # afresh (relay_loss.py's revival) must get new sockets, not the lingering session's
            await self._send(conn_id, {"command": "delete", "call-id": conn_id, "delete delay": 0})
        except MediaRefused:
            pass  # already gone on the relay (its own timeout, a restart): nothing left to free
        finally:
            self.relays.release(conn_id)

    def lost(self, conn_id: str) -> None:
        self.relays.release(conn_id)

    def relay_of(self, conn_id: str) -> str | None:
        relay = self.relays.relay_of(conn_id)
        return None if relay is None else f"{relay.address[0]}:{relay.address[1]}"

    def restore(self, conn_id: str, relay: str) -> bool:
        host, _, port = relay.rpartition(":")
        return bool(host) and port.isdigit() and self.relays.restore(conn_id, (host, int(port)))

    def forget(self, conn_id: str) -> None:
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


def _toward(browser: bool, from_browser: bool, *, answer: bool = False) -> dict[str, Any]:
    """The profile of the SDP rtpengine is to write: a browser's (see the module rules) or plain RTP. An answer
    keeps the offerer's transport protocol (10.5: ``transport-protocol`` in an answer changes the answerer's side
    too, and the customer's stream then wants SRTP it never negotiated)."""
    if browser:
        profile = dict(WEBRTC)
    elif from_browser:
        profile = dict(PLAIN_FROM_BROWSER)
    else:
        return {"ICE": "remove"}
    if answer:
        del profile["transport-protocol"]
        profile.pop("codec", None)
    return profile


def unsignalled(sdp: bytes) -> bytes:
    """`sdp` toward a browser without the SSRCs another party signalled (``a=ssrc``, ``a=ssrc-group``, RFC 5576).

    rtpengine 10.5 copies them from one side's SDP to the other's but sends its own SSRCs whenever it transcodes
    (``inject DTMF`` puts every stream on that path): a browser binds a signalled SSRC to the receiver's track, so
    the relay's stream, another SSRC, is decoded by a default receiver that feeds no track (Chromium's getStats: the
    inbound-rtp's ``trackIdentifier`` is empty) and the page hears silence. Without them the browser takes the first
    SSRC that arrives for the m-line, as it does for a carrier's SDP, which never signals any."""
    lines = sdp.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith((b"a=ssrc:", b"a=ssrc-group:"))]
    return sdp if len(kept) == len(lines) else b"".join(kept)


def controlled_by_browser(sdp: bytes) -> bytes:
    """A subscription's offer toward a browser, marked ``a=ice-lite`` (RFC 8445 §6.1.1: the full agent facing a lite
    one is the controlling agent) so that the browser takes the controlling role.

    rtpengine 10.5 keeps the ICE-controlled role on a subscription's streams although it offers them, and the
    browser, answering, is controlled too: 10.5 logs "ICE role conflict detected" on every check and answers none,
    so a stream's ICE never completes (found on loopback with Chromium, most runs losing one stream or both). With
    the browser controlling, 10.5's controlled role is consistent: it answers the browser's checks and the browser
    nominates."""
    if b"\r\na=ice-lite" in sdp:
        return sdp
    at = sdp.find(b"\r\nt=")
    if at < 0:
        return sdp
    end = sdp.find(b"\r\n", at + 2)
    return sdp if end < 0 else sdp[:end + 2] + b"a=ice-lite\r\n" + sdp[end + 2:]


def glob_escape(text: str) -> str:
    """`text` matched literally in a glob pattern (a conn_id is letters, digits, '-' and '_' anyway)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


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
