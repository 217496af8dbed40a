"""Routing a new INVITE: from a trunk to a DID, or from an agent (after digest) to an extension or a number.

Order of checks (none of the refusals changes any state or record):
1. Draining: 503 with Retry-After (the server stops taking calls on SIGTERM).
2. Loops (RFC 3261 §16.3 and §8.2.2.2 as a B2BUA applies them): Max-Forwards 0 → 483; a Via naming our own
   sent-by (the request already went through us) → 482. The INVITEs we make carry Max-Forwards - 1, so a loop
   through other B2BUAs also runs out.
3. A source address within a trunk's inbound networks: the trunk's operation anchors its calls on the media
   plane and no relay is up, and its policy is to refuse → 503 (`anchor.MediaAnchor.admit`; docs/design.md,
   "Media"). Then the Request-URI user is the DID; unknown → 404.
4. Anyone else is an agent and must prove it (RFC 3261 §22.3, as Kamailio's `proxy_authorize`): without valid
   credentials in the operation's realm the answer is 407 with a fresh challenge, before any lookup, and the
   same for known and unknown extensions. After authentication: the From user must be the authenticated one
   (403); the domain decides: not logged in 403, busy 486, target busy 486, a number the dial plan refuses 403 (or
   484 when it is too short for every trunk), an extension or number that is neither → 404.
5. An agent's own call (from a desk phone, or from a browser: its phone registered over WebSocket, the agent's
   page) is admitted to the media plane as a customer's call is in step 3: anchored (a browser gets WebRTC on its
   side, plain RTP toward a trunk), direct, or 503 when the relay is down and the operation refuses; the party it
   calls is the call's persistent media party (`signalling.originate`), which hold, transfers, recording and DTMF
   act on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from callbridge.b2bua.credentials import verify_agent_digest
from callbridge.b2bua.leg_state import REFUSED
from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.errors import (
    AgentNotFound,
    AgentNotLoggedIn,
    AlreadyOnCall,
    DidNotFound,
    InvalidParameter,
    NumberNotAllowed,
    TargetNotAvailable,
)
from callbridge.callcontrol.ids import random_ids
from callbridge.callcontrol.model import Operation, Trunk
from callbridge.sip import AuthReason
from callbridge.sip.message import Request
from callbridge.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from callbridge.b2bua.context import InboundContext
    from callbridge.b2bua.ports import B2buaDirectory

__all__ = ["TrunkNetwork", "route_invite", "trunk_for_source", "trunk_networks"]

TrunkNetwork = tuple[Trunk, "ipaddress.IPv4Network | ipaddress.IPv6Network"]

_DRAIN_RETRY_AFTER = "30"
_HANDOVER_RETRY_AFTER = "2"  # seconds: a handover takes about two cluster rounds


def route_invite(sw: InboundContext, request: Request, tx: ServerTransaction) -> None:
    if sw.draining or sw.service is None:
        sw.respond(tx, 503, headers=[("Retry-After", _DRAIN_RETRY_AFTER)])
        return
    max_forwards = request.max_forwards
    if max_forwards is not None and max_forwards <= 0:
        sw.respond(tx, 483)
        return
    ours = (sw.endpoint.host.lower(), sw.endpoint.port)
    if any((via.sent_by[0].lower(), via.sent_by[1] or 5060) == ours for via in request.vias):
        sw.respond(tx, 482)
        return
    hops = 70 if max_forwards is None else min(max_forwards - 1, 70)
    trunk = sw.trunk_for_source(tx.source[0])
    if trunk is not None:
        _from_trunk(sw, request, tx, trunk, hops)
    else:
        _from_agent(sw, request, tx, hops)


def _new_leg(sw: InboundContext, request: Request, tx: ServerTransaction, operation_id: str, hops: int,
             agent: str | None = None) -> SipLeg:
    leg = SipLeg(random_ids("l"), operation_id, "in", sw.wall(), server_tx=tx, offer=request.body,
                 remote_sdp=request.body, max_forwards=hops, peer_addr=tx.source, transport=tx.transport,
                 agent=agent)
    tx.user_data = leg
    return sw.legs.add(leg)


def _handing_over(sw: InboundContext, tx: ServerTransaction) -> None:
    """The operation is being handed to another cluster node (`callcontrol.handover`): no new call starts here;
    the caller retries in a moment and reaches the new owner (RFC 3261 §21.5.4)."""
    sw.respond(tx, 503, reason="Operation Moving", headers=[("Retry-After", _HANDOVER_RETRY_AFTER)])


def _from_trunk(sw: InboundContext, request: Request, tx: ServerTransaction, trunk: Trunk, hops: int) -> None:
    operation_id = trunk.operation_id
    if operation_id in sw.handed.operations:
        _handing_over(sw, tx)
        return
    did = request.uri.user or ""
    caller = request.from_.uri.user or ""
    admission = sw.anchor.admit(sw.directory.get_operation(operation_id))  # anchor.py: media, decided once
    if admission == "refuse":
        sw.respond(tx, 503, reason="Media Relay Unavailable")  # nothing created: no leg, no call
        return
    leg = _new_leg(sw, request, tx, operation_id, hops)
    leg.anchored = admission == "anchored"
    leg.trunk = trunk  # its dtmf_mode says how api=dtmf reaches this customer (dtmf.py)
    service = sw.service
    assert service is not None
    try:
        leg.conn_id = service.on_inbound_call(operation_id, did, leg.leg_id, caller)
    except DidNotFound:
        _refuse(sw, leg, 404)
    else:
        if admission == "direct_relay_down":
            sw.report(service.on_media_direct, leg.conn_id, "relay_down")
    sw.wake()


def _from_agent(sw: InboundContext, request: Request, tx: ServerTransaction, hops: int) -> None:
    directory = sw.directory
    from_host = request.from_.uri.host.lower()
    operation = directory.operation_for_domain(from_host) or directory.operation_for_domain(
        request.uri.host.lower())
    realm = operation.digest_realm if operation is not None else from_host
    username = _authenticate(sw, request, tx, operation, realm)
    if username is None:
        return
    assert operation is not None  # nobody authenticates without an operation: no HA1 exists
    if (request.from_.uri.user or "") != username:
        sw.respond(tx, 403, reason="Identity Mismatch")
        return
    if operation.id in sw.handed.operations:
        _handing_over(sw, tx)
        return
    dialled = request.uri.user or ""
    admission = sw.anchor.admit(operation)  # step 5
    if admission == "refuse":
        sw.respond(tx, 503, reason="Media Relay Unavailable")
        return
    leg = _new_leg(sw, request, tx, operation.id, hops, agent=username)
    leg.anchored = admission == "anchored"
    service = sw.service
    assert service is not None
    try:
        leg.conn_id = service.on_agent_call(operation.id, username, leg.leg_id, dialled)
        if admission == "direct_relay_down":
            sw.report(service.on_media_direct, leg.conn_id, "relay_down")
    except (AgentNotLoggedIn, AgentNotFound):
        _refuse(sw, leg, 403)
    except (AlreadyOnCall, TargetNotAvailable):
        _refuse(sw, leg, 486)
    except NumberNotAllowed:
        _refuse(sw, leg, _refused_number_status(sw, operation, dialled))
    except InvalidParameter:
        _refuse(sw, leg, 404)
    sw.wake()


def _refused_number_status(sw: InboundContext, operation: Operation, dialled: str) -> int:
    trunks = sw.directory.list_trunks(operation.id)
    if not trunks:
        return 404
    if all(len(dialled) < t.dial_plan.min_length for t in trunks):
        return 484
    return 403


def _refuse(sw: InboundContext, leg: SipLeg, status: int) -> None:
    sw.legs.end(leg, REFUSED)
    if leg.server_tx is not None:
        sw.respond(leg.server_tx, status)
        leg.server_tx = None


def _authenticate(sw: InboundContext, request: Request, tx: ServerTransaction, operation: Operation | None,
                  realm: str) -> str | None:
    """The authenticated extension, or None after answering 407 (or 400 for malformed credentials)."""
    challenger = sw.challengers(realm)
    offer = sw.challengers.algorithms_for(operation)  # the operation's own list, else the node's
    now = sw.wall()
    result = verify_agent_digest(challenger, request, "Proxy-Authorization", realm, operation,
                                 sw.directory.get_agent, now, offer)
    if result is None:
        sw.respond(tx, 407, headers=[("Proxy-Authenticate", v) for v in challenger.challenge(now, algorithms=offer)])
        return None
    if result.ok and result.username is not None:
        return result.username
    if result.reason is AuthReason.MALFORMED:
        sw.respond(tx, 400, reason="Malformed Credentials")
        return None
    sw.respond(tx, 407, headers=[("Proxy-Authenticate", v)
                                 for v in challenger.challenge(now, stale=result.stale, algorithms=offer)])
    return None


def trunk_networks(directory: B2buaDirectory) -> list[TrunkNetwork]:
    """Every trunk's inbound networks (step 3: a source within one is that trunk)."""
    return [(trunk, ipaddress.ip_network(network, strict=False))
            for op in directory.list_operations() for trunk in directory.list_trunks(op.id)
            for network in trunk.inbound_networks]


def trunk_for_source(networks: Iterable[TrunkNetwork], ip: str) -> Trunk | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for trunk, network in networks:
        if address.version == network.version and address in network:
            return trunk
    return None
