"""The sans-I/O ng client with a fake clock: cookies, matching, retransmission with backoff, bounded time-out,
and every bad datagram dropped and counted."""

from __future__ import annotations

import random
import socket

import pytest

from callbridge.media.bencode import decode, encode
from callbridge.media.ng import NgClient, NgReply, NgTimedOut, NgTimers
from callbridge.media.shell import bind_addresses

RELAY = ("127.0.0.1", 22222)
OTHER = ("127.0.0.1", 22223)


def split(datagram: bytes) -> tuple[str, dict]:
    cookie, body = datagram.split(b" ", 1)
    return cookie.decode(), decode(body)


def reply(cookie: str, body: dict) -> bytes:
    return cookie.encode() + b" " + encode(body)


def events(client: NgClient) -> list:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def test_each_request_has_its_own_cookie_and_its_reply_is_matched() -> None:
    client = NgClient(random.Random(1))
    a = client.request(RELAY, {"command": "ping"}, 0.0)
    b = client.request(RELAY, {"command": "query", "call-id": "c1"}, 0.0)
    sent = client.datagrams_to_send()
    assert [split(d) for d, _ in sent] == [(a, {"command": b"ping"}), (b, {"command": b"query", "call-id": b"c1"})]
    assert [addr for _, addr in sent] == [RELAY, RELAY]
    assert a != b and client.pending_count == 2
    client.receive_datagram(reply(b, {"result": "ok"}), RELAY, 0.01)
    client.receive_datagram(reply(a, {"result": "pong"}), RELAY, 0.02)
    assert events(client) == [NgReply(b, RELAY, "query", {"result": b"ok"}),
                              NgReply(a, RELAY, "ping", {"result": b"pong"})]
    assert client.pending_count == 0 and client.get_timer() is None


def test_two_clients_never_share_a_cookie() -> None:
    one, two = NgClient(random.Random(1)), NgClient(random.Random(2))
    assert one.request(RELAY, {"command": "ping"}, 0) != two.request(RELAY, {"command": "ping"}, 0)


def test_retransmits_the_same_bytes_with_backoff_then_times_out() -> None:
    client = NgClient(random.Random(1), NgTimers(first=0.25, cap=1.0, total=3.0))
    cookie = client.request(RELAY, {"command": "offer", "sdp": "v=0"}, 10.0)
    first = client.datagrams_to_send()
    resent_at = []
    now = 10.0
    while (deadline := client.get_timer()) is not None:
        now = deadline
        client.handle_timer(now)
        out = client.datagrams_to_send()
        if out:
            assert out == first  # same cookie, same bytes: rtpengine answers a repeat from its cache
            resent_at.append(round(now - 10.0, 3))
    # 0.25, then doubling intervals capped at 1.0, until 3.0 s after the first send
    assert resent_at == [0.25, 0.75, 1.75, 2.75]
    assert now == 13.0
    assert events(client) == [NgTimedOut(cookie, RELAY, "offer")]
    assert client.stats["retransmissions"] == 4 and client.stats["timeouts"] == 1
    # a reply after the time-out is a stranger
    client.receive_datagram(reply(cookie, {"result": "ok"}), RELAY, 13.5)
    assert events(client) == [] and client.stats["unknown_cookie"] == 1


def test_a_reply_stops_the_retransmissions() -> None:
    client = NgClient(random.Random(1), NgTimers(first=0.5, cap=2.0, total=4.0))
    cookie = client.request(RELAY, {"command": "ping"}, 0.0)
    client.datagrams_to_send()
    client.handle_timer(0.5)
    assert len(client.datagrams_to_send()) == 1
    client.receive_datagram(reply(cookie, {"result": "pong"}), RELAY, 0.6)
    assert client.get_timer() is None
    client.handle_timer(5.0)
    assert client.datagrams_to_send() == [] and [type(e) for e in events(client)] == [NgReply]


@pytest.mark.parametrize(("datagram", "source", "counter"), [
    (b"nocookie", RELAY, "unparseable"),
    (b" d6:result4:ponge", RELAY, "unparseable"),
    (b"COOKIE d6:result4:pong", RELAY, "unparseable"),            # truncated bencode
    (b"COOKIE li1ee", RELAY, "unparseable"),                      # not a dictionary
    (b"\xff\xfe d6:result4:ponge", RELAY, "unparseable"),          # cookie not ASCII
    (b"someone_else d6:result4:ponge", RELAY, "unknown_cookie"),
    (b"COOKIE d6:result4:ponge", OTHER, "wrong_source"),
])
def test_bad_datagrams_are_dropped_and_counted(datagram: bytes, source: tuple[str, int], counter: str) -> None:
    client = NgClient(random.Random(1))
    cookie = client.request(RELAY, {"command": "ping"}, 0.0)
    client.receive_datagram(datagram.replace(b"COOKIE", cookie.encode()), source, 0.1)
    assert events(client) == []
    assert client.pending_count == 1  # still waiting for the real reply
    assert {k: v for k, v in client.stats.items() if v and k != "sent"} == {counter: 1}


def test_an_error_reply_is_a_reply_with_its_reason() -> None:
    client = NgClient(random.Random(1))
    cookie = client.request(RELAY, {"command": "query", "call-id": "x"}, 0.0)
    client.receive_datagram(reply(cookie, {"result": "error", "error-reason": "Unknown call-id"}), RELAY, 0.0)
    (event,) = events(client)
    assert isinstance(event, NgReply)
    assert (event.ok, event.error_reason) == (False, "Unknown call-id")


def test_a_message_without_a_command_is_refused() -> None:
    client = NgClient(random.Random(1))
    with pytest.raises(ValueError, match=r"^an ng message needs a 'command' string, got None$"):
        client.request(RELAY, {"call-id": "x"}, 0.0)
    assert client.datagrams_to_send() == [] and client.pending_count == 0


def test_cancel_forgets_the_request() -> None:
    client = NgClient(random.Random(1))
    cookie = client.request(RELAY, {"command": "ping"}, 0.0)
    assert client.cancel(cookie) is True and client.cancel(cookie) is False
    assert client.get_timer() is None


def test_bad_timers_are_refused() -> None:
    with pytest.raises(ValueError, match="need 0 < first <= cap"):
        NgTimers(first=3.0, cap=1.0)


def test_the_ng_socket_binds_loopback_for_loopback_relays_and_the_wildcard_otherwise() -> None:
    assert bind_addresses(["127.0.0.1", "127.0.0.5"]) == {socket.AF_INET: "127.0.0.1"}
    assert bind_addresses(["127.0.0.1", "10.0.0.7"]) == {socket.AF_INET: "0.0.0.0"}
    assert bind_addresses(["::1", "127.0.0.1"]) == {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
    assert bind_addresses(["2001:db8::7"]) == {socket.AF_INET6: "::"}
