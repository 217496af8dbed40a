"""Transfers made on the agent's phone: REFER (RFC 3515) on the agent's leg, and REFER with Replaces (RFC 3891)
after a consultation call, run by the same transfer engine as `api=transfer` (docs/design.md, "Transfer semantics").

Rules
- A REFER is only taken on an agent's leg; the Refer-To must be a `sip:`/`sips:` URI (else 416) naming the
  operation's SIP domain or our own address (else 403: callbridge never sends anything to a host a REFER names,
  it routes the user part itself: an extension of the operation or a number through the trunk's dial plan).
- Blind (no Replaces): `service.on_refer(leg, user)` validates and starts the transfer; a domain refusal is the
  REFER's final response (`REFUSALS`, by its `error_id`) and nothing else is sent. Accepted: 202, then the implicit
  subscription's NOTIFYs (§2.4.4, `Event: refer`, `message/sipfrag`): `100 Trying` at once, `180 Ringing` when the
  target rings, and the final status with `Subscription-State: terminated;reason=noresource` (RFC 6665 §4.1.3):
  `200 OK` when the target answered (sent before the engine hangs up the agent's leg, so that it still has a
  dialog to travel in), else the target's failure (486, 603, 408 after the transfer timeout, 487 when cancelled).
- Attended (`Refer-To: <...?Replaces=call-id;to-tag;from-tag>`): the Replaces names the phone's other dialog with
  us (its consultation call); the pair goes to `service.on_refer_replaces`, which bridges the customer with the
  consulted party and releases both of the agent's legs at once. The 202 and the final `200 OK` NOTIFY are
  therefore sent as the engine releases the REFER's leg, before its BYE.
- `Refer-Sub: false` (RFC 4488): 202 with `Refer-Sub: false` and no NOTIFY at all.
- The subscription is a usage of the referring dialog of its own (RFC 5057 §5.5, RFC 6665 §4.5.3): a BYE ends
  the INVITE usage only. Softphones hang up right after a blind transfer and wait for the final NOTIFY to show
  its outcome, so the dialog's state is held in the endpoint (`Endpoint.hold_usage`) from the 202 until the final
  NOTIFY is answered (or times out), and then released (`release_usage`): the final NOTIFY goes out after the
  agent's BYE (or ours) as it would before. A phone that discarded the dialog answers 481: logged at debug, the
  state released all the same. The transfer itself goes on either way (the engine's rule for an agent leaving
  mid-transfer). A referring dialog ended any other way (session expiry, time-out, 481) ends the subscription
  silently: nobody is there to tell.
- The subscription lasts `expires` seconds (60) from its last NOTIFY (`active;expires=60`); when that runs out
  before the transfer ends, its last status goes as the final NOTIFY with `terminated;reason=timeout`
  (RFC 6665 §4.2.2) and the dialog's state is released as above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.errors import CallControlError
from callbridge.sip.dialog import Dialog, DialogError
from callbridge.sip.errors import SipError
from callbridge.sip.message import REASON_PHRASES, Request, Response
from callbridge.sip.transaction import ServerTransaction
from callbridge.sip.uri import URI
from callbridge.sip.values import parse_replaces

if TYPE_CHECKING:
    from callbridge.b2bua.context import ReferContext

__all__ = ["REFER_EXPIRES", "REFUSALS", "SIPFRAG", "ReferHandler", "refusal_status"]

log = logging.getLogger(__name__)
SIPFRAG = "message/sipfrag;version=2.0"
REFER_EXPIRES = 60  # seconds a REFER's subscription lasts from its last NOTIFY (RFC 3515 §2.4.4 leaves it to us)


# Every final response that refuses a REFER, by cause: the domain's `error_id` when the transfer engine refused it
# (nothing has moved), else what is wrong with the REFER itself. Reason None: the status's standard phrase.
REFUSALS: Final[Mapping[str, tuple[int, str | None]]] = {
    # the REFER itself (checked in this order, before the domain is asked)
    "BAD_REFER_TO": (400, "Bad Refer-To"),  # Refer-To or its Replaces does not parse
    "REFER_TO_COUNT": (400, "Exactly One Refer-To"),  # none, or more than one (RFC 3515 §2.4.1)
    "REFER_TO_SCHEME": (416, None),  # not sip:/sips: (RFC 3261 §8.2.2.1)
    "FOREIGN_HOST": (403, "Refer-To Host Not Served"),  # we never send anything to a host a REFER names
    "REPLACED_DIALOG_NOT_FOUND": (481, "Replaced Dialog Does Not Exist"),  # RFC 3891 §3
    # the domain's refusals (`callcontrol.errors`); TRANSFER_IN_PROGRESS is also a REFER on a leg that has one
    "TARGET_NOT_AVAILABLE": (480, "Transfer Target Not Available"),
    "TRANSFER_IN_PROGRESS": (403, "Transfer In Progress"),
    "TRANSFER_LIMIT": (403, "Too Many Transfers"),
    "NUMBER_NOT_ALLOWED": (403, "Number Not Allowed"),
    "INVALID_PARAMETER": (404, "Not Found"),
    "CALL_CONTROL_UNAVAILABLE": (503, "Service Unavailable"),
    "AGENT_NOT_LOGGED_IN": (403, "Agent Not Logged In"),
    "NO_ACTIVE_CALL": (403, "No Active Call"),  # also any other refusal of the domain
}


def refusal_status(exc: CallControlError) -> tuple[int, str | None]:
    """The final response to a REFER the domain refused (nothing has moved): `REFUSALS` by its `error_id`."""
    return REFUSALS.get(exc.error_id) or REFUSALS["NO_ACTIVE_CALL"]


@dataclass(eq=False, slots=True)
class ReferSubscription:
    """The implicit subscription of one REFER (RFC 3515 §2.4.4)."""

    referrer: SipLeg
    event: str
    notify: bool = True  # False with Refer-Sub: false
    target_leg_id: str | None = None
    pending_tx: ServerTransaction | None = None  # attended: the REFER, answered as the engine releases the leg
    done: bool = False  # its final NOTIFY is decided (sent, or nothing can be)
    dialog: Dialog | None = None  # the referring dialog, whose state the endpoint holds for this usage
    last_status: int = 100  # the status line of its last NOTIFY
    expiry: asyncio.TimerHandle | None = None


class ReferHandler:
    """Owned by the switch; the switch and the signalling port call the `on_*`/`target_*`/`leg_*` hooks."""

    def __init__(self, switch: ReferContext) -> None:
        self.sw = switch
        self._by_target: dict[str, ReferSubscription] = {}
        self._by_referrer: dict[str, ReferSubscription] = {}
        self.expires = REFER_EXPIRES
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
            self._refuse(tx, "BAD_REFER_TO")
            return
        if refer_to is None or len(request.headers.get_all("Refer-To")) != 1:
            self._refuse(tx, "REFER_TO_COUNT")
            return
        if uri.scheme not in ("sip", "sips"):
            self._refuse(tx, "REFER_TO_SCHEME")
            return
        if not self._ours(leg, uri):
            self.stats["foreign_refer_to"] += 1
            log.warning("REFER on leg %s names a foreign host %s: refused", leg.leg_id, uri.host)
            self._refuse(tx, "FOREIGN_HOST")
            return
        if leg.leg_id in self._by_referrer:
            self._refuse(tx, "TRANSFER_IN_PROGRESS")
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
                self._refuse(tx, exc.error_id)
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
                self._refuse(tx, "REPLACED_DIALOG_NOT_FOUND")
                return
            sub.pending_tx = tx
            self._by_referrer[leg.leg_id] = sub
            try:
                service.on_refer_replaces(leg.leg_id, replaced.leg_id)
            except CallControlError as exc:
                self._by_referrer.pop(leg.leg_id, None)
                self._refuse(tx, exc.error_id)
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

    def _refuse(self, tx: ServerTransaction, cause: str) -> None:
        """The REFER's final response for `cause` (`REFUSALS`; an unknown one is the domain's "No Active Call")."""
        self.stats["refused"] += 1
        status, reason = REFUSALS.get(cause) or REFUSALS["NO_ACTIVE_CALL"]
        self.sw.respond(tx, status, reason=reason)
        self.sw.wake()

    def _accept(self, sub: ReferSubscription, tx: ServerTransaction) -> None:
        self.stats["accepted"] += 1
        headers = [] if sub.notify else [("Refer-Sub", "false")]
        self.sw.respond(tx, 202, headers=headers)
        dialog = sub.referrer.dialog
        if sub.notify and dialog is not None and not dialog.terminated:
            self._by_referrer[sub.referrer.leg_id] = sub
            self.sw.endpoint.hold_usage(dialog)  # released once the final NOTIFY is answered (_release)
            sub.dialog = dialog
            self._arm_expiry(sub)

    def _complete_attended(self, sub: ReferSubscription) -> None:
        tx, sub.pending_tx = sub.pending_tx, None
        if tx is None:
            return
        self._by_referrer.pop(sub.referrer.leg_id, None)
        self._accept(sub, tx)
        self._progress(sub, 200)

    # --- NOTIFY ---------------------------------------------------------------------------------------------
    def _progress(self, sub: ReferSubscription, status: int, *, reason: str = "noresource") -> None:
        """NOTIFY `status` (a final one ends the subscription with `reason`)."""
        final = status >= 200 or reason == "timeout"
        if sub.done:
            return
        if final:
            sub.done = True
            self._forget(sub)
        dialog = sub.dialog
        if dialog is None:  # Refer-Sub: false, or nothing held it
            return
        sub.last_status = status
        state = f"terminated;reason={reason}" if final else f"active;expires={self.expires}"
        body = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}\r\n".encode()
        leg = sub.referrer
        sw = self.sw

        def answered(response: Response | None) -> None:
            code = response.status if response is not None else None
            if code == 481:  # RFC 5057 §5.1: the phone discarded the dialog (it hung up and forgot it): fine
                log.debug("NOTIFY %d on leg %s: 481, the phone no longer has the dialog", status, leg.leg_id)
            elif code is None or code >= 300:
                log.info("NOTIFY %d on leg %s: %s", status, leg.leg_id, code if code is not None else "no answer")
            if final:
                self._release(sub)

        try:
            tx = sw.endpoint.send_in_dialog(dialog, "NOTIFY", sw.now(), body=body, content_type=SIPFRAG,
                                            headers=(("Event", sub.event), ("Subscription-State", state)))
        except DialogError:
            if final:
                self._release(sub)
            return
        tx.user_data = answered
        sw.write_cseq(leg)  # a no-op once the INVITE usage ended (its record went with it)
        if final:
            self._cancel_expiry(sub)
        else:
            self._arm_expiry(sub)
        sw.wake()

    def _arm_expiry(self, sub: ReferSubscription) -> None:
        self._cancel_expiry(sub)
        sub.expiry = self.sw.loop.call_later(self.expires, self._expired, sub)

    def _cancel_expiry(self, sub: ReferSubscription) -> None:
        if sub.expiry is not None:
            sub.expiry.cancel()
            sub.expiry = None

    def _expired(self, sub: ReferSubscription) -> None:
        """The subscription ran out before the transfer ended (RFC 6665 §4.2.2): its last status, terminated."""
        sub.expiry = None
        if not sub.done:
            log.info("REFER subscription on leg %s expired before the transfer ended", sub.referrer.leg_id)
            self._progress(sub, sub.last_status, reason="timeout")

    def _release(self, sub: ReferSubscription) -> None:
        """The subscription usage is over: the endpoint may forget the dialog (if its INVITE usage ended too)."""
        self._cancel_expiry(sub)
        dialog, sub.dialog = sub.dialog, None
        if dialog is not None:
            self.sw.endpoint.release_usage(dialog)

    def _forget(self, sub: ReferSubscription) -> None:
        if self._by_referrer.get(sub.referrer.leg_id) is sub:
            del self._by_referrer[sub.referrer.leg_id]
        if sub.target_leg_id is not None and self._by_target.get(sub.target_leg_id) is sub:
            del self._by_target[sub.target_leg_id]

    def close(self) -> None:
        """Shut-down: stop the expiry timers (the endpoint goes with the node)."""
        for sub in [*self._by_referrer.values(), *self._by_target.values()]:
            self._cancel_expiry(sub)

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

    def leg_ended(self, leg_id: str, reason: str) -> None:
        """The referring dialog's INVITE usage is over. After a BYE (the phone's or ours) the subscription lives
        on, its final NOTIFY still to come (module rules); any other end takes it along silently."""
        sub = self._by_referrer.get(leg_id)
        if sub is None or sub.done:
            return
        if reason in ("bye", "bye-sent") and sub.dialog is not None:
            log.debug("leg %s hung up mid-transfer: its REFER subscription waits for the outcome", leg_id)
            return
        sub.done = True
        self._forget(sub)
        self._release(sub)
