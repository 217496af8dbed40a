"""The domain's `Signalling` port, done in SIP by the switch.

Choices (each method returns at once; outcomes are reported on a later loop turn, ports.py):
- `originate`: an agent is called at every contact it has registered (forking, first answer wins), each INVITE
  sent to the address the registration came from (RFC 3581, NAT); a number goes to the trunk's gateway. The INVITE
  carries the offer of `offer_from_leg` (presented with that leg's SDP as it is) or none (`offerless`, RFC 3725
  flow I). No contact, or no trunk: `on_leg_failed(leg, 480)`.
  An offer taken from a leg whose 2xx still waits for its ACK (a dial: the agent's phone answered our offer-less,
  auto-answered INVITE, and the customer is called through the trunk with its offer) parks that leg first: its
  2xx is ACKed at once with an answer that sends no media, since the customer may ring for longer than the 64*T1
  the phone retransmits an un-ACKed 2xx for; the customer's answer reaches it by re-INVITE when the two are
  bridged (`bridge.park`, RFC 3725 §4.3). On an anchored call it is parked on the relay instead
  (`bridge.park_on_relay`): ACKed with the relay's answer to its offer, made of a stand-in answer from the customer's
  leg, so that the agent's phone or page names the relay from the start.
  A leg with `new_call` (a dial's agent, rung first) decides the call's media (`anchor.admit`, as a customer's INVITE
  does): anchored, direct (`call.media_direct` reported when no relay is up), or failed 503 when the operation
  refuses (the domain asked `accepts_new_calls(operation_id)` first, so nothing was created).
  On an anchored call, an agent with contacts registered over WebSocket (its page) is rung there only: the relay's
  offer is WebRTC for them (`anchor.browser`). A call an agent's page places (anchored, `inbound.py` step 5) has
  the party called as its persistent media party: hold plays it the music, a transfer re-targets its media.
- `bridge`: `bridge.connect`.
- `hold`/`unhold` (on the customer's leg): a re-INVITE with the SDP the customer last got from us, every stream
  put on hold (`sendrecv` → `sendonly`, RFC 3264 §8.4) or back, version + 1. An anchored call's customer also
  hears hold music from the relay, and ringback while a transfer target rings (`hearing.py`).
- `mute`/`unmute` (on the agent's leg): the same re-INVITE toward the agent's phone. An offer marked `sendonly`
  tells the phone our side only sends, so it answers `recvonly` and stops sending: the agent keeps hearing the
  customer and the customer stops hearing the agent. Some phones show this as "held by the other side".
- `send_dtmf`: RFC 4733 events through the relay to an anchored call's customer, else one INFO
  `application/dtmf-relay` per tone (`dtmf.py`); the action succeeds when every tone went.
- `release`: BYE on an established leg (with `Reason: SIP;cause=N` when a cause is given), CANCEL on forks still
  ringing (the leg leaves the table at once: a phone that never answers must not hold it until Timer B), a final
  response (the cause when it is 4xx-6xx, else 480) on an incoming INVITE not yet answered.
  With an `action_id`, the BYE's final response is reported (CANCEL and final responses succeed at once).
- `reject`: the final response, with Retry-After when given.
- `monitor`: a supervisor's phone rung with the relay's subscription of both parties (`monitor.py`); False at once
  when the call's media is not on a relay. `listen_in_page`: the same subscription in the WebRTC profile for the
  supervisor's board page, no SIP (`monitor.py`, `PageListener`); `release` of its leg unsubscribes it.
- `waiting`: an anchored call's customer waiting in a queue gets a 183 with the relay's SDP and hears the queue's
  music and announcements (`waiting.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.b2bua.anchor import BROWSER_TRANSPORTS
from callbridge.b2bua.bridge import connect, modify_own, park, park_on_relay, present
from callbridge.b2bua.dtmf import send_dtmf
from callbridge.b2bua.leg_state import CALLING, FAILED, INCOMING, REFUSED, RELEASE, UP
from callbridge.b2bua.leg_state import step as leg_state_step
from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.model import Operation, Queue, Trunk
from callbridge.callcontrol.ports import OriginateRequest
from callbridge.sip.message import Response
from callbridge.sip.sdp import SessionDescription
from callbridge.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from callbridge.b2bua.context import SignallingContext

__all__ = ["SipSignalling"]

def _ok(response: Response | None) -> bool:
    return response is not None and 200 <= response.status < 300


class SipSignalling:
    def __init__(self, switch: SignallingContext) -> None:
        self.sw = switch

    def is_available(self) -> bool:
        # Live calls keep their verbs during the SIGTERM drain (hold, transfer, hang up...); only new calls stop.
        return self.sw.runtime is not None

    def accepts_new_calls(self, operation_id: str | None = None) -> bool:
        sw = self.sw
        if sw.draining or sw.runtime is None:
            return False
        # a dial of an operation that refuses calls while no relay is up fails before anything is created
        return operation_id is None or sw.anchor.would_admit(sw.directory.get_operation(operation_id)) != "refuse"

    def accepts_new_logins(self) -> bool:
        # the drain takes no new agents either: their phones' new REGISTERs get 503 too (registrations.py)
        return not self.sw.draining and self.sw.runtime is not None

    # --- legs -------------------------------------------------------------------------------------------------
    def originate(self, request: OriginateRequest) -> None:
        sw = self.sw
        op = sw.directory.get_operation(request.operation_id)
        leg = sw.legs.add(SipLeg(request.leg_id, request.operation_id, "out", sw.wall(), conn_id=request.conn_id,
                                 state=CALLING,
                                 agent=request.destination if request.kind == "agent" else None))
        if request.new_call and not self._admit(leg, op):
            return
        if request.offerless:
            sw.anchor.hearing.target_ringing(request.conn_id)  # a transfer's target: ringback (hearing.py)
        source = None if request.offerless else sw.legs.get(request.offer_from_leg)
        if source is not None and source.anchored:
            # the call's persistent media party: the customer's leg, or the party an agent's page calls
            sw.anchor.adopt(request.conn_id, leg if source.agent is not None else source)
        if source is not None:
            leg.max_forwards = source.max_forwards
            parking = source.ack_pending and source.anchored and sw.anchor.anchored(request.conn_id)
            if source.ack_pending:
                leg.offer_source = source.leg_id
                if not parking:
                    park(sw, source)
            if source.direction == "in" and source.ringing:
                leg.early_peer = source.leg_id

            def send(sdp: bytes) -> None:
                if leg.state is CALLING and not leg.forks:  # not released while the media plane answered
                    leg.offer = present(leg, sdp)
                    self._send_invites(leg, request, op)

            def offered(sdp: bytes) -> None:
                if parking:  # a dial's agent: its 2xx ACKed through the relay first (bridge.park_on_relay)
                    park_on_relay(sw, source, leg, sdp, lambda: send(sdp))
                else:
                    send(sdp)

            # the first offer of an anchored call: its answerer is not known yet (forks), so no to-tag; the
            # contacts it goes to say its profile (a browser's WebRTC or plain RTP)
            targets = self._targets(request, False) if request.kind == "agent" else []
            if targets:
                leg.transport = targets[0][2]
            sw.anchor.offer(request.conn_id, source, None, source.remote_sdp, offered, receiver=leg)
            return
        self._send_invites(leg, request, op)

    def _admit(self, leg: SipLeg, op: Operation | None) -> bool:
        """A leg that starts its call (a dial's agent): the call's media is decided here, once (anchor.admit), as
        for a customer's INVITE. False when the operation refuses it (the domain checked `accepts_new_calls` in
        the same loop turn, so only a relay lost in between): the leg fails 503 and nothing is left."""
        sw = self.sw
        admission = sw.anchor.admit(op)
        if admission == "refuse":
            self._failed(leg, 503)
            return False
        leg.anchored = admission == "anchored"
        if admission == "direct_relay_down":
            service = sw.service
            assert service is not None
            sw.report(service.on_media_direct, leg.conn_id, "relay_down")
        return True

    def monitor(self, request: OriginateRequest) -> bool:
        """A listener's leg: rung with the relay's subscription of the call's two parties (monitor.py)."""
        sw = self.sw
        if not sw.anchor.listeners.can_listen(request.conn_id):
            return False
        op = sw.directory.get_operation(request.operation_id)
        leg = sw.legs.add(SipLeg(request.leg_id, request.operation_id, "out", sw.wall(), conn_id=request.conn_id,
                                 state=CALLING, agent=request.destination, listener=True))

        def offered(sdp: bytes) -> None:
            if leg.state is CALLING and not leg.forks:  # not released while the relay answered
                leg.offer = sdp
                self._send_invites(leg, request, op)

        sw.anchor.listeners.subscribe(request.conn_id, leg, offered, lambda: self._failed(leg, 503))
        return True

    def listen_in_page(self, conn_id: str, leg_id: str) -> bool:
        """A listener in the supervisor's board page: the relay's WebRTC subscription, answered by the page."""
        sw = self.sw
        if not sw.anchor.listeners.can_listen(conn_id):
            return False
        service = sw.service
        assert service is not None
        sw.anchor.listeners.subscribe_page(conn_id, leg_id, lambda: sw.report(service.on_leg_answered, leg_id),
                                           lambda: sw.report(service.on_leg_failed, leg_id, 503))
        return True

    def _send_invites(self, leg: SipLeg, request: OriginateRequest, op: Operation | None) -> None:
        sw = self.sw
        targets = self._targets(request, leg.anchored) if op is not None else []
        if request.kind != "agent":
            leg.trunk = self._trunk(request)  # its credentials answer the provider's 401/407 (trunks.py)
        if not targets or op is None:
            self._failed(leg, 480)
            return
        domain = op.sip_domain
        caller = request.caller_id or "anonymous"
        headers: list[tuple[str, str]] = list(request.extra_headers)
        if request.auto_answer:
            headers.append(("Call-Info", "<sip:callbridge>;answer-after=0"))
        if request.diverted_from:
            headers.append(("Diversion", f"<sip:{request.diverted_from}@{domain}>;reason=deflection"))
        to_uri = f"sip:{request.destination}@{domain}" if request.kind == "agent" else None
        for uri, dest, transport in targets:
            tx = sw.send_invite(uri, from_uri=f"sip:{caller}@{domain}", to_uri=to_uri or str(uri.copy(params={})),
                                from_display=request.caller_name or None, body=leg.offer, headers=headers,
                                dest=dest, transport=transport, max_forwards=leg.max_forwards)
            tx.user_data = leg
            leg.forks.append(tx)
        leg.peer_addr, leg.transport = targets[0][1], targets[0][2]
        sw.wake()

    def _targets(self, request: OriginateRequest, anchoring: bool) -> list[tuple[URI, tuple[str, int], str]]:
        """Where the leg's INVITEs go; `anchoring`: the call is to be anchored once its other party exists (a dial's
        agent, rung first), so an agent on its page is rung there as on an anchored call."""
        sw = self.sw
        if request.kind == "agent":
            bindings = sw.registrar.contacts_for(request.operation_id, request.destination, sw.wall())
            anchored = anchoring or sw.anchor.anchored(request.conn_id)
            if anchored and any(b.transport in BROWSER_TRANSPORTS for b in bindings):
                # one relay offer per call has one profile: an agent on its page and a desk phone at once gets
                # the call on the page (docs/operations.md, "The agent's page")
                bindings = [b for b in bindings if b.transport in BROWSER_TRANSPORTS]
            return [(b.uri, b.destination, b.transport) for b in bindings]
        trunk = self._trunk(request)
        if trunk is None:
            return []
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        suffix = ";transport=tcp" if trunk.transport == "tcp" else ""
        uri = parse_uri(f"sip:{request.destination}@{host}:{trunk.port}{suffix}")
        return [(uri, (trunk.host, trunk.port), trunk.transport)]

    def _trunk(self, request: OriginateRequest) -> Trunk | None:
        return next((t for t in self.sw.directory.list_trunks(request.operation_id) if t.name == request.trunk),
                    None)

    def _failed(self, leg: SipLeg, status: int) -> None:
        self.sw.legs.end(leg, FAILED)
        service = self.sw.service
        assert service is not None
        self.sw.report(service.on_leg_failed, leg.leg_id, status)

    def bridge(self, leg_a: str, leg_b: str) -> None:
        a, b = self.sw.legs.get(leg_a), self.sw.legs.get(leg_b)
        if a is None or b is None:
            self.sw.log.warning("bridge of %s and %s: a leg is gone", leg_a, leg_b)
            return
        self.sw.anchor.hearing.bridged(a.conn_id or b.conn_id, a.leg_id, b.leg_id)
        connect(self.sw, a, b)
        self.sw.wake()

    # --- actions ----------------------------------------------------------------------------------------------
    def _result(self, action_id: str | None, ok: bool, status: int | None) -> None:
        if action_id is None:
            return
        service = self.sw.service
        assert service is not None
        self.sw.report(service.on_action_result, action_id, ok, status)

    def _modify(self, leg_id: str, action_id: str, hold: bool) -> None:
        leg = self.sw.legs.get(leg_id)

        def change(sd: SessionDescription) -> SessionDescription:
            return sd.with_hold() if hold else sd.with_resume()

        sdp = modify_own(leg, change) if leg is not None and leg.up else None
        if leg is None or sdp is None:
            self._result(action_id, False, None)
            return

        def done(response: Response | None) -> None:
            if _ok(response) and response is not None and response.body:
                leg.remote_sdp = response.body
            self._result(action_id, _ok(response), response.status if response is not None else None)

        if not self.sw.reinvite(leg, sdp, done):
            self._result(action_id, False, 491)

    def hold(self, leg_id: str, action_id: str) -> None:
        self._modify(leg_id, action_id, True)
        self._customer_hears(leg_id, hold=True)

    def unhold(self, leg_id: str, action_id: str) -> None:
        self._modify(leg_id, action_id, False)
        self._customer_hears(leg_id, hold=False)

    def record(self, conn_id: str, on: bool) -> bool:
        """Record the call on its relay, or stop (recorder.py); False: its media is not anchored."""
        return self.sw.anchor.recorder.want(conn_id, on)

    def _customer_hears(self, leg_id: str, *, hold: bool) -> None:
        """An anchored call's customer held hears music from the relay, and its peer again when taken off hold; the
        SIP hold is the re-INVITE above all the same (hearing.py)."""
        leg = self.sw.legs.get(leg_id)
        anchor = self.sw.anchor
        if leg is None or leg.conn_id is None or anchor.calls.get(leg.conn_id) != leg_id:
            return
        if hold:
            anchor.hearing.hold(leg.conn_id)
        else:
            anchor.hearing.unhold(leg.conn_id)

    def mute(self, leg_id: str, action_id: str) -> None:
        self._modify(leg_id, action_id, True)

    def unmute(self, leg_id: str, action_id: str) -> None:
        self._modify(leg_id, action_id, False)

    def send_dtmf(self, leg_id: str, tones: str, action_id: str) -> None:
        leg = self.sw.legs.get(leg_id)
        if leg is None or not leg.up:
            self._result(action_id, False, None)
            return
        send_dtmf(self.sw, leg, tones, lambda ok, status: self._result(action_id, ok, status))  # dtmf.py

    def release(self, leg_id: str, cause: int | None = None, action_id: str | None = None) -> None:
        sw = self.sw
        if sw.anchor.listeners.release_page(leg_id):  # a board page's listener: no SIP (monitor.py)
            self._result(action_id, True, None)
            return
        sw.refers.leg_released(leg_id, cause)  # a REFER's NOTIFY goes before the BYE/CANCEL (refer.py)
        leg = sw.legs.get(leg_id)
        if leg is None or leg.released:
            self._result(action_id, True, None)
            return
        now = sw.now()
        if leg.forking:
            for tx in leg.forks:
                sw.endpoint.cancel(tx, now)
            # The endpoint finishes the forks (487, or Timer B for a phone that never answered) and a 2xx that
            # crosses the CANCEL is ACKed and hung up (§9.1); the leg itself is over now.
            sw.legs.end(leg, RELEASE)
            self._result(action_id, True, None)
        elif leg.state is INCOMING and leg.server_tx is not None:
            sw.legs.end(leg, RELEASE)
            status = cause if cause is not None and 400 <= cause < 700 else 480
            sw.respond(leg.server_tx, status)
            leg.server_tx = None
            self._result(action_id, True, None)
        elif leg.state is not UP:
            sw.legs.end(leg, RELEASE)  # incoming, its INVITE's transaction gone: nothing to send
            self._result(action_id, True, None)
        elif leg.up:
            leg_state_step(leg, RELEASE)  # up → releasing: the BYE below still goes on it
            if leg.ack_pending:
                sw.ack(leg, leg.sent_sdp)
            headers = [("Reason", f"SIP;cause={cause}")] if cause is not None and 300 <= cause < 700 else []

            def done(response: Response | None) -> None:
                self._result(action_id, _ok(response), response.status if response is not None else None)

            if not sw.request_in_dialog(leg, "BYE", b"", None, done, headers):
                self._result(action_id, False, None)
        else:
            leg_state_step(leg, RELEASE)  # its dialog is ending already: nothing more is reported
            self._result(action_id, True, None)
        sw.wake()

    def waiting(self, conn_id: str, leg_id: str, queue: Queue) -> None:
        """An anchored call's customer, its INVITE unanswered, waits in `queue`: a 183 with the relay's SDP, and the
        queue's music and announcements from the relay (waiting.py, RFC 3960 early media)."""
        sw = self.sw
        leg = sw.legs.get(leg_id)
        if leg is not None and leg.state is UP:  # answered, requeued: the relay plays it the queue's audio (hearing.py)
            sw.anchor.hearing.requeued(conn_id, sw.anchor.waiting.audio(leg.operation_id, queue))
            return
        if leg is None or not leg.anchored or leg.state is not INCOMING or leg.server_tx is None \
                or not leg.remote_sdp:
            return
        sw.anchor.adopt(conn_id, leg)

        def early(sdp: bytes) -> None:
            if leg.state is INCOMING and leg.server_tx is not None:
                sw.respond(leg.server_tx, 183, body=present(leg, sdp), reason="Session Progress")

        if sw.anchor.waiting.delay > 0 and not sw.anchor.waiting.waiting(conn_id):
            sw.respond(leg.server_tx, 180, reason="Ringing")  # it rings until the queue's music (waiting.py)
        sw.anchor.waiting.start(conn_id, leg.leg_id, leg.remote_sdp, leg.operation_id, queue, early)

    def reject(self, leg_id: str, status: int, retry_after: int | None = None) -> None:
        sw = self.sw
        leg = sw.legs.get(leg_id)
        if leg is None or leg.server_tx is None or leg.state is not INCOMING:
            return
        sw.legs.end(leg, REFUSED)
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        sw.respond(leg.server_tx, status, headers=headers)
        leg.server_tx = None
        sw.wake()

