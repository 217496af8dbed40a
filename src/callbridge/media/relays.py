"""A set of rtpengine relays, sans-I/O: which relay a call uses, which relays are up, what each one can do.

Rules
- A call sticks to the relay that took its first offer (`assign`): every later command of that call (answer,
  re-offer, block, play, delete) goes to the same relay, which is the only one that knows the call. A new call goes
  to the relay that is up and holds the fewest calls of ours (ties: the order the relays were configured in), which
  shares the load and keeps one relay's failure to its own calls.
- Health: every relay is pinged (``ping`` -> ``pong``) every `RelayTimers.ping_interval`; a ping that times out
  (`NgClient`'s bounded retransmissions) marks the relay down, the next ``pong`` marks it up. A relay starts as
  unknown, which `assign` treats as down until its first pong: a call is never offered to a relay never heard from.
- Features: right after each pong the relay is asked for ``statistics``;
  rtpengine 10.5 names there every command it implements (``min<command>delay`` in ``intervalstatistics``), so
  ``"pause recording" in relay.features`` is false on 10.5 and true on a release that has it. The reply also gives
  the relay's media interfaces and port range. A relay whose statistics never came has no features: callers that
  need one treat it as absent.
- A relay is taken to have lost its calls' media (`RelayLost`, once per outage; rtpengine keeps its calls in
  memory only) when it restarted, or when it failed `RelayTimers.pings_to_lose` health checks in a row (a ping
  unanswered through every retransmission). One failed check only takes it down for new calls: a relay busy
  forwarding hundreds of calls' RTP can leave one ping series unanswered for seconds and still carry every call,
  and ending them all for that would turn a slow moment into an outage. A restart is told by the relay's uptime:
  every pong is followed by a ``statistics`` request, and a relay whose ``uptime`` is less than the one it
  reported before restarted in between, whether or not a ping failed (a relay restarted by its supervisor within
  a ping interval answers the next ping and knows none of its calls).
  The calls it held are listed by `calls_on`, and `release` lets one go so that its next offer is assigned afresh,
  to a relay that is up (`b2bua/relay_loss.py` re-anchors it there). A command of a call that timed out only takes
  the relay down for new calls, as one failed check does; the pings decide.
- Health requests jump the queue of each relay's ng window (`NgClient`, ``urgent``): a ping waits for a free slot,
  never behind a burst of calls' commands.
- No I/O, no clock: the set wraps one `NgClient` and has the same facade (`receive_datagram`, `datagrams_to_send`,
  `get_timer`, `handle_timer`, `next_event`); health traffic is consumed here, every other reply is passed on.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from callbridge.media.ng import Address, NgClient, NgEvent, NgReply, NgTimedOut, NgTimers, NgWindow

__all__ = ["Health", "Relay", "RelayChanged", "RelayLost", "RelaySet", "RelayTimers", "features_from_statistics",
           "uptime_from_statistics"]

# What every ng relay answers whatever its version: the protocol's core (rtpengine's ng protocol document).
CORE_COMMANDS = frozenset({"ping", "offer", "answer", "delete", "query", "list", "statistics"})


class Health(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class RelayTimers:
    ping_interval: float = 5.0
    pings_to_lose: int = 2  # failed health checks in a row before the relay's calls are taken for lost

    def __post_init__(self) -> None:
        if self.ping_interval <= 0:
            raise ValueError("RelayTimers.ping_interval must be positive")
        if self.pings_to_lose < 1:
            raise ValueError("RelayTimers.pings_to_lose must be at least 1")


@dataclass(slots=True)
class Relay:
    address: Address
    health: Health = Health.UNKNOWN
    features: frozenset[str] = frozenset()
    interfaces: tuple[tuple[str, str], ...] = ()   # (name, address) as the relay reports them
    calls: int = 0
    pings_failed: int = 0
    uptime: float | None = None  # seconds the relay had been running at its last statistics
    lost_declared: bool = False  # RelayLost was given for the current outage

    @property
    def up(self) -> bool:
        return self.health is Health.UP

    def supports(self, command: str) -> bool:
        return command in self.features


@dataclass(frozen=True, slots=True)
class RelayChanged:
    """A relay went up or down (for the log and metrics)."""

    address: Address
    health: Health


@dataclass(frozen=True, slots=True)
class RelayLost:
    """A relay failed its health check (a ping unanswered through every retransmission): the calls it holds have
    lost their media (see the module rules)."""

    address: Address


def uptime_from_statistics(reply: dict[str, Any]) -> float | None:
    """The relay's uptime in seconds from its ``statistics`` reply (``totalstatistics.uptime``), None if absent."""
    stats = reply.get("statistics")
    total = stats.get("totalstatistics") if isinstance(stats, dict) else None
    value = total.get("uptime") if isinstance(total, dict) else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def features_from_statistics(reply: dict[str, Any]) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """The commands a relay implements and its interfaces, from its ``statistics`` reply (see the module rules)."""
    stats = reply.get("statistics")
    if not isinstance(stats, dict):
        return frozenset(), ()
    commands: set[str] = set()
    interval = stats.get("intervalstatistics")
    if isinstance(interval, dict):
        for key in interval:
            if key.startswith("min") and key.endswith("delay"):
                commands.add(key[3:-5])
    interfaces: list[tuple[str, str]] = []
    for item in stats.get("interfaces") or ():
        if isinstance(item, dict):
            name, address = item.get("name", b""), item.get("address", b"")
            if isinstance(name, bytes) and isinstance(address, bytes):
                interfaces.append((name.decode("utf-8", "replace"), address.decode("ascii", "replace")))
    return frozenset(commands | CORE_COMMANDS) if commands else frozenset(), tuple(interfaces)


class RelaySet:
    """One or more relays behind one ng client; see the module rules."""

    def __init__(self, addresses: Sequence[Address], rng: random.Random, *, ng_timers: NgTimers | None = None,
                 timers: RelayTimers | None = None, window: NgWindow | None = None) -> None:
        if not addresses:
            raise ValueError("a relay set needs at least one relay")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"a relay is named twice in {list(addresses)}")
        self.client = NgClient(rng, ng_timers, window)
        self.timers = timers or RelayTimers()
        self.relays = {address: Relay(address) for address in addresses}
        self._calls: dict[str, Address] = {}
        self._health_cookies: dict[str, Address] = {}
        self._pinging: set[Address] = set()  # relays whose ping is still out: never two at once
        self._next_ping: float | None = None
        self._events: deque[NgEvent | RelayChanged | RelayLost] = deque()

    # --- calls -------------------------------------------------------------------------------------------------
    def relay_of(self, conn_id: str) -> Relay | None:
        address = self._calls.get(conn_id)
        return self.relays[address] if address is not None else None

    def assign(self, conn_id: str) -> Relay | None:
        """The call's relay: the one it already has, else the least loaded relay that is up; None if none is."""
        current = self.relay_of(conn_id)
        if current is not None:
            return current
        candidates = [relay for relay in self.relays.values() if relay.up]
        if not candidates:
            return None
        relay = min(candidates, key=lambda r: r.calls)  # min keeps the first of equals: configuration order
        relay.calls += 1
        self._calls[conn_id] = relay.address
        return relay

    def restore(self, conn_id: str, address: Address) -> bool:
        """The call is held by `address` already (another node of a cluster offered it there, docs/cluster.md):
        its commands go there from now on. False when `address` is not one of this set's relays."""
        relay = self.relays.get(address)
        if relay is None:
            return False
        if self._calls.get(conn_id) != address:
            self.release(conn_id)
            relay.calls += 1
            self._calls[conn_id] = address
        return True

    def release(self, conn_id: str) -> None:
        """The call is over (after its ``delete``): it no longer counts on its relay."""
        address = self._calls.pop(conn_id, None)
        if address is not None:
            self.relays[address].calls -= 1

    def calls_on(self, address: Address) -> list[str]:
        """The calls that `address` holds (a relay that went down: the calls it carried lost their media)."""
        return [conn_id for conn_id, relay in self._calls.items() if relay == address]

    @property
    def call_count(self) -> int:
        return len(self._calls)

    def request(self, relay: Address, message: dict[str, Any], now: float) -> str:
        return self.client.request(relay, message, now)

    def withdraw(self, cookie: str) -> bool:
        """`NgClient.withdraw`: a request still queued behind its relay's window is never sent."""
        return self.client.withdraw(cookie)

    # --- health ------------------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Ping every relay now, and from then on every ping interval."""
        self._ping_all(now)

    def _ping_all(self, now: float) -> None:
        for address in self.relays:
            if address not in self._pinging:
                self._pinging.add(address)
                # urgent: ahead of the calls' commands queued behind the window (NgClient), so that a busy relay
                # that answers is not taken for a lost one
                cookie = self.client.request(address, {"command": "ping"}, now, urgent=True)
                self._health_cookies[cookie] = address
        self._next_ping = now + self.timers.ping_interval

    def _on_health(self, event: NgEvent, address: Address, now: float) -> None:
        relay = self.relays[address]
        if isinstance(event, NgReply) and event.command == "statistics":
            if event.ok:
                relay.features, relay.interfaces = features_from_statistics(event.reply)
                self._check_restart(relay, uptime_from_statistics(event.reply))
            return
        if isinstance(event, NgTimedOut) and event.command == "statistics":
            return
        self._pinging.discard(address)
        pong = isinstance(event, NgReply) and event.reply.get("result") in (b"pong", "pong")
        if pong:
            relay.pings_failed = 0
            if relay.health is not Health.UP:
                relay.health = Health.UP
                self._events.append(RelayChanged(address, Health.UP))
            self._health_cookies[self.client.request(address, {"command": "statistics"}, now)] = address
        else:
            relay.pings_failed += 1
            if relay.pings_failed == 1:
                relay.lost_declared = False  # a new outage
            if relay.pings_failed == self.timers.pings_to_lose:
                self._declare_lost(relay)
            if relay.health is not Health.DOWN:
                relay.health = Health.DOWN
                self._events.append(RelayChanged(address, Health.DOWN))

    def _check_restart(self, relay: Relay, uptime: float | None) -> None:
        if uptime is None:
            return
        # One process's uptime never goes back; a new process's starts at 0. (Comparing start times computed on our
        # clock would take a reply that waited in a busy loop for a restart.)
        if relay.uptime is not None and uptime < relay.uptime:
            self._declare_lost(relay)  # it restarted since it last reported: it knows none of its calls
        relay.uptime = uptime
        relay.lost_declared = False  # the outage, if any, is over: it answers and we know where it stands

    def _declare_lost(self, relay: Relay) -> None:
        if not relay.lost_declared:
            relay.lost_declared = True
            self._events.append(RelayLost(relay.address))

    def mark_down(self, address: Address) -> None:
        """A command to this relay timed out: take it down at once (the next pong brings it back)."""
        relay = self.relays[address]
        if relay.health is not Health.DOWN:
            relay.health = Health.DOWN
            self._events.append(RelayChanged(address, Health.DOWN))

    # --- the sans-I/O facade -----------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.client.receive_datagram(data, addr, now)
        self._collect(now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.client.datagrams_to_send()

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self.client.get_timer(), self._next_ping) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.client.handle_timer(now)
        self._collect(now)
        if self._next_ping is not None and now >= self._next_ping:
            self._ping_all(now)

    def next_event(self) -> NgEvent | RelayChanged | RelayLost | None:
        return self._events.popleft() if self._events else None

    def _collect(self, now: float) -> None:
        while (event := self.client.next_event()) is not None:
            address = self._health_cookies.pop(event.cookie, None)
            if address is not None:
                self._on_health(event, address, now)
            else:
                if isinstance(event, NgTimedOut):
                    self.mark_down(event.relay)
                self._events.append(event)
