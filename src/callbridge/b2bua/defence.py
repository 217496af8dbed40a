"""Defences in front of the SIP core, as Kamailio's usual configuration has them (pike, a ban table, a UA filter).

Rules:
- Scanner filter: a request whose User-Agent contains the name of a known scanner (case-insensitive substring:
  SIPVicious' `friendly-scanner`, `sipcli`, `VaxSIPUserAgent`, SIPPTS' `pplsip`, ...) is dropped without an answer,
  so the scanner learns nothing, and counted. It can be switched off; the digest defence holds without it.
  Legitimate test tools (SIPp, sipsak) are not on the list.
- Ban: per source IP, two sliding windows count (a) every request (flood: more than `request_limit` in
  `request_window`, Kamailio's pike) and (b) failures (more than `failure_limit` in `failure_window`: wrong
  credentials, 403/404, unparseable datagrams; `counts_as_failure` says which outcomes count). Past either limit
  the source is banned for `ban_seconds`: `allow` says no to every datagram from it, before parsing.
- Exempt: trunk addresses and the configured networks are never counted nor banned.
- Memory is bounded: per-source counters live in an LRU table of at most `max_sources` entries (an evicted
  source starts again from zero, which only ever errs toward letting it through); bans are at most `max_sources`,
  oldest dropped first, and disappear when they end.

Theory of operation: `allow(ip, now)` is on the hot path of every datagram and costs one dict lookup when the
source is not banned. A window is the "sliding window counter" approximation: the count of the current fixed
window plus the previous window's count weighted by how much of it still overlaps the sliding one; two numbers per
window instead of one timestamp per request. All times are the caller's `now`; nothing here reads a clock.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "SCANNER_USER_AGENTS",
    "Defence",
    "DefenceConfig",
    "counts_as_failure",
]

SCANNER_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",  # SIPVicious svmap/svwar/svcrack default
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",  # SIPPTS
    "sipptk",  # older SIPPTS
)


@dataclass(frozen=True, slots=True)
class DefenceConfig:
    scanner_filter: bool = True
    scanner_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    failure_limit: int = 30
    failure_window: float = 10.0
    request_limit: int = 500
    request_window: float = 1.0
    ban_seconds: float = 300.0
    exempt_networks: tuple[str, ...] = ()  # CIDR networks or single addresses
    max_sources: int = 100_000

    def __post_init__(self) -> None:
        if min(self.failure_limit, self.request_limit, self.max_sources) < 1:
            raise ValueError("limits and max_sources must be at least 1")
        if min(self.failure_window, self.request_window, self.ban_seconds) <= 0:
            raise ValueError("windows and ban_seconds must be positive")


def counts_as_failure(status: int | None, *, carried_credentials: bool = False) -> bool:
    """Whether the outcome of a request counts toward the failure ban.

    `status` None means the datagram could not be parsed. A 401/407 counts only when the request carried
    credentials (wrong password, unknown user): the challenge itself is the first step of every phone's REGISTER
    and INVITE, it tells a scanner nothing (unknown and known users get the same one), and counting it would ban
    an office of phones behind one NAT address after a power cut.
    """
    if status is None or status in (400, 403, 404, 484):
        return True
    if status in (401, 407):
        return carried_credentials
    return False


@dataclass(slots=True)
class _Window:
    """A sliding-window counter: counts of the current and the previous fixed window."""

    start: float = float("-inf")
    current: int = 0
    previous: int = 0

    def add(self, now: float, length: float) -> float:
        """Count one event at `now`; the estimated number of events in the last `length` seconds."""
        elapsed = now - self.start
        if elapsed >= length:
            self.previous = self.current if elapsed < 2 * length else 0
            self.current = 0
            self.start = now - (elapsed % length) if elapsed < 2 * length else now
            elapsed = now - self.start
        self.current += 1
        return self.current + self.previous * (1.0 - elapsed / length)


@dataclass(slots=True)
class _Source:
    exempt: bool
    requests: _Window = field(default_factory=_Window)
    failures: _Window = field(default_factory=_Window)


class Defence:
    """The ban table, the counters behind it and the scanner filter (see the module rules)."""

    def __init__(self, config: DefenceConfig | None = None, *, trunk_addresses: Iterable[str] = ()) -> None:
        self.config = DefenceConfig() if config is None else config
        self.scanner_filter = self.config.scanner_filter
        self._scanners = tuple(name.lower() for name in self.config.scanner_user_agents)
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._trunks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._set_networks(self.config.exempt_networks, trunk_addresses)
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._banned: dict[str, float] = {}  # ip -> ban end; insertion order is end order (one ban length)
        self.dropped_scanner = 0
        self.dropped_banned = 0
        self.bans_total = 0

    # -- the hot path ------------------------------------------------------------------------------------------
    def allow(self, source_ip: str, now: float) -> bool:
        """False when `source_ip` is banned at `now` (the datagram is dropped unread, and counted)."""
        until = self._banned.get(source_ip)
        if until is None:
            return True
        if now < until:
            self.dropped_banned += 1
            return False
        del self._banned[source_ip]
        return True

    def record_request(self, source_ip: str, now: float) -> bool:
        """Count one request (every datagram let through); False when it pushed the source past the flood limit."""
        source = self._source(source_ip)
        if source.exempt:
            return True
        config = self.config
        if source.requests.add(now, config.request_window) > config.request_limit:
            self._ban(source_ip, now)
            return False
        return True

    def record_failure(self, source_ip: str, now: float) -> bool:
        """Count one failure; False when it pushed the source past the failure limit (the source is now banned)."""
        source = self._source(source_ip)
        if source.exempt:
            return True
        config = self.config
        if source.failures.add(now, config.failure_window) > config.failure_limit:
            self._ban(source_ip, now)
            return False
        return True

    def is_scanner(self, user_agent: str | None) -> bool:
        """True when the filter is on and `user_agent` names a known scanner."""
        if not self.scanner_filter or not user_agent:
            return False
        lowered = user_agent.lower()
        return any(name in lowered for name in self._scanners)

    def drop_scanner(self, user_agent: str | None) -> bool:
        """`is_scanner`, counting the drop: call it on each request with its User-Agent, drop when True."""
        if self.is_scanner(user_agent):
            self.dropped_scanner += 1
            return True
        return False

    # -- administration ----------------------------------------------------------------------------------------
    def is_exempt(self, source_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in (*self._networks, *self._trunks))

    def set_trunk_addresses(self, addresses: Iterable[str]) -> None:
        """Replace the trunk addresses (or networks) exempt from counting and bans, e.g. after a directory reload."""
        self._set_networks(self.config.exempt_networks, addresses)
        self._sources.clear()  # cached exemption flags are stale; counts restart from zero
        for ip in [ip for ip in self._banned if self.is_exempt(ip)]:
            del self._banned[ip]

    def unban(self, source_ip: str) -> bool:
        return self._banned.pop(source_ip, None) is not None

    def banned_now(self, now: float) -> int:
        self._prune_bans(now)
        return len(self._banned)

    def is_banned(self, source_ip: str, now: float) -> bool:
        until = self._banned.get(source_ip)
        return until is not None and now < until

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    def metrics(self, now: float) -> dict[str, int]:
        """The counters for /metrics."""
        return {"dropped_scanner": self.dropped_scanner, "dropped_banned": self.dropped_banned,
                "bans_total": self.bans_total, "banned_now": self.banned_now(now)}

    # -- internals ---------------------------------------------------------------------------------------------
    def _set_networks(self, networks: Iterable[str], trunks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._trunks = [ipaddress.ip_network(n, strict=False) for n in trunks]

    def _source(self, source_ip: str) -> _Source:
        sources = self._sources
        source = sources.get(source_ip)
        if source is None:
            source = sources[source_ip] = _Source(self.is_exempt(source_ip))
            if len(sources) > self.config.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(source_ip)
        return source

    def _ban(self, source_ip: str, now: float) -> None:
        self._prune_bans(now)
        self._banned.pop(source_ip, None)
        self._banned[source_ip] = now + self.config.ban_seconds
        self.bans_total += 1
        self._sources.pop(source_ip, None)  # after the ban it starts from zero
        while len(self._banned) > self.config.max_sources:
            del self._banned[next(iter(self._banned))]

    def _prune_bans(self, now: float) -> None:
        banned = self._banned
        while banned:
            ip, until = next(iter(banned.items()))
            if until > now:
                break
            del banned[ip]
