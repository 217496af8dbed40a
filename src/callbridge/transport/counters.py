"""What the transport counts, for ``/metrics``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TransportCounters:
    datagrams_in: int = 0          # UDP datagrams and framed TCP messages handed to the core
    datagrams_out: int = 0         # UDP datagrams sent and TCP messages written
    bytes_in: int = 0
    bytes_out: int = 0
    stream_framing_errors: int = 0  # TCP streams closed because their framing broke
    stream_parse_errors: int = 0   # framed TCP messages that were invalid (handed to the core's error path)
    send_errors: int = 0           # the kernel refused a send (other than "try again")
    send_queue_drops: int = 0      # a datagram dropped because the socket's send queue was full
    core_errors: int = 0           # the core raised while handling input (logged; the runtime keeps going)
    event_consumer_errors: int = 0
    timer_fires: int = 0
    flushes: int = 0
    tcp_accepted: int = 0
    tcp_connected: int = 0
    tcp_connect_failures: int = 0
    tcp_closed: int = 0
    tcp_reaped_idle: int = 0
    tcp_closed_peer_drops: int = 0  # responses not sent: the peer's accepted connection had closed (tcp.py)
    ws_accepted: int = 0           # SIP WebSocket connections accepted (websocket.py)
    ws_connected: int = 0          # SIP WebSocket connections we opened (a phone of ours as a client)
    ws_connect_failures: int = 0
    ws_closed: int = 0
    ws_protocol_closes: int = 0    # closed on a WebSocket protocol error (a broken or oversized frame)
    ws_no_connection_drops: int = 0  # messages for a WebSocket peer whose connection is gone

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
