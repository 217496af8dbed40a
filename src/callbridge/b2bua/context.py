"""What each helper of the switch sees of it: one narrow Protocol per helper module.

Rules
- The switch (`switch.Switch`) owns the endpoint, the leg table and the ports; its helpers (`bridge`, `inbound`,
  `refer`, `signalling`, `trunks`) are handed the switch typed as the Protocol below that names only the members
  they use. No helper imports `switch`: the modules form no circle (`tests/b2bua/test_switch_layout.py`), and a
  helper's Protocol is the whole of what it may ask of the switch.
- The Protocols are structural: `Switch` implements them all without naming them; a test may hand a helper
  anything of the same shape.
- Members are plain attributes and methods: no property or indirection sits on the per-message path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import LegTable, ReinviteDone, SipLeg
from callbridge.b2bua.ports import B2buaDirectory, Domain
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.message import Response
from callbridge.sip.transaction import ClientTransaction, ServerTransaction
from callbridge.sip.uri import URI

if TYPE_CHECKING:
    from callbridge.b2bua.defence import Defence
    from callbridge.b2bua.handover import Handed
    from callbridge.b2bua.location import Binding
    from callbridge.b2bua.registrar import ChallengerPool
    from callbridge.callcontrol.model import Trunk
    from callbridge.sip import DigestResponder

__all__ = ["BridgeContext", "ForkContext", "InboundContext", "ReferContext", "RegistrationsContext",
           "ReinviteContext", "SignallingContext", "TrunkContext", "Waker"]


class Waker(Protocol):
    """The runtime as the switch sees it: `wake` drains what was queued on the endpoint."""

    def wake(self) -> None: ...


class BridgeContext(Protocol):
    """`bridge`: moving offers and answers between two legs (through the media plane when the call is anchored)."""

    endpoint: Endpoint
    legs: LegTable
    anchor: MediaAnchor
    log: logging.Logger

    def wall(self) -> float: ...

    def respond(self, tx: ServerTransaction, status: int, *, body: bytes = b"",
                headers: Iterable[tuple[str, str]] = (), reason: str | None = None) -> Response | None: ...

    def answer_incoming(self, leg: SipLeg, sdp: bytes) -> None: ...

    def ack(self, leg: SipLeg, sdp: bytes) -> None: ...

    def write_cseq(self, leg: SipLeg) -> None: ...

    def reinvite(self, leg: SipLeg, body: bytes, done: ReinviteDone, *, defer_ack: bool = False) -> bool: ...

    def request_in_dialog(self, leg: SipLeg, method: str, body: bytes, content_type: str | None,
                          done: Callable[[Response | None], None],
                          headers: Iterable[tuple[str, str]] = ()) -> bool: ...


class InboundContext(Protocol):
    """`inbound`: routing a new INVITE."""

    endpoint: Endpoint
    legs: LegTable
    anchor: MediaAnchor
    directory: B2buaDirectory
    challengers: ChallengerPool
    draining: bool
    handed: Handed
    service: Domain | None

    def wall(self) -> float: ...

    def wake(self) -> None: ...

    def report(self, fn: Callable[..., object], *args: object) -> None: ...

    def respond(self, tx: ServerTransaction, status: int, *, body: bytes = b"",
                headers: Iterable[tuple[str, str]] = (), reason: str | None = None) -> Response | None: ...

    def trunk_for_source(self, ip: str) -> Trunk | None: ...


class ReferContext(Protocol):
    """`refer`: transfers made on the agent's phone, and their NOTIFYs."""

    endpoint: Endpoint
    legs: LegTable
    directory: B2buaDirectory
    service: Domain | None
    loop: asyncio.AbstractEventLoop

    def now(self) -> float: ...

    def wake(self) -> None: ...

    def respond(self, tx: ServerTransaction, status: int, *, body: bytes = b"",
                headers: Iterable[tuple[str, str]] = (), reason: str | None = None) -> Response | None: ...

    def write_cseq(self, leg: SipLeg) -> None: ...


class ReleaseHook(Protocol):
    """The REFER handler's hook that the domain's `release` calls first (its NOTIFY goes before the BYE)."""

    def leg_released(self, leg_id: str, cause: int | None) -> None: ...


class Contacts(Protocol):
    def contacts_for(self, operation_id: str, extension: str, now: float) -> list[Binding]: ...


class SignallingContext(BridgeContext, Protocol):
    """`signalling`: the domain's commands, done in SIP (it bridges, so it needs what `bridge` needs too)."""

    directory: B2buaDirectory
    draining: bool
    service: Domain | None
    runtime: Waker | None

    @property
    def refers(self) -> ReleaseHook: ...

    @property
    def registrar(self) -> Contacts: ...

    def now(self) -> float: ...

    def wake(self) -> None: ...

    def report(self, fn: Callable[..., object], *args: object) -> None: ...

    def send_invite(self, uri: URI, *, from_uri: str, to_uri: str, from_display: str | None, body: bytes,
                    headers: Iterable[tuple[str, str]], dest: tuple[str, int], transport: str,
                    max_forwards: int) -> ClientTransaction: ...


class TrunkCredentials(Protocol):
    stats: Counter[str]

    def responder(self, trunk: Trunk) -> DigestResponder: ...


class TrunkContext(Protocol):
    """`trunks`: digest toward a provider, and the trunks' registrations."""

    endpoint: Endpoint
    loop: asyncio.AbstractEventLoop

    @property
    def trunk_registrations(self) -> TrunkCredentials: ...

    def now(self) -> float: ...

    def wake(self) -> None: ...


class TransferHooks(Protocol):
    """The REFER handler's hooks on a transfer target's progress (its NOTIFYs follow them)."""

    def target_ringing(self, leg_id: str, status: int) -> None: ...

    def target_answered(self, leg_id: str) -> None: ...

    def target_failed(self, leg_id: str, status: int) -> None: ...


class ForkContext(TrunkContext, Protocol):
    """`forks`: the responses to an outgoing leg's INVITEs (a provider's challenge is `trunks`' to answer)."""

    legs: LegTable
    anchor: MediaAnchor
    service: Domain | None

    @property
    def refers(self) -> TransferHooks: ...

    def report(self, fn: Callable[..., object], *args: object) -> None: ...

    def respond(self, tx: ServerTransaction, status: int, *, body: bytes = b"",
                headers: Iterable[tuple[str, str]] = (), reason: str | None = None) -> Response | None: ...


class RegistrationsContext(Protocol):
    """`registrations`: REGISTER, bindings written through and reported."""

    endpoint: Endpoint
    defence: Defence
    loop: asyncio.AbstractEventLoop
    service: Domain | None
    draining: bool
    handed: Handed

    def wall(self) -> float: ...

    def now(self) -> float: ...

    def report(self, fn: Callable[..., object], *args: object) -> None: ...


class ReinviteContext(Protocol):
    """`reinvites`: our re-INVITEs on a leg."""

    endpoint: Endpoint

    def now(self) -> float: ...

    def wake(self) -> None: ...

    def write_cseq(self, leg: SipLeg) -> None: ...
