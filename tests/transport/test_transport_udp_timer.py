"""The runtime on real UDP sockets: input reaches the core, output leaves, drains coalesce, the one timer."""

from __future__ import annotations

import asyncio
import socket

import pytest
from recording_core import RecordingCore

from callbridge.transport import Runtime


def udp_client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), timeout)
    return data, (addr[0], addr[1])


async def test_udp_datagram_reaches_core_and_echo_comes_back(runtime: Runtime, core: RecordingCore) -> None:
    host, port = await runtime.listen_udp("127.0.0.1", 0)
    with udp_client() as client:
        client.sendto(b"hello", (host, port))
        data, src = await recv(client)
        assert data == b"echo:hello"
        assert src == (host, port)
        got = core.received[0]
        assert (got.data, got.addr, got.transport) == (b"hello", client.getsockname(), "udp")
    loop = asyncio.get_running_loop()
    assert 0 <= loop.time() - got.now < 2.0  # `now` is the loop's clock
    metrics = runtime.metrics()
    assert metrics["datagrams_in"] == 1 and metrics["datagrams_out"] == 1
    assert metrics["bytes_in"] == 5 and metrics["bytes_out"] == 10
    assert metrics["policy_refused_total"] == 0


async def test_udp_socket_has_large_buffers(runtime: Runtime) -> None:
    await runtime.listen_udp("127.0.0.1", 0)
    sock = runtime._udp[0].sock
    # Linux reports twice the size asked for; the default is about 200 KiB.
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 4 * 1024 * 1024
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 4 * 1024 * 1024


async def test_a_burst_of_datagrams_is_drained_once(runtime: Runtime, core: RecordingCore) -> None:
    host, port = await runtime.listen_udp("127.0.0.1", 0)
    core.echo = False
    with udp_client() as client:
        for i in range(50):  # all queued in the kernel before the loop runs again
            client.sendto(b"d%d" % i, (host, port))
        await core.wait_for(50)
    await asyncio.sleep(0.05)
    assert [r.data for r in core.received] == [b"d%d" % i for i in range(50)]
    assert core.drains == 1
    assert runtime.counters.flushes == 1


async def test_events_go_to_the_consumer_and_its_reaction_is_sent_in_the_same_drain() -> None:
    core = RecordingCore(echo=False)
    seen: list[object] = []
    rt: Runtime

    def consumer(event: object) -> None:
        seen.append(event)
        # React like a phone answering: the core now has something to send.
        core.outbox.append((b"reaction", core.received[-1].addr, "udp"))

    rt = Runtime(core, on_event=consumer)
    try:
        host, port = await rt.listen_udp("127.0.0.1", 0)
        with udp_client() as client:
            client.sendto(b"ring", (host, port))
            data, _ = await recv(client)
        assert data == b"reaction"
        assert seen == [("received", b"ring")]
        assert rt.counters.flushes == 1
    finally:
        await rt.close()


async def test_events_queue_without_a_consumer() -> None:
    core = RecordingCore(echo=False)
    rt = Runtime(core)
    try:
        host, port = await rt.listen_udp("127.0.0.1", 0)
        with udp_client() as client:
            client.sendto(b"one", (host, port))
            client.sendto(b"two", (host, port))
            assert await asyncio.wait_for(rt.next_event(), 2) == ("received", b"one")
            assert await asyncio.wait_for(rt.next_event(), 2) == ("received", b"two")
    finally:
        await rt.close()


async def test_a_failing_core_is_counted_and_the_runtime_keeps_going(runtime: Runtime,
                                                                     core: RecordingCore) -> None:
    host, port = await runtime.listen_udp("127.0.0.1", 0)
    original = core.receive_datagram

    def explode_once(data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        if data == b"bad":
            raise ValueError("core bug")
        original(data, addr, now, transport)

    core.receive_datagram = explode_once  # type: ignore[method-assign]
    with udp_client() as client:
        client.sendto(b"bad", (host, port))
        client.sendto(b"good", (host, port))
        data, _ = await recv(client)
    assert data == b"echo:good"
    assert runtime.counters.core_errors == 1


@pytest.mark.serial  # a 0.3 s deadline must not pass before the first check: a busy core delays the check
async def test_the_timer_is_armed_at_get_timer_and_fires_at_its_deadline(runtime: Runtime,
                                                                         core: RecordingCore) -> None:
    loop = asyncio.get_running_loop()
    host, port = await runtime.listen_udp("127.0.0.1", 0)
    fired = asyncio.Event()
    second_deadline: list[float] = []

    def rearm(now: float) -> None:
        if not second_deadline:
            second_deadline.append(now + 0.1)
            core.deadline = second_deadline[0]
        else:
            fired.set()

    core.on_timer = rearm
    core.deadline = loop.time() + 0.3
    first = core.deadline
    with udp_client() as client:
        client.sendto(b"arm", (host, port))  # any input makes the runtime drain, then arm get_timer()
        await core.wait_for(1)
    await asyncio.sleep(0.02)
    assert runtime.timer_deadline == first
    # Moving the deadline earlier and waking re-arms the single timer there (the old handle is cancelled).
    core.deadline = first - 0.1
    first = core.deadline
    runtime.wake()
    await asyncio.sleep(0)
    assert runtime.timer_deadline == first
    await asyncio.wait_for(fired.wait(), 2)
    assert len(core.timer_calls) == 2
    assert core.timer_calls[0] >= first and core.timer_calls[0] - first < 0.05
    assert core.timer_calls[1] >= second_deadline[0] and core.timer_calls[1] - second_deadline[0] < 0.05
    assert runtime.counters.timer_fires == 2
    assert runtime.timer_deadline is None  # the core asked for nothing more


async def test_output_of_a_timer_is_sent(runtime: Runtime, core: RecordingCore) -> None:
    loop = asyncio.get_running_loop()
    await runtime.listen_udp("127.0.0.1", 0)
    with udp_client() as client:
        dest = client.getsockname()
        core.on_timer = lambda now: core.outbox.append((b"retransmission", dest, "udp"))
        core.deadline = loop.time() + 0.05
        runtime.wake()
        data, _ = await recv(client)
    assert data == b"retransmission"


@pytest.mark.parametrize("family_host", ["::1"])
async def test_udp_over_ipv6_loopback(runtime: Runtime, core: RecordingCore, family_host: str) -> None:
    host, port = await runtime.listen_udp(family_host, 0)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
        client.bind(("::1", 0))
        client.setblocking(False)
        client.sendto(b"v6", (host, port))
        data, _ = await recv(client)
        assert data == b"echo:v6"
        assert core.received[0].addr == ("::1", client.getsockname()[1])
