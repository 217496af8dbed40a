"""DTMF toward a call's customer (api=dtmf): RFC 4733 events in the media, or SIP INFO (docs/operations.md, "DTMF").

Rules
- The customer of an anchored call gets RFC 4733 telephone-events from the relay (`Media.send_dtmf`), one command
  per digit, in order; the action succeeds when the relay took every digit. The events come *from* the customer's
  current peer (the agent, or a transfer target): rtpengine 10.5's ``play DTMF`` injects into the stream its
  from-tag sends, toward that party's peer, and queues the digits (each about 100 ms of events and a pause); with
  the customer's own tag nothing reaches the customer. The relay only injects when ``inject DTMF`` was among the
  flags of both the offer and the answer (`media/rtpengine.py` puts it on every one).
- When the relay refuses the first digit (10.5 answers "No SSRC context present for DTMF injection" until the
  peer's phone has sent RTP through it), the tones go by SIP INFO instead; a later refusal fails the action.
- SIP INFO ``application/dtmf-relay`` (``Signal=``, ``Duration=160``), one per tone, each after the previous one's
  final response, the action succeeding when every tone got a 2xx: when the call is not anchored (direct media:
  no relay to inject anything), when the customer's media goes to nobody on the relay yet, or when the trunk the
  customer came or was called through says ``dtmf_mode = "info"`` (a provider that wants DTMF out of the media).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.ports import Media, MediaError
from callbridge.sip.message import Response

if TYPE_CHECKING:
    from callbridge.b2bua.context import SignallingContext

__all__ = ["DTMF_DURATION_MS", "DTMF_RELAY", "Done", "send_dtmf"]

DTMF_RELAY = "application/dtmf-relay"
log = logging.getLogger(__name__)
DTMF_DURATION_MS = 160
Done = Callable[[bool, int | None], None]
"""The action's outcome: whether every digit went, and the SIP status of the last INFO's response (None else)."""


def send_dtmf(sw: SignallingContext, leg: SipLeg, tones: str, done: Done) -> None:
    """`tones` to the customer's leg `leg` (up), in the media when it can be (module rules), else by SIP INFO."""
    anchor = sw.anchor
    media = anchor.media
    conn_id = leg.conn_id
    peer = anchor.peers.get(conn_id) if conn_id is not None and anchor.calls.get(conn_id) == leg.leg_id else None
    if media is not None and conn_id is not None and peer is not None and (
            leg.trunk is None or leg.trunk.dtmf_mode == "rfc4733"):
        assert anchor.loop is not None  # a media plane comes with its loop
        anchor.track(anchor.loop.create_task(_in_media(sw, leg, media, conn_id, peer, tones, done)))
        return
    _by_info(sw, leg, tones, done)


async def _in_media(sw: SignallingContext, leg: SipLeg, media: Media, conn_id: str, peer: str, tones: str,
                    done: Done) -> None:
    for index, digit in enumerate(tones):
        try:
            await media.send_dtmf(conn_id, peer, digit, duration_ms=DTMF_DURATION_MS)
        except MediaError as exc:
            if index == 0 and leg.up:  # e.g. 10.5's "No SSRC context present": the peer has sent no RTP yet
                log.info("call %s: the relay cannot inject DTMF (%s): SIP INFO instead", conn_id, exc)
                _by_info(sw, leg, tones, done)
            else:
                log.warning("call %s: the relay did not take DTMF %r (%s)", conn_id, digit, exc)
                done(False, None)
            sw.wake()
            return
    done(True, None)
    sw.wake()


def _by_info(sw: SignallingContext, leg: SipLeg, tones: str, done: Done) -> None:
    remaining = list(tones)

    def next_tone(response: Response | None) -> None:
        if response is not None and not 200 <= response.status < 300:
            done(False, response.status)
            return
        if not remaining:
            done(True, response.status if response is not None else None)
            return
        body = f"Signal={remaining.pop(0)}\r\nDuration={DTMF_DURATION_MS}\r\n".encode()
        if not sw.request_in_dialog(leg, "INFO", body, DTMF_RELAY, sent):
            done(False, None)

    def sent(response: Response | None) -> None:
        if response is None:
            done(False, None)
        else:
            next_tone(response)

    next_tone(None)
