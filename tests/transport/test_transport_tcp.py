"""The runtime on real TCP connections: framing by Content-Length, broken streams closed alone, connects, reaping."""

from __future__ import annotations

import asyncio
import random

from recording_core import RecordingCore, sip_request

from callbridge.sip import parse
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.timers import TimerConfig
from callbridge.transport import DestinationPolicy, Runtime


async def connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(addr[0], addr[1])


async def read_echo(reader: asyncio.StreamReader, expected: bytes) -> bytes:
    return await asyncio.wait_for(reader.readexactly(len(b"echo:" + expected)), 2)


async def test_a_message_split_across_chunks_is_framed_once(runtime: Runtime, core: RecordingCore) -> None:
    addr = await runtime.listen_tcp("127.0.0.1", 0)
    message = sip_request("split-1", body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
    reader, writer = await connect(addr)
    try:
        for chunk in (message[:10], message[10:90], message[90:-5], message[-5:]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)  # each chunk arrives on its own
        assert await read_echo(reader, message) == b"echo:" + message
        assert len(core.received) == 1
        got = core.received[0]
        assert got.data == message and got.transport == "tcp"
        assert got.addr == writer.get_extra_info("sockname")[:2]
        assert parse(got.data).body == b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_two_messages_in_one_chunk_are_two_messages(runtime: Runtime, core: RecordingCore) -> None:
    addr = await runtime.listen_tcp("127.0.0.1", 0)
    first, second = sip_request("pair-1", body=b"abc"), sip_request("pair-2")
    reader, writer = await connect(addr)
    try:
        writer.write(b"\r\n\r\n" + first + second)  # with a keep-alive in front (RFC 5626 §3.5.1)
        await writer.drain()
        await core.wait_for(2)
        assert [r.data for r in core.received] == [first, second]
        # Both echoes come back over the same connection, in order.
        assert await read_echo(reader, first) == b"echo:" + first
        assert await read_echo(reader, second) == b"echo:" + second
        assert runtime.counters.datagrams_in == 2
    finally:
        writer.close()
        await writer.wait_closed()


async def test_broken_framing_closes_that_connection_only(runtime: Runtime, core: RecordingCore) -> None:
    addr = await runtime.listen_tcp("127.0.0.1", 0)
    bad_reader, bad_writer = await connect(addr)
    good_reader, good_writer = await connect(addr)
    try:
        broken = sip_request("broken").replace(b"Content-Length: 0", b"Content-Length: many")
        bad_writer.write(broken)
        await bad_writer.drain()
        assert await asyncio.wait_for(bad_reader.read(), 2) == b""  # closed by the runtime, nothing answered
        message = sip_request("still-flowing")
        good_writer.write(message)
        await good_writer.drain()
        assert await read_echo(good_reader, message) == b"echo:" + message
        assert [r.data for r in core.received] == [message]
        assert runtime.counters.stream_framing_errors == 1
        assert runtime.metrics()["tcp_open_connections"] == 1
    finally:
        for w in (bad_writer, good_writer):
            w.close()
        await asyncio.gather(bad_writer.wait_closed(), good_writer.wait_closed(), return_exceptions=True)


async def test_an_invalid_but_framed_message_reaches_the_core_and_the_stream_goes_on(runtime: Runtime,
                                                                                    core: RecordingCore) -> None:
    # The core answers it as it answers an unparsable datagram (tested with the real endpoint below); its
    # answer goes back on the connection, before the answer to the next message.
    addr = await runtime.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    try:
        invalid = sip_request("invalid").replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        after = sip_request("after")
        writer.write(invalid + after)
        await writer.drain()
        assert await read_echo(reader, invalid) == b"echo:" + invalid
        assert await read_echo(reader, after) == b"echo:" + after
        assert [(r.data, r.transport) for r in core.received] == [(invalid, "tcp"), (after, "tcp")]
        assert runtime.counters.stream_parse_errors == 1
        assert runtime.counters.stream_framing_errors == 0
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_endpoint_answers_a_framed_invalid_request_on_the_connection() -> None:
    # RFC 4475 §3.1.2.16 (SIP/7.0: 505) and §3.1.2.4 (CSeq beyond 2**32-1: 400), over a stream.
    endpoint = Endpoint("127.0.0.1", 5060, TimerConfig(), random.Random(1))
    rt = Runtime(endpoint, policy=DestinationPolicy(["127.0.0.0/8"]), on_event=lambda event: None)
    try:
        addr = await rt.listen_tcp("127.0.0.1", 0)
        reader, writer = await connect(addr)
        request = sip_request("v7")
        bad_version = request.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
        big_cseq = sip_request("big").replace(b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS")
        writer.write(bad_version + big_cseq)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert first.startswith(b"SIP/2.0 505 ") and b"Call-ID: v7" in first
        assert second.startswith(b"SIP/2.0 400 ") and b"Call-ID: big" in second
        assert rt.counters.stream_parse_errors == 2 and rt.counters.tcp_connected == 0
        writer.close()
        await writer.wait_closed()
    finally:
        await rt.close()


async def test_broken_framing_closes_only_after_the_answers_to_what_came_before(runtime: Runtime,
                                                                               core: RecordingCore) -> None:
    # RFC 4475 §3.1.1.8 on a stream: a REGISTER, then octets that cannot be framed, in one chunk. The REGISTER's
    # answer is written on the connection, then it closes; nothing after the break reaches the core, and a
    # late answer to that peer does not open a connection to its (ephemeral) port.
    addr = await runtime.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    try:
        first = sip_request("before-break")
        writer.write(first + b"C\r\n\r\n" + sip_request("after-break"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b"echo:" + first  # then end of stream
        assert [r.data for r in core.received] == [first]
        assert runtime.counters.stream_framing_errors == 1
        peer = writer.get_extra_info("sockname")[:2]
        for _ in range(100):
            if peer not in runtime.tcp_connections:
                break
            await asyncio.sleep(0.01)
        core.outbox.append((b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer, "tcp"))
        core.outbox.append((sip_request("a-request"), peer, "tcp"))  # a request still may connect
        runtime.wake()
        for _ in range(200):
            if runtime.counters.tcp_connect_failures + runtime.counters.tcp_connected:
                break
            await asyncio.sleep(0.01)
        assert runtime.counters.tcp_closed_peer_drops == 1
        assert runtime.counters.tcp_connect_failures + runtime.counters.tcp_connected == 1
    finally:
        writer.close()
        await writer.wait_closed()


async def test_sending_to_an_address_without_a_connection_opens_one_and_queues() -> None:
    received: list[bytes] = []
    done = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(received) < 2:
            head = await reader.readuntil(b"\r\n\r\n")
            received.append(head)
        done.set()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    core = RecordingCore(echo=False)
    rt = Runtime(core, policy=DestinationPolicy(["127.0.0.0/8"]))
    try:
        first, second = sip_request("out-1"), sip_request("out-2")
        core.outbox += [(first, ("127.0.0.1", port), "tcp"), (second, ("127.0.0.1", port), "tcp")]
        rt.wake()
        await asyncio.wait_for(done.wait(), 2)
        assert received == [first, second]
        assert rt.counters.tcp_connected == 1  # one connection carried both
        assert rt.counters.datagrams_out == 2
    finally:
        await rt.close()
        server.close()
        await server.wait_closed()


async def test_a_failed_connect_drops_and_counts() -> None:
    # A port with nothing listening: the connect is refused.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    core = RecordingCore(echo=False)
    rt = Runtime(core)
    try:
        core.outbox.append((sip_request("nobody"), ("127.0.0.1", port), "tcp"))
        rt.wake()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if rt.counters.tcp_connect_failures:
                break
        assert rt.counters.tcp_connect_failures == 1
        assert rt.counters.send_errors == 1
    finally:
        await rt.close()


async def test_idle_connections_are_reaped() -> None:
    core = RecordingCore()
    rt = Runtime(core, idle_timeout=0.2)
    try:
        addr = await rt.listen_tcp("127.0.0.1", 0)
        reader, writer = await connect(addr)
        message = sip_request("idle")
        writer.write(message)
        await writer.drain()
        await read_echo(reader, message)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the runtime closed it
        assert 0.1 <= loop.time() - start < 1.0
        assert rt.counters.tcp_reaped_idle == 1
        writer.close()
        await writer.wait_closed()
    finally:
        await rt.close()
