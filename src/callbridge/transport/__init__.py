"""callbridge.transport: the only code that touches sockets.

``Runtime`` drives a sans-I/O SIP core (the aioquic-shaped facade) on asyncio UDP and TCP sockets; every byte it
sends passes the ``DestinationPolicy`` first.
"""

from callbridge.transport.collector import tune_collector
from callbridge.transport.counters import TransportCounters
from callbridge.transport.policy import LOOPBACK_NETWORKS, DestinationPolicy, parse_ip_literal
from callbridge.transport.runtime import TCP, UDP, Runtime, SipCore
from callbridge.transport.udp import bind_udp

__all__ = [
    "LOOPBACK_NETWORKS",
    "TCP",
    "UDP",
    "DestinationPolicy",
    "Runtime",
    "SipCore",
    "TransportCounters",
    "bind_udp",
    "parse_ip_literal",
    "tune_collector",
]
