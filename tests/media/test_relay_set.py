"""The relay set with a fake clock: health from pings, features from statistics, calls sticking to their relay,
load sharing among the relays that are up."""

from __future__ import annotations

import random

import pytest

from callbridge.media.bencode import decode, encode
from callbridge.media.ng import NgReply, NgTimedOut, NgTimers
from callbridge.media.relays import (
    Health,
    RelayChanged,
    RelayLost,
    RelaySet,
    RelayTimers,
    features_from_statistics,
    uptime_from_statistics,
)

A = ("127.0.0.1", 22222)
B = ("127.0.0.2", 22222)

STATISTICS = {"result": "ok", "statistics": {
    "intervalstatistics": {"minpingdelay": "0.0", "maxpingdelay": "0.0", "minplay mediadelay": "0.0",
                           "minstart recordingdelay": "0.0", "avgofferdelay": "0.0",
                           "minsubscribe requestrequestrate": "0"},
    "interfaces": [{"name": "default", "address": "127.0.0.1", "ports": {"min": 40000, "max": 40099}}]}}


def answer_all(relays: RelaySet, now: float, *, silent: set = frozenset(), stats: dict = STATISTICS) -> list:
    """Answer every queued ng request as a healthy rtpengine would, except from the relays in `silent`."""
    for datagram, addr in relays.datagrams_to_send():
        if addr in silent:
            continue
        cookie, body = datagram.split(b" ", 1)
        command = decode(body)["command"]
        result = {"result": "pong"} if command == b"ping" else stats if command == b"statistics" else {"result": "ok"}
        relays.receive_datagram(cookie + b" " + encode(result), addr, now)
    out = []
    while (event := relays.next_event()) is not None:
        out.append(event)
    return out


def test_features_are_the_commands_named_in_statistics() -> None:
    features, interfaces = features_from_statistics(decode(encode(STATISTICS)))
    assert "play media" in features and "start recording" in features and "ping" in features
    assert "offer" in features and "answer" in features  # the core every relay has
    assert "pause recording" not in features and "connect" not in features
    assert "subscribe requestrequestrate" not in features  # rates are not commands
    assert interfaces == (("default", "127.0.0.1"),)
    assert features_from_statistics({"result": b"ok"}) == (frozenset(), ())


def test_a_relay_is_down_until_its_first_pong_then_up_with_its_features() -> None:
    relays = RelaySet([A], random.Random(1))
    assert relays.assign("c1") is None  # never heard from: no call goes there
    relays.start(0.0)
    assert answer_all(relays, 0.01) == [RelayChanged(A, Health.UP)]
    assert relays.relays[A].features == frozenset()  # the statistics request is out now
    assert answer_all(relays, 0.02) == []
    relay = relays.relays[A]
    assert relay.up and relay.supports("play media") and not relay.supports("pause recording")


def test_a_silent_relay_goes_down_at_its_first_failed_ping_is_lost_at_the_second_and_comes_back() -> None:
    relays = RelaySet([A], random.Random(1), ng_timers=NgTimers(first=0.5, cap=1.0, total=2.0),
                      timers=RelayTimers(ping_interval=5.0))
    relays.start(0.0)
    answer_all(relays, 0.0)
    answer_all(relays, 0.0)
    now, changes = 0.0, []
    while now < 17.0:  # pings at 5, 10 and 15 go unanswered (each times out 2 s later)
        now = relays.get_timer()
        relays.handle_timer(now)
        changes += [(now, e) for e in answer_all(relays, now, silent={A})]
    # the first failed ping: down for new calls only; the second: its calls are lost; the third adds nothing
    assert changes == [(7.0, RelayChanged(A, Health.DOWN)), (12.0, RelayLost(A))]
    assert relays.relays[A].pings_failed == 3
    assert relays.assign("c1") is None
    while now < 20.0:
        now = relays.get_timer()
        relays.handle_timer(now)
        changes += [(now, e) for e in answer_all(relays, now)]
    assert changes[2:] == [(20.0, RelayChanged(A, Health.UP))]
    assert relays.assign("c1") is not None


def run_pings(relays: RelaySet, until: float, now: float, *, silent_between: tuple[float, float] = (0.0, 0.0),
              uptime_at=lambda now: now) -> tuple[float, list]:
    """Drive the set's timers up to `until`; the relay is silent within `silent_between` and reports an uptime of
    `uptime_at(now)` in its statistics."""
    changes: list = []

    def answer() -> None:
        silent = {A} if silent_between[0] <= now < silent_between[1] else set()
        stats = {**STATISTICS, "statistics": {**STATISTICS["statistics"],
                                              "totalstatistics": {"uptime": str(int(uptime_at(now)))}}}
        changes.extend((now, e) for e in answer_all(relays, now, silent=silent, stats=stats))

    answer()
    while now < until:
        now = relays.get_timer()
        relays.handle_timer(now)
        answer()
    return now, changes


def test_one_failed_ping_series_of_a_busy_relay_takes_it_down_for_new_calls_but_keeps_its_calls() -> None:
    relays = RelaySet([A], random.Random(1), ng_timers=NgTimers(first=0.5, cap=1.0, total=2.0),
                      timers=RelayTimers(ping_interval=5.0))
    relays.start(0.0)
    now, changes = run_pings(relays, 0.0, 0.0)
    assert changes == [(0.0, RelayChanged(A, Health.UP))]
    assert relays.assign("c1").address == A
    # the ping at 5 goes unanswered (a relay busy with RTP), the one at 10 is answered: same process, uptime on
    now, changes = run_pings(relays, 12.0, now, silent_between=(5.0, 7.5))
    assert changes == [(7.0, RelayChanged(A, Health.DOWN)), (10.0, RelayChanged(A, Health.UP))]
    assert relays.calls_on(A) == ["c1"] and relays.relays[A].uptime == 10.0


def test_a_relay_that_restarted_between_two_pings_is_lost_though_no_ping_failed() -> None:
    relays = RelaySet([A], random.Random(1), timers=RelayTimers(ping_interval=5.0))
    relays.start(0.0)
    now, changes = run_pings(relays, 6.0, 0.0, uptime_at=lambda now: 100 + now)
    assert changes == [(0.0, RelayChanged(A, Health.UP))] and relays.relays[A].uptime == 105.0
    relays.assign("c1")
    # restarted at 7 by its supervisor: it answers the ping at 10 with an uptime of 3 s, and knows no call
    now, changes = run_pings(relays, 16.0, now, uptime_at=lambda now: now - 7)
    assert changes == [(10.0, RelayLost(A))]
    assert relays.relays[A].up and relays.calls_on(A) == ["c1"]  # listed for b2bua/relay_loss.py to move


def test_a_restart_detected_after_the_outage_that_already_lost_the_calls_is_not_declared_twice() -> None:
    relays = RelaySet([A], random.Random(1), ng_timers=NgTimers(first=0.5, cap=1.0, total=2.0),
                      timers=RelayTimers(ping_interval=5.0))
    relays.start(0.0)
    now, _ = run_pings(relays, 0.0, 0.0, uptime_at=lambda now: 100 + now)
    now, changes = run_pings(relays, 20.0, now, silent_between=(5.0, 17.5), uptime_at=lambda now: now - 16)
    assert changes == [(7.0, RelayChanged(A, Health.DOWN)), (12.0, RelayLost(A)),
                       (20.0, RelayChanged(A, Health.UP))]
    # and the next outage is a new one: lost again after its own failed pings
    now, changes = run_pings(relays, 32.0, now, silent_between=(25.0, 40.0), uptime_at=lambda now: now - 16)
    assert changes == [(27.0, RelayChanged(A, Health.DOWN)), (32.0, RelayLost(A))]


def test_uptime_is_read_from_the_statistics_reply() -> None:
    assert uptime_from_statistics(decode(encode({"statistics": {"totalstatistics": {"uptime": "42"}}}))) == 42.0
    assert uptime_from_statistics({"statistics": {"totalstatistics": {"uptime": b"x"}}}) is None
    assert uptime_from_statistics({"result": b"ok"}) is None


def test_pings_to_lose_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="pings_to_lose must be at least 1"):
        RelayTimers(pings_to_lose=0)


def test_calls_stick_to_their_relay_and_new_ones_go_to_the_least_loaded() -> None:
    relays = RelaySet([A, B], random.Random(1))
    relays.start(0.0)
    answer_all(relays, 0.0)
    picks = [relays.assign(c).address for c in ("c1", "c2", "c3")]
    assert picks == [A, B, A]
    assert relays.assign("c2").address == B  # sticky
    relays.release("c1")
    relays.release("c3")
    assert relays.assign("c4").address == A  # A holds none now, B one
    assert (relays.relays[A].calls, relays.relays[B].calls, relays.call_count) == (1, 1, 2)


def test_a_call_keeps_its_relay_even_when_it_is_down_and_new_calls_avoid_it() -> None:
    relays = RelaySet([A, B], random.Random(1))
    relays.start(0.0)
    answer_all(relays, 0.0)
    assert relays.assign("c1").address == A
    relays.mark_down(A)
    assert relays.next_event() == RelayChanged(A, Health.DOWN)
    assert relays.assign("c1").address == A  # only A knows the call
    assert relays.assign("c2").address == B


def test_the_calls_of_a_relay_that_went_down_are_listed_and_one_released_moves_to_a_relay_that_is_up() -> None:
    relays = RelaySet([A, B], random.Random(1))
    relays.start(0.0)
    answer_all(relays, 0.0)
    assert [relays.assign(c).address for c in ("c1", "c2", "c3")] == [A, B, A]
    relays.mark_down(A)  # a command timed out: down for new calls, its calls not lost (no RelayLost)
    assert relays.next_event() == RelayChanged(A, Health.DOWN) and relays.next_event() is None
    assert relays.calls_on(A) == ["c1", "c3"] and relays.calls_on(B) == ["c2"]
    relays.release("c1")  # its media on A is gone: its next offer starts it afresh
    assert relays.assign("c1").address == B
    assert relays.calls_on(A) == ["c3"] and sorted(relays.calls_on(B)) == ["c1", "c2"]
    assert (relays.relays[A].calls, relays.relays[B].calls) == (1, 2)


def test_a_command_that_times_out_marks_its_relay_down_and_is_passed_on() -> None:
    relays = RelaySet([A], random.Random(1), ng_timers=NgTimers(first=0.5, cap=0.5, total=1.0),
                      timers=RelayTimers(ping_interval=60.0))
    relays.start(0.0)
    answer_all(relays, 0.0)
    answer_all(relays, 0.0)
    cookie = relays.request(A, {"command": "offer", "call-id": "c1", "sdp": "v=0"}, 1.0)
    for now in (1.5, 2.0):
        relays.handle_timer(now)
    relays.datagrams_to_send()
    assert [relays.next_event(), relays.next_event()] == [RelayChanged(A, Health.DOWN),
                                                          NgTimedOut(cookie, A, "offer")]


def test_replies_to_calls_are_passed_on() -> None:
    relays = RelaySet([A], random.Random(1))
    relays.start(0.0)
    answer_all(relays, 0.0)
    answer_all(relays, 0.0)
    cookie = relays.request(A, {"command": "delete", "call-id": "c1"}, 1.0)
    assert answer_all(relays, 1.0) == [NgReply(cookie, A, "delete", {"result": b"ok"})]


def test_a_call_restored_from_another_node_sticks_to_its_relay_and_counts_there() -> None:
    relays = RelaySet([A, B], random.Random(1))
    assert relays.restore("c1", B) is True  # a node of a cluster offered it there (docs/cluster.md)
    relay = relays.relay_of("c1")
    assert relay is not None and relay.address == B
    assert (relays.relays[A].calls, relays.relays[B].calls) == (0, 1)
    assert relays.assign("c1") is relay  # its later commands go there, not to the least loaded relay
    assert relays.restore("c1", B) is True and relays.relays[B].calls == 1  # restoring again counts it once
    assert relays.restore("c2", ("10.0.0.9", 22222)) is False  # not one of this set's relays: nothing changes
    assert relays.relay_of("c2") is None and relays.call_count == 1
    relays.release("c1")
    assert relays.relay_of("c1") is None and relays.relays[B].calls == 0
