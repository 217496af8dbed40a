"""The runtime: drives a sans-I/O SIP core on asyncio sockets.

The core (``callbridge.sip.endpoint`` or anything with the same shape, see ``SipCore``) never touches a socket or a
clock. The runtime is its only contact with the world:

- bytes that arrive (a UDP datagram, or one message framed out of a TCP stream) go to
  ``core.receive_datagram(data, addr, now, transport)``;
- after a burst of input (one batch of datagrams read from a socket, one TCP chunk, a timer) the runtime *drains*
  the core once: it hands every ``core.next_event()`` to the consumer (whose reactions may act on the core), then
  sends every ``core.datagrams_to_send()`` through the ``DestinationPolicy``; then it re-arms ONE
  ``loop.call_at`` timer at ``core.get_timer()``. Drains are coalesced with ``loop.call_soon``: however many inputs
  arrive in one loop iteration, the core is drained once.
- A WebSocket connection that closes is reported to the core (``core.connection_closed(addr, transport, now)``,
  when the core has it), then drained: a registration made over that connection cannot be reached any more.
- Code that acts on the core from outside the runtime's callbacks (a phone placing a call) calls ``wake()`` so
  that what it produced is drained.

The clock: ``now`` is always ``loop.time()`` (the event loop's monotonic clock), so a deadline returned by
``get_timer()`` is directly a ``loop.call_at`` time. ``Runtime.now()`` gives the same clock to code that calls the
core itself. When the timer fires, ``now`` is at least the deadline it was armed for (the loop may fire a handle up
to its clock resolution early; the core must see its deadline reached).

Transport names are ``"udp"``, ``"tcp"``, ``"ws"`` and ``"wss"`` (lower case, as ``docs/internals.md`` fixes
them); addresses are
``(host, port)`` tuples with ``host`` an IP literal.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from callbridge.transport.counters import TransportCounters
from callbridge.transport.policy import DestinationPolicy
from callbridge.transport.tcp import DEFAULT_IDLE_TIMEOUT, ConnectionTable
from callbridge.transport.udp import DEFAULT_BUFFER_BYTES, UdpSocket, bind_udp
from callbridge.transport.websocket import WS, WSS, WebSocketTable

log = logging.getLogger(__name__)

UDP = "udp"
TCP = "tcp"
__all__ = ["TCP", "UDP", "WS", "WSS", "Runtime", "SipCore"]

Address = tuple[str, int]
# Bounds the events handed over in one drain, so that a consumer whose reactions always make new events cannot
# starve the loop (the rest is drained on the next iteration).
MAX_EVENTS_PER_DRAIN = 10_000


class SipCore(Protocol):
    """The aioquic-shaped facade the runtime drives."""

    def receive_datagram(self, data: bytes, addr: Address, now: float, transport: str) -> None: ...
    def datagrams_to_send(self) -> list[tuple[bytes, Address, str]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Any | None: ...


EventConsumer = Callable[[Any], None]


class Runtime:
    """Feeds a core from UDP/TCP sockets, drains it through the destination policy, keeps its one timer armed.

    Events go to ``on_event`` (called synchronously inside the drain, so what it does to the core is sent in the
    same drain), or, without it, to a queue read with ``await runtime.next_event()``.
    """

    def __init__(self, core: SipCore, *, policy: DestinationPolicy | None = None,
                 on_event: EventConsumer | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.core = core
        self.policy = policy if policy is not None else DestinationPolicy()
        self.counters = TransportCounters()
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._on_event = on_event
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._udp: list[UdpSocket] = []
        self._tcp = ConnectionTable(self._loop, self._received_tcp, self.wake, self.counters, idle_timeout)
        self._ws = WebSocketTable(self._loop, self._feed, self.wake, self.counters, self._connection_closed)
        self._drain_scheduled = False
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._closed = False

    # -- the clock -----------------------------------------------------------------------------------------------
    def now(self) -> float:
        """The clock the core is driven with (``loop.time()``)."""
        return self._loop.time()

    # -- sockets -------------------------------------------------------------------------------------------------
    async def listen_udp(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                         buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> Address:
        """Receive and send UDP on ``(host, port)`` (or on an already bound ``sock``); returns the bound address.

        One UDP socket per address family is used for sending: the first one bound."""
        if sock is None:
            sock = bind_udp(host, port, buffer_bytes=buffer_bytes)
        udp = UdpSocket(self._loop, sock, self._received_udp, self.wake, self.counters)
        self._udp.append(udp)
        return udp.local_address

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Accept SIP over TCP on ``(host, port)``; returns the bound address."""
        return await self._tcp.listen(host, port)

    async def listen_ws(self, host: str = "127.0.0.1", port: int = 0, *,
                        ssl_context: ssl.SSLContext | None = None) -> Address:
        """Accept SIP over WebSocket (RFC 7118) on ``(host, port)``, TLS when given ``ssl_context``; returns the
        bound address."""
        return await self._ws.listen(host, port, ssl_context)

    @property
    def ws_connections(self) -> dict[Address, Any]:
        """Open WebSocket connections by peer address (read-only view for tests and metrics)."""
        return dict(self._ws.connections)

    @property
    def udp_addresses(self) -> list[Address]:
        return [u.local_address for u in self._udp]

    @property
    def tcp_connections(self) -> dict[Address, Any]:
        """Open TCP connections by peer address (read-only view for tests and metrics)."""
        return dict(self._tcp.connections)

    # -- input ---------------------------------------------------------------------------------------------------
    def _received_udp(self, data: bytes, addr: Address) -> None:
        self._feed(data, addr, UDP)

    def _received_tcp(self, data: bytes, addr: Address) -> None:
        self._feed(data, addr, TCP)

    def _feed(self, data: bytes, addr: Address, transport: str) -> None:
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += len(data)
        try:
            self.core.receive_datagram(data, addr, self._loop.time(), transport)
        except Exception:
            counters.core_errors += 1
            log.exception("core failed on %d bytes from %r over %s", len(data), addr, transport)

    def _connection_closed(self, addr: Address, transport: str) -> None:
        closed = getattr(self.core, "connection_closed", None)
        if closed is None:
            return
        try:
            closed(addr, transport, self._loop.time())
        except Exception:
            self.counters.core_errors += 1
            log.exception("core failed on the close of %r over %s", addr, transport)

    # -- draining ------------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Drain the core soon (once per loop iteration, however often this is called)."""
        if not self._drain_scheduled and not self._closed:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if self._closed:
            return
        self.counters.flushes += 1
        core = self.core
        # Events first: what the consumer does to the core in reaction is then sent in this same drain.
        for _ in range(MAX_EVENTS_PER_DRAIN):
            event = core.next_event()
            if event is None:
                break
            self._deliver(event)
        else:
            self.wake()
        for data, addr, transport in core.datagrams_to_send():
            self.send(data, addr, transport)
        self._arm_timer()

    def _deliver(self, event: Any) -> None:
        if self._on_event is None:
            self._events.put_nowait(event)
            return
        try:
            self._on_event(event)
        except Exception:
            self.counters.event_consumer_errors += 1
            log.exception("event consumer failed on %r", event)

    async def next_event(self) -> Any:
        """The next event of the core (only when the runtime was made without ``on_event``)."""
        if self._on_event is not None:
            raise RuntimeError("this runtime hands its events to on_event")
        return await self._events.get()

    # -- output --------------------------------------------------------------------------------------------------
    def send(self, data: bytes, addr: Address, transport: str = UDP) -> bool:
        """Send bytes to ``addr`` if the destination policy allows it; True when sent (or queued on TCP)."""
        if not self.policy.allows(addr):
            return False
        host, port = addr[0], addr[1]
        if host.startswith("["):
            host = host[1:-1]
        if transport == UDP:
            udp = self._udp_for(host)
            if udp is None:
                self.counters.send_errors += 1
                log.warning("no UDP socket can reach %r", addr)
                return False
            sent = udp.send(data, (host, port))
        elif transport == TCP:
            sent = self._tcp.send(data, (host, port))
        elif transport in (WS, WSS):
            sent = self._ws.send(data, (host, port), transport)
        elif transport.lower() in (UDP, TCP, WS, WSS):
            return self.send(data, addr, transport.lower())
        else:
            self.counters.send_errors += 1
            log.warning("unknown transport %r for %r", transport, addr)
            return False
        if sent:
            self.counters.datagrams_out += 1
            self.counters.bytes_out += len(data)
        return sent

    def _udp_for(self, host: str) -> UdpSocket | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for udp in self._udp:
            if udp.family == family:
                return udp
        return None

    # -- the one timer -------------------------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if when == self._timer_when and (when is None or self._timer_handle is not None):
            return
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        self._timer_when = when
        if when is not None and not self._closed:
            self._timer_handle = self._loop.call_at(when, self._timer_fired)

    def _timer_fired(self) -> None:
        deadline = self._timer_when
        self._timer_handle = None
        self._timer_when = None
        self.counters.timer_fires += 1
        now = self._loop.time()
        if deadline is not None and now < deadline:
            now = deadline
        try:
            self.core.handle_timer(now)
        except Exception:
            self.counters.core_errors += 1
            log.exception("core failed handling its timer")
        self._drain()

    @property
    def timer_deadline(self) -> float | None:
        """When the core's timer is armed to fire (loop time), or None."""
        return self._timer_when if self._timer_handle is not None else None

    # -- metrics and shutdown ------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, int]:
        """Counters for ``/metrics``: traffic, errors, and destination-policy refusals per reason."""
        out = self.counters.snapshot()
        for reason, count in self.policy.refused_total.items():
            out[f"policy_refused_{reason}"] = count
        out["policy_refused_total"] = sum(self.policy.refused_total.values())
        out["tcp_open_connections"] = len(self._tcp.connections)
        out["ws_open_connections"] = len(self._ws.connections)
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        for udp in self._udp:
            udp.close()
        self._udp.clear()
        await self._tcp.close()
        await self._ws.close()
