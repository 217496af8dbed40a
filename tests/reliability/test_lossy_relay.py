"""The lossy relay on real loopback sockets: the exact drop pattern of a seed in each direction, zero loss forwards
everything, each client gets its own server-side address and only its own replies, loopback only, bounded."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from lossy_relay import (
    TO_CLIENT,
    TO_SERVER,
    LossyRelay,
    NotLoopback,
    direction_seed,
    parse_address,
)

Address = tuple[str, int]
RELAY = str(Path(__file__).with_name("lossy_relay.py"))  # the relay's command line


class Peer(asyncio.DatagramProtocol):
    """A UDP socket on loopback that queues what it receives; ``echo`` sends each datagram back, tagged."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, (addr[0], addr[1])))
        if self.echo and self.transport is not None:
            self.transport.sendto(b"re:" + data, addr)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return (name[0], name[1])

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def drain(self, quiet: float = 0.3) -> list[tuple[bytes, Address]]:
        """Everything received until nothing more arrives for ``quiet`` seconds."""
        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(self.received.get(), quiet))
            except TimeoutError:
                return out

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def peer(echo: bool = False, host: str = "127.0.0.1") -> Peer:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: Peer(echo), local_addr=(host, 0))
    return protocol


def expected_kept(seed: int, direction: str, p: float, n: int) -> list[int]:
    """The documented rule: one draw per datagram in arrival order, dropped when random() < p."""
    rng = random.Random(f"lossy-relay:{seed}:{direction}")
    return [i for i in range(n) if not rng.random() < p]


def pattern(kept: list[int], n: int) -> str:
    return "".join("." if i in kept else "x" for i in range(n))


async def send_paced(sender: Peer, count: int, dest: Address, prefix: bytes = b"") -> None:
    for i in range(count):
        sender.send(prefix + b"%d" % i, dest)
        if i % 20 == 19:
            await asyncio.sleep(0.005)  # keep far below any buffer limit: the only loss must be the relay's


def test_direction_seeds_are_the_documented_strings() -> None:
    assert direction_seed(42, TO_SERVER) == "lossy-relay:42:to_server"
    assert direction_seed(42, TO_CLIENT) == "lossy-relay:42:to_client"
    with pytest.raises(ValueError):
        direction_seed(42, "sideways")


async def test_seed_42_drops_exactly_the_pinned_pattern_towards_the_server() -> None:
    server = await peer()
    client = await peer()
    async with LossyRelay(("127.0.0.1", 0), server.address, loss_to_server=0.5, seed=42, duration=10) as relay:
        await send_paced(client, 32, relay.address)
        got = await server.drain()
    kept = sorted(int(data) for data, _ in got)
    # Pinned once, so that a change of generator or seeding shows up: x = dropped.
    assert pattern(kept, 32) == "xxx.....x...x.x....x.x..x......."
    assert kept == expected_kept(42, TO_SERVER, 0.5, 32)
    assert (relay.counts.to_server.forwarded, relay.counts.to_server.dropped) == (len(kept), 32 - len(kept))
    client.close()
    server.close()


async def test_each_direction_drops_its_own_seeded_pattern() -> None:
    server = await peer(echo=True)
    client = await peer()
    n = 400
    async with LossyRelay(("127.0.0.1", 0), server.address, loss_to_server=0.1, loss_to_client=0.25, seed=7,
                          duration=20) as relay:
        await send_paced(client, n, relay.address)
        got = await client.drain()
    reached_server = expected_kept(7, TO_SERVER, 0.1, n)
    # The server echoes what reached it, in order; the client-bound generator draws once per echo.
    echoed_kept = expected_kept(7, TO_CLIENT, 0.25, len(reached_server))
    expected = [reached_server[j] for j in echoed_kept]
    assert [int(data.removeprefix(b"re:")) for data, _ in got] == expected
    assert all(source == relay.address for _, source in got)
    counts = relay.counts
    assert (counts.to_server.forwarded, counts.to_server.dropped) == (len(reached_server), n - len(reached_server))
    assert (counts.to_client.forwarded, counts.to_client.dropped) == (len(expected),
                                                                      len(reached_server) - len(expected))
    assert 0 < counts.to_server.dropped < counts.to_client.dropped  # 10 % and 25 % of a few hundred
    client.close()
    server.close()


async def test_zero_loss_forwards_every_datagram_both_ways() -> None:
    server = await peer(echo=True)
    client = await peer()
    n = 1000
    async with LossyRelay(("127.0.0.1", 0), server.address, seed=1, duration=20) as relay:
        await send_paced(client, n, relay.address)
        got = await client.drain()
    assert [data for data, _ in got] == [b"re:%d" % i for i in range(n)]
    assert relay.counts.to_server.forwarded == relay.counts.to_client.forwarded == n
    assert relay.counts.to_server.dropped == relay.counts.to_client.dropped == 0
    client.close()
    server.close()


async def test_replies_and_server_initiated_datagrams_reach_the_right_client() -> None:
    server = await peer(echo=True)
    clients = [await peer() for _ in range(3)]
    async with LossyRelay(("127.0.0.1", 0), server.address, seed=3, duration=20) as relay:
        for k, client in enumerate(clients):
            for i in range(5):
                client.send(b"c%d-%d" % (k, i), relay.address)
        seen = await server.drain()
        replies = [await c.drain() for c in clients]
        # The server sees one distinct relay address per client...
        by_source: dict[Address, set[bytes]] = {}
        for data, source in seen:
            by_source.setdefault(source, set()).add(data[:2])
        assert sorted(by_source.values(), key=sorted) == [{b"c0"}, {b"c1"}, {b"c2"}]
        for k, client in enumerate(clients):
            back = relay.back_address(client.address)
            assert back is not None and by_source[back] == {b"c%d" % k}
        # ...each client got exactly its own replies...
        for k, got in enumerate(replies):
            assert [data for data, _ in got] == [b"re:c%d-%d" % (k, i) for i in range(5)]
        # ...and a request the server starts towards the address it saw (an in-dialog BYE, say) reaches that
        # client and only that one.
        back1 = relay.back_address(clients[1].address)
        assert back1 is not None
        server.send(b"BYE for c1", back1)
        after = [await c.drain() for c in clients]
    assert [[d for d, _ in got] for got in after] == [[], [b"BYE for c1"], []]
    assert relay.counts.clients == 3
    for c in [*clients, server]:
        c.close()


async def test_the_server_sees_clients_at_the_back_host_asked() -> None:
    server = await peer(echo=True)
    client = await peer()
    async with LossyRelay(("127.0.0.1", 0), server.address, duration=10, back_host="127.0.0.2") as relay:
        client.send(b"from .2", relay.address)
        seen = await server.drain(0.2)
        replies = await client.drain(0.2)
    assert [(d, src[0]) for d, src in seen] == [(b"from .2", "127.0.0.2")]
    assert [d for d, _ in replies] == [b"re:from .2"]
    with pytest.raises(NotLoopback):
        LossyRelay(("127.0.0.1", 0), server.address, back_host="192.0.2.1")
    client.close()
    server.close()


async def test_the_relay_stops_by_itself_after_its_duration() -> None:
    server = await peer()
    client = await peer()
    relay = await LossyRelay(("127.0.0.1", 0), server.address, duration=0.3).start()
    address = relay.address
    client.send(b"before", address)
    assert [d for d, _ in await server.drain(0.2)] == [b"before"]
    await asyncio.wait_for(relay.wait_closed(), 2)
    assert relay.closed
    client.send(b"after", address)
    assert await server.drain(0.2) == []
    assert relay.counts.to_server.forwarded == 1
    client.close()
    server.close()


async def test_clients_beyond_the_cap_are_refused_and_counted() -> None:
    server = await peer()
    first, second = await peer(), await peer()
    async with LossyRelay(("127.0.0.1", 0), server.address, duration=10, max_clients=1) as relay:
        first.send(b"one", relay.address)
        await asyncio.sleep(0.1)
        second.send(b"two", relay.address)
        got = await server.drain(0.2)
    assert [d for d, _ in got] == [b"one"]
    assert (relay.counts.clients, relay.counts.refused_clients) == (1, 1)
    for p in (first, second, server):
        p.close()


async def test_ipv6_loopback_works() -> None:
    server = await peer(echo=True, host="::1")
    client = await peer(host="::1")
    async with LossyRelay(("::1", 0), server.address, duration=10) as relay:
        client.send(b"six", relay.address)
        got = await client.drain(0.2)
    assert [d for d, _ in got] == [b"re:six"]
    client.close()
    server.close()


@pytest.mark.parametrize(("listen", "server"), [
    (("192.0.2.1", 0), ("127.0.0.1", 5060)),     # the documentation network: never bind there
    (("0.0.0.0", 0), ("127.0.0.1", 5060)),       # not the wildcard either
    (("127.0.0.1", 0), ("192.0.2.10", 5060)),    # never forward off the machine
    (("127.0.0.1", 0), ("localhost", 5060)),     # never resolve a name
    (("127.0.0.1", 0), ("2001:db8::1", 5060)),
])
def test_anything_but_loopback_is_refused(listen: Address, server: Address) -> None:
    with pytest.raises(NotLoopback):
        LossyRelay(listen, server)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        LossyRelay(("127.0.0.1", 0), ("127.0.0.1", 5060), loss_to_server=1.5)
    with pytest.raises(ValueError):
        LossyRelay(("127.0.0.1", 0), ("127.0.0.1", 0))
    with pytest.raises(ValueError):
        LossyRelay(("127.0.0.1", 0), ("127.0.0.1", 5060), duration=0)
    assert parse_address("[::1]:5070") == ("::1", 5070)
    with pytest.raises(ValueError):
        parse_address("127.0.0.1")


async def test_command_line_forwards_with_loss_and_prints_its_counts() -> None:
    server = await peer(echo=True)
    client = await peer()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, RELAY, "--listen", "127.0.0.1:0",
        "--server", f"127.0.0.1:{server.address[1]}", "--loss", "0.2", "--seed", "42", "--duration", "3",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
    host, port = first["listening"].rsplit(":", 1)
    assert host == "127.0.0.1"
    n = 200
    await send_paced(client, n, (host, int(port)))
    got = await client.drain()
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err
    counts = json.loads(out)
    to_server = expected_kept(42, TO_SERVER, 0.2, n)
    back = expected_kept(42, TO_CLIENT, 0.2, len(to_server))
    assert [int(d.removeprefix(b"re:")) for d, _ in got] == [to_server[j] for j in back]
    assert counts["to_server"] == {"forwarded": len(to_server), "dropped": n - len(to_server)}
    assert counts["to_client"] == {"forwarded": len(back), "dropped": len(to_server) - len(back)}
    client.close()
    server.close()


def test_command_line_refuses_a_non_loopback_address() -> None:
    result = subprocess.run([sys.executable, RELAY, "--listen", "192.0.2.1:5060",
                             "--server", "127.0.0.1:5060", "--duration", "1"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
