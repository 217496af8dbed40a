"""DTMF that rtpengine sees in a call's media, as its DTMF log destination reports it (``--dtmf-log-dest``).

What rtpengine 10.5 sends (found on loopback): one UDP datagram per DTMF event, once the event has ended, a JSON
object such as ``{"callid": "c…", "source_tag": "l…", "tags": ["l…", "l…"], "type": "DTMF", "timestamp":
1796515641, "source_ip": "127.0.0.2", "event": 11, "duration": 100, "volume": 10}``: ``callid`` is the ng call-id
(callbridge's `conn_id`), ``source_tag`` the ng tag of the party whose media carried it (a leg id), ``event`` the
RFC 4733 event code (0-9, 10 = ``*``, 11 = ``#``, 12-15 = A-D) and ``duration`` milliseconds. Digits that ``play
DTMF`` injected are reported too, with the tag of the party they were injected for (the customer's peer).

Rules
- `parse` is pure: a datagram that is not such an object, or whose event is not a DTMF digit, is None (counted by
  the listener as ``dropped``, never raised).
- `DtmfLogListener` binds one UDP socket (the address rtpengine's ``--dtmf-log-dest`` names) and takes datagrams
  only from the relays' addresses (any port: rtpengine sends from an ephemeral one); others are counted as
  ``foreign`` and dropped. Each digit goes to `on_digit` in arrival order, on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["DIGITS", "DtmfLogListener", "LoggedDigit", "parse"]

DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2: event codes 0-15
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedDigit:
    conn_id: str
    leg_id: str
    digit: str
    duration_ms: int


def parse(data: bytes) -> LoggedDigit | None:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("type") != "DTMF":
        return None
    callid, tag, event, duration = doc.get("callid"), doc.get("source_tag"), doc.get("event"), doc.get("duration")
    if not (isinstance(callid, str) and callid and isinstance(tag, str) and tag):
        return None
    if not (isinstance(event, int) and not isinstance(event, bool) and 0 <= event < len(DIGITS)):
        return None
    if not (isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0):
        return None
    return LoggedDigit(callid, tag, DIGITS[event], duration)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: DtmfLogListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.listener.received(data, addr[0])


class DtmfLogListener:
    def __init__(self, relay_hosts: Iterable[str], on_digit: Callable[[LoggedDigit], None]) -> None:
        self.relay_hosts = frozenset(relay_hosts)
        self.on_digit = on_digit
        self.stats = {"digits": 0, "dropped": 0, "foreign": 0}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on (`host`, `port`); the address bound (port 0 takes a free one)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(host, port))
        self._transport = transport
        name = transport.get_extra_info("sockname")
        return name[0], name[1]

    def received(self, data: bytes, source: str) -> None:
        if source not in self.relay_hosts:
            self.stats["foreign"] += 1
            return
        digit = parse(data)
        if digit is None:
            self.stats["dropped"] += 1
            return
        self.stats["digits"] += 1
        try:
            self.on_digit(digit)
        except Exception:
            log.exception("acting on DTMF %r of call %s failed", digit.digit, digit.conn_id)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
