"""Taking an operation over with its live state from the node that had it (docs/cluster.md, "Failover").

When this node gains the lease of an operation (`ClusterMember.on_gained`), whatever other nodes left of that
operation in the records is taken over, in four steps (a dead node's, or a live one's that handed the operation
over: `cluster.handover` let its calls go first):
1. read (a worker thread, one transaction): the operation's open calls recorded by other nodes with their legs and
   dialogs, its registrations recorded by other nodes, the agents whose newest recorded state is another node's and
   not `logout`, and the newest event `seq` of the operation;
2. decide (the loop): a call that was connected (a customer's leg and an agent's leg both up, both dialogs
   recorded) is adopted, and so is one in a transfer whose target was still being rung or in an attended
   transfer's consultation (its transfer is failed once the call is restored, callcontrol/adoption.py: the
   customer back with its agent, or in its queue when the agent had left); every other open call (queued,
   ringing or being dialled at the death) is
   ended: a BYE on each of its dialogs (RFC 3261 §15.1.1, as start-up reconciliation does). The agents not on an
   adopted call pass through the restart rule (`callcontrol.restart`); the event log continues the operation's
   `seq` from the stored one before numbering their `agent.state_changed` events;
3. write (a worker thread, one transaction that declares this node's fence, so it lands only while this node
   holds the lease): the ended calls closed by "system" with their CDRs, their dialogs deleted; the adopted calls,
   their dialogs and the valid registrations re-owned (`node_id` = this node: a restart of the old node's id then
   leaves them alone); expired registrations deleted; the agents' changes and their events;
4. restore (the loop): the adopted calls in the domain (`CallControlService.adopt_call`: connected, agent
   `on_call`) and their dialogs in the B2BUA (legs `UP`, bridged to each other, each dialog's CSeq past the stored
   one by `RESTORED_CSEQ_GAP`, its requests sent where the old node sent them), the agents' states, and the
   registrations (their agents reported registered).
   A supervisor's phone listening to an adopted call (a dialog of the call that is none of its parties') goes on
   listening: its leg is restored as a listener (its subscription is on the relay still) and the domain's
   listening with it, from the event log's `call.monitor_started`; a listener whose start the log does not show is
   hung up with a BYE and its subscription ended (`MediaAnchor.unsubscribe_left`).
   An anchored call's media stays on its relay call (same call-id, tags and relay, docs/cluster.md "Media in the
   cluster"): its anchoring is restored (`MediaAnchor.restore`), and a left call that is ended has its relay call
   deleted (`MediaAnchor.delete_left`). The SDP each party was last sent, and the one it last sent, are restored
   with the dialogs, so a hold, a resume or a transfer re-offers from them.
   A recording in progress (`call_recordings`, as the old node last wrote it) goes on: an adopted call's recorder
   takes it up where the relay has it (`CallRecorder.adopt`, the domain's recording state with it), an ended call's
   recording is stopped and joined into its WAV here (`MediaAnchor.finish_left`), and the rows are re-owned.
What is not carried over (session-timer refreshes, what the customer heard if it was on hold at the handover) is in
docs/cluster.md, "Not yet".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, func, select, update

from callbridge.b2bua.dialogs import RESTORED_CSEQ_GAP
from callbridge.b2bua.leg_state import UP
from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.ports import OpenRecording
from callbridge.callcontrol.adoption import adopted_legs
from callbridge.callcontrol.calls import RecordingState
from callbridge.callcontrol.records import LOGOUT, CallRecord, LegRecord, TransferRecord
from callbridge.callcontrol.restart import AgentRestart
from callbridge.cluster.fencing import Fence
from callbridge.sip.dialog import DialogState
from callbridge.sip.sdp import SdpError, SessionDescription
from callbridge.storage import schema as s
from callbridge.storage.event_log import Bounds
from callbridge.storage.open_recordings import customer_sent_sdp, recording_of_row
from callbridge.storage.reconcile import closing_cdr
from callbridge.storage.records import cdr_values, read_cdr, read_legs, transfer_of_row
from callbridge.storage.rowwrites import upsert
from callbridge.storage.sip_state import DialogRecord, RegistrationRecord, dialog_of_row, registration_of_row
from callbridge.storage.times import to_datetime, to_seconds

if TYPE_CHECKING:
    from callbridge.bootstrap import Node

log = logging.getLogger(__name__)

RESTORED_SDP_GAP = 100  # an adopted dialog's SDP version goes on this far past the stored one (`_restore_sdp`)


@dataclass(frozen=True, slots=True)
class LeftCall:
    record: CallRecord
    legs: list[LegRecord]
    dialogs: list[DialogRecord]
    recording: OpenRecording | None = None  # the call's recording in progress, as the old node last wrote it
    monitors: dict[str, tuple[str, float]] = field(default_factory=dict)  # monitor_id -> (supervisor, started_at)
    transfer: TransferRecord | None = None  # the call's open transfer, as the old node last wrote it

    @property
    def adopted_legs(self) -> tuple[LegRecord, LegRecord | None] | None:
        """The customer's leg and the agent's (None: the agent left during a transfer), `adopted_legs`."""
        return adopted_legs(self.record, self.legs, self.transfer)

    @property
    def adoptable(self) -> bool:
        pair = self.adopted_legs
        return pair is not None and {leg.leg_id for leg in pair if leg is not None} <= {d.leg_id for d in self.dialogs}

    @property
    def _parties(self) -> set[str]:
        """The legs whose dialogs go on: a transfer's target is not one (its INVITE died with the node)."""
        parties = {leg.leg_id for leg in self.legs}
        if self.transfer is not None and self.transfer.target_leg_id is not None:
            parties.discard(self.transfer.target_leg_id)
        return parties

    @property
    def listeners(self) -> list[DialogRecord]:
        """The dialogs of the call that are none of its legs': a supervisor's phone listening to it (its leg is
        not one of the call's parties, b2bua/monitor.py), whose listening started (`monitors`, from the event log)
        and goes on at the adopting node."""
        parties = self._parties
        return [d for d in self.dialogs if d.leg_id not in parties and d.leg_id in self.monitors]

    @property
    def strays(self) -> list[DialogRecord]:
        """The other dialogs that are none of its parties' (a listener whose start the log does not show; a
        transfer target's early dialog, RFC 3261 §15 lets its caller BYE it): the adopting node hangs them up."""
        parties = self._parties
        return [d for d in self.dialogs if d.leg_id not in parties and d.leg_id not in self.monitors]

    @property
    def relay(self) -> str | None:
        """The relay that holds the call's media (anchored), as its dialogs were written; None: direct media."""
        return next((d.media_relay for d in self.dialogs if d.media_relay), None)


@dataclass(frozen=True, slots=True)
class Found:
    """What other nodes left of one operation."""

    dead: list[str]
    calls: list[LeftCall]
    registrations: list[RegistrationRecord]  # still valid
    agents: list[tuple[str, str, str, float]]  # (extension, state, reason, entered_at): newest state not logout
    bounds: Bounds | None


@dataclass(slots=True)
class TakenOver:
    """What a takeover did (logged; tests read it from `Node.takeovers`)."""

    operation_id: str
    dead: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # conn_ids
    ended: list[str] = field(default_factory=list)
    registrations: int = 0
    agents: int = 0
    seconds: float = 0.0


def read_found(conn: Connection, operation_id: str, me: str, lease_seconds: float, now: float) -> Found:
    # Every other node's records of the operation are left over, dead node or not: this node holds the lease now,
    # so the fence refuses any other node's writes for it, and a live node lets its calls go before it releases
    # the lease (cluster.handover) or when it learns it lost it.
    del lease_seconds
    c = s.calls
    rows = conn.execute(select(c).where(c.c.operation_id == operation_id, c.c.ended_at.is_(None),
                                        c.c.node_id != me).order_by(c.c.started_at)).mappings()
    calls_rows = list(rows)
    d = s.dialogs
    # one read for the operation's recordings in progress, not one per call (most calls have none)
    recordings = {row["conn_id"]: recording_of_row(row) for row in conn.execute(
        select(s.call_recordings).where(s.call_recordings.c.operation_id == operation_id)).mappings()}
    for conn_id, rec in recordings.items():  # a row without the port: read from the customer's SDP (recorder.py)
        if rec.customer_port is None:
            recordings[conn_id] = replace(rec, customer_sdp=customer_sent_sdp(conn, conn_id))
    t = s.transfers  # the open transfers likewise: a call in one is adopted when its target was still rung
    transfers = {row["conn_id"]: transfer_of_row(row) for row in conn.execute(
        select(t).where(t.c.operation_id == operation_id, t.c.ended_at.is_(None)).order_by(t.c.created_at))
        .mappings()}
    calls = []
    for r in calls_rows:
        record = CallRecord(r["conn_id"], r["operation_id"], r["node_id"], r["direction"], r["customer_number"],
                            r["state"], r["queue"], r["extension"], to_seconds(r["started_at"]),
                            None if r["answered_at"] is None else to_seconds(r["answered_at"]), None,
                            r["hangup_by"], r["sip_cause"], int(r["transfer_count"]), r["related_conn_id"])
        dialogs = [dialog_of_row(x) for x in conn.execute(select(d).where(d.c.conn_id == record.conn_id)
                                                     .order_by(d.c.created_at, d.c.leg_id)).mappings()]
        legs = read_legs(conn, record.conn_id)
        parties = {leg.leg_id for leg in legs}
        # the event log is read only for a call with a dialog none of its parties' (a listener's)
        monitors = (read_monitors(conn, operation_id, record.conn_id)
                    if any(x.leg_id not in parties for x in dialogs) else {})
        calls.append(LeftCall(record, legs, dialogs, recordings.get(record.conn_id), monitors,
                              transfers.get(record.conn_id)))
    g = s.registrations
    registrations = [(registration_of_row(r), r["node_id"]) for r in conn.execute(
        select(g).where(g.c.operation_id == operation_id, g.c.node_id != me, g.c.expires_at > to_datetime(now))
        .order_by(g.c.updated_at, g.c.extension, g.c.contact_uri)).mappings()]
    h = s.agent_state_history
    newest = (select(h.c.extension, func.max(h.c.id).label("id")).where(h.c.operation_id == operation_id)
              .group_by(h.c.extension).subquery())
    agents = [r for r in conn.execute(select(h.c.extension, h.c.state, h.c.reason, h.c.entered_at, h.c.node_id)
                                      .join(newest, h.c.id == newest.c.id).order_by(h.c.extension))
              if r.state != LOGOUT and r.node_id != me]
    e = s.events
    low, high = conn.execute(select(func.min(e.c.seq), func.max(e.c.seq))
                             .where(e.c.operation_id == operation_id)).one()
    dead = sorted({c.record.node_id for c in calls} | {node for _, node in registrations} | {r.node_id for r in agents})
    return Found(dead, calls, [r for r, _ in registrations],
                 [(r.extension, r.state, r.reason, to_seconds(r.entered_at)) for r in agents],
                 None if high is None else Bounds(int(low), int(high)))


def write_takeover(conn: Connection, fence: Fence, operation_id: str, me: str, found: Found, now: float,
                   restarts: list[AgentRestart], event_rows: list[dict[str, Any]]) -> None:
    """Step 3 (see the module docstring), in the caller's transaction."""
    fence.declare(conn)
    ended = to_datetime(now)
    for left in found.calls:
        conn_id = left.record.conn_id
        if left.recording is not None:  # this node finishes it now, whether the call goes on here or is ended
            conn.execute(update(s.call_recordings).where(s.call_recordings.c.conn_id == conn_id).values(node_id=me))
        if left.adoptable:
            conn.execute(update(s.calls).where(s.calls.c.conn_id == conn_id).values(node_id=me))
            conn.execute(update(s.dialogs).where(s.dialogs.c.conn_id == conn_id).values(node_id=me))
            for stray in left.strays:  # hung up by this node (step 2)
                conn.execute(delete(s.dialogs).where(s.dialogs.c.leg_id == stray.leg_id))
            continue
        conn.execute(update(s.calls).where(s.calls.c.conn_id == conn_id)
                     .values(state="ended", ended_at=ended, hangup_by="system", node_id=me))
        conn.execute(update(s.legs).where(s.legs.c.conn_id == conn_id, s.legs.c.ended_at.is_(None))
                     .values(state="ended", ended_at=ended, ended_by="system"))
        conn.execute(delete(s.dialogs).where(s.dialogs.c.conn_id == conn_id))
        if read_cdr(conn, conn_id) is None:
            upsert(conn, s.cdrs, ("conn_id",), cdr_values(closing_cdr(left.record, read_legs(conn, conn_id), now)))
    g = s.registrations
    for record in found.registrations:
        conn.execute(update(g).where(g.c.operation_id == operation_id, g.c.extension == record.extension,
                                     g.c.contact_uri == record.contact_uri).values(node_id=me))
    if found.dead:
        conn.execute(delete(g).where(g.c.operation_id == operation_id, g.c.node_id.in_(found.dead),
                                     g.c.expires_at <= ended))
    for agent in restarts:
        if agent.changed:
            conn.execute(s.agent_state_history.insert().values(
                operation_id=agent.operation_id, extension=agent.extension, state=agent.state,
                previous_state=agent.previous, reason=agent.reason, conn_id=None, entered_at=to_datetime(agent.since),
                node_id=me))
    if event_rows:
        conn.execute(s.events.insert(), event_rows)


async def take_over(node: Node, operation_id: str) -> TakenOver:
    """The four steps of the module docstring for `operation_id`, just gained by this node."""
    started = time.monotonic()
    member = node.cluster
    assert member is not None
    engine: Engine = node.storage.engine
    me = member.node_id
    now = time.time()

    def read() -> Found:
        with engine.connect() as conn:
            return read_found(conn, operation_id, me, member.lease_seconds, now)

    found = await asyncio.to_thread(read)
    done = TakenOver(operation_id, dead=found.dead)
    log.info("cluster: operation %s: %d open calls, %d registrations and %d logged-in agents left by other nodes",
             operation_id, len(found.calls), len(found.registrations), len(found.agents))
    if found.bounds is not None:  # whatever is left to adopt: the sequence goes on from the last owner's
        node.events.restore({operation_id: found.bounds})
    if not found.calls and not found.registrations and not found.agents:
        return done
    switch = node.switch
    adopted = [left for left in found.calls if left.adoptable]
    on_adopted = {left.record.agent for left in adopted if (pair := left.adopted_legs) and pair[1] is not None}
    for left in found.calls:
        if not left.adoptable:
            for record in left.dialogs:
                try:
                    switch.end_restored_dialog(_state(record, is_uac=False), _peer(record), record.transport)
                except Exception:
                    log.exception("takeover: could not end the dialog of leg %s", record.leg_id)
            relay = left.relay
            if left.recording is not None:  # stopped and joined, then its relay call deleted
                switch.anchor.finish_left(left.recording, relay)
            elif relay is not None:  # its relay call goes with it: nobody else would ever delete it
                switch.anchor.delete_left(left.record.conn_id, relay)
            done.ended.append(left.record.conn_id)
    for left in adopted:
        target = left.transfer.target_leg_id if left.transfer is not None else None
        for record in left.strays:  # a listener whose start nobody recorded, or the transfer's target: hung up
            try:
                switch.end_restored_dialog(_state(record, is_uac=True), _peer(record), record.transport)
            except Exception:
                log.exception("takeover: could not end the dialog of leg %s", record.leg_id)
            if left.relay is not None and record.leg_id != target:  # a listener's subscription ended with it
                switch.anchor.unsubscribe_left(left.record.conn_id, left.relay, record.leg_id)
    registered = {r.extension for r in found.registrations}
    restarts = [AgentRestart.of(operation_id, ext, state, reason, since, ext in registered, now)
                for ext, state, reason, since in found.agents if ext not in on_adopted]
    changes = node.events.restarted(restarts, now)

    def write() -> None:
        node.storage.writer.flush()
        with engine.begin() as conn:
            write_takeover(conn, member.fence, operation_id, me, found, now, restarts, node.events.rows(changes))

    await asyncio.to_thread(write)
    node.events.show(changes)
    node.service.restore_agents(restarts)
    since = {ext: entered for ext, _, _, entered in found.agents}
    for left in adopted:
        call = left.record
        held, muted = _held_and_muted(left)
        rec = left.recording
        recording: RecordingState = "off" if rec is None else "recording" if rec.on_relay else "paused"
        if node.service.adopt_call(call, left.legs, since.get(call.agent or "", now), now, held=held, muted=muted,
                                   recording=recording, transfer=left.transfer):
            _restore_legs(node, left, held=held)
            if rec is not None and switch.anchor.anchored(call.conn_id):
                switch.anchor.recorder.adopt(rec)
            for listener in left.listeners:
                supervisor, started_at = left.monitors[listener.leg_id]
                if node.service.adopt_monitor(call.operation_id, call.conn_id, listener.leg_id, supervisor,
                                              started_at):
                    _restore_listener(node, left, listener, supervisor)
            done.adopted.append(call.conn_id)
    done.registrations = switch.restore_registrations(found.registrations)
    for left in adopted:  # after the registrations: a customer requeued is offered to the agents registered here
        if left.transfer is not None and left.record.conn_id in done.adopted:
            # the INVITE ringing its target died with the node: the transfer fails, the customer is back with its
            # agent (or in its queue when the agent had left)
            node.service.fail_left_transfer(left.record.conn_id, left.record.node_id)
    done.agents = len(found.agents)
    switch.wake()
    done.seconds = time.monotonic() - started
    log.warning("cluster: took operation %s over from %s: %d calls adopted, %d ended, %d registrations, %d agents",
                operation_id, ", ".join(done.dead) or "nobody", len(done.adopted), len(done.ended),
                done.registrations, done.agents)
    return done


def _held_and_muted(left: LeftCall) -> tuple[bool, bool]:
    """Whether the old node had the call on hold and the agent muted, as the SDPs it last sent say: its hold offers
    the customer a=sendonly, its mute the agent (RFC 3264 §8.4; inactive when the party held it at the same time)."""
    pair = left.adopted_legs
    if pair is None:
        return False, False
    sent = {d.leg_id: d.sent_sdp for d in left.dialogs}
    customer, agent = pair
    return (_holds_every_stream(sent.get(customer.leg_id)),
            agent is not None and _holds_every_stream(sent.get(agent.leg_id)))


def _holds_every_stream(sdp: bytes | None) -> bool:
    if not sdp:
        return False
    try:
        sd = SessionDescription.parse(sdp)
    except SdpError:
        return False
    directions = {sd.direction(m) for m in sd.media if m.port != 0}
    return bool(directions) and directions <= {"sendonly", "inactive"}


def _restore_legs(node: Node, left: LeftCall, *, held: bool = False) -> None:
    """The adopted call's two dialogs as B2BUA legs, up and bridged to each other (the customer's alone when its
    agent had left during a transfer)."""
    switch = node.switch
    pair = left.adopted_legs
    assert pair is not None
    dialogs = {d.leg_id: d for d in left.dialogs}
    customer, agent = pair
    outbound_customer = left.record.direction != "inbound"
    _restore_leg(node, left, dialogs[customer.leg_id], uac=outbound_customer,
                 peer=agent.leg_id if agent is not None else None)
    if agent is not None:
        _restore_leg(node, left, dialogs[agent.leg_id], uac=True, peer=customer.leg_id, agent=agent.agent)
    relay = left.relay
    if relay is not None:  # its media goes on through the same relay call: hold, transfers and its end use it
        conn_id = left.record.conn_id
        peer = agent.leg_id if agent is not None else None
        if switch.anchor.restore(conn_id, left.record.operation_id, customer.leg_id, peer, relay) and held:
            switch.anchor.hearing.restored_held(conn_id)  # the relay plays the music still: unhold stops it


def _restore_listener(node: Node, left: LeftCall, record: DialogRecord, supervisor: str) -> None:
    """A supervisor's phone listening to the adopted call, as a listener leg up (its subscription is on the relay
    still: the parties' media keeps flowing to it; its end unsubscribes, b2bua/monitor.py)."""
    leg = _restore_leg(node, left, record, uac=True, agent=supervisor, listener=True)
    node.switch.anchor.listeners.restored(leg)


def _restore_leg(node: Node, left: LeftCall, record: DialogRecord, *, uac: bool, peer: str | None = None,
                 agent: str | None = None, listener: bool = False) -> SipLeg:
    """One dialog of the adopted call as a B2BUA leg, up: its requests go where the old node sent them, its CSeq
    and SDP go on from the stored ones."""
    switch = node.switch
    dialog = switch.endpoint.restore_dialog(_state(record, is_uac=uac))
    leg = SipLeg(record.leg_id, left.record.operation_id, "out" if uac else "in", record.created_at,
                 conn_id=left.record.conn_id, state=UP, dialog=dialog, peer=peer,
                 peer_addr=(record.peer_host, record.peer_port), transport=record.transport, agent=agent,
                 listener=listener)
    leg.written_cseq = (dialog.local_seq, dialog.remote_seq)
    _restore_sdp(leg, record)
    dialog.user_data = leg
    destination = _peer(record)
    if destination is not None:
        switch.endpoint.set_destination(dialog, destination, record.transport)
    switch.legs.add(leg)
    return leg


def read_monitors(conn: Connection, operation_id: str, conn_id: str) -> dict[str, tuple[str, float]]:
    """The listenings of a call that started, from the durable event log (`call.monitor_started`): monitor_id ->
    (supervisor, started_at)."""
    e = s.events
    found: dict[str, tuple[str, float]] = {}
    for (line,) in conn.execute(select(e.c.line).where(e.c.operation_id == operation_id, e.c.conn_id == conn_id,
                                                        e.c.type == "call.monitor_started").order_by(e.c.seq)):
        data = json.loads(line)["data"]
        found[data["monitor_id"]] = (data["supervisor"], datetime.fromisoformat(data["started_at"]).timestamp())
    return found


def _restore_sdp(leg: SipLeg, record: DialogRecord) -> None:
    """The SDPs the dialog had as last written: a hold, resume or transfer re-offers from what the party was last
    sent. The party may have been sent later versions whose write was lost with the old node, so our session's
    version goes on `RESTORED_SDP_GAP` past the stored one (RFC 3264 §8: each new offer a higher version)."""
    leg.sent_sdp, leg.remote_sdp = record.sent_sdp, record.remote_sdp
    leg.written_sdp = (record.sent_sdp, record.remote_sdp)
    if not record.sent_sdp:
        return
    try:
        origin = SessionDescription.parse(record.sent_sdp).origin
    except SdpError:
        return
    leg.sent_origin = replace(origin, sess_version=origin.sess_version + RESTORED_SDP_GAP)
    leg.relayed_origin = None  # the next SDP relayed to the party is a new version of the session it knows


def _state(record: DialogRecord, *, is_uac: bool) -> DialogState:
    return DialogState(call_id=record.call_id, local_tag=record.local_tag, remote_tag=record.remote_tag,
                       local_seq=record.local_cseq + RESTORED_CSEQ_GAP, remote_seq=record.remote_cseq,
                       local_uri=record.local_uri, remote_uri=record.remote_uri, remote_target=record.remote_target,
                       route_set=record.route_set, secure=False, is_uac=is_uac)


def _peer(record: DialogRecord) -> tuple[str, int] | None:
    return (record.peer_host, record.peer_port) if record.peer_host and record.peer_port else None
