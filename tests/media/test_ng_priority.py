"""The ng queue's priority classes: health requests, then the commands a call's signalling waits on, then the rest
(the music's ``play media`` above all); one rtpengine call's requests never reordered; time-outs and withdrawals of
queued requests.

Sans-I/O with a fake clock: each test asserts exactly which datagrams are sent, in which order. Then the shell
withdrawing a cancelled command that never left the queue (a loopback socket that answers when told)."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest

from callbridge.media.bencode import decode, encode
from callbridge.media.ng import SETUP_COMMANDS, NgClient, NgReply, NgTimedOut, NgTimers, NgWindow
from callbridge.media.relays import RelaySet
from callbridge.media.shell import NgShell

pytestmark = pytest.mark.timeout(60)

RELAY = ("127.0.0.1", 22222)
BLOB = b"x" * 1500  # a music blob, scaled down with the byte windows below


def sent(client: NgClient) -> list[tuple[str, str | None]]:
    """(command, call-id) of each datagram to send, in order."""
    out = []
    for data, relay in client.datagrams_to_send():
        assert relay == RELAY
        message = decode(data.split(b" ", 1)[1])
        call_id = message.get("call-id")
        out.append((message["command"].decode(), call_id.decode() if call_id is not None else None))
    return out


def answer(client: NgClient, cookie: str, now: float) -> None:
    client.receive_datagram(cookie.encode() + b" " + encode({"result": "ok"}), RELAY, now)


def events(client: NgClient) -> list[Any]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


class Relay:
    """A client (a window of one request unless told), and the cookies of what was asked, by (command, call-id)."""

    def __init__(self, timers: NgTimers | None = None, window: NgWindow | None = None) -> None:
        self.client = NgClient(random.Random(1), timers, window or NgWindow(max_requests=1))
        self.cookies: dict[tuple[str, str | None], str] = {}

    def ask(self, command: str, call_id: str | None, now: float = 0.0, **extra: Any) -> str:
        message: dict[str, Any] = {"command": command, **extra}
        if call_id is not None:
            message["call-id"] = call_id
        cookie = self.client.request(RELAY, message, now)
        self.cookies[(command, call_id)] = cookie
        return cookie

    def answer_all_one_by_one(self, now: float) -> list[tuple[str, str | None]]:
        """Answer what is out, one request at a time, until nothing is left: what was sent, in order."""
        order: list[tuple[str, str | None]] = []
        while batch := sent(self.client):
            order += batch
            for key in batch:
                answer(self.client, self.cookies[key], now)
        return order


def test_the_set_up_commands_are_the_signalling_ones() -> None:
    assert sorted(SETUP_COMMANDS) == ["answer", "delete", "offer", "subscribe answer", "subscribe request",
                                      "unsubscribe"]


def test_set_up_commands_pass_the_queued_audio_of_other_calls_and_each_class_keeps_its_order() -> None:
    relay = Relay()
    relay.ask("offer", "a")
    assert sent(relay.client) == [("offer", "a")]
    relay.ask("play media", "b", blob=BLOB)
    relay.ask("play media", "c", blob=BLOB)
    relay.ask("statistics", None)
    relay.ask("offer", "d")
    relay.ask("block media", "e")
    relay.ask("answer", "f")
    relay.ask("delete", "g")
    assert sent(relay.client) == [] and relay.client.queued(RELAY) == 7
    answer(relay.client, relay.cookies[("offer", "a")], 0.01)
    assert relay.answer_all_one_by_one(0.02) == [
        ("offer", "d"), ("answer", "f"), ("delete", "g"),
        ("play media", "b"), ("play media", "c"), ("statistics", None), ("block media", "e")]
    stats = relay.client.stats
    assert (stats["sent"], stats["queued"], stats["queued_setup"], stats["replies"]) == (8, 7, 3, 8)


def test_a_call_s_set_up_command_takes_its_call_s_earlier_commands_along_in_their_order() -> None:
    relay = Relay()
    relay.ask("offer", "x")
    relay.ask("play media", "b", blob=BLOB)
    relay.ask("block media", "a")
    relay.ask("play media", "a", blob=BLOB)
    relay.ask("delete", "a")  # must not pass its call's play media, nor its block
    relay.ask("offer", "c")
    assert sent(relay.client) == [("offer", "x")]
    answer(relay.client, relay.cookies[("offer", "x")], 0.01)
    assert relay.answer_all_one_by_one(0.02) == [
        ("block media", "a"), ("play media", "a"), ("delete", "a"), ("offer", "c"), ("play media", "b")]


def test_an_offer_stays_before_its_call_s_play_media_and_a_later_call_s_offer_passes_that_music() -> None:
    relay = Relay()
    relay.ask("ping", None)
    relay.ask("offer", "a")
    relay.ask("play media", "a", blob=BLOB)
    relay.ask("offer", "b")
    relay.ask("stop media", "a")
    relay.ask("delete", "a")
    answer(relay.client, relay.cookies[("ping", None)], 0.01)
    assert relay.answer_all_one_by_one(0.02) == [
        ("ping", None),  # not urgent: it was out first, alone in the window
        ("offer", "a"), ("offer", "b"), ("play media", "a"), ("stop media", "a"), ("delete", "a")]


def test_urgent_requests_go_before_set_up_commands_in_their_own_order() -> None:
    relay = Relay()
    relay.ask("offer", "a")
    relay.ask("play media", "b", blob=BLOB)
    relay.ask("offer", "c")
    first = relay.client.request(RELAY, {"command": "ping", "n": 1}, 0.0, urgent=True)
    second = relay.client.request(RELAY, {"command": "ping", "n": 2}, 0.0, urgent=True)
    relay.client.datagrams_to_send()
    answer(relay.client, relay.cookies[("offer", "a")], 0.01)
    order = []
    for cookie in (first, second):
        (datagram, _), = relay.client.datagrams_to_send()
        assert datagram.startswith(cookie.encode() + b" ")
        order.append(decode(datagram.split(b" ", 1)[1])["n"])
        answer(relay.client, cookie, 0.02)
    assert order == [1, 2]
    assert relay.answer_all_one_by_one(0.03) == [("offer", "c"), ("play media", "b")]


def test_a_set_up_command_goes_at_once_while_audio_waits_for_room_in_the_byte_window() -> None:
    relay = Relay(window=NgWindow(max_requests=64, max_bytes=2000))
    relay.ask("play media", "a", blob=BLOB)
    relay.ask("play media", "b", blob=BLOB)  # does not fit beside a's: waits
    assert sent(relay.client) == [("play media", "a")]
    relay.ask("offer", "c")
    relay.ask("answer", "d")
    relay.ask("query", "e")  # fits, but behind b's music in its class
    assert sent(relay.client) == [("offer", "c"), ("answer", "d")]
    assert relay.client.queued(RELAY) == 2 and relay.client.outstanding(RELAY)[0] == 3
    answer(relay.client, relay.cookies[("play media", "a")], 0.01)
    assert sent(relay.client) == [("play media", "b"), ("query", "e")]
    assert relay.client.stats["queued"] == 2 and relay.client.stats["queued_setup"] == 0


def test_the_set_up_head_waiting_for_room_holds_back_everything_after_it() -> None:
    relay = Relay(window=NgWindow(max_requests=64, max_bytes=2000))
    relay.ask("play media", "a", blob=BLOB)
    relay.ask("play media", "b", blob=BLOB)
    relay.ask("offer", "b")  # its call's music first, which waits for room
    relay.ask("offer", "c")  # behind b's offer in its class
    relay.ask("stop media", "d")  # behind b's music in its class
    assert sent(relay.client) == [("play media", "a")]
    answer(relay.client, relay.cookies[("play media", "a")], 0.01)
    assert sent(relay.client) == [("play media", "b"), ("offer", "b"), ("offer", "c"), ("stop media", "d")]


def test_an_audio_command_held_back_long_enough_goes_with_the_set_up_commands_in_request_order() -> None:
    relay = Relay(window=NgWindow(max_requests=1, hold_back=1.0))
    relay.ask("offer", "x", 0.0)
    relay.ask("play media", "a", 0.0, blob=BLOB)
    relay.ask("offer", "b", 0.5)
    relay.ask("offer", "c", 0.5)
    relay.ask("play media", "d", 1.0, blob=BLOB)
    relay.ask("answer", "e", 1.1)
    assert sent(relay.client) == [("offer", "x")]
    order = []
    for key, now in ((("offer", "x"), 0.9), (("offer", "b"), 1.0), (("play media", "a"), 1.5),
                     (("offer", "c"), 2.0), (("play media", "d"), 2.0)):
        answer(relay.client, relay.cookies[key], now)
        order += sent(relay.client)
    assert order == [
        ("offer", "b"),  # at 0.9 a's music has waited 0.9 s: held back
        ("play media", "a"),  # at 1.0, 1 s: it goes, asked before c's offer
        ("offer", "c"),  # at 1.5 d's music has waited 0.5 s
        ("play media", "d"),  # at 2.0, 1 s, asked before e's answer
        ("answer", "e")]
    with pytest.raises(ValueError, match="hold_back >= 0"):
        NgWindow(hold_back=-1.0)


def test_queued_requests_time_out_from_their_request_and_a_call_s_later_ones_then_go_on() -> None:
    relay = Relay(timers=NgTimers(first=0.5, cap=1.0, total=2.0))
    stuck = relay.ask("offer", "x", 0.0)
    music = relay.ask("play media", "a", 0.0, blob=BLOB)
    delete = relay.ask("delete", "a", 0.5)
    offer = relay.ask("offer", "b", 1.0)
    assert sent(relay.client) == [("offer", "x")]
    out: list[tuple[str, str | None]] = []
    now = 0.0
    while now < 2.0:
        now = relay.client.get_timer() or 0.0
        relay.client.handle_timer(now)
        out += sent(relay.client)
    # the stuck offer is resent at 0.5 and 1.5; at 2.0 the music queued at 0.0 and the stuck offer end together,
    # the music never sent; the window is free: the delete (requested at 0.5, no earlier command of its call left)
    # goes, then ends unanswered at 2.5, its own bound, and the offer of b (requested at 1.0) goes
    assert now == 2.0
    assert out == [("offer", "x"), ("offer", "x"), ("delete", "a")]
    assert events(relay.client) == [NgTimedOut(music, RELAY, "play media"), NgTimedOut(stuck, RELAY, "offer")]
    assert relay.client.get_timer() == 2.5
    relay.client.handle_timer(2.5)
    assert sent(relay.client) == [("offer", "b")]
    assert events(relay.client) == [NgTimedOut(delete, RELAY, "delete")]
    answer(relay.client, offer, 2.6)
    assert [(type(e), e.cookie) for e in events(relay.client)] == [(NgReply, offer)]
    stats = relay.client.stats
    assert (stats["timeouts"], stats["queued_timeouts"], stats["retransmissions"]) == (3, 1, 2)
    assert relay.client.pending_count == 0 and relay.client.queued(RELAY) == 0
    assert relay.client.outstanding(RELAY) == (0, 0) and relay.client.get_timer() is None


def test_a_set_up_command_held_behind_its_call_s_earlier_command_keeps_its_own_time_out() -> None:
    relay = Relay(timers=NgTimers(first=1.0, cap=1.0, total=2.0))
    stuck = relay.ask("offer", "x", 0.0)
    music = relay.ask("play media", "a", 0.0, blob=BLOB)
    delete = relay.ask("delete", "a", 0.5)
    assert sent(relay.client) == [("offer", "x")]
    relay.client.handle_timer(1.0)
    assert sent(relay.client) == [("offer", "x")]  # resent; the delete waits behind its call's music
    answer(relay.client, stuck, 1.5)
    assert sent(relay.client) == [("play media", "a")]  # the delete's turn: its call's music first
    relay.client.handle_timer(2.0)
    assert sent(relay.client) == [("delete", "a")]  # the music ended unanswered: 0.5 s left of the delete's bound
    assert relay.client.get_timer() == 2.5
    relay.client.handle_timer(2.5)
    assert sent(relay.client) == []
    assert [(type(e), e.cookie) for e in events(relay.client)] == [
        (NgReply, stuck), (NgTimedOut, music), (NgTimedOut, delete)]
    stats = relay.client.stats
    assert (stats["timeouts"], stats["queued_timeouts"], stats["retransmissions"]) == (2, 0, 1)


def test_a_withdrawn_request_is_never_sent_and_its_call_s_later_ones_go_on() -> None:
    relay = Relay()
    relay.ask("offer", "x")
    music = relay.ask("play media", "a", blob=BLOB)
    relay.ask("play media", "b", blob=BLOB)
    relay.ask("stop media", "a")
    assert sent(relay.client) == [("offer", "x")]
    assert relay.client.withdraw(music) is True
    assert relay.client.withdraw(music) is False  # gone already
    assert relay.client.withdraw(relay.cookies[("offer", "x")]) is False  # sent: left to its reply
    assert relay.client.queued(RELAY) == 2
    answer(relay.client, relay.cookies[("offer", "x")], 0.01)
    assert relay.answer_all_one_by_one(0.02) == [("play media", "b"), ("stop media", "a")]
    assert [e.command for e in events(relay.client)] == ["offer", "play media", "stop media"]
    stats = relay.client.stats
    assert (stats["withdrawn"], stats["replies"], stats["timeouts"]) == (1, 3, 0)
    assert relay.client.pending_count == 0 and relay.client.get_timer() is None


def test_a_drained_queue_keeps_nothing_of_the_calls_whatever_ended_its_requests() -> None:
    relay = Relay(timers=NgTimers(first=0.5, cap=1.0, total=2.0))
    relay.ask("offer", "x", 0.0)
    relay.ask("play media", "a", 0.0, blob=BLOB)  # sent before its call's delete, answered
    relay.ask("delete", "a", 0.0)
    relay.ask("block media", "b", 0.0)  # sent, then it and its call's offer time out, the offer in the queue
    relay.ask("offer", "b", 0.0)
    withdrawn = relay.ask("play media", "c", 0.0, blob=BLOB)
    assert relay.client.queued_calls(RELAY) == 3
    assert relay.client.withdraw(withdrawn) is True
    assert sent(relay.client) == [("offer", "x")]
    answer(relay.client, relay.cookies[("offer", "x")], 0.1)
    assert sent(relay.client) == [("play media", "a")]
    answer(relay.client, relay.cookies[("play media", "a")], 0.2)
    assert sent(relay.client) == [("delete", "a")]
    answer(relay.client, relay.cookies[("delete", "a")], 0.3)
    assert sent(relay.client) == [("block media", "b")]
    relay.ask("stop media", "c", 0.5)
    relay.ask("block media", "d", 0.5)
    assert relay.client.withdraw(relay.ask("delete", "d", 0.5)) is True  # behind its call's block, gone first
    relay.client.handle_timer(0.8)  # the block's retransmission: the window holds nothing else
    assert sent(relay.client) == [("block media", "b")]
    relay.client.handle_timer(2.0)  # both of b end unanswered (asked at 0.0); then c's stop goes
    assert sent(relay.client) == [("stop media", "c")]
    answer(relay.client, relay.cookies[("stop media", "c")], 2.1)
    assert sent(relay.client) == [("block media", "d")]
    answer(relay.client, relay.cookies[("block media", "d")], 2.2)
    assert [(e.command, type(e)) for e in events(relay.client)] == [
        ("offer", NgReply), ("play media", NgReply), ("delete", NgReply), ("block media", NgTimedOut),
        ("offer", NgTimedOut), ("stop media", NgReply), ("block media", NgReply)]
    assert relay.client.queued(RELAY) == 0 and relay.client.queued_calls(RELAY) == 0
    assert relay.client.pending_count == 0 and relay.client.get_timer() is None
    assert (relay.client.stats["queued_timeouts"], relay.client.stats["withdrawn"]) == (1, 2)


# --- the shell: a cancelled command still queued is withdrawn -------------------------------------------------------
class Collecting(asyncio.DatagramProtocol):
    """A relay on a loopback socket that answers only when told, recording the commands it got."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, dict[str, Any], Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, body = data.split(b" ", 1)
        self.got.append((cookie, decode(body), addr))

    def answer(self, index: int) -> None:
        cookie, _, addr = self.got[index]
        assert self.transport is not None
        self.transport.sendto(cookie + b" " + encode({"result": "pong"}), addr)


async def test_a_cancelled_command_still_queued_is_never_sent() -> None:
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(Collecting, local_addr=("127.0.0.1", 0))
    address = transport.get_extra_info("sockname")[:2]
    relays = RelaySet([address], random.Random(5), window=NgWindow(max_requests=1))
    shell = NgShell(relays)
    await shell.start()
    try:
        while not relay.got:  # the health check's ping
            await asyncio.sleep(0.005)
        relay.answer(0)
        while len(relay.got) < 2:  # then its statistics
            await asyncio.sleep(0.005)
        relay.answer(1)
        while relays.client.pending_count:
            await asyncio.sleep(0.005)
        offer = loop.create_task(shell.command(address, {"command": "offer", "call-id": "a"}))
        music = loop.create_task(shell.command(address, {"command": "play media", "call-id": "b"}))
        stop = loop.create_task(shell.command(address, {"command": "stop media", "call-id": "c"}))
        while len(relay.got) < 3:
            await asyncio.sleep(0.005)
        assert relays.client.queued(address) == 2
        music.cancel()
        with pytest.raises(asyncio.CancelledError):
            await music
        assert relays.client.queued(address) == 1 and relays.client.stats["withdrawn"] == 1
        relay.answer(2)
        assert await offer == {"result": b"pong"}
        while len(relay.got) < 4:
            await asyncio.sleep(0.005)
        relay.answer(3)
        assert await stop == {"result": b"pong"}
        assert [body["command"] for _, body, _ in relay.got] == [b"ping", b"statistics", b"offer", b"stop media"]
    finally:
        shell.close()
        transport.close()
