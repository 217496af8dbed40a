"""Transfers made on the agent's phone: REFER (RFC 3515) on the agent's leg, and REFER with Replaces (RFC 3891)
after a consultation call, run by the same transfer engine as `api=transfer` (DESIGN.md, "Transfer semantics").

Rules
- A REFER is only taken on an agent's leg; the Refer-To must be a `sip:`/`sips:` URI (else 416) naming the
  operation's SIP domain or our own address (else 403: callbridge never sends anything to a host a REFER names,
  it routes the user part itself: an extension of the operation or a number through the trunk's dial plan).
- Blind (no Replaces): `service.on_refer(leg, user)` validates and starts the transfer; a domain refusal is the
  REFER's final response (`refusal_status`) and nothing else is sent. Accepted: 202, then the implicit
  subscription's NOTIFYs (§2.4.4, `Event: refer`, `message/sipfrag`): `100 Trying` at once, `180 Ringing` when the
  target rings, and the final status with `Subscription-State: terminated;reason=noresource` (RFC 6665 §4.1.3):
  `200 OK` when the target answered (sent before the engine hangs up the agent's leg, so that it still has a
  dialog to travel in), else the target's failure (486, 603, 408 after the transfer timeout, 487 when cancelled).
- Attended (`Refer-To: <...?Replaces=call-id;to-tag;from-tag>`): the Replaces names the phone's other dialog with
  us (its consultation call); the pair goes to `service.on_refer_replaces`, which bridges the customer with the
  consulted party and releases both of the agent's legs at once. The 202 and the final `200 OK` NOTIFY are
  therefore sent as the engine releases the REFER's leg, before its BYE.
- `Refer-Sub: false` (RFC 4488): 202 with `Refer-Sub: false` and no NOTIFY at all.
- The subscription ends with its final NOTIFY, or silently with the referring dialog (nothing can be sent after
  a BYE); the transfer itself goes on either way (the engine's rule for an agent leaving mid-transfer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.errors import (
    AgentNotLoggedIn,
    CallControlError,
    CallControlUnavailable,
    InvalidParameter,
    NumberNotAllowed,
    TargetNotAvailable,
    TransferInProgress,
    TransferLimit,
)
from callbridge.sip.errors import SipError
from callbridge.sip.message import REASON_PHRASES, Request, Response
from callbridge.sip.transaction import ServerTransaction
from callbridge.sip.uri import URI
from callbridge.sip.values import parse_replaces

if TYPE_CHECKING:
    from callbridge.b2bua.switch import Switch

__all__ = ["SIPFRAG", "ReferHandler", "refusal_status"]

log = logging.getLogger(__name__)
SIPFRAG = "message/sipfrag;version=2.0"


def refusal_status(exc: CallControlError) -> tuple[int, str]:
    """The final response to a REFER the domain refused (nothing has moved)."""
    if isinstance(exc, TargetNotAvailable):
        return 480, "Transfer Target Not Available"
    if isinstance(exc, TransferInProgress):
        return 403, "Transfer In Progress"
    if isinstance(exc, TransferLimit):
        return 403, "Too Many Transfers"
    if isinstance(exc, NumberNotAllowed):
        return 403, "Number Not Allowed"
    if isinstance(exc, InvalidParameter):
        return 404, "Not Found"
    if isinstance(exc, CallControlUnavailable):
        return 503, "Service Unavailable"
    if isinstance(exc, AgentNotLoggedIn):
        return 403, "Agent Not Logged In"
    return 403, "No Active Call"


@dataclass(eq=False, slots=True)
class ReferSubscription:
    """The implicit subscription of one REFER (RFC 3515 §2.4.4)."""

    referrer: SipLeg
    event: str
    notify: bool = True  # False with Refer-Sub: false
    target_leg_id: str | None = None
    pending_tx: ServerTransaction | None = None  # attended: the REFER, answered as the engine releases the leg
    done: bool = False


class ReferHandler:
    """Owned by the switch; the switch and the signalling port call the `on_*`/`target_*`/`leg_*` hooks."""

    def __init__(self, switch: Switch) -> None:
        self.sw = switch
        self._by_target: dict[str, ReferSubscription] = {}
        self._by_referrer: dict[str, ReferSubscription] = {}
        self.stats = {"accepted": 0, "refused": 0, "foreign_refer_to": 0}

    def __len__(self) -> int:
        return len(self._by_referrer)

    # --- the REFER ------------------------------------------------------------------------------------------
    def on_refer(self, leg: SipLeg, tx: ServerTransaction, request: Request) -> None:
        sw = self.sw
        try:
            refer_to = request.refer_to
            replaces_value = None
            if refer_to is not None:
                uri = refer_to.uri.copy()
                for name in list(uri.headers):
                    if name.lower() == "replaces":
                        replaces_value = uri.headers.pop(name)
            replaces = parse_replaces(replaces_value) if replaces_value is not None else None
        except SipError:
            self._refuse(tx, 400, "Bad Refer-To")
            return
        if refer_to is None or len(request.headers.get_all("Refer-To")) != 1:
            self._refuse(tx, 400, "Exactly One Refer-To")
            return
        if uri.scheme not in ("sip", "sips"):
            self._refuse(tx, 416)
            return
        if not self._ours(leg, uri):
            self.stats["foreign_refer_to"] += 1
            log.warning("REFER on leg %s names a foreign host %s: refused", leg.leg_id, uri.host)
            self._refuse(tx, 403, "Refer-To Host Not Served")
            return
        if leg.leg_id in self._by_referrer:
            self._refuse(tx, 403, "Transfer In Progress")
            return
        event = f"refer;id={request.cseq.number}"
        sub_value = (request.headers.get("Refer-Sub") or "").strip().lower()
        sub = ReferSubscription(leg, event, notify=sub_value != "false")
        service = sw.service
        assert service is not None
        if replaces is None:
            try:
                record = service.on_refer(leg.leg_id, uri.user or "")
            except CallControlError as exc:
                self._refuse(tx, *refusal_status(exc))
                return
            self._accept(sub, tx)
            sub.target_leg_id = record.target_leg_id
            if sub.target_leg_id is not None:
                self._by_target[sub.target_leg_id] = sub
            self._progress(sub, 100)
            if sub.target_leg_id is None or sw.legs.get(sub.target_leg_id) is None:
                self.target_failed(sub.target_leg_id or "", 480)  # no contact, no trunk: failed already
        else:
            replaced = self._leg_of_dialog(leg, replaces.call_id, replaces.to_tag, replaces.from_tag)
            if replaced is None:
                self._refuse(tx, 481, "Replaced Dialog Does Not Exist")
                return
            sub.pending_tx = tx
            self._by_referrer[leg.leg_id] = sub
            try:
                service.on_refer_replaces(leg.leg_id, replaced.leg_id)
            except CallControlError as exc:
                self._by_referrer.pop(leg.leg_id, None)
                self._refuse(tx, *refusal_status(exc))
                return
            self._complete_attended(sub)
        sw.wake()

    def _ours(self, leg: SipLeg, uri: URI) -> bool:
        op = self.sw.directory.get_operation(leg.operation_id)
        host = uri.host.lower().strip("[]")
        if op is not None and host == op.sip_domain.lower():
            return True
        ep = self.sw.endpoint
        return host == ep.host.lower() and uri.port in (None, ep.port)

    def _leg_of_dialog(self, referrer: SipLeg, call_id: str, to_tag: str, from_tag: str) -> SipLeg | None:
        """The agent's other leg whose dialog the phone names (to-tag: our tag, from-tag: the phone's)."""
        for leg in self.sw.legs:
            d = leg.dialog
            if (leg is not referrer and d is not None and not d.terminated and d.call_id == call_id
                    and d.local_tag == to_tag and d.remote_tag == from_tag
                    and leg.operation_id == referrer.operation_id):
                return leg
        return None

    def _refuse(self, tx: ServerTransaction, status: int, reason: str | None = None) -> None:
        self.stats["refused"] += 1
        self.sw.respond(tx, status, reason=reason)
        self.sw.wake()

    def _accept(self, sub: ReferSubscription, tx: ServerTransaction) -> None:
        self.stats["accepted"] += 1
        headers = [] if sub.notify else [("Refer-Sub", "false")]
        self.sw.respond(tx, 202, headers=headers)
        if sub.notify:
            self._by_referrer[sub.referrer.leg_id] = sub

    def _complete_attended(self, sub: ReferSubscription) -> None:
        tx, sub.pending_tx = sub.pending_tx, None
        if tx is None:
            return
        self._by_referrer.pop(sub.referrer.leg_id, None)
        self._accept(sub, tx)
        self._progress(sub, 200)

    # --- NOTIFY ---------------------------------------------------------------------------------------------
    def _progress(self, sub: ReferSubscription, status: int) -> None:
        final = status >= 200
        if sub.done:
            return
        if final:
            sub.done = True
            self._forget(sub)
        leg = sub.referrer
        if not sub.notify or not leg.up:
            return
        state = "terminated;reason=noresource" if final else "active;expires=60"
        body = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}\r\n".encode()

        def answered(response: Response | None) -> None:
            if response is None or response.status >= 300:
                log.info("NOTIFY %d on leg %s: %s", status, leg.leg_id,
                         response.status if response is not None else "no answer")

        self.sw.request_in_dialog(leg, "NOTIFY", body, SIPFRAG, answered,
                                  headers=[("Event", sub.event), ("Subscription-State", state)])

    def _forget(self, sub: ReferSubscription) -> None:
        if self._by_referrer.get(sub.referrer.leg_id) is sub:
            del self._by_referrer[sub.referrer.leg_id]
        if sub.target_leg_id is not None and self._by_target.get(sub.target_leg_id) is sub:
            del self._by_target[sub.target_leg_id]

    # --- hooks ------------------------------------------------------------------------------------------------
    def target_ringing(self, leg_id: str, status: int) -> None:
        sub = self._by_target.get(leg_id)
        if sub is not None and status in (180, 183):
            self._progress(sub, 180)

    def target_answered(self, leg_id: str) -> None:
        """The target's 2xx was taken (the blind transfer completes): 200 before the agent's leg is released."""
        sub = self._by_target.get(leg_id)
        if sub is not None:
            self._progress(sub, 200)

    def target_failed(self, leg_id: str, status: int) -> None:
        sub = self._by_target.get(leg_id)
        if sub is not None:
            self._progress(sub, status if status >= 300 else 500)

    def leg_released(self, leg_id: str, cause: int | None) -> None:
        """The domain releases a leg: a target still ringing ends the transfer with `cause` (487 by default); the
        referring leg of an attended transfer gets its 202 and final NOTIFY before its BYE."""
        sub = self._by_target.get(leg_id)
        if sub is not None:
            self._progress(sub, cause if cause is not None and cause >= 300 else 487)
        sub = self._by_referrer.get(leg_id)
        if sub is not None and sub.pending_tx is not None:
            self._complete_attended(sub)

    def leg_ended(self, leg_id: str) -> None:
        """The referring dialog is over: its subscription ends with it."""
        sub = self._by_referrer.pop(leg_id, None)
        if sub is not None:
            sub.done = True
            self._forget(sub)
