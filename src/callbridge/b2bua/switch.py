"""The switch: the B2BUA's transaction user. It sits between the transport and the SIP endpoint, and turns the
endpoint's events into domain reports and the domain's commands (through `signalling`) into SIP.

Rules
- Defences first (Kamailio's order): every datagram's source is checked against the ban table before it is parsed
  (`Defence.allow`), counted for the flood limit, and a request whose User-Agent names a scanner is dropped unread.
  Unparseable datagrams, failed credentials, 403/404/484 count as failures toward a ban; trunks are exempt.
- Out-of-dialog requests: REGISTER goes to the registrar (`registrations`: binding changes written through and
  reported to the domain); OPTIONS is answered 200; INVITE is routed by `inbound` (trunk → DID, agent → digest
  then dial); any other method is 405 with Allow, or 501 when callbridge does not know it at all (§8.2.1; in a
  dialog too). Before any of this the endpoint answered 416 to a Request-URI scheme and 420 to a Require it does
  not support (§8.2.2; `URI_SCHEMES`, `SUPPORTED_OPTIONS`).
  In-dialog requests are found by their dialog (Call-ID and tags, whatever the Request-URI:
  SIPp's built-in uac sends its ACK and BYE to the address it sent the INVITE to) and relayed to the bridged leg
  (re-INVITE, UPDATE, INFO; `bridge`); a REFER on an agent's leg starts a transfer (`refer`, RFC 3515/3891);
  BYE and CANCEL are answered by the endpoint and reported to the domain,
  which releases the other legs. A request for a dialog we do not have gets 481 from the endpoint.
- Outgoing INVITEs fork to every contact of an agent; their responses are `forks`' (ringing relayed, first 2xx
  wins). A leg's life cycle is its state (`leg_state`); `LegTable.end` is the one place a leg ends.
- Reports to the domain (`on_leg_*`, `on_action_result`, `on_registration_changed`) are made on a later turn of the
  event loop (`report`), never from inside a call the domain made into `signalling` (ports.py).
- NAT (RFC 3581): an agent's phone is reached where its REGISTER or its INVITE came from, not where its Contact
  points: INVITEs go to the binding's source address and every later request of the dialog (ACK, re-INVITE, BYE)
  too (`Endpoint.set_destination`); a restored dialog with a registered agent's source address as its peer too.
- Each dialog is written through (`dialogs`), its CSeq numbers on every in-dialog request (`write_cseq`).
- Trunks (`trunks`): a provider's 401/407 to our INVITE is answered with the trunk's credentials; trunks that
  register to their provider do so once the transport listens (`start_trunks`), refreshed and retried.
- The endpoint runs with `auto_ack=False`: a 2xx to an offer-less INVITE is ACKed once the other side's answer
  is known (RFC 3725 flow I: transfers, requeued callers), or at once with an answer that sends no media when the
  other side may ring longer than 64*T1 (a dial's agent leg is parked, RFC 3725 flow III; `bridge.park`); every
  other 2xx is ACKed at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from callbridge.b2bua import handover, inbound
from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.bridge import SDP, relay_offer
from callbridge.b2bua.defence import Defence, counts_as_failure
from callbridge.b2bua.dialogs import RESTORED_CSEQ_GAP, DialogWriter
from callbridge.b2bua.forks import fork_failed, fork_response
from callbridge.b2bua.leg_state import ANSWERED, CANCELLED, DIALOG_ENDED, INCOMING, UP, step
from callbridge.b2bua.legs import LegTable, ReinviteDone, SipLeg
from callbridge.b2bua.ports import B2buaDirectory, DialogStore, Domain, Media, RegistrationRecord, RegistrationStore
from callbridge.b2bua.refer import ReferHandler
from callbridge.b2bua.registrar import ChallengerPool, RegistrarLimits
from callbridge.b2bua.registrations import Registrations
from callbridge.b2bua.reinvites import reinvite_failed, reinvite_response, send_reinvite
from callbridge.b2bua.trunks import TrunkRegistrationConfig, TrunkRegistrations
from callbridge.callcontrol.model import Trunk
from callbridge.sip.dialog import Dialog, DialogError, DialogState
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportError,
)
from callbridge.sip.message import Request, Response
from callbridge.sip.parser import KNOWN_METHODS
from callbridge.sip.session_timer import timer_headers
from callbridge.sip.transaction import ClientTransaction, ServerTransaction
from callbridge.sip.uri import URI

if TYPE_CHECKING:
    from callbridge.b2bua.context import Waker

__all__ = ["RESTORED_CSEQ_GAP", "Switch"]

log = logging.getLogger(__name__)
_USER_AGENT = re.compile(rb"\r\n(?:User-Agent)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER, REFER"
# What the endpoint's §8.2.2 inspection lets through (`callbridge.sip.inspection`): tel as well, since a trunk may
# send a tel: Request-URI and `inbound` routes by its number; the option tags callbridge implements as a UAS:
# timer (RFC 4028, the endpoint) and norefersub (RFC 4488, `refer` honours Refer-Sub: false). Not replaces: an
# INVITE with Replaces (RFC 3891) is not taken, only a REFER whose Refer-To carries one.
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SUPPORTED_OPTIONS = frozenset({"timer", "norefersub"})


class Switch:
    """See the module docstring. Made by `bootstrap`; `attach(service, runtime)` completes it."""

    log = log

    def __init__(self, endpoint: Endpoint, directory: B2buaDirectory, *, defence: Defence,
                 challengers: ChallengerPool, dialogs: DialogStore, registrations: RegistrationStore,
                 wall_clock: Callable[[], float], loop: asyncio.AbstractEventLoop,
                 registrar_limits: RegistrarLimits | None = None,
                 trunk_registration: TrunkRegistrationConfig | None = None, media: Media | None = None) -> None:
        self.endpoint = endpoint
        endpoint.uri_schemes = URI_SCHEMES
        endpoint.supported_options = SUPPORTED_OPTIONS
        self.directory = directory
        self.defence = defence
        self.challengers = challengers
        self.dialogs = DialogWriter(dialogs, wall_clock)  # each leg's dialog written through (dialogs.py)
        self.write_cseq = self.dialogs.write_cseq  # on every in-dialog request: no call in between
        self.wall = wall_clock
        self.loop = loop
        self.registrations = Registrations(self, directory, challengers, registrations, registrar_limits)
        self.registrar = self.registrations.registrar
        self.anchor = MediaAnchor(media, loop, self.wake, directory)  # anchored calls' SDP, what customers hear
        self.dialogs.relay_of = self.anchor.relay_of  # an anchored call's relay is written with its dialogs
        self.legs = LegTable(on_end=self.anchor.leg_ended)
        self.refers = ReferHandler(self)  # REFER on an agent's leg (refer.py)
        self.trunk_registrations = TrunkRegistrations(self, trunk_registration)  # credentials toward providers
        self.draining = False
        self.handed = handover.Handed()  # what a cluster handover gave away (handover.py)
        self.service: Domain | None = None
        self.runtime: Waker | None = None
        self._trunks: list[inbound.TrunkNetwork] = []
        self.reload_trunks()

    def attach(self, service: Domain, runtime: Waker) -> None:
        self.service = service
        self.runtime = runtime

    def start_trunks(self) -> None:
        """Register the trunks that register to their provider (the transport must be listening)."""
        directory = self.directory
        self.trunk_registrations.start([t for op in directory.list_operations() for t in directory.list_trunks(op.id)])

    # --- the SipCore shape the runtime drives (defences in front of the endpoint) -----------------------------
    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        ip = addr[0]
        defence = self.defence
        if not defence.allow(ip, now) or not defence.record_request(ip, now):
            return
        if defence.scanner_filter:
            found = _USER_AGENT.search(data)
            if found is not None and defence.drop_scanner(found.group(1).decode("latin-1")):
                return
        if self.handed.dialogs and transport == "udp" and handover.hand_on(self, data, addr):
            return
        stats = self.endpoint.stats
        errors = stats["parse_errors"]
        self.endpoint.receive_datagram(data, addr, now, transport)
        if stats["parse_errors"] != errors:
            defence.record_failure(ip, now)

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int], str]]:
        return self.endpoint.datagrams_to_send()

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)

    def next_event(self) -> object | None:
        return self.endpoint.next_event()

    def connection_closed(self, addr: tuple[str, int], transport: str, now: float) -> None:
        self.registrations.connection_closed(addr, transport)  # RFC 7118 §5: its registrations go with it

    # --- helpers shared with signalling, bridge and inbound ---------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    def wake(self) -> None:
        if self.runtime is not None:
            self.runtime.wake()

    def report(self, fn: Callable[..., object], *args: object) -> None:
        """Call the domain on a later loop turn, then drain what it asked of us."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("the domain failed on %s%r", getattr(fn, "__name__", fn), args)
            self.wake()

        self.loop.call_soon(run)

    def respond(self, tx: ServerTransaction, status: int, *, body: bytes = b"",
                headers: Iterable[tuple[str, str]] = (), reason: str | None = None) -> Response | None:
        try:
            response = self.endpoint.respond(tx, status, self.now(), reason=reason, body=body,
                                             content_type=SDP if body else None, headers=tuple(headers))
        except Exception:
            log.exception("could not answer %s with %d", tx.request.method, status)
            return None
        if counts_as_failure(status, carried_credentials="proxy-authorization" in tx.request.headers):
            self.defence.record_failure(tx.source[0], self.now())
        return response

    def answer_incoming(self, leg: SipLeg, sdp: bytes) -> None:
        """200 to an incoming leg's INVITE with `sdp` (already presented to it): its dialog is confirmed."""
        tx = leg.server_tx
        if tx is None or self.respond(tx, 200, body=sdp) is None or tx.dialog is None:
            return
        leg.server_tx = None
        leg.dialog = tx.dialog
        tx.dialog.user_data = leg
        step(leg, ANSWERED)
        if leg.agent is not None:  # an agent's own call: its phone may sit behind NAT (module rules)
            self.endpoint.set_destination(tx.dialog, tx.source, tx.transport)

    def ack(self, leg: SipLeg, sdp: bytes) -> None:
        """ACK the 2xx that waits on `leg` (offer-less INVITE), carrying the answer."""
        leg.ack_pending = False
        if leg.dialog is None or leg.dialog.unacked_invite is None:
            return
        try:
            self.endpoint.ack(leg.dialog, self.now(), body=sdp, content_type=SDP if sdp else None)
        except DialogError:
            log.warning("no 2xx awaits an ACK on leg %s", leg.leg_id)
        self.wake()

    def reinvite(self, leg: SipLeg, body: bytes, done: ReinviteDone, *, defer_ack: bool = False) -> bool:
        """Send a re-INVITE on `leg` (an offer, or none with `defer_ack`); False when one cannot be sent now."""
        return send_reinvite(self, leg, body, done, defer_ack)  # reinvites.py

    def request_in_dialog(self, leg: SipLeg, method: str, body: bytes, content_type: str | None,
                          done: Callable[[Response | None], None],
                          headers: Iterable[tuple[str, str]] = ()) -> bool:
        if not leg.up:
            return False
        assert leg.dialog is not None
        try:
            tx = self.endpoint.send_in_dialog(leg.dialog, method, self.now(), body=body,
                                              content_type=content_type if body else None, headers=tuple(headers))
        except DialogError:
            return False
        tx.user_data = done
        if method != "BYE":  # a BYE ends the dialog at once: its record goes with it
            self.write_cseq(leg)
        self.wake()
        return True

    def send_invite(self, uri: URI, *, from_uri: str, to_uri: str, from_display: str | None, body: bytes,
                    headers: Iterable[tuple[str, str]], dest: tuple[str, int], transport: str,
                    max_forwards: int) -> ClientTransaction:
        ep = self.endpoint
        interval = ep.session_expires
        extra = [*headers, *timer_headers(session_expires=interval, min_se=None if interval is None else ep.min_se,
                                          supported=True)]
        request = ep.create_request("INVITE", uri, from_uri=from_uri, to_uri=to_uri, from_display=from_display,
                                    body=body, content_type=SDP if body else None, headers=extra)
        request.headers.set("Max-Forwards", str(max_forwards))
        return ep.send_request(request, self.now(), dest=dest, transport=transport)

    # --- trunks -----------------------------------------------------------------------------------------------
    def reload_trunks(self) -> None:
        """Re-read the trunks' inbound networks (after a directory reload); they are also exempt from bans."""
        self._trunks = inbound.trunk_networks(self.directory)
        self.defence.set_trunk_addresses(str(net) for _, net in self._trunks)

    def trunk_for_source(self, ip: str) -> Trunk | None:
        return inbound.trunk_for_source(self._trunks, ip)

    # --- events -----------------------------------------------------------------------------------------------
    def on_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.request, event.transaction, event.dialog)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.transaction, event.dialog)
        elif isinstance(event, AckReceived):
            leg = LegTable.of_dialog(event.dialog)
            if leg is not None and event.request.body:
                leg.remote_sdp = event.request.body
        elif isinstance(event, InviteCancelled):
            self._incoming_cancelled(event.transaction)
        elif isinstance(event, TransactionTimedOut | TransportError):
            tx = event.transaction
            if isinstance(tx, ClientTransaction):
                self._client_failed(tx)
        elif isinstance(event, DialogEstablished):
            self._dialog_established(event.dialog)
        elif isinstance(event, DialogTerminated):
            leg = LegTable.of_dialog(event.dialog)
            if leg is not None and leg.dialog is event.dialog:
                self._dialog_ended(leg, event.reason)

    def _on_request(self, request: Request, tx: ServerTransaction, dialog: Dialog | None) -> None:
        method = request.method
        if method not in KNOWN_METHODS:  # §8.2.1: a method not recognised is 501; a known one not allowed, 405
            self.respond(tx, 501, headers=[("Allow", ALLOW)])
        elif dialog is not None:
            self._in_dialog(request, tx, dialog)
        elif method == "REGISTER":
            self.registrations.on_register(request, tx)
        elif method == "OPTIONS":
            self.respond(tx, 200, headers=[("Allow", ALLOW), ("Accept", SDP)])
        elif method == "INVITE":
            inbound.route_invite(self, request, tx)
        else:
            self.respond(tx, 405, headers=[("Allow", ALLOW)])

    def _in_dialog(self, request: Request, tx: ServerTransaction, dialog: Dialog) -> None:
        leg = LegTable.of_dialog(dialog)
        method = request.method
        if leg is None:
            self.respond(tx, 481)
            return
        self.write_cseq(leg)
        if method in ("INVITE", "UPDATE"):
            relay_offer(self, leg, tx, request)
        elif method == "INFO":
            peer = self.legs.get(leg.peer)

            def relayed(response: Response | None) -> None:
                self.respond(tx, response.status if response is not None else 408)

            if peer is None or not self.request_in_dialog(peer, "INFO", request.body, request.content_type,
                                                          relayed):
                self.respond(tx, 200)
        elif method == "REFER":
            self.refers.on_refer(leg, tx, request)
        elif method == "OPTIONS":
            self.respond(tx, 200, headers=[("Allow", ALLOW)])
        else:
            self.respond(tx, 405, headers=[("Allow", ALLOW)])

    def _on_response(self, response: Response, tx: ClientTransaction, dialog: Dialog | None) -> None:
        data = tx.user_data
        answered_leg = LegTable.of_dialog(dialog)
        if answered_leg is not None:  # the endpoint's own requests (session refresh, glare retry) moved it too
            self.write_cseq(answered_leg)
        if tx.method == "INVITE":
            if isinstance(data, SipLeg) and tx in data.forks:
                fork_response(self, data, tx, response, dialog)
            else:
                reinvite_response(self, response, dialog)
        elif response.status >= 200 and callable(data):
            tx.user_data = None
            data(response)

    def _client_failed(self, tx: ClientTransaction) -> None:
        data = tx.user_data
        if isinstance(data, SipLeg) and tx in data.forks:
            fork_failed(self, data, tx, 408)
        elif callable(data):
            tx.user_data = None
            data(None)
        elif tx.method == "INVITE" and tx.dialog is not None:
            reinvite_failed(LegTable.of_dialog(tx.dialog))

    # --- incoming legs and dialogs ----------------------------------------------------------------------------
    def _incoming_cancelled(self, tx: ServerTransaction) -> None:
        leg = tx.user_data
        if not isinstance(leg, SipLeg) or leg.state is not INCOMING:
            return
        self.legs.end(leg, CANCELLED)
        leg.server_tx = None
        self.report(self._service().on_leg_ended, leg.leg_id, None)

    def _dialog_established(self, dialog: Dialog) -> None:
        leg = LegTable.of_dialog(dialog)
        if leg is None or leg.dialog is not dialog:
            return
        self.dialogs.established(leg, dialog)

    def _dialog_ended(self, leg: SipLeg, reason: str) -> None:
        self.dialogs.ended(leg)
        self.refers.leg_ended(leg.leg_id, reason)  # after a BYE its REFER subscription lives on (refer.py)
        was = self.legs.end(leg, DIALOG_ENDED)
        if leg.reinvite_done is not None:
            done, leg.reinvite_done = leg.reinvite_done, None
            done(None)
        if was is not UP:  # released by the domain (our BYE), or reported already
            return
        self.report(self._service().on_leg_ended, leg.leg_id, None if reason == "bye" else "system")

    # --- start-up and shut-down -------------------------------------------------------------------------------
    def end_restored_dialog(self, state: DialogState, destination: tuple[str, int] | None = None,
                            transport: str = "udp") -> None:
        """BYE a dialog left from before a restart (RFC 3261 §15.1.1); to `destination` when its party is an agent
        reached at the address its registration came from (NAT), else to its remote target."""
        dialog = self.endpoint.restore_dialog(state)
        if destination is not None:
            self.endpoint.set_destination(dialog, destination, transport)
        self.endpoint.bye(dialog, self.now())
        self.wake()

    def close(self) -> None:
        self.trunk_registrations.close()
        self.refers.close()
        self.registrations.close()

    def restore_registrations(self, records: Iterable[RegistrationRecord]) -> int:
        """After a restart: the bindings still valid, and their agents reported registered (`registrations`)."""
        return self.registrations.restore(records)

    def _service(self) -> Domain:
        assert self.service is not None, "the switch is not attached to the call-control service"
        return self.service

