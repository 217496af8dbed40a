"""The SDP each party is shown (bridge.present / modify_own): one session per party, whoever the far end is."""

from __future__ import annotations

import pytest

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.bridge import modify_own, present
from callbridge.b2bua.legs import LegState, SipLeg
from callbridge.sip.sdp import SessionDescription


def sdp(user: str, sess_id: str, version: int, port: int, direction: str = "sendrecv") -> bytes:
    return (f"v=0\r\no={user} {sess_id} {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na={direction}\r\n").encode()


def leg() -> SipLeg:
    return SipLeg("l1", "0042", "in", 0.0)


def origin(data: bytes) -> tuple[str, str, int]:
    o = SessionDescription.parse(data).origin
    return o.username, o.sess_id, o.sess_version


def test_first_sdp_passes_as_it_is_and_later_far_ends_are_new_versions_of_it() -> None:
    customer = leg()
    first = sdp("agent", "111", 5, 4000)
    assert present(customer, first) == first
    assert present(customer, first) == first  # the same far session unchanged: same version
    moved = present(customer, sdp("target", "999", 1, 5000))
    assert origin(moved) == ("agent", "111", 6)
    assert SessionDescription.parse(moved).media[0].port == 5000
    again = present(customer, sdp("target", "999", 2, 5002))
    assert origin(again) == ("agent", "111", 7)
    assert customer.sent_sdp == again


def test_hold_is_our_own_new_version_and_the_next_relay_is_a_change() -> None:
    customer = leg()
    present(customer, sdp("agent", "111", 5, 4000))
    held = modify_own(customer, lambda sd: sd.with_hold())
    assert held is not None
    assert origin(held) == ("agent", "111", 6)
    assert SessionDescription.parse(held).direction(0) == "sendonly"
    resumed = present(customer, sdp("agent", "111", 5, 4000))
    assert origin(resumed) == ("agent", "111", 7)
    assert SessionDescription.parse(resumed).direction(0) == "sendrecv"


def test_nothing_to_modify_and_unparsable_sdp_passes_through() -> None:
    fresh = leg()
    assert modify_own(fresh, lambda sd: sd.with_hold()) is None
    assert present(fresh, b"not sdp") == b"not sdp"
    assert present(fresh, b"") == b""


class FakeSwitch:
    """What `connect` asks of the switch: re-INVITEs (one at a time per leg) and ACKs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.anchor = MediaAnchor(None)  # direct media: the SDP moves as it is

    def reinvite(self, leg: SipLeg, body: bytes, done: object, *, defer_ack: bool = False) -> bool:
        if leg.reinvite_done is not None:
            return False
        leg.reinvite_done = done  # type: ignore[assignment]
        self.sent.append(("INVITE", leg.leg_id, body))
        return True

    def ack(self, leg: SipLeg, body: bytes) -> None:
        leg.ack_pending = False
        self.sent.append(("ACK", leg.leg_id, body))

    def finish(self, leg: SipLeg, response: object) -> None:
        done, leg.reinvite_done = leg.reinvite_done, None
        assert done is not None
        done(response)  # type: ignore[arg-type]


class Answer:
    status = 200

    def __init__(self, body: bytes) -> None:
        self.body = body


def up_leg(leg_id: str) -> SipLeg:
    from unittest.mock import Mock

    leg = SipLeg(leg_id, "0042", "in", 0.0, state=LegState.UP)
    leg.dialog = Mock(terminated=False)
    return leg


def test_a_target_answering_before_the_hold_completes_gets_the_customer_after_it() -> None:
    """Regression (bench/transfers.py): the offer-less target's 2xx was ACKed with the customer's stale SDP and
    the customer was never re-INVITEd toward the target when the transfer's hold was still in progress."""
    from callbridge.b2bua.bridge import connect

    sw = FakeSwitch()
    customer, target = up_leg("customer"), up_leg("target")
    present(customer, sdp("agent", "111", 5, 4000))
    customer.remote_sdp = sdp("cust", "222", 1, 6000)
    assert sw.reinvite(customer, modify_own(customer, lambda sd: sd.with_hold()) or b"", lambda r: None)
    target.ack_pending, target.remote_sdp = True, sdp("target", "333", 1, 7000)
    connect(sw, customer, target)  # type: ignore[arg-type]
    assert [kind for kind, _, _ in sw.sent] == ["INVITE"]  # only the hold so far; the target's 2xx waits
    sw.finish(customer, Answer(sdp("cust", "222", 2, 6000, "recvonly")))
    kind, leg_id, offer = sw.sent[-1]
    assert (kind, leg_id) == ("INVITE", "customer")
    assert SessionDescription.parse(offer).media[0].port == 7000  # the target's offer, as the customer's session
    sw.finish(customer, Answer(sdp("cust", "222", 3, 6002)))
    kind, leg_id, answer = sw.sent[-1]
    assert (kind, leg_id) == ("ACK", "target")
    assert SessionDescription.parse(answer).media[0].port == 6002


def test_the_first_sdp_is_not_parsed_until_a_later_one_needs_its_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    customer = leg()
    first = sdp("agent", "111", 5, 4000)
    with monkeypatch.context() as mp:
        def no_parse(data: bytes) -> SessionDescription:
            raise AssertionError("parsed")

        mp.setattr(SessionDescription, "parse", staticmethod(no_parse))
        assert present(customer, first) == first  # a call that never re-negotiates never parses its SDP
    assert customer.sent_origin is None and customer.origin_pending
    moved = present(customer, sdp("target", "999", 1, 5000))
    assert origin(moved) == ("agent", "111", 6)
    assert not customer.origin_pending


def test_an_unparsable_first_sdp_leaves_the_next_valid_one_to_pass_as_it_is() -> None:
    customer = leg()
    assert present(customer, b"not sdp") == b"not sdp"
    valid = sdp("agent", "111", 5, 4000)
    assert present(customer, valid) == valid
    assert origin(present(customer, sdp("target", "999", 1, 5000))) == ("agent", "111", 6)
