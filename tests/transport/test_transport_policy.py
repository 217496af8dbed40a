"""The destination policy: nothing leaves for a host outside the allowed networks, and no name is ever resolved."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from recording_core import RecordingCore

from callbridge.transport import DestinationPolicy, Runtime
from callbridge.transport.policy import BAD_PORT, NETWORK_NOT_ALLOWED, NOT_IP_LITERAL


class SpySocket(socket.socket):
    """A real UDP socket that records every sendto."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: Any, *args: Any) -> int:  # type: ignore[override]
        self.sent.append((bytes(data), args[-1]))
        return super().sendto(data, *args)


@pytest.mark.parametrize(("addr", "reason"), [
    (("127.0.0.1", 5060), None),
    (("127.5.6.7", 5060), None),
    (("::1", 5060), None),
    (("[::1]", 5060), None),
    (("::ffff:127.0.0.1", 5060), None),
    (("192.0.2.10", 5060), NETWORK_NOT_ALLOWED),
    (("10.0.0.1", 5060), NETWORK_NOT_ALLOWED),
    (("::ffff:10.0.0.1", 5060), NETWORK_NOT_ALLOWED),  # judged as the IPv4 address it reaches
    (("2001:db8::1", 5060), NETWORK_NOT_ALLOWED),
    (("example.com", 5060), NOT_IP_LITERAL),
    (("localhost", 5060), NOT_IP_LITERAL),
    (("127.0.0.1", 0), BAD_PORT),
    (("127.0.0.1", 70000), BAD_PORT),
])
def test_refusal_reasons(addr: tuple[str, int], reason: str | None) -> None:
    policy = DestinationPolicy(["127.0.0.0/8", "::1/128"])
    assert policy.refusal_reason(addr) == reason
    assert policy.allows(addr) is (reason is None)
    assert dict(policy.refused_total) == ({} if reason is None else {reason: 1})


def test_the_allow_list_is_configurable() -> None:
    policy = DestinationPolicy(["10.0.0.0/8"])
    assert policy.allows(("10.1.2.3", 5060))
    assert not policy.allows(("127.0.0.1", 5060))


async def test_a_datagram_to_a_host_outside_the_allowed_networks_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    core = RecordingCore(echo=False)
    runtime = Runtime(core, policy=DestinationPolicy(["127.0.0.0/8", "::1/128"]))
    spy = SpySocket()
    spy.bind(("127.0.0.1", 0))
    connects: list[object] = []
    loop = asyncio.get_running_loop()

    async def no_connect(*args: object) -> None:
        connects.append(args)
        raise AssertionError("a refused destination must not be connected to")

    monkeypatch.setattr(loop, "sock_connect", no_connect)
    try:
        await runtime.listen_udp(sock=spy)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed_peer:
            allowed_peer.bind(("127.0.0.1", 0))
            allowed = allowed_peer.getsockname()
            core.outbox += [
                (b"to documentation net", ("192.0.2.10", 5060), "udp"),
                (b"to private net", ("10.0.0.1", 5060), "udp"),
                (b"over tcp", ("10.0.0.1", 5060), "tcp"),
                (b"to loopback", allowed, "udp"),
            ]
            runtime.wake()
            await asyncio.sleep(0.05)
            allowed_peer.settimeout(1)
            assert allowed_peer.recvfrom(100)[0] == b"to loopback"
        assert spy.sent == [(b"to loopback", allowed)]  # no sendto for the refused ones
        assert connects == []
        assert runtime.policy.refused_total[NETWORK_NOT_ALLOWED] == 3
        metrics = runtime.metrics()
        assert metrics["policy_refused_network_not_allowed"] == 3
        assert metrics["policy_refused_total"] == 3
        assert metrics["datagrams_out"] == 1
        assert runtime.send(b"direct", ("192.0.2.10", 5060)) is False
        assert spy.sent == [(b"to loopback", allowed)]
        assert runtime.policy.refused_total[NETWORK_NOT_ALLOWED] == 4
    finally:
        await runtime.close()


async def test_a_host_name_is_refused_without_any_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"DNS lookup attempted: {args!r}")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    monkeypatch.setattr(loop, "getaddrinfo", no_dns)
    core = RecordingCore(echo=False)
    runtime = Runtime(core)
    spy = SpySocket()
    spy.bind(("127.0.0.1", 0))
    try:
        await runtime.listen_udp(sock=spy)
        core.outbox += [(b"udp", ("example.com", 5060), "udp"), (b"tcp", ("example.com", 5060), "tcp")]
        runtime.wake()
        await asyncio.sleep(0.05)
        assert spy.sent == []
        assert runtime.policy.refused_total[NOT_IP_LITERAL] == 2
        assert runtime.counters.datagrams_out == 0
        assert runtime.counters.tcp_connect_failures == 0
    finally:
        await runtime.close()


def test_refusals_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    policy = DestinationPolicy(["127.0.0.0/8"], log_interval=60)
    with caplog.at_level("WARNING", logger="callbridge.transport.policy"):
        for _ in range(100):
            policy.allows(("10.0.0.1", 5060))
        policy.allows(("example.com", 5060))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # one per reason within the interval
    assert "10.0.0.1" in messages[0] and NETWORK_NOT_ALLOWED in messages[0]
    assert NOT_IP_LITERAL in messages[1]
    assert policy.refused_total == {NETWORK_NOT_ALLOWED: 100, NOT_IP_LITERAL: 1}
