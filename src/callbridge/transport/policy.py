"""The destination policy: where callbridge is allowed to send SIP.

Every datagram and every stream write the runtime makes asks this policy first (docs/design.md, "What the server
sends, and where"). A registered Contact, a Via or a Refer-To that names a host outside the allowed networks gets
nothing sent to it; the refusal is logged (rate-limited, so that a flood of refusals does not flood the log) and
counted per reason.

Rules:
- Only IP literals are ever allowed. A host name is refused without resolving it: callbridge never asks DNS.
- An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged as the IPv4 address it reaches.
- A port outside 1..65535 is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)

LOOPBACK_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

# Refusal reasons, as counted in ``refused_total``.
NOT_IP_LITERAL = "not_ip_literal"
NETWORK_NOT_ALLOWED = "network_not_allowed"
BAD_PORT = "bad_port"

HOST_CACHE_SIZE = 4096

Address = tuple[str, int] | tuple[str, int, int, int]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip_literal(host: str) -> IpAddress | None:
    """The IP address ``host`` spells, or None when it is not an IP literal (never resolved)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class DestinationPolicy:
    """An allow-list of networks that outgoing SIP may reach."""

    def __init__(self, allowed_networks: Iterable[str] = LOOPBACK_NETWORKS, *,
                 log_interval: float = 10.0) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self.refused_total: Counter[str] = Counter()
        self._log_interval = log_interval
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        # Verdicts by host string: parsing an address costs more than the send itself under load.
        self._host_cache: dict[str, str | None] = {}

    def refusal_reason(self, addr: Address | str) -> str | None:
        """Why ``addr`` (a host or a ``(host, port, ...)`` tuple) may not be reached, or None when it may.

        Pure: counts and logs nothing (``allows`` does)."""
        if isinstance(addr, str):
            host, port = addr, None
        else:
            host, port = addr[0], addr[1]
        if port is not None and not 0 < port < 65536:
            return BAD_PORT
        cache = self._host_cache
        try:
            return cache[host]
        except KeyError:
            pass
        ip = parse_ip_literal(host)
        if ip is None:
            reason: str | None = NOT_IP_LITERAL
        elif not any(ip in net for net in self.networks):
            reason = NETWORK_NOT_ALLOWED
        else:
            reason = None
        if len(cache) >= HOST_CACHE_SIZE:
            cache.clear()
        cache[host] = reason
        return reason

    def allows(self, addr: Address | str) -> bool:
        """True when ``addr`` may be sent to; a refusal is counted and logged (rate-limited)."""
        reason = self.refusal_reason(addr)
        if reason is None:
            return True
        self.refused_total[reason] += 1
        self._log_refusal(reason, addr)
        return False

    def _log_refusal(self, reason: str, addr: Address | str) -> None:
        now = time.monotonic()
        last = self._last_log.get(reason)
        if last is not None and now - last < self._log_interval:
            self._suppressed[reason] += 1
            return
        self._last_log[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        log.warning("destination policy refused %r (%s); %d more refusals for this reason not logged",
                    addr, reason, suppressed)
