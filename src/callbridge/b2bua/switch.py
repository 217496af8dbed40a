"""The switch: the B2BUA's transaction user. It sits between the transport and the SIP endpoint, and turns the
endpoint's events into domain reports and the domain's commands (through `signalling`) into SIP.

Rules
- Defences first (Kamailio's order): every datagram's source is checked against the ban table before it is parsed
  (`Defence.allow`), counted for the flood limit, and a request whose User-Agent names a scanner is dropped unread.
  Unparseable datagrams, failed credentials, 403/404/484 count as failures toward a ban; trunks are exempt.
- Out-of-dialog requests: REGISTER goes to the registrar (its binding changes are written through and reported to
  the domain); OPTIONS is answered 200; INVITE is routed by `inbound` (trunk → DID, agent → digest then dial);
  any other method is 405 with Allow, or 501 when callbridge does not know it at all (§8.2.1; in a dialog too).
  Before any of this the endpoint answered 416 to a Request-URI scheme and 420 to a Require it does not support
  (§8.2.2; `URI_SCHEMES`, `SUPPORTED_OPTIONS`).
  In-dialog requests are found by their dialog (Call-ID and tags, whatever the Request-URI:
  SIPp's built-in uac sends its ACK and BYE to the address it sent the INVITE to) and relayed to the bridged leg
  (re-INVITE, UPDATE, INFO; `bridge`); a REFER on an agent's leg starts a transfer (`refer`, RFC 3515/3891);
  BYE and CANCEL are answered by the endpoint and reported to the domain,
  which releases the other legs. A request for a dialog we do not have gets 481 from the endpoint.
- Outgoing INVITEs fork to every contact of an agent: provisional responses are relayed in order to the incoming
  leg that waits on them (180/183, early media SDP included), the first 2xx wins and the other forks are
  cancelled; a 2xx that arrives after that (or after the domain let go of the leg) is ACKed and hung up.
- Reports to the domain (`on_leg_*`, `on_action_result`, `on_registration_changed`) are made on a later turn of the
  event loop (`report`), never from inside a call the domain made into `signalling` (ports.py).
- NAT (RFC 3581): an agent's phone is reached where its REGISTER or its INVITE came from, not where its Contact
  points: INVITEs go to the binding's source address and every later request of the dialog (ACK, re-INVITE, BYE)
  too (`Endpoint.set_destination`); a restored dialog with a registered agent's source address as its peer too.
- Each dialog's CSeq numbers are written through on every in-dialog request sent or received (`write_cseq`).
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
from typing import TYPE_CHECKING, Any

from callbridge.b2bua import inbound
from callbridge.b2bua.bridge import SDP, relay_offer
from callbridge.b2bua.defence import Defence, counts_as_failure
from callbridge.b2bua.leg_state import step
from callbridge.b2bua.legs import LegInput, LegState, LegTable, ReinviteDone, SipLeg
from callbridge.b2bua.location import (
    AgentUnregistered,
    Binding,
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    RegistrationEvent,
)
from callbridge.b2bua.ports import (
    B2buaDirectory,
    DialogRecord,
    DialogStore,
    Domain,
    RegistrationRecord,
    RegistrationStore,
)
from callbridge.b2bua.refer import ReferHandler
from callbridge.b2bua.registrar import ChallengerPool, Registrar, RegistrarDirectory, RegistrarLimits
from callbridge.b2bua.trunks import TrunkRegistrationConfig, TrunkRegistrations, answer_challenge
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

__all__ = ["Switch"]

log = logging.getLogger(__name__)
_USER_AGENT = re.compile(rb"\r\n(?:User-Agent)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER, REFER"
# What the endpoint's §8.2.2 inspection lets through (`callbridge.sip.inspection`): tel as well, since a trunk may
# send a tel: Request-URI and `inbound` routes by its number; the option tags callbridge implements as a UAS:
# timer (RFC 4028, the endpoint) and norefersub (RFC 4488, `refer` honours Refer-Sub: false). Not replaces: an
# INVITE with Replaces (RFC 3891) is not taken, only a REFER whose Refer-To carries one.
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SUPPORTED_OPTIONS = frozenset({"timer", "norefersub"})
# A restored dialog's BYE skips this far past the stored local CSeq. Every in-dialog request the switch sends is
# written through (`write_cseq`), but writes are queued (a crash loses the last ones) and the endpoint's own
# refreshes are written when answered; §12.2.1.1 only asks that the CSeq grow ("strictly monotonically
# increasing"), not that it grow by one, so a margin larger than any request burst a lost queue could hold is safe.
RESTORED_CSEQ_GAP = 100


class Switch:
    """See the module docstring. Made by `bootstrap`; `attach(service, runtime)` completes it."""

    log = log

    def __init__(self, endpoint: Endpoint, directory: B2buaDirectory, *, defence: Defence,
                 challengers: ChallengerPool, dialogs: DialogStore, registrations: RegistrationStore,
                 wall_clock: Callable[[], float], loop: asyncio.AbstractEventLoop,
                 registrar_limits: RegistrarLimits | None = None,
                 trunk_registration: TrunkRegistrationConfig | None = None) -> None:
        self.endpoint = endpoint
        endpoint.uri_schemes = URI_SCHEMES
        endpoint.supported_options = SUPPORTED_OPTIONS
        self.directory = directory
        self.defence = defence
        self.challengers = challengers
        self.dialog_records = dialogs
        self.registration_records = registrations
        self.wall = wall_clock
        self.loop = loop
        registrar_directory: RegistrarDirectory = directory
        self.registrar = Registrar(registrar_directory, challengers, on_change=self._on_binding,
                                   limits=registrar_limits)
        self.legs = LegTable()
        self.refers = ReferHandler(self)  # REFER on an agent's leg (refer.py)
        self.trunk_registrations = TrunkRegistrations(self, trunk_registration)  # credentials toward providers
        self.draining = False
        self.service: Domain | None = None
        self.runtime: Waker | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at: float | None = None
        self._trunks: list[tuple[Trunk, Any]] = []
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
        step(leg, LegInput.ANSWERED)
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
        if not leg.up or leg.reinvite_done is not None or leg.ack_pending:
            return False
        assert leg.dialog is not None
        try:
            self.endpoint.send_in_dialog(leg.dialog, "INVITE", self.now(), body=body,
                                         content_type=SDP if body else None)
        except DialogError:
            return False
        leg.reinvite_done, leg.defer_ack = done, defer_ack
        self.write_cseq(leg)
        self.wake()
        return True

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

    def write_cseq(self, leg: SipLeg) -> None:
        """Write the dialog's sequence numbers through when they moved (a restored dialog's BYE needs them)."""
        dialog = leg.dialog
        if dialog is None or dialog.terminated:
            return
        seqs = (dialog.local_seq, dialog.remote_seq)
        if seqs != leg.written_cseq:
            leg.written_cseq = seqs
            self.dialog_records.update_cseq(leg.leg_id, seqs[0], seqs[1], self.wall())

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
        import ipaddress

        trunks: list[tuple[Trunk, Any]] = []
        for op in self.directory.list_operations():
            for trunk in self.directory.list_trunks(op.id):
                for network in trunk.inbound_networks:
                    trunks.append((trunk, ipaddress.ip_network(network, strict=False)))
        self._trunks = trunks
        self.defence.set_trunk_addresses(str(net) for _, net in trunks)

    def trunk_for_source(self, ip: str) -> Trunk | None:
        import ipaddress

        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for trunk, network in self._trunks:
            if address.version == network.version and address in network:
                return trunk
        return None

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
            self._register(request, tx)
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
                self._fork_response(data, tx, response, dialog)
            else:
                self._reinvite_response(response, dialog)
        elif response.status >= 200 and callable(data):
            tx.user_data = None
            data(response)

    def _reinvite_response(self, response: Response, dialog: Dialog | None) -> None:
        status = response.status
        leg = LegTable.of_dialog(dialog)
        if status < 200 or dialog is None:
            return
        if 200 <= status < 300 and dialog.unacked_invite is not None:
            if leg is not None and leg.defer_ack and leg.reinvite_done is not None:
                leg.ack_pending = True
                leg.remote_sdp = response.body
            else:
                self.endpoint.ack(dialog, self.now())
        if leg is None or leg.reinvite_done is None:
            return
        if status == 491 and dialog.glare_retry is not None:
            return  # the endpoint re-sends it after the §14.1 delay; its answer completes it
        if 200 <= status < 300 and response.body and not leg.defer_ack:
            leg.remote_sdp = response.body
        done, leg.reinvite_done, leg.defer_ack = leg.reinvite_done, None, False
        done(response)

    def _client_failed(self, tx: ClientTransaction) -> None:
        data = tx.user_data
        if isinstance(data, SipLeg) and tx in data.forks:
            self._fork_failed(data, tx, 408)
        elif callable(data):
            tx.user_data = None
            data(None)
        elif tx.method == "INVITE" and tx.dialog is not None:
            leg = LegTable.of_dialog(tx.dialog)
            if leg is not None and leg.reinvite_done is not None:
                done, leg.reinvite_done, leg.defer_ack = leg.reinvite_done, None, False
                done(None)

    # --- outgoing legs: forks ---------------------------------------------------------------------------------
    def _fork_response(self, leg: SipLeg, tx: ClientTransaction, response: Response, dialog: Dialog | None) -> None:
        status = response.status
        if status < 200:
            if status == 100 or not leg.forking:
                return
            if step(leg, LegInput.PROVISIONAL) is LegState.CALLING:  # the first ringing is reported
                self.report(self._service().on_leg_ringing, leg.leg_id)
                self.refers.target_ringing(leg.leg_id, status)
            early = self.legs.get(leg.early_peer)
            if early is not None and early.ringing and early.server_tx is not None:
                from callbridge.b2bua.bridge import present

                body = present(early, response.body) if response.body else b""
                self.respond(early.server_tx, status, body=body, reason=response.reason)
            return
        if status >= 300:
            if status in (401, 407) and answer_challenge(self, leg, tx, response):
                return  # the same INVITE again with the trunk's credentials, as the same fork (trunks.py)
            self._fork_failed(leg, tx, status)
            return
        assert dialog is not None
        if tx.cancelled:
            return  # the endpoint ACKs and hangs up a 2xx that crossed our CANCEL (§9.1)
        if leg.agent is not None:  # the phone is where its registration came from, whatever its Contact says
            self.endpoint.set_destination(dialog, tx.dest, tx.transport)
        if not leg.forking:  # answered by another fork, or released (CANCELled) already
            if dialog.unacked_invite is not None:
                self.endpoint.ack(dialog, self.now())
            self.endpoint.bye(dialog, self.now())
            return
        step(leg, LegInput.ANSWERED)
        leg.dialog = dialog
        dialog.user_data = leg
        leg.remote_sdp = response.body
        leg.peer_addr, leg.transport = tx.dest, tx.transport
        if leg.offer:
            self.endpoint.ack(dialog, self.now())
        else:
            leg.ack_pending = True  # offer-less: the ACK carries the answer once the other side gives it
        for other in leg.forks:
            if other is not tx:
                self.endpoint.cancel(other, self.now())
        leg.forks = []
        self.refers.target_answered(leg.leg_id)
        self.report(self._service().on_leg_answered, leg.leg_id)

    def _fork_failed(self, leg: SipLeg, tx: ClientTransaction, status: int) -> None:
        if tx in leg.forks:
            leg.forks.remove(tx)
        leg.fork_statuses += (status,)
        if leg.forks or leg.state is LegState.UP or leg.state is LegState.RELEASING:
            return
        was = self.legs.end(leg, LegInput.FAILED)  # ENDED already when released while it rang (its 487s)
        self.refers.target_failed(leg.leg_id, _best_status(leg.fork_statuses))
        if was is not LegState.ENDED:
            self.report(self._service().on_leg_failed, leg.leg_id, _best_status(leg.fork_statuses))

    # --- incoming legs and dialogs ----------------------------------------------------------------------------
    def _incoming_cancelled(self, tx: ServerTransaction) -> None:
        leg = tx.user_data
        if not isinstance(leg, SipLeg) or leg.state is not LegState.INCOMING:
            return
        self.legs.end(leg, LegInput.CANCELLED)
        leg.server_tx = None
        self.report(self._service().on_leg_ended, leg.leg_id, None)

    def _dialog_established(self, dialog: Dialog) -> None:
        leg = LegTable.of_dialog(dialog)
        if leg is None or leg.dialog is not dialog:
            return
        now = self.wall()
        leg.written_cseq = (dialog.local_seq, dialog.remote_seq)
        self.dialog_records.save_dialog(DialogRecord(
            leg_id=leg.leg_id, conn_id=leg.conn_id or "", call_id=dialog.call_id, local_tag=dialog.local_tag,
            remote_tag=dialog.remote_tag, local_uri=dialog.local_uri, remote_uri=dialog.remote_uri,
            local_cseq=dialog.local_seq, remote_cseq=dialog.remote_seq, remote_target=str(dialog.remote_target),
            route_set=tuple(dialog.route_set), peer_host=leg.peer_addr[0], peer_port=leg.peer_addr[1],
            transport=leg.transport, created_at=leg.created_at, updated_at=now))

    def _dialog_ended(self, leg: SipLeg, reason: str) -> None:
        self.dialog_records.remove_dialog(leg.leg_id)
        self.refers.leg_ended(leg.leg_id, reason)  # after a BYE its REFER subscription lives on (refer.py)
        was = self.legs.end(leg, LegInput.DIALOG_ENDED)
        if leg.reinvite_done is not None:
            done, leg.reinvite_done = leg.reinvite_done, None
            done(None)
        if was is not LegState.UP:  # released by the domain (our BYE), or reported already
            return
        self.report(self._service().on_leg_ended, leg.leg_id, None if reason == "bye" else "system")

    # --- registrations ----------------------------------------------------------------------------------------
    def _register(self, request: Request, tx: ServerTransaction) -> None:
        response = self.registrar.handle_register(request, tx.source, tx.transport, self.wall())
        self.endpoint.respond(tx, response, self.now())
        if counts_as_failure(response.status, carried_credentials="authorization" in request.headers):
            self.defence.record_failure(tx.source[0], self.now())
        self._arm_expiry()

    def _on_binding(self, event: RegistrationEvent) -> None:
        records = self.registration_records
        if isinstance(event, BindingAdded | BindingRefreshed):
            records.save_registration(_registration_record(event.binding))
            if isinstance(event, BindingAdded) and event.first:
                b = event.binding
                self.report(self._service().on_registration_changed, b.operation_id, b.extension, True)
        elif isinstance(event, BindingRemoved):
            b = event.binding
            records.remove_registration(b.operation_id, b.extension, b.contact_uri)
        elif isinstance(event, AgentUnregistered):
            self.report(self._service().on_registration_changed, event.operation_id, event.extension, False)

    def restore_registrations(self, records: Iterable[RegistrationRecord]) -> int:
        """After a restart: the bindings still valid, and their agents reported registered."""
        now = self.wall()
        bindings = [_binding(r) for r in records]
        count = self.registrar.restore(bindings, now)
        for agent in sorted({b.agent for b in bindings if b.expires_at > now}):
            self.report(self._service().on_registration_changed, agent[0], agent[1], True)
        self._arm_expiry()
        return count

    def _arm_expiry(self) -> None:
        when = self.registrar.next_expiry()
        if when is None or (self._expiry is not None and self._expiry_at is not None and self._expiry_at <= when):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = when
        self._expiry = self.loop.call_later(max(0.0, when - self.wall()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._expiry = self._expiry_at = None
        self.registrar.expire(self.wall())
        self._arm_expiry()

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
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _service(self) -> Domain:
        assert self.service is not None, "the switch is not attached to the call-control service"
        return self.service


def _best_status(statuses: tuple[int, ...]) -> int:
    """The final status of a forked INVITE (§16.7 step 6, simplified): a 6xx wins, then busy, then the lowest."""
    for status in statuses:
        if status >= 600:
            return status
    if 486 in statuses:
        return 486
    return min(statuses) if statuses else 408


def _registration_record(b: Binding) -> RegistrationRecord:
    return RegistrationRecord(
        operation_id=b.operation_id, extension=b.extension, contact_uri=b.contact_uri, source_host=b.source_host,
        source_port=b.source_port, transport=b.transport, expires_at=b.expires_at, call_id=b.call_id,
        cseq=b.cseq, updated_at=b.updated_at, user_agent=b.user_agent)


def _binding(r: RegistrationRecord) -> Binding:
    return Binding(
        operation_id=r.operation_id, extension=r.extension, contact_uri=r.contact_uri, source_host=r.source_host,
        source_port=r.source_port, transport=r.transport, expires_at=r.expires_at, call_id=r.call_id, cseq=r.cseq,
        user_agent=r.user_agent, registered_at=r.updated_at, updated_at=r.updated_at)
