"""SIP over WebSocket in the transport (RFC 7118): the handshake's subprotocol, one SIP message per frame (text and
binary), replies over the same connection, a closed connection reported to the core, oversized frames closing that
connection only, and what cannot be sent counted. A real `websockets` client on loopback talks to the runtime."""

from __future__ import annotations

import asyncio

import pytest
from recording_core import RecordingCore
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callbridge.transport import Runtime
from callbridge.transport.websocket import MAX_MESSAGE_BYTES

OPTIONS = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS abc.invalid;branch=z9hG4bKws1\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:a@abc.invalid>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ws1\r\n"
           b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


class ClosingCore(RecordingCore):
    """The recording core, plus the close reports the runtime gives a core that has `connection_closed`."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[tuple[tuple[str, int], str]] = []

    def connection_closed(self, addr: tuple[str, int], transport: str, now: float) -> None:
        self.closed.append((addr, transport))


async def _until(predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_handshake_without_the_sip_subprotocol_is_refused(runtime: Runtime, core: RecordingCore) -> None:
    host, port = await runtime.listen_ws("127.0.0.1", 0)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{host}:{port}/"):
            pass
    assert refused.value.response.status_code == 400
    assert b"'sip' (RFC 7118) is required" in refused.value.response.body
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://{host}:{port}/", subprotocols=["chat"]):  # type: ignore[list-item]
            pass
    assert core.received == [] and runtime.ws_connections == {}


async def test_text_and_binary_frames_reach_the_core_and_the_reply_comes_back_on_the_connection(
        runtime: Runtime, core: RecordingCore) -> None:
    host, port = await runtime.listen_ws("127.0.0.1", 0)
    async with connect(f"ws://{host}:{port}/", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "sip"
        await ws.send(OPTIONS.decode())
        reply = await asyncio.wait_for(ws.recv(), 3)
        assert reply == "echo:" + OPTIONS.decode()  # a text frame: what callbridge writes is UTF-8
        await ws.send(OPTIONS)
        assert await asyncio.wait_for(ws.recv(), 3) == "echo:" + OPTIONS.decode()
        local = ws.local_address[:2]
        assert [(r.data, r.addr, r.transport) for r in core.received] == [(OPTIONS, local, "ws")] * 2
        assert list(runtime.ws_connections) == [local]
        # Bytes that are not UTF-8 go out as a binary frame.
        assert runtime.send(b"\xff\xfe", local, "ws")
        assert await asyncio.wait_for(ws.recv(), 3) == b"\xff\xfe"


async def test_a_closed_connection_is_reported_to_the_core_and_forgotten() -> None:
    core = ClosingCore()
    from callbridge.transport import DestinationPolicy
    runtime = Runtime(core, policy=DestinationPolicy(["127.0.0.0/8"]), on_event=lambda event: None)
    try:
        host, port = await runtime.listen_ws("127.0.0.1", 0)
        async with connect(f"ws://{host}:{port}/", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(OPTIONS)
            await asyncio.wait_for(ws.recv(), 3)
            local = ws.local_address[:2]
        await _until(lambda: core.closed == [(local, "ws")])
        assert runtime.ws_connections == {}
        # A response for it now has nowhere to go: dropped and counted, nothing connects out to a client's port.
        assert not runtime.send(b"SIP/2.0 200 OK\r\n\r\n", local, "ws")
        assert runtime.counters.ws_no_connection_drops == 1 and runtime.counters.ws_connected == 0
    finally:
        await runtime.close()


async def test_an_oversized_frame_closes_that_connection_only(runtime: Runtime, core: RecordingCore) -> None:
    host, port = await runtime.listen_ws("127.0.0.1", 0)
    async with connect(f"ws://{host}:{port}/", subprotocols=["sip"]) as good, \
            connect(f"ws://{host}:{port}/", subprotocols=["sip"], max_size=None) as bad:  # type: ignore[list-item]
        await bad.send(b"x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(bad.recv(), 3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        await good.send(OPTIONS)
        assert await asyncio.wait_for(good.recv(), 3) == "echo:" + OPTIONS.decode()
    assert [r.data for r in core.received] == [OPTIONS]
    assert runtime.counters.ws_protocol_closes == 1


async def test_the_destination_policy_applies_to_websocket_peers(runtime: Runtime) -> None:
    await runtime.listen_ws("127.0.0.1", 0)
    assert not runtime.send(OPTIONS, ("192.0.2.10", 5066), "ws")
    assert runtime.metrics()["policy_refused_total"] == 1
    assert runtime.counters.ws_connected == 0 and runtime.counters.ws_connect_failures == 0


async def test_a_client_runtime_connects_out_and_both_sides_talk() -> None:
    """Our own phone is a WebSocket client: a request for a server's address opens the connection."""
    from callbridge.transport import DestinationPolicy
    server_core, client_core = RecordingCore(), RecordingCore(echo=False)
    server = Runtime(server_core, policy=DestinationPolicy(["127.0.0.0/8"]), on_event=lambda event: None)
    client = Runtime(client_core, policy=DestinationPolicy(["127.0.0.0/8"]), on_event=lambda event: None)
    try:
        address = await server.listen_ws("127.0.0.1", 0)
        assert client.send(OPTIONS, address, "ws")
        assert client.send(OPTIONS, address, "ws")  # queued behind the connect, sent in order
        await _until(lambda: len(client_core.received) == 2)
        assert [r.data for r in client_core.received] == [b"echo:" + OPTIONS] * 2
        assert all(r.addr == address and r.transport == "ws" for r in client_core.received)
        assert client.counters.ws_connected == 1 and server.counters.ws_accepted == 1
    finally:
        await client.close()
        await server.close()


async def test_wss_terminates_tls_and_names_the_transport_wss(runtime: Runtime, core: RecordingCore,
                                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import ssl
    import subprocess

    from callbridge.config import tls_context

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (scripts/setup --test installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    host, port = await runtime.listen_ws("127.0.0.1", 0, ssl_context=tls_context(str(cert), str(key)))
    client_tls = ssl.create_default_context(cafile=str(cert))
    async with connect(f"wss://{host}:{port}/", subprotocols=["sip"], ssl=client_tls) as ws:  # type: ignore[list-item]
        await ws.send(OPTIONS)
        assert await asyncio.wait_for(ws.recv(), 3) == "echo:" + OPTIONS.decode()
    assert [r.transport for r in core.received] == ["wss"]
