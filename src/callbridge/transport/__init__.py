"""callbridge.transport: the only code that touches sockets.

``Runtime`` drives a sans-I/O SIP core (the aioquic-shaped facade) on asyncio UDP and TCP sockets and SIP
WebSocket connections (RFC 7118); every byte it
sends passes the ``DestinationPolicy`` first.
"""

from callbridge.transport.collector import tune_collector
from callbridge.transport.counters import TransportCounters
from callbridge.transport.policy import LOOPBACK_NETWORKS, DestinationPolicy, parse_ip_literal
from callbridge.transport.runtime import TCP, UDP, WS, WSS, Runtime, SipCore
from callbridge.transport.udp import bind_udp

__all__ = [
    "LOOPBACK_NETWORKS",
    "TCP",
    "UDP",
    "WS",
    "WSS",
    "DestinationPolicy",
    "Runtime",
    "SipCore",
    "TransportCounters",
    "bind_udp",
    "parse_ip_literal",
    "tune_collector",
]
