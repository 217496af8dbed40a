"""SIP dialogs (RFC 3261 §12): identity, route set, remote target, sequence numbers and in-dialog requests.

Rules
- A dialog is identified by Call-ID, local tag and remote tag (§12). The UAC creates it from a 1xx with a To tag
  (early) or a 2xx (confirmed) (§12.1.2): route set = Record-Route of the response reversed, remote target = its
  Contact, local CSeq = the request's. The UAS creates it when it sends such a response (§12.1.1): route set =
  Record-Route of the request in order, remote target = the request's Contact, remote CSeq = the request's.
- A 2xx to an early dialog's INVITE confirms it and recomputes the route set; a target refresh (re-INVITE, UPDATE
  and their 2xx) replaces the remote target (§12.2).
- Requests inside the dialog (§12.2.1.1): To = remote URI + remote tag, From = local URI + local tag, CSeq = local
  CSeq + 1 (except ACK and CANCEL). Loose routing (first route has ``lr``): Request-URI = remote target, Route =
  route set. Strict routing: Request-URI = first route, Route = the rest followed by the remote target.
- A request whose CSeq is lower than the remote CSeq is out of order: 500 (§12.2.2).
- The dialog's life is a table ``(state, input) -> next state``; the endpoint drives it.
- Usages (RFC 5057 §5): the INVITE usage is the dialog's `state`; BYE ends only it. Other usages (a REFER's
  subscription, RFC 3515 §2.4.4, RFC 6665 §4.5) are counted in `usages` by the TU (`Endpoint.hold_usage`): while
  one is held, a terminated dialog stays in the endpoint's table and may still carry NOTIFY/SUBSCRIBE; the dialog's
  state is released when the last usage is (`Endpoint.release_usage`).
- `DialogState` is the identity that storage writes through; `Dialog.restore` rebuilds a dialog from it after a
  restart so that a BYE can be sent.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from callbridge.sip.addr import NameAddr, format_params, parse_name_addr
from callbridge.sip.headers import Headers
from callbridge.sip.message import Request, Response
from callbridge.sip.session_timer import SessionTimer
from callbridge.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from callbridge.sip.transaction import ClientTransaction, ServerTransaction

__all__ = ["Dialog", "DialogError", "DialogInput", "DialogState", "DialogStatus"]


class DialogError(Exception):
    """A dialog operation that its state does not allow (e.g. a second INVITE while one is in progress)."""


class DialogStatus(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    PROVISIONAL = "PROVISIONAL"  # a 1xx with To tag for the creating INVITE
    CONFIRM = "CONFIRM"  # a 2xx for the creating INVITE (or a re-INVITE)
    TERMINATE = "TERMINATE"  # BYE, non-2xx final on an early dialog, time-outs, session expiry


D, DI = DialogStatus, DialogInput
DIALOG_TABLE: dict[tuple[DialogStatus, DialogInput], DialogStatus] = {
    (D.EARLY, DI.PROVISIONAL): D.EARLY,
    (D.EARLY, DI.CONFIRM): D.CONFIRMED,
    (D.EARLY, DI.TERMINATE): D.TERMINATED,
    (D.CONFIRMED, DI.CONFIRM): D.CONFIRMED,
    (D.CONFIRMED, DI.PROVISIONAL): D.CONFIRMED,  # 1xx to a re-INVITE
    (D.CONFIRMED, DI.TERMINATE): D.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogState:
    """A dialog's identity, as storage writes it through (§12: enough to send BYE after a restart)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_seq: int
    remote_seq: int | None
    local_uri: str  # name-addr without tag
    remote_uri: str
    remote_target: str
    route_set: tuple[str, ...]
    secure: bool
    is_uac: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["route_set"] = list(self.route_set)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DialogState:
        fields = dict(data)
        fields["route_set"] = tuple(fields.get("route_set", ()))
        return cls(**fields)


def _without_tag(addr: NameAddr) -> str:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    display = NameAddr(addr.uri, addr.display, params)
    return str(display)


class Dialog:
    """One dialog; the endpoint owns it and keeps it in its table while it lives."""

    __slots__ = (
        "ack",
        "call_id",
        "creating_tx",
        "glare_retry",
        "incoming_invite",
        "is_uac",
        "last_offer",
        "local_seq",
        "local_tag",
        "local_uri",
        "outgoing_invite",
        "overlap_retries",
        "pending_2xx",
        "refresh_by_invite",
        "remote_seq",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "route_set",
        "secure",
        "session",
        "state",
        "timers",
        "unacked_invite",
        "usages",
        "user_data",
    )

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: URI,
        route_set: list[str],
        local_seq: int,
        remote_seq: int | None,
        *,
        is_uac: bool,
        secure: bool = False,
        state: DialogStatus = DialogStatus.EARLY,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.is_uac = is_uac  # we sent the INVITE that created it (so we own the Call-ID, §14.1)
        self.secure = secure
        self.state = state
        self.timers: dict[str, float] = {}
        self.session: SessionTimer | None = None
        # §13.3.1.4 (UAS): the 2xx we retransmit until its ACK: (cseq, bytes, dest, transport, interval).
        self.pending_2xx: tuple[int, bytes, tuple[str, int], str, float] | None = None
        # §13.2.2.4 (UAC): the ACK we sent for the last 2xx: (cseq, bytes, dest, transport).
        self.ack: tuple[int, bytes, tuple[str, int], str] | None = None
        self.outgoing_invite: ClientTransaction | None = None  # our INVITE in progress (glare, §14.1)
        self.incoming_invite: ServerTransaction | None = None  # their INVITE not yet answered finally
        self.glare_retry: tuple[str, bytes, str | None, tuple[tuple[str, str], ...]] | None = None
        self.overlap_retries = 0  # our re-INVITE answered 500 + Retry-After (§14.2 overlap) and re-sent, in a row
        self.creating_tx: ClientTransaction | ServerTransaction | None = None
        self.last_offer: tuple[bytes, str | None] | None = None  # last body we sent in an INVITE/2xx
        self.unacked_invite: int | None = None  # CSeq of our INVITE whose 2xx the TU has yet to ACK
        self.refresh_by_invite = False  # the peer refused UPDATE: refresh the session by re-INVITE
        self.usages = 0  # usages other than the INVITE one that the TU holds (RFC 5057): subscriptions
        self.user_data: object | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def __repr__(self) -> str:
        return f"<Dialog {self.state.value} {self.call_id} {self.local_tag}/{self.remote_tag}>"

    # --- creation -----------------------------------------------------------------------------------------
    @classmethod
    def for_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: the dialog a response (1xx with tag or 2xx) to our INVITE creates."""
        contacts = response.contacts
        target = contacts[0].addr.uri if contacts and contacts[0].addr is not None else request.uri
        routes = [str(r) for r in reversed(response.record_routes)]
        state = DialogStatus.CONFIRMED if 200 <= response.status < 300 else DialogStatus.EARLY
        return cls(
            request.call_id,
            request.from_.tag or "",
            response.to.tag or "",
            _without_tag(request.from_),
            _without_tag(response.to),
            target,
            routes,
            request.cseq.number,
            None,
            is_uac=True,
            secure=request.uri.scheme == "sips",
            state=state,
        )

    @classmethod
    def for_uas(cls, request: Request, response: Response, local_tag: str) -> Dialog:
        """§12.1.1: the dialog our response (1xx with tag or 2xx) to an INVITE creates."""
        contacts = request.contacts
        target = contacts[0].addr.uri if contacts and contacts[0].addr is not None else request.from_.uri
        state = DialogStatus.CONFIRMED if 200 <= response.status < 300 else DialogStatus.EARLY
        return cls(
            request.call_id,
            local_tag,
            request.from_.tag or "",
            _without_tag(request.to),
            _without_tag(request.from_),
            target,
            [str(r) for r in request.record_routes],
            0,
            request.cseq.number,
            is_uac=False,
            secure=request.uri.scheme == "sips",
            state=state,
        )

    @classmethod
    def restore(cls, state: DialogState) -> Dialog:
        return cls(
            state.call_id,
            state.local_tag,
            state.remote_tag,
            state.local_uri,
            state.remote_uri,
            parse_uri(state.remote_target),
            list(state.route_set),
            state.local_seq,
            state.remote_seq,
            is_uac=state.is_uac,
            secure=state.secure,
            state=DialogStatus.CONFIRMED,
        )

    def export(self) -> DialogState:
        return DialogState(
            self.call_id,
            self.local_tag,
            self.remote_tag,
            self.local_seq,
            self.remote_seq,
            self.local_uri,
            self.remote_uri,
            str(self.remote_target),
            tuple(self.route_set),
            self.secure,
            self.is_uac,
        )

    # --- life ---------------------------------------------------------------------------------------------
    def handle(self, event: DialogInput) -> DialogStatus:
        try:
            self.state = DIALOG_TABLE[(self.state, event)]
        except KeyError:
            raise DialogError(f"dialog input {event.value} not allowed in state {self.state.value}") from None
        return self.state

    @property
    def terminated(self) -> bool:
        return self.state is DialogStatus.TERMINATED

    def update_from_2xx(self, response: Response) -> None:
        """A 2xx to the creating INVITE recomputes the route set (UAC, §12.1.2) and the target (§12.2.1.2)."""
        if self.is_uac and self.state is DialogStatus.EARLY:
            self.route_set = [str(r) for r in reversed(response.record_routes)]
        self.refresh_target(response)

    def refresh_target(self, message: Request | Response) -> None:
        contacts = message.contacts
        if contacts and contacts[0].addr is not None:
            self.remote_target = contacts[0].addr.uri

    def check_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: False when the request is out of order (lower CSeq); otherwise record its CSeq."""
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return False
        self.remote_seq = number
        return True

    # --- requests -----------------------------------------------------------------------------------------
    def next_cseq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def target_and_routes(self) -> tuple[URI, list[str]]:
        """§12.2.1.1: the Request-URI and the Route values for a request in this dialog."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        # Strict routing: the first route becomes the Request-URI; the remote target goes last.
        target = first.uri.copy(headers={})
        target.params.pop("method", None)
        return target, [*self.route_set[1:], f"<{self.remote_target}>"]

    def build_request(
        self,
        method: str,
        cseq: int,
        via: str | None,
        contact: str | None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        user_agent: str | None = None,
    ) -> Request:
        uri, routes = self.target_and_routes()
        fields: list[tuple[str, str]] = [] if via is None else [("Via", via)]
        fields += [
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri}{format_params({'tag': self.local_tag})}"),
            ("To", f"{self.remote_uri}{format_params({'tag': self.remote_tag})}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        fields.extend(("Route", route) for route in routes)
        if contact is not None:
            fields.append(("Contact", contact))
        if user_agent:
            fields.append(("User-Agent", user_agent))
        fields.extend(headers)
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method, uri.copy(), headers=Headers(fields), body=body)
