"""Regression: with `sip_port=0` the kernel picks a UDP port without looking at TCP, and a port held by a TCP
socket made `listen_tcp` fail at start-up (then the clean-up raised "Invalid file descriptor: -1" as well)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from callbridge import bootstrap
from callbridge.transport import bind_udp


def test_a_free_port_is_free_for_tcp_too(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    clash = bind_udp("127.0.0.1", port)  # UDP is free on that port, TCP is not
    handed: list[socket.socket] = []

    def first_the_clash(host: str, wanted: int, **kwargs: Any) -> socket.socket:
        sock = clash if not handed else bind_udp(host, wanted, **kwargs)
        handed.append(sock)
        return sock

    monkeypatch.setattr(bootstrap, "bind_udp", first_the_clash)
    try:
        sock = bootstrap._bind_sip_udp("127.0.0.1", 0, tcp_too=True)
        chosen = sock.getsockname()[1]
        assert chosen != port and len(handed) == 2
        assert clash.fileno() == -1  # the clashing socket was given back
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", chosen))
        sock.close()
        fixed = bootstrap._bind_sip_udp("127.0.0.1", 0, tcp_too=False)  # UDP only: whatever the kernel gives
        fixed.close()
    finally:
        taken.close()
