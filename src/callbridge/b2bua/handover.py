"""The SIP side of a cluster handover (docs/cluster.md, "Moving and draining an operation").

When this node gives an operation to another node (`cluster.handover`), the legs of the operation's calls, their
dialogs and media anchoring, and its registrations leave this node's memory without a message sent or a record
written (`forget`): the node that takes the operation over adopts them from the records. The dialogs' ids are
kept (`Handed.dialogs`), so that a request within one of them that still reaches this node goes on to the owner
(`hand_on`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import LegTable
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.message import Request, Response
from callbridge.sip.parser import parse

if TYPE_CHECKING:
    from callbridge.b2bua.registrar import Registrar


@dataclass(slots=True)
class Handed:
    """The switch's record of what handovers gave away."""

    operations: set[str] = field(default_factory=set)  # handed over (or lost): new INVITEs for them get 503
    dialogs: dict[tuple[str, str, str], str] = field(default_factory=dict)  # dialog id -> operation, forgotten
    owner_of: Callable[[str], tuple[str, int] | None] | None = None  # an operation's owner's SIP address, if known


class HandoverContext(Protocol):
    endpoint: Endpoint
    legs: LegTable
    anchor: MediaAnchor
    registrar: Registrar
    handed: Handed

    def wake(self) -> None: ...


def forget(sw: HandoverContext, operation_id: str, leg_ids: Iterable[str]) -> int:
    """Forget the legs `leg_ids` of the operation's calls, their dialogs (their ids kept in `Handed.dialogs`) and
    media anchoring, and the operation's registrations. The legs forgotten."""
    count = 0
    for leg_id in leg_ids:
        leg = sw.legs.forget(leg_id)
        if leg is None:
            continue
        count += 1
        if leg.dialog is not None:
            sw.handed.dialogs[leg.dialog.id] = operation_id
            sw.endpoint.forget_dialog(leg.dialog)
        if leg.conn_id is not None:  # the relay call is left alone: the new owner's now
            sw.anchor.forget(leg.conn_id)
    sw.registrar.location.forget_operation(operation_id)
    return count


HANDED_ON = "z9hG4bKcbho"  # the branch prefix of this node's Via on a request it handed on
_BACK_TO = "cb-back"  # the Via parameter naming where the answer goes back (the request's source)


def hand_on(sw: HandoverContext, data: bytes, source: tuple[str, int]) -> bool:
    """A request (UDP) within a dialog this node forgot goes on to the operation's owner now, as a stateless proxy
    sends it (RFC 3261 §16.11): unchanged but for this node's Via on top, whose branch is derived from the
    request's own (a retransmission gets the same one) and which names the request's source; the owner's answer
    comes back here (§18.2.2), loses that Via and goes on to the source. Until the owner is known the request is
    dropped: the sender retransmits it (§17.1.1.2, §17.1.2.2) and a later copy goes on. This covers the moment
    when Kamailio still sends a party's requests here (until its next sync), and a party that ignores Record-Route
    and sends them to the address of the node that set the dialog up. True when the datagram was one of those
    requests, or an answer to one (handed on or dropped)."""
    try:
        message = parse(data)
    except Exception:
        return False  # the endpoint answers or counts it as usual
    if isinstance(message, Response):
        return _answer_back(sw, message, data)
    if not isinstance(message, Request):
        return False
    operation = sw.handed.dialogs.get((message.call_id, message.to.tag or "", message.from_.tag or ""))
    if operation is None:
        return False
    owner_of = sw.handed.owner_of
    owner = owner_of(operation) if owner_of is not None else None
    if owner is not None and owner != (sw.endpoint.host, sw.endpoint.port):
        top = message.vias[0].branch if message.vias else ""
        branch = HANDED_ON + hashlib.sha1(f"{top}|{source[0]}|{source[1]}".encode()).hexdigest()[:20]
        via = (f"Via: SIP/2.0/UDP {sw.endpoint.host}:{sw.endpoint.port};branch={branch};"
               f"{_BACK_TO}={source[0]}-{source[1]}\r\n").encode()
        line, rest = data.split(b"\r\n", 1)
        sw.endpoint.send_raw(line + b"\r\n" + via + rest, owner, "udp")
        sw.wake()
    return True


def _answer_back(sw: HandoverContext, response: Response, data: bytes) -> bool:
    """The owner's answer to a request this node handed on: without this node's Via, to the request's source."""
    vias = response.vias
    if not vias or not (vias[0].branch or "").startswith(HANDED_ON):
        return False
    back = vias[0].params.get(_BACK_TO) or ""
    host, _, port = back.rpartition("-")
    lines = data.split(b"\r\n")
    for i, line in enumerate(lines[1:], start=1):
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v"):
            if HANDED_ON.encode() in line and b"," not in line and host and port.isdigit():
                del lines[i]
                sw.endpoint.send_raw(b"\r\n".join(lines), (host, int(port)), "udp")
                sw.wake()
            break
    return True
