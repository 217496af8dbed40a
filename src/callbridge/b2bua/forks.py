"""Outgoing legs: the responses to their forked INVITEs.

Rules (RFC 3261 §13.2.2, §16.7 as a UAC that forks applies it)
- An outgoing INVITE goes to every contact of an agent (`signalling.originate`), one client transaction (fork)
  each. Provisional responses are relayed in order to the incoming leg that waits on them (its `early_peer`:
  180/183, early media SDP included, presented as that party's session, `bridge.present`); the first one other
  than 100 is reported to the domain as ringing (`CALLING` → `EARLY`, `leg_state`).
- The first 2xx wins (`ANSWERED`): its dialog becomes the leg's, the other forks are cancelled (§9.1), and the 2xx
  is ACKed at once when our INVITE carried an offer, else kept un-ACKed until the other side's answer is known
  (RFC 3725 flow I, `ack_pending`). A 2xx that arrives after that, or after the domain let go of the leg, is ACKed
  and hung up (§13.2.2.4); one that crossed our CANCEL is the endpoint's to ACK and hang up.
- A provider's 401/407 is answered with the trunk's credentials as the same fork (`trunks.answer_challenge`).
- When every fork has failed the leg ends (`FAILED`) with the best of their statuses (`best_status`, §16.7 step 6):
  reported to the domain unless it had let go of the leg already (a CANCEL's 487s).
- NAT (RFC 3581): the agent's phone answered from where its registration came from: later requests of the dialog
  go there (`Endpoint.set_destination`), whatever its Contact says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.b2bua.bridge import present
from callbridge.b2bua.leg_state import ANSWERED, CALLING, ENDED, FAILED, PROVISIONAL, RELEASING, UP, step
from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.trunks import answer_challenge
from callbridge.sip.dialog import Dialog
from callbridge.sip.message import Response
from callbridge.sip.transaction import ClientTransaction

if TYPE_CHECKING:
    from callbridge.b2bua.context import ForkContext

__all__ = ["best_status", "fork_failed", "fork_response"]


def fork_response(sw: ForkContext, leg: SipLeg, tx: ClientTransaction, response: Response,
                  dialog: Dialog | None) -> None:
    """A response on one of `leg`'s forks."""
    status = response.status
    if status < 200:
        if status == 100 or not leg.forking:
            return
        if step(leg, PROVISIONAL) is CALLING:  # the first ringing is reported
            service = sw.service
            assert service is not None
            sw.report(service.on_leg_ringing, leg.leg_id)
            sw.refers.target_ringing(leg.leg_id, status)
        early = sw.legs.get(leg.early_peer)
        if early is not None and early.ringing and early.server_tx is not None:
            # An anchored call's customer must only ever see the relay: early media is not relayed (anchor.py)
            relay_body = response.body and not sw.anchor.anchored(early.conn_id)
            body = present(early, response.body) if relay_body else b""
            sw.respond(early.server_tx, status, body=body, reason=response.reason)
        return
    if status >= 300:
        if status in (401, 407) and answer_challenge(sw, leg, tx, response):
            return  # the same INVITE again with the trunk's credentials, as the same fork (trunks.py)
        fork_failed(sw, leg, tx, status)
        return
    assert dialog is not None
    if tx.cancelled:
        return  # the endpoint ACKs and hangs up a 2xx that crossed our CANCEL (§9.1)
    endpoint = sw.endpoint
    if leg.agent is not None:  # the phone is where its registration came from, whatever its Contact says
        endpoint.set_destination(dialog, tx.dest, tx.transport)
    if not leg.forking:  # answered by another fork, or released (CANCELled) already
        if dialog.unacked_invite is not None:
            endpoint.ack(dialog, sw.now())
        endpoint.bye(dialog, sw.now())
        return
    step(leg, ANSWERED)
    leg.dialog = dialog
    dialog.user_data = leg
    leg.remote_sdp = response.body
    leg.peer_addr, leg.transport = tx.dest, tx.transport
    if leg.offer:
        endpoint.ack(dialog, sw.now())
    else:
        leg.ack_pending = True  # offer-less: the ACK carries the answer once the other side gives it
    for other in leg.forks:
        if other is not tx:
            endpoint.cancel(other, sw.now())
    leg.forks = []
    if leg.listener:  # a supervisor's phone: its answer goes to the relay's subscription (monitor.py)
        sw.anchor.listeners.answered(leg, response.body)
    sw.refers.target_answered(leg.leg_id)
    service = sw.service
    assert service is not None
    sw.report(service.on_leg_answered, leg.leg_id)


def fork_failed(sw: ForkContext, leg: SipLeg, tx: ClientTransaction, status: int) -> None:
    """A fork of `leg` ended with `status` (a final error, or 408 when it timed out)."""
    if tx in leg.forks:
        leg.forks.remove(tx)
    leg.fork_statuses += (status,)
    if leg.forks or leg.state is UP or leg.state is RELEASING:
        return
    was = sw.legs.end(leg, FAILED)  # ENDED already when released while it rang (its 487s)
    sw.refers.target_failed(leg.leg_id, best_status(leg.fork_statuses))
    if was is not ENDED:
        service = sw.service
        assert service is not None
        sw.report(service.on_leg_failed, leg.leg_id, best_status(leg.fork_statuses))


def best_status(statuses: tuple[int, ...]) -> int:
    """The final status of a forked INVITE (§16.7 step 6, simplified): a 6xx wins, then busy, then the lowest."""
    for status in statuses:
        if status >= 600:
            return status
    if 486 in statuses:
        return 486
    return min(statuses) if statuses else 408
