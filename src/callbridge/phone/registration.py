"""Registration (RFC 3261 §10.2) of a phone's address of record with a registrar, with digest authentication.

Rules
- One Call-ID for every REGISTER of a binding, CSeq increasing by one each time (§10.2.4 refreshes, §10.2.2
  removal with ``Expires: 0``).
- A 401/407 is answered once per request with `sip.auth.DigestResponder` (Authorization / Proxy-Authorization,
  RFC 7616/8760); a second challenge in a row is a failure (wrong credentials), unless it says ``stale=true``.
  Refreshes reuse the last nonce with the next nonce-count when the registrar offered qop (`reauthorize`).
- The binding is refreshed before it lapses: at half the granted expiry (at least 1 s before the end).
- The granted expiry is the ``expires`` parameter of our Contact in the 2xx, else its Expires header, else what we
  asked for.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from callbridge.phone.events import Registered, RegistrationFailed, Unregistered
from callbridge.sip import DigestResponder, Response
from callbridge.sip.auth import AuthError, challenge_is_stale
from callbridge.sip.transaction import ClientTransaction

if TYPE_CHECKING:
    from callbridge.phone.phone import Phone

__all__ = ["Registration", "RegistrationError"]


class RegistrationError(Exception):
    """A final failure; `retry_after` is the response's Retry-After in seconds, when it gave one (a 503 of a
    draining registrar, RFC 3261 §21.5.4 and §20.33)."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(f"registration failed: {status} {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class Registration:
    """The binding of one phone at one registrar."""

    def __init__(self, phone: Phone, registrar: tuple[str, int], responder: DigestResponder | None) -> None:
        self.phone = phone
        self.registrar = registrar
        self.responder = responder
        self.call_id = f"reg-{phone.rng.getrandbits(64):x}@{phone.host}"
        self.cseq = 0
        self.expires = 0  # granted, 0 = not registered
        self.requested = 0
        self._future: asyncio.Future[Response | None] | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._challenges = 0
        self._last_response: Response | None = None

    @property
    def registered(self) -> bool:
        return self.expires > 0

    def _request_uri(self) -> str:
        return f"sip:{self.phone.domain}"

    def _send(self, expires: int) -> asyncio.Future[Response | None]:
        phone = self.phone
        self.cseq += 1
        self.requested = expires
        self._challenges = 0
        uri = self._request_uri()
        headers: list[tuple[str, str]] = [("Expires", str(expires))]
        if self.responder is not None:
            credentials = self.responder.reauthorize("REGISTER", uri)
            if credentials is not None:
                headers.append(("Authorization", credentials))
        request = phone.endpoint.create_request(
            "REGISTER", phone._transport_uri(uri), from_uri=phone.aor, to_uri=phone.aor, call_id=self.call_id,
            cseq=self.cseq, headers=headers)
        tx = phone.endpoint.send_request(request, phone.now(), dest=self.registrar, transport=phone.transport)
        tx.user_data = self
        self._future = asyncio.get_running_loop().create_future()
        phone.runtime.wake()
        return self._future

    def on_final(self, tx: ClientTransaction, response: Response | None) -> None:
        """The final response of our REGISTER (None: it timed out or could not be sent)."""
        status = response.status if response is not None else 408
        if response is not None and status in (401, 407) and self.responder is not None:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenges = response.headers.get_all(header)
            stale = challenge_is_stale(challenges) if challenges else False
            if challenges and (self._challenges == 0 or stale) and self._challenges < 3:
                self._challenges += 1
                try:
                    value = self.responder.authorize("REGISTER", str(tx.request.uri), challenges)
                except AuthError:
                    value = None
                if value is not None:
                    name = "Authorization" if status == 401 else "Proxy-Authorization"
                    phone = self.phone
                    retry = phone.endpoint.retry_request(tx, phone.now(), headers=[(name, value)])
                    retry.user_data = self
                    self.cseq = retry.request.cseq.number
                    phone.runtime.wake()
                    return
        fut = self._future
        if fut is not None and not fut.done():
            fut.set_result(response)

    async def register(self, expires: int, timeout: float) -> int:
        response = await asyncio.wait_for(self._send(expires), timeout)
        return self._finish(response, expires)

    def _finish(self, response: Response | None, expires: int) -> int:
        phone = self.phone
        status = response.status if response is not None else 408
        if not 200 <= status < 300:
            reason = response.reason if response is not None else "no response"
            self.expires = 0
            phone._emit(RegistrationFailed(self.registrar, status, reason))
            raise RegistrationError(status, reason, _retry_after(response))
        assert response is not None
        if expires == 0:
            self.expires = 0
            self._cancel_refresh()
            phone._emit(Unregistered(self.registrar))
            return 0
        granted = self._granted(response, expires)
        self.expires = granted
        phone._emit(Registered(self.registrar, granted))
        self._schedule_refresh(granted)
        return granted

    def _granted(self, response: Response, asked: int) -> int:
        own = self.phone.endpoint.contact(self.phone.transport)
        for contact in response.contacts:
            if contact.addr is not None and f"<{contact.addr.uri}>" == own and contact.expires is not None:
                return contact.expires
        for contact in response.contacts:
            if contact.expires is not None:
                return contact.expires
        expires = response.expires
        return expires if expires is not None else asked

    def _schedule_refresh(self, granted: int) -> None:
        self._cancel_refresh()
        delay = max(min(granted / 2, granted - 1), 0.5)
        loop = asyncio.get_running_loop()
        self._refresh = loop.call_later(delay, self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh = None
        task = asyncio.get_running_loop().create_task(self._refresh_task())
        self.phone._tasks.add(task)
        task.add_done_callback(self.phone._tasks.discard)

    async def _refresh_task(self) -> None:
        try:
            await self.register(self.requested or 300, 40.0)
        except (RegistrationError, TimeoutError):
            pass  # reported as RegistrationFailed (a time-out: no event, the binding lapses)

    def _cancel_refresh(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    def close(self) -> None:
        self._cancel_refresh()


def _retry_after(response: Response | None) -> int | None:
    """Retry-After's delta-seconds (§20.33: a comment or parameters may follow), None when absent or malformed."""
    value = response.headers.get("Retry-After") if response is not None else None
    head = value.split(";")[0].split("(")[0].strip() if value else ""
    return int(head) if head.isdigit() else None
