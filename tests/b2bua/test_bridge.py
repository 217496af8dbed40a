"""The SDP each party is shown (bridge.present / modify_own): one session per party, whoever the far end is."""

from __future__ import annotations

from callbridge.b2bua.bridge import modify_own, present
from callbridge.b2bua.legs import SipLeg
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
