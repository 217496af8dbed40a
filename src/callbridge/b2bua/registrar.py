"""The registrar: REGISTER with digest in the operation's realm (RFC 3261 §10.3, §22; RFC 7616; RFC 3581).

Rules, in the order a REGISTER meets them:
1. Syntax that does not depend on who asks: a malformed To, Contact, Expires, Call-ID or CSeq, or a To that is not
   a sip/sips URI (RFC 4475 §3.3.4), is answered 400; a Require naming any option is answered 420 (the registrar
   supports no extension, §8.2.2.3).
2. Challenge before any lookup (§22.1; Kamailio's `www_authorize`). The operation is found by the To domain (the
   address of record, §10.3 step 5), else by the Request-URI domain; its digest realm is the realm. When neither
   names an operation the To domain is the realm, and nobody can answer it. Every REGISTER without valid
   credentials for that realm gets the same 401 with one `WWW-Authenticate` per algorithm the operation offers (its
   own list, else the node's; RFC 8760 §2.3), whether the user exists or not (`DigestChallenger` spends the same
   work on both); an unknown scheme counts as no credentials (RFC 4475 §3.3.7); a right digest on a used-up nonce
   gets `stale=true`; credentials missing a field get 400; credentials in an algorithm not offered get a new 401.
3. After authentication: the credentials' username must be the To user (403), the To domain must be the
   operation's (404, §10.3 step 5) and the agent must still exist (404).
4. The contacts (§10.3 step 6): no Contact is a query; `*` must stand alone with `Expires: 0` (else 400). Each
   contact's interval is its `expires` parameter, else the Expires header, else `default_expires`; zero removes
   the binding; an interval below `min_expires` fails the whole request with 423 and `Min-Expires`; one above
   `max_expires` is cut to it. Only sip/sips contacts are accepted (400): nothing else can be called.
5. Ordering (§10.3 step 7): for a binding with the same Call-ID, a CSeq not above the stored one fails the whole
   request with 500 and changes nothing (a delayed retransmission must not undo a newer registration).
6. A contact with the `+sip.instance` and `reg-id` of another binding of the agent replaces it (RFC 5626 §6).
   More than `max_contacts_per_agent` live bindings fail the request with 503 (Kamailio's `max_contacts`).
7. The 200 lists every live binding of the agent with its remaining `expires` (§10.3 step 8).
8. While the node drains (`new_bindings=False`), a contact the agent has no live binding for (and that replaces
   none of its bindings by instance, RFC 5626) is refused, after authentication, with 503 and Retry-After
   (§21.5.4: the phone tries again later, by then at a node that takes registrations); refreshes and removals of
   existing bindings go on, so phones on live calls stay reachable.
9. An operation this node handed over or lost in a cluster (`refused_operations`: docs/cluster.md) is not its to
   register: after authentication, 503 with Retry-After (as its new INVITEs are, inbound.py), so that the phone,
   or Kamailio's failure route, tries again at the operation's owner. A 200 here would tell the phone it is
   registered while no node has its binding (the fence refuses this node's writes for it).

The request is checked whole before anything changes, so a failed REGISTER leaves every binding as it was.
Changes are reported as the location service's events (`BindingAdded`, ...), to `on_change` when given, else to
an outbox that `drain_events()` empties.

Theory of operation: sans-I/O. The adapter hands over each REGISTER with its source address, transport and `now`
(the same clock as `expires_at`; wall-clock seconds for storage), sends the returned response on the server
transaction as it is (it carries its To tag), writes the events through, and calls `expire(now)` at
`next_expiry()`.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from callbridge.b2bua.credentials import verify_agent_digest
from callbridge.b2bua.location import Binding, LocationService, RegistrationEvent
from callbridge.callcontrol.model import Agent, Operation
from callbridge.sip import (
    URI,
    AuthReason,
    Contact,
    DigestChallenger,
    ParseError,
    Request,
    Response,
    make_response,
)
from callbridge.sip.addr import parse_contact, split_commas

__all__ = ["DRAIN_RETRY_AFTER", "ChallengerPool", "Registrar", "RegistrarDirectory", "RegistrarLimits"]

DRAIN_RETRY_AFTER = "30"  # seconds; as for the INVITEs a draining node refuses (inbound.py)
MOVED_RETRY_AFTER = "2"  # seconds: as for the INVITEs of an operation being handed over (inbound.py)


class RegistrarDirectory(Protocol):
    """What the registrar reads of the directory (`callbridge.storage.directory.Directory` has both)."""

    def operation_for_domain(self, sip_domain: str) -> Operation | None: ...

    def get_agent(self, operation_id: str, extension: str) -> Agent | None: ...


@dataclass(frozen=True, slots=True)
class RegistrarLimits:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts_per_agent: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires or self.max_contacts_per_agent < 1:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires and max_contacts >= 1")


class ChallengerPool:
    """One `DigestChallenger` per realm, made on first use with the same secret and settings.

    `algorithms` is the node's offer; an operation with its own list (`Operation.digest_algorithms`) is offered
    that instead (`algorithms_for`), through the same challenger of its realm, so that its nonces and their
    nonce-counts stay in one table whatever the offer (a list changed by `callbridge admin` opens no replay).
    """

    def __init__(self, secret: bytes, *, nonce_ttl: float = 300.0,
                 algorithms: Sequence[str] = ("SHA-256", "MD5")) -> None:
        self._secret = secret
        self._nonce_ttl = nonce_ttl
        self._algorithms = tuple(algorithms)
        self._by_realm: dict[str, DigestChallenger] = {}

    def algorithms_for(self, operation: Operation | None) -> tuple[str, ...]:
        """What a request to `operation` is offered and may answer with: its own list, else the node's. A request
        naming no operation gets the node's, as an unknown user gets the same challenge as a known one."""
        if operation is not None and operation.digest_algorithms:
            return operation.digest_algorithms
        return self._algorithms

    def __call__(self, realm: str) -> DigestChallenger:
        challenger = self._by_realm.get(realm)
        if challenger is None:
            challenger = DigestChallenger(realm, self._secret, self._nonce_ttl, self._algorithms)
            self._by_realm[realm] = challenger
        return challenger


class _Reject(Exception):
    """A final answer other than 200; carries what the response needs."""

    def __init__(self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One contact of the request, checked: what will become of its binding."""

    uri: URI
    text: str
    expires: int
    contact: Contact


class Registrar:
    """REGISTER processing over a `LocationService`; see the module rules."""

    def __init__(self, directory: RegistrarDirectory, challenger_for: ChallengerPool, *,
                 on_change: Callable[[RegistrationEvent], None] | None = None,
                 limits: RegistrarLimits | None = None) -> None:
        self.directory = directory
        self.challenger_for = challenger_for
        self.limits = RegistrarLimits() if limits is None else limits
        self._outbox: deque[RegistrationEvent] = deque()
        self.location = LocationService(on_change if on_change is not None else self._outbox.append)
        self.stats: dict[str, int] = {"registers": 0, "challenged": 0, "auth_failed": 0, "accepted": 0,
                                      "rejected": 0}

    # -- the location service, for the adapter and the router ----------------------------------------------
    def contacts_for(self, operation_id: str, extension: str, now: float) -> list[Binding]:
        return self.location.contacts_for(operation_id, extension, now)

    def expire(self, now: float) -> list[Binding]:
        return self.location.expire(now)

    def connection_closed(self, source: tuple[str, int], transport: str, now: float) -> list[Binding]:
        """The bindings registered through that connection, removed (RFC 7118 §5)."""
        return self.location.remove_flow(source, transport, "connection closed", now)

    def restore(self, bindings: Iterable[Binding], now: float) -> int:
        return self.location.restore(bindings, now)

    def next_expiry(self) -> float | None:
        return self.location.next_expiry()

    def drain_events(self) -> list[RegistrationEvent]:
        """The changes since the last call (only when no `on_change` was given)."""
        events = list(self._outbox)
        self._outbox.clear()
        return events

    # -- REGISTER ------------------------------------------------------------------------------------------
    def handle_register(self, request: Request, source_addr: tuple[str, int], transport: str,
                        now: float, *, new_bindings: bool = True,
                        refused_operations: Container[str] = ()) -> Response:
        """The final response to a REGISTER received from `source_addr` over `transport` (udp, tcp, ws, wss);
        `new_bindings=False` while draining (rule 8); `refused_operations`: those handed over or lost (rule 9)."""
        if request.method != "REGISTER":
            raise ValueError(f"not a REGISTER: {request.method}")
        self.stats["registers"] += 1
        self.location.expire(now)
        try:
            return self._register(request, source_addr, transport.lower(), now, new_bindings, refused_operations)
        except _Reject as reject:
            if reject.status != 401:
                self.stats["rejected"] += 1
            return self._response(request, reject.status, reject.reason, reject.headers)

    def _register(self, request: Request, source_addr: tuple[str, int], transport: str, now: float,
                  new_bindings: bool, refused_operations: Container[str]) -> Response:
        try:
            aor = request.to.uri
            contacts = _contacts(request)
            header_expires = request.expires
            call_id, cseq = request.call_id, request.cseq.number
            registrar_domain = request.uri.host.lower() if request.uri.is_sip else ""
        except ParseError as error:
            raise _Reject(400, None) from error
        if not aor.is_sip:
            raise _Reject(400, "To Must Be A SIP URI")
        required = [option for value in request.headers.get_all("Require") for option in value.split(",")]
        if any(option.strip() for option in required):
            raise _Reject(420, None, [("Unsupported", ", ".join(o.strip() for o in required if o.strip()))])

        aor_domain = aor.host.lower()
        operation = self._operation(aor_domain) or self._operation(registrar_domain)
        realm = operation.digest_realm if operation is not None else aor_domain
        username = self._authenticate(request, operation, realm, now)
        if operation is None:  # unreachable: without an operation no HA1 exists, so nobody authenticates
            raise _Reject(404, None)
        if operation.id in refused_operations:  # rule 9
            raise _Reject(503, "Operation Moving", [("Retry-After", MOVED_RETRY_AFTER)])

        if aor.user != username:
            raise _Reject(403, "Username Does Not Match To")
        if aor_domain != operation.sip_domain.lower():
            raise _Reject(404, None)
        if self.directory.get_agent(operation.id, username) is None:
            raise _Reject(404, None)

        star = [c for c, _ in contacts if c.star]
        if star:
            if len(contacts) > 1 or header_expires != 0:
                raise _Reject(400, "Invalid Wildcard Contact")
            self._unregister_all(operation.id, username, call_id, cseq, now)
        elif contacts:
            wanted = self._wanted(contacts, header_expires)
            self._apply(operation.id, username, wanted, request, source_addr, transport, call_id, cseq, now,
                        new_bindings)
        self.stats["accepted"] += 1
        current = self.location.contacts_for(operation.id, username, now)
        return self._response(request, 200, None, [("Contact", b.contact_value(now)) for b in current])

    def _operation(self, domain: str) -> Operation | None:
        if not domain:
            return None
        return self.directory.operation_for_domain(domain)

    def _authenticate(self, request: Request, operation: Operation | None, realm: str, now: float) -> str:
        """The authenticated username, or `_Reject` with the challenge (identical for unknown users)."""
        challenger = self.challenger_for(realm)
        offer = self.challenger_for.algorithms_for(operation)
        result = verify_agent_digest(challenger, request, "Authorization", realm, operation,
                                     self.directory.get_agent, now, offer)
        if result is None:
            self.stats["challenged"] += 1
            raise _Reject(401, None, [("WWW-Authenticate", v) for v in challenger.challenge(now, algorithms=offer)])
        if result.ok and result.username is not None:
            return result.username
        self.stats["auth_failed"] += 1
        if result.reason is AuthReason.MALFORMED:
            raise _Reject(400, "Malformed Credentials")
        # Wrong credentials, or an algorithm this operation does not offer (MD5 to a SHA-256-only operation): a
        # fresh challenge, as for any failed digest (RFC 3261 §22.2), naming what is offered.
        raise _Reject(401, None, [("WWW-Authenticate", v)
                                  for v in challenger.challenge(now, stale=result.stale, algorithms=offer)])

    def _wanted(self, contacts: list[tuple[Contact, str]], header_expires: int | None) -> list[_Wanted]:
        """Check every contact and work out its interval (rule 4); later duplicates win."""
        limits = self.limits
        wanted: list[_Wanted] = []
        too_brief = False
        for contact, uri_text in contacts:
            assert contact.addr is not None
            uri = contact.addr.uri
            if not uri.is_sip:
                raise _Reject(400, "Contact Must Be A SIP URI")
            expires = contact.expires if contact.expires is not None else header_expires
            if expires is None:
                expires = limits.default_expires
            if 0 < expires < limits.min_expires:
                too_brief = True
            expires = min(expires, limits.max_expires)
            wanted = [w for w in wanted if w.uri != uri]
            wanted.append(_Wanted(uri, uri_text, expires, contact))
        if too_brief:
            raise _Reject(423, None, [("Min-Expires", str(limits.min_expires))])
        return wanted

    def _apply(self, operation_id: str, extension: str, wanted: list[_Wanted], request: Request,
               source_addr: tuple[str, int], transport: str, call_id: str, cseq: int, now: float,
               new_bindings: bool) -> None:
        location = self.location
        live = {b.contact_uri: b for b in location.contacts_for(operation_id, extension, now)}
        replaced: list[Binding] = []
        added: list[tuple[_Wanted, Binding]] = []
        for want in wanted:
            existing = location.find(operation_id, extension, want.uri, want.text)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise _Reject(500, "Out Of Order CSeq", [("Retry-After", "1")])
            if existing is not None:
                live.pop(existing.contact_uri, None)
            if want.expires == 0:
                continue
            binding = _binding(operation_id, extension, want, request, source_addr, transport, call_id, cseq, now,
                               now if existing is None else existing.registered_at)
            replacing = False
            if binding.instance_id is not None:
                for other in list(live.values()):
                    if (other.instance_id, other.reg_id) == (binding.instance_id, binding.reg_id):
                        replaced.append(live.pop(other.contact_uri))
                        replacing = True
            if existing is None and not replacing and not new_bindings:
                raise _Reject(503, "Service Unavailable", [("Retry-After", DRAIN_RETRY_AFTER)])  # rule 8
            added.append((want, binding))
        if len(live) + len(added) > self.limits.max_contacts_per_agent:
            raise _Reject(503, "Too Many Registered Contacts")

        # additions first, so that an agent swapping one contact for another is never reported unregistered
        for want, binding in added:
            location.put(binding, now, want.uri)
        for old in replaced:
            location.remove(operation_id, extension, old.uri, "replaced", now)
        for want in wanted:
            if want.expires == 0:
                location.remove(operation_id, extension, want.uri, "unregistered", now)

    def _unregister_all(self, operation_id: str, extension: str, call_id: str, cseq: int, now: float) -> None:
        """`Contact: *` (§10.3 step 6): abort if any binding of this Call-ID has a CSeq not below the request's."""
        for binding in self.location.contacts_for(operation_id, extension, now):
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise _Reject(500, "Out Of Order CSeq", [("Retry-After", "1")])
        self.location.remove_all(operation_id, extension, "wildcard", now)

    def _response(self, request: Request, status: int, reason: str | None,
                  headers: Iterable[tuple[str, str]]) -> Response:
        response = make_response(request, status, reason, to_tag=_to_tag(request))
        for name, value in headers:
            response.headers.add(name, value)
        return response


def _contacts(request: Request) -> list[tuple[Contact, str]]:
    """Each Contact value with its URI exactly as received (the parsed URI re-escapes when serialised)."""
    contacts = []
    for line in request.headers.get_lines("contact"):
        for element in split_commas(line):
            if not element:
                raise ParseError("empty Contact element")
            contacts.append((parse_contact(element), _raw_uri(element)))
    return contacts


def _raw_uri(element: str) -> str:
    """The URI text of a Contact element that `parse_contact` accepted: inside `<>`, or before the first `;`."""
    text = element.strip()
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        text = text[i + 1:]
    lt = text.find("<")
    if lt >= 0:
        return text[lt + 1:text.find(">", lt)]
    return text.partition(";")[0].strip()


def _binding(operation_id: str, extension: str, want: _Wanted, request: Request, source_addr: tuple[str, int],
             transport: str, call_id: str, cseq: int, now: float, registered_at: float) -> Binding:
    assert want.contact.addr is not None
    params = want.contact.addr.params
    instance = params.get("+sip.instance")
    reg_id = params.get("reg-id")
    return Binding(
        operation_id=operation_id,
        extension=extension,
        contact_uri=want.text,
        source_host=source_addr[0],
        source_port=source_addr[1],
        transport=transport,
        expires_at=now + want.expires,
        call_id=call_id,
        cseq=cseq,
        q=want.contact.q,
        instance_id=instance.strip('"') if instance else None,
        reg_id=int(reg_id) if reg_id is not None and reg_id.isdigit() else None,
        params=tuple((name, value) for name, value in params.items() if name != "expires"),
        user_agent=request.headers.get("User-Agent") or "",
        registered_at=registered_at,  # a refresh keeps when the binding was first added
        updated_at=now,
    )


def _to_tag(request: Request) -> str:
    """A stable To tag for this REGISTER (a retransmission gets the same one; no state kept)."""
    seed = f"{request.call_id}\0{request.from_.tag or ''}\0{request.cseq.number}"
    return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
