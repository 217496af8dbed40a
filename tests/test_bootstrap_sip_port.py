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
        # The clash was refused and given back; the kernel's next pick may clash too with some other TCP socket
        # of this busy machine (each such one is given back as well), so more than one retry is allowed.
        assert handed[0] is clash and chosen != port and handed[-1] is sock
        assert all(s.fileno() == -1 for s in handed[:-1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", chosen))
        fixed = bootstrap._bind_sip_udp("127.0.0.1", 0, tcp_too=False)  # UDP only: whatever the kernel gives
        fixed.close()
    finally:
        for s in handed:
            s.close()
        taken.close()
