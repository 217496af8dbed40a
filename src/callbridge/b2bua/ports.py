"""The B2BUA's ports: what it reads, what it writes through, and the domain it reports to.

Rules
- The B2BUA imports no adapter (`tests/test_layering.py`): `bootstrap` hands it a directory, the two record stores
  and the call-control service, each of which only has to have the shape below (structural typing).
- `DialogRecord` and `RegistrationRecord` are the B2BUA's own records (docs/design.md, "Storage"): the SIP state
  that must survive a crash, RFC 3261 §12 (a dialog's identity, all a BYE needs, §12.2.1.1) and §10 (a binding, with
  the address it came from, RFC 3581). The storage adapter (`callbridge.storage.sip_state`) stores these
  records: it depends on this module, never the other way round.
- Writes are fire-and-forget (the adapter queues them on its writer thread): nothing here returns a result.
- `Media` is the media plane (docs/design.md, "Media"), in callbridge's terms: a call (`conn_id`), its legs
  (`leg_id`), SDP offers and answers as bytes. Its methods are coroutines (a relay answers over the network);
  they raise `MediaUnavailable` when no relay can take the call or the relay did not answer, `MediaRefused` when
  it answered no. The implementation (`callbridge.media.rtpengine`) is wired by `bootstrap`; nothing here names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from callbridge.callcontrol.model import Agent, HangupBy, Operation, TransferRecord, Trunk

__all__ = ["B2buaDirectory", "DialogRecord", "DialogStore", "Domain", "FinishedRecording", "Media", "MediaError",
           "MediaRefused", "MediaUnavailable", "RecordingSink", "RegistrationRecord", "RegistrationStore"]


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """One binding of an agent's address of record to a contact (§10.3), with where it came from."""

    operation_id: str
    extension: str
    contact_uri: str
    source_host: str
    source_port: int
    transport: str  # "udp" | "tcp"
    expires_at: float  # epoch seconds
    call_id: str
    cseq: int
    updated_at: float
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class DialogRecord:
    """A live dialog of one leg, as the B2BUA holds it (§12.1)."""

    leg_id: str
    conn_id: str
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    local_cseq: int
    remote_cseq: int | None
    remote_target: str
    route_set: tuple[str, ...]
    peer_host: str
    peer_port: int
    transport: str
    created_at: float
    updated_at: float
    media_relay: str | None = None  # the relay (host:port) of an anchored call; None: direct media
    sent_sdp: bytes = b""  # the last SDP we sent the party
    remote_sdp: bytes = b""  # the last SDP the party sent us


class DialogStore(Protocol):
    """Dialog identities written through while the dialog lives, removed when it ends."""

    def save_dialog(self, dialog: DialogRecord) -> None: ...

    def update_cseq(self, leg_id: str, local_cseq: int, remote_cseq: int | None, at: float) -> None: ...

    def update_sdp(self, leg_id: str, sent_sdp: bytes, remote_sdp: bytes, at: float) -> None:
        """The SDPs of the dialog changed (a re-INVITE): what a node adopting the call starts from."""
        ...

    def remove_dialog(self, leg_id: str) -> None: ...


class RegistrationStore(Protocol):
    """Bindings written through on every change the registrar makes."""

    def save_registration(self, reg: RegistrationRecord) -> None: ...

    def remove_registration(self, operation_id: str, extension: str, contact_uri: str) -> None: ...


class B2buaDirectory(Protocol):
    """What the B2BUA reads of the directory: operations and their trunks, and agents for digest."""

    def get_operation(self, operation_id: str) -> Operation | None: ...

    def list_operations(self) -> Sequence[Operation]: ...

    def list_trunks(self, operation_id: str) -> Sequence[Trunk]: ...

    def operation_for_domain(self, sip_domain: str) -> Operation | None: ...

    def get_agent(self, operation_id: str, extension: str) -> Agent | None: ...


class Domain(Protocol):
    """The call-control service as the B2BUA sees it: the reports it makes (`callcontrol.service`).

    `on_inbound_call`, `on_agent_call`, `on_refer` and `on_refer_replaces` are asked while a request waits for
    its answer and raise the domain's errors (`callcontrol.errors`); the others are made on a later loop turn
    (`Switch.report`)."""

    def on_inbound_call(self, operation_id: str, did: str, leg_id: str, from_number: str) -> str: ...

    def on_agent_call(self, operation_id: str, extension: str, leg_id: str, dialled: str) -> str: ...

    def on_refer(self, leg_id: str, target: str) -> TransferRecord: ...

    def on_refer_replaces(self, leg_id: str, replaced_leg_id: str) -> TransferRecord: ...

    def on_leg_ringing(self, leg_id: str) -> None: ...

    def on_media_direct(self, conn_id: str, reason: str) -> None: ...

    def on_dtmf(self, conn_id: str, leg_id: str, digit: str, duration_ms: int) -> None: ...

    def on_media_timeout(self, conn_id: str, leg_id: str) -> None: ...

    def on_relay_lost(self, conn_id: str) -> None: ...

    def on_leg_answered(self, leg_id: str) -> None: ...

    def on_leg_failed(self, leg_id: str, sip_status: int | None) -> None: ...

    def on_leg_ended(self, leg_id: str, by: HangupBy | None = None) -> None: ...

    def on_action_result(self, action_id: str, ok: bool, sip_status: int | None = None) -> None: ...

    def on_registration_changed(self, operation_id: str, extension: str, registered: bool) -> None: ...


class MediaError(Exception):
    """The media plane could not do what was asked; `error_id` is stable (logs, metrics, the HTTP layer)."""

    error_id = "media_error"


class MediaUnavailable(MediaError):
    """No relay is up for a new call, or the call's relay did not answer in time."""

    error_id = "media_unavailable"


class MediaRefused(MediaError):
    """The relay answered that it cannot do it (an SDP it cannot read, an unknown call...)."""

    error_id = "media_refused"


@dataclass(frozen=True, slots=True)
class FinishedRecording:
    """A recorded call that ended: its segments are complete on this machine's disk.

    `customer_port` is the relay's port facing the customer (what the customer sends to: its channel);
    `pauses` the spans (wall-clock start, end) during which recording was off after it first started."""

    conn_id: str
    operation_id: str
    segments: tuple[str, ...]
    leftovers: tuple[str, ...]
    customer_port: int | None
    started_at: float
    ended_at: float
    pauses: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class OpenRecording:
    """A call's recording while the call lasts, as the recorder knows it after each start and stop on the relay:
    enough for this node after a crash, or for the node taking the call over, to stop it and join its segments
    (`started_at` the first start; `off_since` the last stop when the relay does not record now)."""

    conn_id: str
    operation_id: str
    started_at: float
    on_relay: bool
    off_since: float | None
    pauses: tuple[tuple[float, float], ...]
    customer_port: int | None
    # Read with a row that has no port (a crash before the recorder wrote it again, recorder.py): the SDP the
    # customer was last sent, as its dialog was written; the port is read from it.
    customer_sdp: bytes | None = None


class RecordingJournal(Protocol):
    """Where the recorder writes its calls' recordings through (`callbridge.storage.open_recordings`); the row
    goes with the call's finished recording (`RecordingSink`), in the batch that stores it."""

    def save_recording(self, recording: OpenRecording) -> None: ...


class RecordingSink(Protocol):
    """Where a finished recording goes (joined into one WAV and stored off the loop: `callbridge.storage`)."""

    def recording_finished(self, done: FinishedRecording) -> None: ...


class Media(Protocol):
    """The media plane of calls: every offer and answer of an anchored call goes through it.

    A call is one media session (`conn_id`) whose parties are its legs. The customer's leg stays for the whole call;
    agents and transfer targets come and go: `offer` from a new leg toward the customer re-targets the customer's
    media to that leg, and the customer's side (what its SDP names) does not change. `drop_leg` takes a leg that is
    gone out of the session; `delete` ends the session. The SDP returned is what to send to `to_leg`."""

    def available(self) -> bool:
        """A new call can be anchored now (some relay is up)."""
        ...

    async def offer(self, conn_id: str, from_leg: str, to_leg: str | None, sdp: bytes, *,
                    from_browser: bool = False, to_browser: bool = False) -> bytes:
        """`from_leg` offers `sdp` to `to_leg` (None: not known yet, the first INVITE); returns the offer to send.
        `to_browser`: the offer goes to a WebRTC endpoint (a browser: DTLS-SRTP, ICE, rtcp-mux); `from_browser`:
        it comes from one, and goes on as plain RTP."""
        ...

    async def answer(self, conn_id: str, offerer: str, answerer: str, sdp: bytes, *,
                     offerer_browser: bool = False, answerer_browser: bool = False) -> bytes:
        """`answerer` answers `offerer`'s offer with `sdp`; returns the answer to send to the offerer. The flags
        say which party is a WebRTC endpoint, as for `offer`."""
        ...

    async def drop_leg(self, conn_id: str, leg_id: str) -> None: ...

    async def block(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None:
        """Media from `leg_id` no longer reaches the others (hold music plays over it later); with `toward`, only
        that party stops hearing it (the agent still talks to a consulted target while the customer hears music)."""
        ...

    async def unblock(self, conn_id: str, leg_id: str, *, toward: str | None = None) -> None: ...

    async def play(self, conn_id: str, leg_id: str, file: str, *, repeat: int | None = None) -> None:
        """Play an audio file on the relay to `leg_id` (hold music, announcements)."""
        ...

    async def play_wav(self, conn_id: str, leg_id: str, wav: bytes, *, repeat: int | None = None) -> None:
        """Play audio given as a WAV file's bytes to `leg_id` (sent to the relay with the command: nothing needs
        to be on the relay's disk). A new play replaces the one playing."""
        ...

    async def stop_playing(self, conn_id: str, leg_id: str) -> None: ...

    async def subscribe(self, conn_id: str, parties: Sequence[str], listener: str, *, webrtc: bool = False) -> bytes:
        """A listener (`listener`, a leg id) is to receive what each of `parties` sends; returns the offer to send
        it: one audio stream per party, in that order, send-only. Nothing it sends reaches the parties. `webrtc`:
        the offer is for a browser (DTLS-SRTP, ICE, rtcp-mux, no signalled SSRCs)."""
        ...

    async def subscribe_answer(self, conn_id: str, listener: str, sdp: bytes) -> None:
        """The listener's answer `sdp` to `subscribe`'s offer: the parties' media flows to it from now on."""
        ...

    async def unsubscribe(self, conn_id: str, listener: str) -> None:
        """The listener stops receiving; the parties' call goes on."""
        ...

    async def send_dtmf(self, conn_id: str, leg_id: str, digit: str, *, duration_ms: int = 100) -> None:
        """RFC 4733 events of `digit` in the media `leg_id` sends, so that its peer gets them (to reach the
        customer, `leg_id` is the customer's peer); digits sent one after the other are played in that order."""
        ...

    async def packets(self, conn_id: str) -> dict[str, int]:
        """RTP packets the relay has received so far from each party of the call (leg id -> count); a party that
        never sent is 0 or absent. `MediaRefused` when the relay no longer knows the call."""
        ...

    async def start_recording(self, conn_id: str) -> None:
        """Record the call's media from now on (every party, in both directions) until `stop_recording`; each start
        after a stop makes a new segment."""
        ...

    async def stop_recording(self, conn_id: str) -> None:
        """Stop recording; the segment recorded since the last start is complete once this returns."""
        ...

    def backlogged(self, conn_id: str) -> bool:
        """The relay holding `conn_id` has commands waiting behind its window: it does not keep up now."""
        ...

    def can_record(self) -> bool:
        """Recordings made on the relays can be read on this machine (their folder is known)."""
        ...

    def recording_files(self, conn_id: str) -> tuple[list[str], list[str]]:
        """The call's recorded segments as files this machine reads (pcap), and the relay's other files of the
        call's recording (removed with the segments once they are joined). Blocking: call it off the loop."""
        ...

    async def delete(self, conn_id: str) -> None:
        """The call is over: free its media (idempotent)."""
        ...

    def lost(self, conn_id: str) -> None:
        """The relay that carried the call went down, and its media with it: forget the call there, so that its
        next `offer` starts it afresh on a relay that is up (`b2bua/relay_loss.py`)."""
        ...

    def relay_of(self, conn_id: str) -> str | None:
        """The relay (host:port) that holds the call, None when none does: written through with the call's dialogs
        so that a node taking the call over sends its commands to the same relay (docs/cluster.md)."""
        ...

    def restore(self, conn_id: str, relay: str) -> bool:
        """Another node's call, held by `relay` (as `relay_of` named it there), is this node's now: its commands go
        to that relay. False when `relay` is not one of this node's relays."""
        ...

    def forget(self, conn_id: str) -> None:
        """The call is another node's now (a cluster handover): forget it here without a command to the relay."""
        ...
