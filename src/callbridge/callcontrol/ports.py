"""The ports: how the domain reaches the world. The adapters implement them; tests use in-memory fakes.

- `Clock`, `Scheduler`: time. The domain never reads a clock or sleeps; timeouts (ring, transfer, ACW, queue
  wait, recall, action) are callbacks scheduled through `Scheduler.call_later`.
- `Signalling`: what the B2BUA adapter does on the domain's behalf. Every method returns at once; outcomes come
  back through the service's `on_*` methods (`on_leg_ringing`, `on_leg_answered`, `on_leg_failed`, `on_leg_ended`,
  `on_action_result`). An adapter must not call back into the service from inside one of these methods; it reports
  from its own event loop turn.
- Repositories: the directory is read (the storage adapter serves it from memory; the domain calls it
  synchronously); everything else is written fire-and-forget (the storage adapter queues the write to its writer
  thread), so write methods return None.
- `EventSink`: where domain events go (WebSocket, webhooks, the HTTP adapter's waiting requests).

Names here are stable: add, don't rename.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from callbridge.callcontrol.events import DomainEvent
from callbridge.callcontrol.model import (
    ActivityCode,
    Agent,
    AgentStateChange,
    AuxState,
    CallRecord,
    Cdr,
    Did,
    DisplayChange,
    Disposition,
    LegRecord,
    Operation,
    Queue,
    Recall,
    Token,
    TransferRecord,
    Trunk,
)


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` once, `delay` seconds from now, unless the handle is cancelled first."""
        ...


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    """A new outgoing leg of a call.

    `destination` is an agent's extension (`kind="agent"`: the adapter forks to every registration of that agent
    in the operation, first answer wins) or a number already through the dial plan (`kind="trunk"`, sent through
    `trunk`). With `offerless` the INVITE carries no SDP and the callee makes the offer (RFC 3725 flow I); without
    it the INVITE carries the offer received on `offer_from_leg`. `diverted_from` names the agent a transferred
    call comes from (the adapter writes Diversion/History-Info, RFC 5806/7044). `auto_answer` asks the phone to
    answer by itself (Call-Info answer-after=0). `timeout` is the ring time; the domain also runs its own timer.
    `new_call`: this leg starts a call nobody called in (a dial's or a recall's agent leg): the adapter decides its
    media here as it does when a customer's INVITE arrives (anchored on a relay, or direct), for the whole call.
    """

    conn_id: str
    leg_id: str
    operation_id: str
    kind: Literal["agent", "trunk"]
    destination: str
    caller_id: str
    caller_name: str = ""
    trunk: str | None = None
    offerless: bool = False
    offer_from_leg: str | None = None
    timeout: float = 30.0
    diverted_from: str | None = None
    auto_answer: bool = False
    extra_headers: tuple[tuple[str, str], ...] = ()
    new_call: bool = False  # this leg starts its call (a dial's agent): the media plane is decided here


class Signalling(Protocol):
    """Implemented by the B2BUA adapter. Leg ids are chosen by the domain for legs it originates and by the
    adapter for legs that arrive (the customer's INVITE, an agent's own call)."""

    def is_available(self) -> bool:
        """False while the signalling side cannot act (starting, stopped): verbs answer CALL_CONTROL_UNAVAILABLE.
        During a drain it is still True: live calls keep every verb."""
        ...

    def accepts_new_calls(self, operation_id: str | None = None) -> bool:
        """False also while draining: a verb that starts a new call (dial, aux_call) answers
        CALL_CONTROL_UNAVAILABLE. With `operation_id`: False too when that operation anchors its calls, no media
        relay is up and its `media_relay_down` policy is to refuse (nothing is created)."""
        ...

    def accepts_new_logins(self) -> bool:
        """False also while draining: a logged-out agent cannot log in (change_status to ready or an aux state
        answers CALL_CONTROL_UNAVAILABLE); agents already logged in keep changing state."""
        ...

    def originate(self, request: OriginateRequest) -> None: ...

    def bridge(self, leg_a: str, leg_b: str) -> None:
        """Make the two legs talk to each other. A leg still ringing in (an incoming INVITE) is answered with the
        other leg's SDP; an established leg is re-INVITEd with the other's offer (the customer-facing o= session
        id kept, its version incremented). SDP is the adapter's business."""
        ...

    def hold(self, leg_id: str, action_id: str) -> None: ...

    def unhold(self, leg_id: str, action_id: str) -> None: ...

    def mute(self, leg_id: str, action_id: str) -> None: ...

    def unmute(self, leg_id: str, action_id: str) -> None: ...

    def send_dtmf(self, leg_id: str, tones: str, action_id: str) -> None:
        """SIP INFO application/dtmf-relay, one per tone."""
        ...

    def release(self, leg_id: str, cause: int | None = None, action_id: str | None = None) -> None:
        """End a leg whatever its state: BYE when established, CANCEL when ringing out, a final response when
        ringing in. `cause` is for the records (and a Reason header); the adapter reports the BYE's final response
        through `on_action_result` when `action_id` is given, and never reports `on_leg_ended` for it."""
        ...

    def record(self, conn_id: str, on: bool) -> bool:
        """Record the call's media from now on (every party, across transfers), or stop; a stop then a start is a
        pause in the one recording of the call. False: the call cannot be recorded (its media is not anchored)."""
        ...

    def monitor(self, request: OriginateRequest) -> bool:
        """Ring `request.destination` (an extension) for a listener of the call: once it answers it hears both
        parties (the customer and the party it talks to) and they do not hear it; reported as the leg's answer,
        failure or end like any other. False at once, nothing done: the call's media does not go through a relay
        (or its customer talks to nobody on it). `release` of the leg stops the listening."""
        ...

    def listen_in_page(self, conn_id: str, leg_id: str) -> bool:
        """A listener of the call in a supervisor's board page, leg `leg_id`: the media plane is asked for a WebRTC
        subscription of both parties, whose offer the adapter hands to the page; the page's answer reaching the
        relay is reported as the leg's answer (a refusal as its failure). False at once, nothing done: as
        `monitor`. `release` of the leg stops the listening."""
        ...

    def waiting(self, conn_id: str, leg_id: str, queue: Queue) -> None:
        """The call's customer leg `leg_id`, not answered, waits in `queue` with no agent rung: it hears the queue's
        audio where the media plane can play it (anchored calls), else nothing changes. May come from inside
        `on_inbound_call`, before the adapter knows the leg's call: hence `conn_id`."""

    def reject(self, leg_id: str, status: int, retry_after: int | None = None) -> None:
        """Answer an incoming INVITE that was never bridged with a final error (e.g. 480 with Retry-After)."""
        ...


class DirectoryRepository(Protocol):
    """Reads; served from memory by the storage adapter, so the domain calls them synchronously."""

    def get_operation(self, operation_id: str) -> Operation | None: ...

    def list_operations(self) -> Sequence[Operation]: ...

    def get_agent(self, operation_id: str, extension: str) -> Agent | None: ...

    def list_agents(self, operation_id: str) -> Sequence[Agent]: ...

    def get_queue(self, operation_id: str, name: str) -> Queue | None: ...

    def list_queues(self, operation_id: str) -> Sequence[Queue]: ...

    def list_trunks(self, operation_id: str) -> Sequence[Trunk]: ...

    def get_did(self, operation_id: str, number: str) -> Did | None: ...

    def list_aux_states(self, operation_id: str) -> Sequence[AuxState]: ...

    def list_activity_codes(self, operation_id: str) -> Sequence[ActivityCode]: ...

    def get_token(self, token_hash: str) -> Token | None: ...


class StateRepository(Protocol):
    def record_agent_state(self, change: AgentStateChange) -> None: ...

    def record_display(self, change: DisplayChange) -> None: ...


class CallRecordRepository(Protocol):
    def save_call(self, call: CallRecord) -> None:
        """Insert or update the call's row (by conn_id)."""
        ...

    def save_leg(self, leg: LegRecord) -> None:
        """Insert or update a leg's row (by leg_id)."""
        ...

    def save_cdr(self, cdr: Cdr) -> None: ...

    def save_transfer(self, transfer: TransferRecord) -> None:
        """Insert or update (by id); called at every step of the transfer."""
        ...

    def save_disposition(self, disposition: Disposition) -> None: ...


class RecallRepository(Protocol):
    def save_recall(self, recall: Recall) -> None:
        """Insert or update (by id)."""
        ...

    def pending_recalls(self) -> Sequence[Recall]:
        """Read once at start-up, to schedule the recalls not yet due."""
        ...


class EventSink(Protocol):
    def publish(self, event: DomainEvent) -> None: ...


@dataclass(slots=True)
class Ports:
    """The ports one service is built with, handed together to each of its collaborators."""

    directory: DirectoryRepository
    states: StateRepository
    records: CallRecordRepository
    recalls: RecallRepository
    signalling: Signalling
    events: EventSink
    clock: Clock
    scheduler: Scheduler
