"""What the relay tells of an anchored call's media, turned into domain reports (docs/operations.md, "DTMF").

Rules
- DTMF: a digit the relay saw (its DTMF log, `media/dtmf_log.py`, wired by bootstrap) is reported to the domain
  (`Domain.on_dtmf`) when its call is anchored here and the media that carried it is the customer's. Digits in
  the other parties' media are not reported: rtpengine 10.5 also logs the digits ``play DTMF`` injects toward the
  customer (api=dtmf) under the tag of the customer's peer, so an agent's own key presses cannot be told from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.ports import Domain

__all__ = ["MediaWatch"]


class WatchContext(Protocol):
    """What this module reads of the switch."""

    anchor: MediaAnchor
    service: Domain | None

    def report(self, fn: Callable[..., object], *args: object) -> None: ...


class MediaWatch:
    def __init__(self, sw: WatchContext) -> None:
        self.sw = sw
        self.stats = {"dtmf": 0, "dtmf_ignored": 0}

    def dtmf(self, conn_id: str, leg_id: str, digit: str, duration_ms: int) -> None:
        """The relay saw `digit` in `leg_id`'s media of call `conn_id`."""
        service = self.sw.service
        if service is None or self.sw.anchor.calls.get(conn_id) != leg_id:
            self.stats["dtmf_ignored"] += 1
            return
        self.stats["dtmf"] += 1
        self.sw.report(service.on_dtmf, conn_id, leg_id, digit, duration_ms)
