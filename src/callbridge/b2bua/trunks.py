"""Outbound trunks toward a provider: digest answers to its 401/407, and the optional registration to it.

Rules (RFC 3261 §8.1.3.5, §22.2, §10.2; RFC 7616):
- Credentials: a 401/407 to an INVITE sent through a trunk that has credentials is answered by sending the same
  request again with CSeq + 1, a new branch and Authorization / Proxy-Authorization (`Endpoint.retry_request`);
  the new transaction takes the place of the challenged one among the leg's forks, so ringing, answer and failure
  go on as before. One answer per leg: a second challenge fails the leg with its status, unless it says
  `stale=true` (the nonce aged, the credentials were right), at most `MAX_ANSWERS` in all. A trunk whose realm is
  configured answers only challenges of that realm. Nothing of this reaches the domain: it sees ringing, an answer
  or one failure.
- Registration (a trunk with `register`): REGISTER `sip:host:port` with To and From `sip:username@host`, one
  Call-ID for the trunk's life and CSeq + 1 for every request (§10.2.4), `Expires` as configured; a challenge is
  answered as above (the nonce's next count on refreshes when the provider offered qop). A 2xx registers the trunk
  until the granted expiry (the `expires` of our Contact in the 2xx, else its Expires, else what we asked), and the
  binding is refreshed at half of it. Anything else (a final error, a second challenge, no answer) marks the trunk
  failed and the REGISTER is tried again after `retry_seconds`.
- Unregistration on shut-down (§10.2.2): `unregister` (awaited by `Node.close` before the transport closes)
  sends, for every trunk registered or with a REGISTER in flight, the REGISTER of its binding with `Expires: 0`
  (same Call-ID, CSeq + 1), answers one challenge as above, and waits for the answers at most
  `unregister_timeout` seconds (2 s): a provider that does not answer does not hold the shut-down longer. From
  then on nothing is refreshed or retried, and late answers to earlier REGISTERs are ignored.
- Status: per trunk `registered` (1/0), and counters of successes, failures and challenges answered, on /metrics.
- `start` (after the transport listens) begins every trunk's registration; `close` stops the timers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbridge.callcontrol.model import Trunk
from callbridge.sip import DigestResponder, Response
from callbridge.sip.auth import AuthError, challenge_is_stale, parse_auth_header
from callbridge.sip.transaction import ClientTransaction

if TYPE_CHECKING:
    from callbridge.b2bua.context import TrunkContext
    from callbridge.b2bua.legs import SipLeg

__all__ = ["MAX_ANSWERS", "TrunkRegistration", "TrunkRegistrationConfig", "TrunkRegistrations", "answer_challenge"]

log = logging.getLogger(__name__)
MAX_ANSWERS = 3


@dataclass(frozen=True, slots=True)
class TrunkRegistrationConfig:
    expires: int = 3600  # asked of the provider
    retry_seconds: float = 60.0  # after a failed registration
    min_refresh: float = 1.0  # never refresh sooner than this after a 2xx
    unregister_timeout: float = 2.0  # on shut-down, the longest wait for the answers to Expires: 0


def _challenges(response: Response, realm: str | None) -> tuple[str, list[str]]:
    """The header our answer goes in and the challenges of `response` we may answer (of `realm` when given)."""
    status = response.status
    values = response.headers.get_all("WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
    if realm is not None:
        kept = []
        for value in values:
            try:
                _, params = parse_auth_header(value)
            except AuthError:
                continue
            if params.get("realm") == realm:
                kept.append(value)
        values = kept
    return ("Authorization" if status == 401 else "Proxy-Authorization"), values


def _answer(responder: DigestResponder, tx: ClientTransaction, challenges: list[str]) -> str | None:
    request = tx.request
    try:
        return responder.authorize(request.method, str(request.uri), challenges, request.body)
    except AuthError:
        return None


def answer_challenge(sw: TrunkContext, leg: SipLeg, tx: ClientTransaction, response: Response) -> bool:
    """Answer a provider's 401/407 to `leg`'s INVITE through its trunk; False when it cannot or must not be."""
    trunk = leg.trunk
    if trunk is None or trunk.credentials is None or not leg.forking or tx not in leg.forks:
        return False
    header, challenges = _challenges(response, trunk.credentials.realm)
    if not challenges or leg.auth_attempts >= MAX_ANSWERS:
        return False
    if leg.auth_attempts and not challenge_is_stale(challenges):
        return False  # the credentials were refused
    value = _answer(sw.trunk_registrations.responder(trunk), tx, challenges)
    if value is None:
        return False
    retried = sw.endpoint.retry_request(tx, sw.now(), headers=[(header, value)])
    retried.user_data = leg
    leg.forks[leg.forks.index(tx)] = retried
    leg.auth_attempts += 1
    sw.trunk_registrations.stats["challenges_answered"] += 1
    sw.wake()
    return True


class TrunkRegistration:
    """The binding of one trunk at its provider (see the module rules)."""

    def __init__(self, owner: TrunkRegistrations, trunk: Trunk) -> None:
        assert trunk.credentials is not None
        self.owner = owner
        self.trunk = trunk
        sw = owner.sw
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        suffix = ";transport=tcp" if trunk.transport == "tcp" else ""
        self.uri = f"sip:{host}:{trunk.port}{suffix}"
        self.aor = f"sip:{trunk.credentials.username}@{host}"
        self.call_id = f"trunk-{sw.endpoint.rng.getrandbits(64):x}@{sw.endpoint.host}"
        self.cseq = 0
        self.registered = False
        self.expires_at: float | None = None  # loop time
        self.last_status: int | None = None
        self._answers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._current: ClientTransaction | None = None  # our latest REGISTER, until its final response
        self._unregistered: asyncio.Future[int | None] | None = None  # shut-down: the answer to Expires: 0

    def send(self, expires: int | None = None) -> None:
        self._timer = None
        sw = self.owner.sw
        endpoint = sw.endpoint
        self.cseq += 1
        self._answers = 0
        headers = [("Expires", str(self.owner.config.expires if expires is None else expires))]
        responder = self.owner.responder(self.trunk)
        again = responder.reauthorize("REGISTER", self.uri)
        if again is not None:
            headers.append(("Authorization", again))
        request = endpoint.create_request("REGISTER", self.uri, from_uri=self.aor, to_uri=self.aor,
                                          call_id=self.call_id, cseq=self.cseq, headers=headers)
        tx = endpoint.send_request(request, sw.now(), dest=(self.trunk.host, self.trunk.port),
                                   transport=self.trunk.transport)
        tx.user_data = functools.partial(self._final, tx)
        self._current = tx
        sw.wake()

    def unregister(self) -> asyncio.Future[int | None] | None:
        """Remove our binding at the provider (§10.2.2): REGISTER with Expires: 0. The future is its final status
        (None: no answer); None when there is no binding to remove. Nothing is refreshed or retried after it."""
        self.cancel()
        if self._unregistered is not None:
            return self._unregistered
        if not (self.registered or self._current is not None):
            return None
        self._unregistered = self.owner.sw.loop.create_future()
        self.send(expires=0)
        return self._unregistered

    def _final(self, tx: ClientTransaction, response: Response | None) -> None:
        """The final response to our REGISTER (None: no answer, or it could not be sent)."""
        owner, sw = self.owner, self.owner.sw
        if tx is not self._current:
            return  # an earlier REGISTER answered late (after the Expires: 0 that replaced it)
        status = response.status if response is not None else 408
        self.last_status = status
        if self._unregistered is not None:
            self._unregister_answered(tx, response)
            return
        self._current = None
        if response is not None and status in (401, 407) and self._retry_with_credentials(tx, response):
            return
        if 200 <= status < 300 and response is not None:
            granted = self._granted(response)
            if granted > 0:
                self.registered = True
                self.expires_at = sw.now() + granted
                owner.stats["registered"] += 1
                self._schedule(max(owner.config.min_refresh, granted / 2))
                return
        if self.registered:
            log.warning("trunk %s/%s: registration to %s failed (%d)", self.trunk.operation_id, self.trunk.name,
                        self.uri, status)
        self.registered = False
        self.expires_at = None
        owner.stats["failed"] += 1
        self._schedule(owner.config.retry_seconds)

    def _retry_with_credentials(self, tx: ClientTransaction, response: Response) -> bool:
        credentials = self.trunk.credentials
        assert credentials is not None
        header, challenges = _challenges(response, credentials.realm)
        if not challenges or self._answers >= MAX_ANSWERS:
            return False
        if self._answers and not challenge_is_stale(challenges):
            return False
        value = _answer(self.owner.responder(self.trunk), tx, challenges)
        if value is None:
            return False
        sw = self.owner.sw
        retried = sw.endpoint.retry_request(tx, sw.now(), headers=[(header, value)])
        retried.user_data = functools.partial(self._final, retried)
        self._current = retried
        self.cseq = retried.request.cseq.number
        self._answers += 1
        self.owner.stats["challenges_answered"] += 1
        sw.wake()
        return True

    def _unregister_answered(self, tx: ClientTransaction, response: Response | None) -> None:
        status = response.status if response is not None else None
        if response is not None and status in (401, 407) and self._retry_with_credentials(tx, response):
            return
        self._current = None
        self.registered = False
        self.expires_at = None
        if status is None or not 200 <= status < 300:
            log.warning("trunk %s/%s: unregistration from %s failed (%s)", self.trunk.operation_id,
                        self.trunk.name, self.uri, status if status is not None else "no answer")
        else:
            self.owner.stats["unregistered"] += 1
        future = self._unregistered
        if future is not None and not future.done():
            future.set_result(status)

    def _granted(self, response: Response) -> int:
        own = self.owner.sw.endpoint.contact(self.trunk.transport)
        for contact in response.contacts:
            if contact.addr is not None and f"<{contact.addr.uri}>" == own and contact.expires is not None:
                return contact.expires
        expires = response.expires
        return expires if expires is not None else self.owner.config.expires

    def _schedule(self, delay: float) -> None:
        self.cancel()
        self._timer = self.owner.sw.loop.call_later(delay, self.send)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TrunkRegistrations:
    """The digest responders of every trunk and the registrations of those that register."""

    def __init__(self, sw: TrunkContext, config: TrunkRegistrationConfig | None = None) -> None:
        self.sw = sw
        self.config = config or TrunkRegistrationConfig()
        self.by_trunk: dict[tuple[str, str], TrunkRegistration] = {}
        self.stats: Counter[str] = Counter(registered=0, failed=0, challenges_answered=0,
                                                 unregistered=0)
        self._responders: dict[tuple[str, str, str], DigestResponder] = {}

    def responder(self, trunk: Trunk) -> DigestResponder:
        """One responder per trunk and credentials, so that nonce-counts carry over (RFC 7616 §3.4)."""
        assert trunk.credentials is not None
        key = (trunk.operation_id, trunk.name, trunk.credentials.username)
        responder = self._responders.get(key)
        if responder is None:
            responder = self._responders[key] = DigestResponder(trunk.credentials.username,
                                                                trunk.credentials.password)
        return responder

    def start(self, trunks: list[Trunk]) -> None:
        """Register every trunk that asks for it (those already registering are left alone)."""
        for trunk in trunks:
            key = (trunk.operation_id, trunk.name)
            if trunk.register and trunk.credentials is not None and key not in self.by_trunk:
                registration = self.by_trunk[key] = TrunkRegistration(self, trunk)
                registration.send()

    def registered(self) -> dict[str, int]:
        """For /metrics: 1 per trunk registered now, 0 per trunk that should be and is not."""
        now = self.sw.now()
        return {f"{op}/{name}": int(r.registered and r.expires_at is not None and r.expires_at > now)
                for (op, name), r in sorted(self.by_trunk.items())}

    async def unregister(self) -> dict[tuple[str, str], int | None]:
        """Shut-down: every binding removed at its provider (Expires: 0), waiting at most `unregister_timeout`
        seconds for the answers; returns each unregistered trunk's final status (None: no answer in time)."""
        pending = {key: future for key, registration in self.by_trunk.items()
                   if (future := registration.unregister()) is not None}
        if pending:
            await asyncio.wait(pending.values(), timeout=self.config.unregister_timeout)
        for (operation_id, name), future in pending.items():
            if not future.done():
                log.warning("trunk %s/%s: unregistration not answered within %g s; the provider keeps the binding "
                            "until it expires", operation_id, name, self.config.unregister_timeout)
        return {key: future.result() if future.done() else None for key, future in pending.items()}

    def close(self) -> None:
        for registration in self.by_trunk.values():
            registration.cancel()
