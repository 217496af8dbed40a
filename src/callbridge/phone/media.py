"""One call's side of the SDP offer/answer (RFC 3264), for a phone that signals media but sends none.

Rules
- The phone offers one audio stream on its own RTP port, from its own address: PCMU/8000 (payload type 0) by
  default; a phone that sends media (``Phone.start(media=True)``) may offer PCMA (8) too, in its order of
  preference, and telephone-event/8000 (RFC 4733, payload type 101).
- Answers (RFC 3264 §6): one m= line per offered m= line, in order. The first audio stream over RTP/AVP that
  offers one of our codecs is accepted (our port; the first of the offer's formats we support, and the offer's
  telephone-event payload type when both sides have one); every other stream is rejected with port 0. An offer with
  no acceptable stream cannot be answered (the INVITE gets 488).
- Direction (§6.1): the answer mirrors the offer (sendonly -> recvonly, recvonly -> sendonly, inactive stays);
  while we hold the call our side also stops receiving (§8.4: sendrecv -> sendonly, recvonly -> inactive).
- Versions (§8): every description we send in one call keeps the o= session id; its version goes up by one
  exactly when the description differs from the previous one we sent.
- Descriptions are written as text (cheap: an answer is a handful of f-strings); the far end's are parsed with
  `SessionDescription.parse`, so malformed SDP raises `SdpError` (400). Parsed descriptions are cached by their
  bytes (`parse_remote`): a load generator sends the same offer on every call, and parsing is the phone's largest
  per-call cost. A cached description is shared between calls: treat ``remote_sdp`` as read-only.
"""

from __future__ import annotations

import socket
from functools import lru_cache

from callbridge.sip.sdp import Direction, MediaDescription, SessionDescription, answer_direction, hold_direction

__all__ = ["CODEC_PAYLOAD_TYPES", "MediaSession", "NotAcceptable", "parse_remote", "remote_direction",
           "telephone_event_type"]

_PCMU = "0"
CODEC_PAYLOAD_TYPES = {"PCMU": "0", "PCMA": "8"}  # static payload types (RFC 3551 §6, Table 4)
_CODEC_NAMES = {pt: name for name, pt in CODEC_PAYLOAD_TYPES.items()}


class NotAcceptable(Exception):
    """The offer has no stream this phone can accept (one of its codecs over RTP/AVP): answer 488."""


@lru_cache(maxsize=256)
def parse_remote(body: bytes) -> SessionDescription:
    """The far end's description (cached by its bytes; raises `SdpError` when malformed)."""
    return SessionDescription.parse(body)


def remote_direction(sd: SessionDescription) -> Direction:
    """The direction of the far end's first accepted audio stream (or of the session when it has none)."""
    for media in sd.media:
        if media.media == "audio" and not media.rejected:
            return sd.direction(media)
    return sd.direction()


def telephone_event_type(media: MediaDescription) -> int | None:
    """The payload type a media section maps to telephone-event/8000 (RFC 4733 §7.1.1), or None."""
    for attribute in media.attributes:
        if attribute.name == "rtpmap" and attribute.value:
            pt, _, encoding = attribute.value.partition(" ")
            if encoding.lower().startswith("telephone-event/") and pt in media.formats and pt.isdigit():
                return int(pt)
    return None


class MediaSession:
    """Our descriptions for one call: what we offered or answered last, and what the far end sent last."""

    __slots__ = ("_body", "_sess_version", "_stream", "address", "addrtype", "formats", "holding", "remote",
                 "rtp_port", "rtp_socket", "sess_id", "telephone_event", "username")

    def __init__(self, address: str, rtp_port: int, sess_id: int, username: str = "-", *,
                 formats: tuple[str, ...] = (_PCMU,), telephone_event: int | None = None,
                 rtp_socket: socket.socket | None = None) -> None:
        self.address = address
        self.formats = formats  # static payload types we accept, in our order of preference
        self.telephone_event = telephone_event  # the payload type we offer for RFC 4733 events, or None
        self.rtp_socket = rtp_socket  # the call's own RTP socket when the phone sends media
        self.addrtype = "IP6" if ":" in address else "IP4"
        self.rtp_port = rtp_port
        self.sess_id = sess_id
        self.username = username or "-"
        self._sess_version = sess_id  # RFC 4566 §5.2 suggests an NTP-like start; any number will do
        self._body: bytes | None = None  # the last description we sent
        self._stream: str | None = None  # ... without its o= line, to tell whether it changed
        self.holding = False  # we put the far end on hold (our re-INVITE with sendonly)
        self.remote: SessionDescription | None = None

    @property
    def local(self) -> bytes | None:
        """The last description we sent (offer or answer), or None before the first."""
        return self._body

    @property
    def version(self) -> int:
        return self._sess_version

    def _write(self, media_lines: list[str]) -> bytes:
        stream = "".join(media_lines)
        if self._stream is not None and stream != self._stream:
            self._sess_version += 1
        self._stream = stream
        head = (f"v=0\r\no={self.username} {self.sess_id} {self._sess_version} IN {self.addrtype} {self.address}"
                f"\r\ns=callbridge\r\nc=IN {self.addrtype} {self.address}\r\nt=0 0\r\n")
        body = (head + stream).encode()
        self._body = body
        return body

    def _audio(self, direction: Direction, formats: tuple[str, ...] | None = None,
               event_pt: int | None = None) -> str:
        formats = self.formats if formats is None else formats
        rtpmaps = "".join(f"a=rtpmap:{pt} {_CODEC_NAMES[pt]}/8000\r\n" for pt in formats)
        listed = " ".join(formats)
        if event_pt is not None:
            listed += f" {event_pt}"
            rtpmaps += f"a=rtpmap:{event_pt} telephone-event/8000\r\na=fmtp:{event_pt} 0-15\r\n"
        return f"m=audio {self.rtp_port} RTP/AVP {listed}\r\n{rtpmaps}a=ptime:20\r\na={direction}\r\n"

    def offer(self) -> bytes:
        """A new offer (initial, re-INVITE, or in a 2xx to an offer-less INVITE): sendrecv, or sendonly on hold."""
        return self._write([self._audio("sendonly" if self.holding else "sendrecv",
                                        event_pt=self.telephone_event)])

    def close(self) -> None:
        """Release the call's RTP socket (a call that never got going; `Call` closes it otherwise)."""
        if self.rtp_socket is not None:
            self.rtp_socket.close()

    def answer(self, offer: SessionDescription) -> bytes:
        """Our answer to `offer` (which becomes `remote`); raises `NotAcceptable` when nothing can be accepted."""
        lines: list[str] = []
        accepted = False
        for media in offer.media:
            chosen = [pt for pt in media.formats if pt in self.formats][:1]
            if (not accepted and media.media == "audio" and media.proto.upper() == "RTP/AVP"
                    and not media.rejected and chosen):
                direction = answer_direction(offer.direction(media))
                if self.holding:
                    direction = hold_direction(direction)
                event_pt = telephone_event_type(media) if self.telephone_event is not None else None
                lines.append(self._audio(direction, tuple(chosen), event_pt))
                accepted = True
            else:
                formats = " ".join(media.formats) or _PCMU
                lines.append(f"m={media.media} 0 {media.proto} {formats}\r\n")
        if not accepted:
            names = " or ".join(_CODEC_NAMES[pt] for pt in self.formats)
            raise NotAcceptable(f"no {names} audio stream over RTP/AVP in the offer")
        self.remote = offer
        return self._write(lines)

    def accept_answer(self, answer: SessionDescription) -> None:
        """The far end's answer to our offer."""
        self.remote = answer
