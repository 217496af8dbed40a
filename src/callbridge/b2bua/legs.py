"""The B2BUA's legs: one SIP dialog (or the INVITE forks that may become one) per leg of a domain call.

A leg is what the domain calls a leg (`callcontrol.model.Leg`, same `leg_id`), seen from SIP:
- an *incoming* leg is an INVITE we received (the customer's call from a trunk, an agent's own call): it rings
  until the domain bridges it (we answer 200 with the other side's SDP) or rejects/releases it (final error);
- an *outgoing* leg is an INVITE we sent, to every registered contact of an agent (forks, first 2xx wins, the
  others cancelled, RFC 3261 §16.7-style forking done by a UAC) or to a trunk's gateway.

Its life cycle is its `state` (`leg_state`: the table of what moves it, and the one place a leg ends,
`LegTable.end`). The leg also holds what a signalling-only B2BUA must remember to keep each side's view of the
session consistent (RFC 3264 §8): the last SDP each party sent us, the last SDP we sent it and the `o=` line we
present to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from callbridge.b2bua.leg_state import CALLING, EARLY, ENDED, INCOMING, RELEASING, UP, LegInput, LegState, step
from callbridge.callcontrol.model import Trunk
from callbridge.sip.dialog import Dialog
from callbridge.sip.message import Response
from callbridge.sip.sdp import Origin
from callbridge.sip.transaction import ClientTransaction, ServerTransaction

__all__ = ["LegInput", "LegState", "LegTable", "ReinviteDone", "SipLeg"]

LegDirection = Literal["in", "out"]
ReinviteDone = Callable[[Response | None], None]
"""Called with the final response to a re-INVITE we sent on a leg (None: no response, or it could not be sent)."""


@dataclass(eq=False, slots=True)
class SipLeg:
    leg_id: str
    operation_id: str
    direction: LegDirection
    created_at: float  # wall clock
    conn_id: str | None = None
    state: LegState = LegState.INCOMING  # outgoing legs are made CALLING (`signalling.originate`)
    server_tx: ServerTransaction | None = None  # incoming: the INVITE, until its final response
    forks: list[ClientTransaction] = field(default_factory=list)  # outgoing: one INVITE per contact
    dialog: Dialog | None = None  # the confirmed dialog (the fork that answered first)
    peer: str | None = None  # the leg this one is bridged to (in-dialog requests are relayed there)
    early_peer: str | None = None  # incoming leg that hears this outgoing leg's ringing and early media
    offer: bytes = b""  # the SDP offer this leg's INVITE carried (incoming) or that we sent (outgoing)
    remote_sdp: bytes = b""  # the last SDP this party sent us
    sent_sdp: bytes = b""  # the last SDP we sent this party
    sent_origin: Origin | None = None  # the o= this party knows our side by
    relayed_origin: Origin | None = None  # the far end's o= that `sent_origin` stands for
    origin_pending: bool = False  # `sent_sdp` went as it was; its o= not read yet (bridge.present)
    ack_pending: bool = False  # its 2xx (to our offer-less INVITE) awaits the ACK that carries the answer
    defer_ack: bool = False  # our re-INVITE in progress is offer-less: keep its 2xx un-ACKed
    offer_source: str | None = None  # the leg whose pending offer this leg's INVITE carried
    parked: bool = False  # its offer answered with no media until the leg given that offer answers (bridge.park)
    max_forwards: int = 70  # for the INVITEs this leg's call makes (incoming: its Max-Forwards - 1)
    fork_statuses: tuple[int, ...] = ()  # final statuses of the forks that failed (rarely more than one)
    reinvite_done: ReinviteDone | None = None  # the completion of our re-INVITE in progress
    peer_addr: tuple[str, int] = ("", 0)
    transport: str = "udp"
    agent: str | None = None  # the agent's extension when this leg reaches or comes from an agent
    listener: bool = False  # a supervisor's phone listening to the call through the relay (monitor.py)
    trunk: Trunk | None = None  # outgoing through a trunk: its credentials answer the provider's 401/407
    auth_attempts: int = 0  # credentials sent on this leg's INVITE (a second challenge is a failure unless stale)
    written_cseq: tuple[int, int | None] = (0, None)  # (local, remote) CSeq last written to the dialog record
    written_sdp: tuple[bytes, bytes] = (b"", b"")  # (sent, remote) SDPs last written to the dialog record
    anchored: bool = False  # incoming customer leg whose call is to be anchored on the media plane (anchor.py)

    @property
    def ringing(self) -> bool:
        """Not answered yet (incoming, or outgoing before its 2xx)."""
        state = self.state
        return state is INCOMING or state is CALLING or state is EARLY

    @property
    def forking(self) -> bool:
        """Outgoing and not answered yet: its forks' responses still decide it."""
        state = self.state
        return state is CALLING or state is EARLY

    @property
    def up(self) -> bool:
        """Answered and its dialog alive (released or not: a released leg still carries its BYE and NOTIFYs)."""
        state = self.state
        return ((state is UP or state is RELEASING) and self.dialog is not None
                and not self.dialog.terminated)

    @property
    def released(self) -> bool:
        """The domain let go of it, or its end was reported: nothing more is reported on it."""
        state = self.state
        return state is RELEASING or state is ENDED


class LegTable:
    """Legs by id; a dialog's and a transaction's leg are found through their `user_data`."""

    def __init__(self, on_end: Callable[[SipLeg], None] | None = None) -> None:
        self._legs: dict[str, SipLeg] = {}
        self._on_end = on_end  # told of every leg that ends (the media anchor lets its party go)

    def add(self, leg: SipLeg) -> SipLeg:
        self._legs[leg.leg_id] = leg
        return leg

    def get(self, leg_id: str | None) -> SipLeg | None:
        return self._legs.get(leg_id) if leg_id is not None else None

    def end(self, leg: SipLeg, event: LegInput) -> LegState:
        """The one place a leg ends: `event` moves it to `ENDED` (`leg_state.TABLE`) and it leaves the table.
        Returns the state it was in."""
        was = step(leg, event)
        assert leg.state is ENDED, f"{event} in {was} does not end a leg"
        if self._legs.get(leg.leg_id) is leg:
            del self._legs[leg.leg_id]
        if self._on_end is not None and was is not ENDED:
            self._on_end(leg)
        return was

    def forget(self, leg_id: str) -> SipLeg | None:
        """Drop a leg without ending it or telling anyone (a cluster handover: another node adopts its call)."""
        return self._legs.pop(leg_id, None)

    def __len__(self) -> int:
        return len(self._legs)

    def __iter__(self) -> Iterator[SipLeg]:
        return iter(list(self._legs.values()))

    @staticmethod
    def of_dialog(dialog: Dialog | None) -> SipLeg | None:
        data = dialog.user_data if dialog is not None else None
        return data if isinstance(data, SipLeg) else None
