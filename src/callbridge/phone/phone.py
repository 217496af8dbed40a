"""The phone: a SIP user agent on the sans-I/O endpoint, driven by `callbridge.transport.Runtime`.

Theory of operation
- ``Phone.start`` binds UDP and TCP on the same port (``transport`` chooses what the phone's own requests use),
  makes the `Endpoint` with that address, and hands its events to `_on_core_event`, which runs synchronously
  inside the runtime's drain. Reactions that need no decision (auto-answer, 200 to INFO/OPTIONS/UPDATE/NOTIFY,
  SDP answers to re-INVITEs, following a REFER) are made right there, so they leave in the same drain: no task,
  no queue hop per call.
- Methods the user calls (``call``, ``Call.answer``, ``Call.hold`` ...) act on the endpoint and ``wake()`` the
  runtime; the ones that wait for the far end await a future resolved by the dispatcher.
- Which of our requests a response belongs to is in its client transaction's ``user_data``: the `Call` (its
  initial INVITE), the `Registration`, or a future (other in-dialog requests). Responses to re-INVITEs are routed
  through the dialog (the endpoint retries a re-INVITE after 491 in a transaction of its own, §14.1).
- Events (`callbridge.phone.events`) go to waiters (``wait_for``), to subscribers (``events()``, bounded queues
  that drop their oldest event when full), and to a bounded history that ``wait_for`` searches first (so an event
  that happened before the wait is not missed). ``history=0`` keeps nothing: with no listener an event costs one
  function call. Ended calls are forgotten at once.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from callbridge.phone.call import SDP, Call
from callbridge.phone.dispatch import Dispatcher
from callbridge.phone.events import (
    PhoneEvent,
)
from callbridge.phone.media import CODEC_PAYLOAD_TYPES, MediaSession
from callbridge.phone.registration import Registration
from callbridge.phone.rtp_endpoint import RtpClock
from callbridge.sip import DigestResponder, TimerConfig
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.uri import URI, parse_uri
from callbridge.transport import LOOPBACK_NETWORKS, DestinationPolicy, Runtime, bind_udp, tune_collector

__all__ = ["EventStream", "Phone"]

EventKind = type | tuple[type, ...]
TELEPHONE_EVENT_PT = 101  # the dynamic payload type our offers give telephone-event (RFC 4733)
RTP_BUFFER_BYTES = 256 * 1024


class EventStream:
    """An async iterator over the phone's events from now on (bounded: the oldest are dropped when full)."""

    def __init__(self, phone: Phone, maxsize: int) -> None:
        self._phone = phone
        self._queue: collections.deque[PhoneEvent] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        phone._subscribers.append(self)

    def _put(self, event: PhoneEvent) -> None:
        self._queue.append(event)
        self._ready.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> PhoneEvent:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def close(self) -> None:
        if self in self._phone._subscribers:
            self._phone._subscribers.remove(self)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Phone(Dispatcher):
    """A programmable SIP phone; make one with ``await Phone.start(...)`` (see the package docstring)."""

    def __init__(self) -> None:  # use Phone.start
        self.host = "127.0.0.1"
        self.port = 0
        self.transport = "udp"
        self.user = "1001"
        self.domain = "127.0.0.1"
        self.name = ""
        self.answer_mode: Literal["manual", "auto"] = "manual"
        self.auto_answer_status = 200
        self.ring_delay = 0.0
        self.follow_refer = True
        self.rtp_port = 0
        self.media_enabled = False  # each call gets its own RTP socket and endpoint (call.rtp)
        self.media_address = "127.0.0.1"  # the address our SDP names (c=)
        self.symmetric_rtp = False
        self.media_formats: tuple[str, ...] = ("0",)
        self._rtp_clock = RtpClock()
        self.rng = random.Random()
        self.endpoint: Endpoint
        self.runtime: Runtime
        self.responder: DigestResponder | None = None
        self._rtp_socket: socket.socket | None = None
        self._calls: dict[Call, None] = {}
        self._history: collections.deque[PhoneEvent] | None = None
        self._waiters: list[tuple[Callable[[PhoneEvent], bool], asyncio.Future[PhoneEvent]]] = []
        self._subscribers: list[EventStream] = []
        self._registrations: dict[tuple[str, int], Registration] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self._handlers = self._core_handlers()

    @classmethod
    async def start(cls, *, host: str = "127.0.0.1", port: int = 0, transport: str = "udp", user: str = "1001",
                    domain: str | None = None, password: str | None = None,
                    allowed_networks: Iterable[str] = LOOPBACK_NETWORKS,
                    answer: Literal["manual", "auto"] = "manual", auto_answer_status: int = 200,
                    ring_delay: float = 0.0, sdp_port: int | None = None, name: str | None = None,
                    follow_refer: bool = True, history: int = 1000, timers: TimerConfig | None = None,
                    rng: random.Random | None = None, user_agent: str | None = "callbridge-phone",
                    session_expires: int | None = None, media: bool = False, media_address: str | None = None,
                    symmetric_rtp: bool = False, codecs: Sequence[str] = ("PCMU",)) -> Phone:
        if transport not in ("udp", "tcp", "ws"):
            raise ValueError(f"transport must be 'udp', 'tcp' or 'ws', not {transport!r}")
        if answer not in ("manual", "auto"):
            raise ValueError(f"answer must be 'manual' or 'auto', not {answer!r}")
        unknown = [c for c in codecs if c not in CODEC_PAYLOAD_TYPES]
        if unknown or not codecs:
            raise ValueError(f"codecs must be some of {', '.join(CODEC_PAYLOAD_TYPES)}, not {list(codecs)!r}")
        self = cls()
        self.host, self.transport, self.user = host, transport, user
        self.media_enabled, self.symmetric_rtp = media, symmetric_rtp
        self.media_address = media_address or host
        self.media_formats = tuple(CODEC_PAYLOAD_TYPES[c] for c in codecs)
        self.domain = domain if domain is not None else host
        self.name = name or f"phone-{user}"
        self.answer_mode, self.auto_answer_status, self.ring_delay = answer, auto_answer_status, ring_delay
        self.follow_refer = follow_refer
        self.rng = rng if rng is not None else random.Random()
        self._history = collections.deque(maxlen=history) if history > 0 else None
        if password is not None:
            self.responder = DigestResponder(user, password)
        if sdp_port is None:
            # A real port of our own for the SDP, held for the phone's life (media itself is not sent).
            self._rtp_socket = bind_udp(host, 0, buffer_bytes=65536)
            sdp_port = self._rtp_socket.getsockname()[1]
        self.rtp_port = sdp_port
        sock, bound, hold = _bind_udp_and_tcp_port(host, port)
        self.port = bound
        self.endpoint = Endpoint(host, bound, timers or TimerConfig(), self.rng, user=user, user_agent=user_agent,
                                 session_expires=session_expires)
        if transport == "ws":  # a WebSocket client, as a browser is: reached only over its connection (RFC 7118 §5)
            self.endpoint.flow_host = f"{self.rng.getrandbits(48):012x}.invalid"
        self.runtime = Runtime(self.endpoint, policy=DestinationPolicy(allowed_networks),
                               on_event=self._on_core_event)
        try:
            await self.runtime.listen_udp(sock=sock)
            await self.runtime.listen_tcp(host, bound)
        except BaseException:
            await self.close()
            raise
        finally:
            hold.close()
        tune_collector()  # a phone under load is a SIP server too: see callbridge.transport.collector
        return self

    # --- identity -------------------------------------------------------------------------------------------
    @property
    def aor(self) -> str:
        """Our address of record, ``sip:user@domain``."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        """Where to call this phone directly: ``sip:user@host:port`` (``;transport=tcp`` over TCP)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = f";transport={self.transport}" if self.transport != "udp" else ""
        return f"sip:{self.user}@{host}:{self.port}{suffix}"

    @property
    def calls(self) -> list[Call]:
        """The calls that have not ended, oldest first."""
        return list(self._calls)

    def now(self) -> float:
        return self.runtime.now()

    def __repr__(self) -> str:
        return f"<Phone {self.name} {self.transport} {self.host}:{self.port}>"

    def _transport_uri(self, uri: str | URI) -> URI:
        parsed = parse_uri(uri) if isinstance(uri, str) else uri.copy()
        if self.transport != "udp" and "transport" not in parsed.params:
            parsed.params["transport"] = self.transport
        return parsed

    # --- events -----------------------------------------------------------------------------------------------
    def _emit(self, event: PhoneEvent) -> None:
        consumed = False
        waiters = self._waiters
        if waiters:
            for index, (predicate, fut) in enumerate(waiters):
                if not fut.done() and predicate(event):
                    fut.set_result(event)
                    del waiters[index]
                    consumed = True
                    break
        for stream in self._subscribers:
            stream._put(event)
        if not consumed and self._history is not None:
            self._history.append(event)

    def events(self, maxsize: int = 10_000) -> EventStream:
        """Every event from now on: ``async for event in phone.events(): ...`` (``close()`` it when done)."""
        return EventStream(self, maxsize)

    async def wait_for(self, kind: EventKind, *, call: Call | None = None,
                       where: Callable[[Any], bool] | None = None, timeout: float = 10.0) -> Any:
        """The first event of ``kind`` (for ``call``, satisfying ``where``) not returned before: from the history
        first, else the next one to happen. Raises TimeoutError after ``timeout`` seconds."""

        def matches(event: PhoneEvent) -> bool:
            return (isinstance(event, kind) and (call is None or getattr(event, "call", None) is call)
                    and (where is None or where(event)))

        history = self._history
        if history is not None:
            for event in history:
                if matches(event):
                    history.remove(event)
                    return event
        fut: asyncio.Future[PhoneEvent] = asyncio.get_running_loop().create_future()
        entry = (matches, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def clear_history(self) -> None:
        if self._history is not None:
            self._history.clear()

    # --- registration -----------------------------------------------------------------------------------------
    async def register(self, registrar: tuple[str, int], expires: int = 300, *, timeout: float = 40.0) -> int:
        """REGISTER our AOR at ``registrar`` (digest answered when the phone has a password); returns the granted
        expiry and keeps the binding refreshed. Raises `RegistrationError` on a final failure."""
        registration = self._registrations.get(registrar)
        if registration is None:
            registration = Registration(self, registrar, self.responder)
            self._registrations[registrar] = registration
        return await registration.register(expires, timeout)

    async def unregister(self, registrar: tuple[str, int] | None = None, *, timeout: float = 40.0) -> None:
        """Remove our binding (REGISTER with Expires: 0) at ``registrar`` (or everywhere)."""
        targets = [registrar] if registrar is not None else list(self._registrations)
        for target in targets:
            registration = self._registrations.pop(target, None)
            if registration is not None:
                registration.close()
                await registration.register(0, timeout)

    def registration(self, registrar: tuple[str, int]) -> Registration | None:
        return self._registrations.get(registrar)

    # --- calls we make ------------------------------------------------------------------------------------------
    async def call(self, uri: str | URI, *, dest: tuple[str, int] | None = None,
                   headers: Iterable[tuple[str, str]] = (), wait_answer: bool = True, timeout: float = 30.0,
                   from_display: str | None = None) -> Call:
        """Call ``uri`` (sent to ``dest``, else to the URI's own IP literal host and port) with an SDP offer.
        With ``wait_answer`` returns once the call is established, raising `CallError` (with the final status)
        if it fails; without, returns at once (follow it with events or ``call.wait_answered()``)."""
        call = self._place_call(uri, dest=dest, headers=tuple(headers), from_display=from_display)
        if wait_answer:
            await call.wait_answered(timeout)
        return call

    def _new_media(self) -> MediaSession:
        if not self.media_enabled:
            return MediaSession(self.host, self.rtp_port, self.rng.getrandbits(31), self.user)
        sock = bind_udp(self.host, 0, buffer_bytes=RTP_BUFFER_BYTES)  # the call's own RTP port
        return MediaSession(self.media_address, sock.getsockname()[1], self.rng.getrandbits(31), self.user,
                            formats=self.media_formats, telephone_event=TELEPHONE_EVENT_PT, rtp_socket=sock)

    def _place_call(self, uri: str | URI, *, dest: tuple[str, int] | None, headers: tuple[tuple[str, str], ...],
                    from_display: str | None = None) -> Call:
        if self._closed:
            raise RuntimeError("the phone is closed")
        target = self._transport_uri(uri)
        media = self._new_media()
        body = media.offer()
        to_uri = target.copy(params={}, headers={}, port=target.port)
        endpoint = self.endpoint
        tx = endpoint.invite(target, self.now(), from_uri=self.aor, to_uri=to_uri, from_display=from_display,
                             body=body, content_type=SDP, headers=headers, dest=dest,
                             transport=self.transport if dest is not None else None)
        call = Call(self, "out", media, invite=tx.request, client_tx=tx)
        tx.user_data = call
        self._calls[call] = None
        self.runtime.wake()
        return call

    def _forget(self, call: Call) -> None:
        self._calls.pop(call, None)

    # --- shutdown ---------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Hang up what is live (best effort), stop refreshing registrations, close the sockets."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for registration in self._registrations.values():
            registration.close()
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            for call in list(self._calls):
                try:
                    await call.hangup()
                except Exception:  # best effort while closing
                    call._end("closed", None, "local")
            runtime._drain()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
        if runtime is not None:
            await runtime.close()
        if self._rtp_socket is not None:
            self._rtp_socket.close()

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _bind_udp_and_tcp_port(host: str, port: int) -> tuple[socket.socket, int, socket.socket]:
    """A UDP socket on (host, port) whose port is also free for TCP (port 0: a free one is picked), and a TCP socket
    bound to that port (SO_REUSEADDR, not listening), to hold it until the TCP listener is made: a port merely
    probed free could meanwhile become another process's outgoing connection's local port (the kernel does not
    pick a bound one), and the listener's bind would then fail with EADDRINUSE."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        sock = bind_udp(host, port)
        bound = sock.getsockname()[1]
        hold = socket.socket(family, socket.SOCK_STREAM)
        try:
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            hold.bind((host, bound))
        except OSError:
            hold.close()
            sock.close()
            if port != 0:
                raise
            continue
        return sock, bound, hold
    raise OSError(f"no port free for both UDP and TCP on {host}")
