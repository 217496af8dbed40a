"""The relays' DTMF log (media/dtmf_log.py): rtpengine 10.5's datagram read, anything else dropped, datagrams from
other addresses than the relays' ignored."""

from __future__ import annotations

from callbridge.media.dtmf_log import DtmfLogListener, LoggedDigit, parse

# as rtpengine 10.5 sent it on loopback (tests/integration/test_calls_dtmf.py has it live)
DATAGRAM = (b'{"callid":"c19a","source_tag":"lfb8","tags":["lfb8","le46"],"type":"DTMF","timestamp":1796515686,'
            b'"source_ip":"127.0.0.2","event":11,"duration":100,"volume":10}')


def test_the_datagram_as_rtpengine_10_5_sends_it() -> None:
    assert parse(DATAGRAM) == LoggedDigit("c19a", "lfb8", "#", 100)
    assert parse(DATAGRAM.replace(b'"event":11', b'"event":0')) == LoggedDigit("c19a", "lfb8", "0", 100)
    assert parse(DATAGRAM.replace(b'"event":11', b'"event":15')) == LoggedDigit("c19a", "lfb8", "D", 100)


def test_what_is_not_a_dtmf_digit_is_none() -> None:
    assert parse(DATAGRAM.replace(b'"event":11', b'"event":16')) is None  # 16 is flash, not a digit
    assert parse(DATAGRAM.replace(b'"event":11', b'"event":true')) is None
    assert parse(DATAGRAM.replace(b'"DTMF"', b'"other"')) is None
    assert parse(DATAGRAM.replace(b'"duration":100', b'"duration":-1')) is None
    assert parse(DATAGRAM.replace(b'"callid":"c19a"', b'"callid":""')) is None
    assert parse(b"not json") is None
    assert parse(b"\xff\xfe") is None
    assert parse(b"[1, 2]") is None


def test_the_listener_takes_the_relays_datagrams_only() -> None:
    got: list[LoggedDigit] = []
    listener = DtmfLogListener({"127.0.0.1"}, got.append)
    listener.received(DATAGRAM, "127.0.0.9")
    listener.received(b"junk", "127.0.0.1")
    listener.received(DATAGRAM, "127.0.0.1")
    assert got == [LoggedDigit("c19a", "lfb8", "#", 100)]
    assert listener.stats == {"digits": 1, "dropped": 1, "foreign": 1}
