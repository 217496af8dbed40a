"""The ng window: at most `NgWindow.max_requests` requests (and `max_bytes` of them) out toward a relay, the rest
queued in order behind it; health requests at the head; a queued request's time-out counted from its request.

Sans-I/O first (a fake clock), then the asyncio shell against a real UDP socket answering ng on loopback (a relay
that holds what it gets for a while: the window is what it sees), then a burst against a real rtpengine."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from pathlib import Path
from typing import Any, cast

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbridge.media.bencode import decode, encode
from callbridge.media.ng import NgClient, NgTimedOut, NgTimers, NgWindow
from callbridge.media.relays import RelaySet
from callbridge.media.shell import RECEIVE_BUFFER, NgShell
from peers.rtpengine import Rtpengine

pytestmark = pytest.mark.timeout(60)

RELAY = ("127.0.0.1", 22222)
OTHER = ("127.0.0.1", 22224)


def cookies(sent: list[tuple[bytes, tuple[str, int]]]) -> list[str]:
    return [data.split(b" ", 1)[0].decode() for data, _ in sent]


def answer(client: NgClient, cookie: str, now: float, relay: tuple[str, int] = RELAY) -> None:
    client.receive_datagram(cookie.encode() + b" " + encode({"result": "ok"}), relay, now)


def events(client: NgClient) -> list[Any]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


# --- sans-I/O ----------------------------------------------------------------------------------------------------
def test_at_most_max_requests_are_out_and_the_rest_are_sent_in_order_as_replies_come() -> None:
    client = NgClient(random.Random(1), window=NgWindow(max_requests=3))
    made = [client.request(RELAY, {"command": "query", "call-id": f"c{i}"}, 0.0) for i in range(6)]
    assert cookies(client.datagrams_to_send()) == made[:3]
    assert client.outstanding(RELAY)[0] == 3 and client.queued(RELAY) == 3 and client.backlogged(RELAY)
    answer(client, made[1], 0.01)
    assert cookies(client.datagrams_to_send()) == [made[3]]
    answer(client, made[0], 0.02)
    answer(client, made[2], 0.02)
    assert cookies(client.datagrams_to_send()) == made[4:]
    assert client.queued(RELAY) == 0 and client.outstanding(RELAY)[0] == 3 and not client.backlogged(RELAY)
    assert client.stats["sent"] == 6 and client.stats["queued"] == 3
    assert [e.cookie for e in events(client)] == [made[1], made[0], made[2]]


def test_the_byte_budget_holds_a_large_request_back_and_one_alone_still_goes() -> None:
    client = NgClient(random.Random(1), window=NgWindow(max_requests=64, max_bytes=300))
    small = client.request(RELAY, {"command": "ping"}, 0.0)
    blob = client.request(RELAY, {"command": "play media", "blob": b"x" * 1000}, 0.0)  # over the budget alone
    behind = client.request(RELAY, {"command": "ping"}, 0.0)  # fits, but waits its turn: order is kept
    assert cookies(client.datagrams_to_send()) == [small]
    answer(client, small, 0.01)
    assert cookies(client.datagrams_to_send()) == [blob]  # nothing else out: it goes alone
    assert client.outstanding(RELAY)[1] > 1000
    answer(client, blob, 0.02)
    assert cookies(client.datagrams_to_send()) == [behind]
    assert client.outstanding(RELAY) == (1, len(behind) + 1 + len(encode({"command": "ping"})))


def test_an_urgent_request_goes_to_the_head_of_the_queue() -> None:
    client = NgClient(random.Random(1), window=NgWindow(max_requests=1))
    first = client.request(RELAY, {"command": "offer", "call-id": "a"}, 0.0)
    queued = client.request(RELAY, {"command": "offer", "call-id": "b"}, 0.0)
    ping = client.request(RELAY, {"command": "ping"}, 0.0, urgent=True)
    assert cookies(client.datagrams_to_send()) == [first]
    answer(client, first, 0.01)
    assert cookies(client.datagrams_to_send()) == [ping]
    answer(client, ping, 0.02)
    assert cookies(client.datagrams_to_send()) == [queued]


def test_a_queued_request_times_out_from_its_request_and_is_never_sent() -> None:
    client = NgClient(random.Random(1), NgTimers(first=0.5, cap=1.0, total=2.0), NgWindow(max_requests=1))
    stuck = client.request(RELAY, {"command": "offer"}, 0.0)
    waiting = client.request(RELAY, {"command": "answer"}, 0.5)
    client.datagrams_to_send()
    now = 0.0
    sent: list[str] = []
    while (deadline := client.get_timer()) is not None:
        now = deadline
        client.handle_timer(now)
        sent += cookies(client.datagrams_to_send())
    # the stuck one is resent (0.5, 1.5) and ends at 2.0; its slot then goes to the queued one, whose own time-out
    # (2.5, from its request at 0.5) comes before its first retransmission would (3.0)
    assert sent == [stuck, stuck, waiting]
    assert now == 2.5
    assert events(client) == [NgTimedOut(stuck, RELAY, "offer"), NgTimedOut(waiting, RELAY, "answer")]
    assert client.stats["timeouts"] == 2 and client.stats["queued_timeouts"] == 0
    assert client.outstanding(RELAY) == (0, 0) and client.pending_count == 0

    never = NgClient(random.Random(2), NgTimers(first=0.5, cap=1.0, total=2.0), NgWindow(max_requests=1))
    out = never.request(RELAY, {"command": "offer"}, 0.0)
    behind = never.request(RELAY, {"command": "answer"}, 0.0)
    assert cookies(never.datagrams_to_send()) == [out]
    never.handle_timer(0.5)
    never.handle_timer(1.5)
    never.handle_timer(2.0)  # both end together: the queued one without ever being sent
    assert cookies(never.datagrams_to_send()) == [out, out]
    assert [type(e) for e in events(never)] == [NgTimedOut, NgTimedOut]
    assert never.stats["queued_timeouts"] == 1 and never.queued(RELAY) == 0
    assert behind not in cookies(never.datagrams_to_send())


def test_a_retransmission_takes_no_second_slot_and_a_cancel_frees_one() -> None:
    client = NgClient(random.Random(1), NgTimers(first=0.25, cap=1.0, total=4.0), NgWindow(max_requests=2))
    a = client.request(RELAY, {"command": "offer", "call-id": "a"}, 0.0)
    b = client.request(RELAY, {"command": "offer", "call-id": "b"}, 0.0)
    c = client.request(RELAY, {"command": "offer", "call-id": "c"}, 0.0)
    assert cookies(client.datagrams_to_send()) == [a, b]
    client.handle_timer(0.25)
    assert cookies(client.datagrams_to_send()) == [a, b]  # resent, c still waits
    assert client.outstanding(RELAY)[0] == 2
    assert client.cancel(a) is True
    assert client.datagrams_to_send() == []  # given at the next timer or reply
    client.handle_timer(0.3)
    assert cookies(client.datagrams_to_send()) == [c]


def test_each_relay_has_its_own_window() -> None:
    client = NgClient(random.Random(1), window=NgWindow(max_requests=1))
    a = client.request(RELAY, {"command": "ping"}, 0.0)
    client.request(RELAY, {"command": "ping"}, 0.0)
    other = client.request(OTHER, {"command": "ping"}, 0.0)  # RELAY's full window does not hold it back
    sent = client.datagrams_to_send()
    assert list(zip(cookies(sent), [relay for _, relay in sent], strict=True)) == [(a, RELAY), (other, OTHER)]
    answer(client, other, 0.01, OTHER)
    assert [e.cookie for e in events(client)] == [other]
    assert client.outstanding(RELAY)[0] == 1 and client.queued(RELAY) == 1 and client.outstanding(OTHER) == (0, 0)


def test_a_reply_to_a_request_still_queued_is_not_taken() -> None:
    client = NgClient(random.Random(1), window=NgWindow(max_requests=1))
    client.request(RELAY, {"command": "ping"}, 0.0)
    queued = client.request(RELAY, {"command": "ping"}, 0.0)
    answer(client, queued, 0.01)  # nobody was sent that cookie yet
    assert events(client) == [] and client.stats["unknown_cookie"] == 1 and client.queued(RELAY) == 1


def test_the_relay_sets_ping_jumps_the_queue_of_a_full_window() -> None:
    relays = RelaySet([RELAY], random.Random(1), window=NgWindow(max_requests=2))
    made = [relays.request(RELAY, {"command": "offer", "call-id": f"c{i}"}, 0.0) for i in range(4)]
    assert cookies(relays.datagrams_to_send()) == made[:2]
    relays.start(0.0)  # the health check's ping
    answer(relays.client, made[0], 0.01)
    (ping,) = relays.datagrams_to_send()
    assert decode(ping[0].split(b" ", 1)[1]) == {"command": b"ping"}


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="need max_requests >= 1"):
        NgWindow(max_requests=0)


# --- the shell against a real UDP socket -------------------------------------------------------------------------
class HoldingRelay(asyncio.DatagramProtocol):
    """Answers ng on a loopback socket, but only every `hold` seconds, all it holds at once: what a busy relay
    does. It records the largest number of requests it held unanswered, and every cookie in arrival order."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.held: list[tuple[bytes, Any]] = []
        self.most_held = 0
        self.arrived: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.task = asyncio.get_running_loop().create_task(self.answer_every_hold())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, body = data.split(b" ", 1)
        self.arrived.append(cookie.decode())
        self.held.append((cookie, addr))
        self.most_held = max(self.most_held, len(self.held))
        assert isinstance(decode(body), dict)

    async def answer_every_hold(self) -> None:
        while True:
            await asyncio.sleep(self.hold)
            held, self.held = self.held, []
            assert self.transport is not None
            for cookie, addr in held:
                self.transport.sendto(cookie + b" " + encode({"result": "pong"}), addr)


async def test_a_burst_reaches_a_real_socket_through_the_window_in_order_and_without_loss() -> None:
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(lambda: HoldingRelay(0.02), local_addr=("127.0.0.1", 0))
    address = transport.get_extra_info("sockname")[:2]
    shell = NgShell(RelaySet([address], random.Random(7), window=NgWindow(max_requests=16)))
    await shell.start()
    try:
        # up first (its ping answered, then its statistics): the burst alone is in the window
        for _ in range(400):
            if shell.relays.relays[address].up and not shell.relays.client.pending_count:
                break
            await asyncio.sleep(0.005)
        before = len(relay.arrived)
        replies = await asyncio.gather(*(shell.command(address, {"command": "ping", "n": i}) for i in range(400)))
        stats = shell.relays.client.stats
        assert replies == [{"result": b"pong"}] * 400
        assert relay.most_held == 16  # never more than the window
        burst = relay.arrived[before:]
        assert before == 2 and len(burst) == len(set(burst)) == 400  # each once: nothing was lost and resent
        order = [int(c.rsplit("_", 1)[1]) for c in burst]
        assert order == sorted(order)  # sent in the order they were asked
        assert (stats["sent"], stats["retransmissions"], stats["timeouts"], stats["replies"]) == (402, 0, 0, 402)
        assert stats["queued"] == 400 - 16
        assert shell.relays.client.outstanding(address) == (0, 0)
    finally:
        shell.close()
        assert relay.task is not None
        relay.task.cancel()
        transport.close()


def test_the_ng_socket_gets_its_receive_buffer() -> None:
    async def granted() -> int:
        shell = NgShell(RelaySet([("127.0.0.1", 9)], random.Random(1)))
        await shell.start()
        shell.close()
        return shell.receive_buffer

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    got = asyncio.run(granted())
    if sys.platform.startswith("linux") and os.geteuid() == 0:
        assert got == 2 * RECEIVE_BUFFER  # SO_RCVBUFFORCE; Linux reports twice the size (socket(7))
    else:
        assert got >= default


# --- a real rtpengine ----------------------------------------------------------------------------------------------
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


async def test_a_burst_of_offers_to_rtpengine_is_answered_without_a_retransmission(tmp_path: Path) -> None:
    calls = 300
    with Rtpengine(workdir=tmp_path / "rtpengine", ports=4 * calls + 100, extra_args=("--delete-delay=0",)) as rtpe:
        shell = NgShell(RelaySet([rtpe.ng_address], random.Random(3)))
        await shell.start()
        try:
            while not shell.relays.relays[rtpe.ng_address].up:
                await asyncio.sleep(0.01)
            offers = await asyncio.gather(*(shell.command(rtpe.ng_address, {
                "command": "offer", "call-id": f"burst-{i}", "from-tag": "a", "sdp": SDP, "ICE": "remove"})
                for i in range(calls)))
            assert all(reply["result"] == b"ok" and b"m=audio " in reply["sdp"] for reply in offers)
            deletes = await asyncio.gather(*(shell.command(rtpe.ng_address, {"command": "delete",
                                                                             "call-id": f"burst-{i}"})
                                             for i in range(calls)))
            assert all(reply["result"] == b"ok" for reply in deletes)
            stats = shell.relays.client.stats
            assert stats["retransmissions"] == 0 and stats["timeouts"] == 0
            assert stats["queued"] >= 2 * (calls - 64)  # the window held each burst back
            listed = await shell.command(rtpe.ng_address, {"command": "list"})
            assert listed["calls"] == []
        finally:
            shell.close()
