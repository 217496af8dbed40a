"""SDP (RFC 4566) parse/serialise and the RFC 3264 direction, hold and version helpers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.sdp import (
    DIRECTIONS,
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    answer_direction,
    hold_direction,
    rebase_origin,
    resume_direction,
)

PHONE_OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
)

# RFC 4566 §5 example, plus the lines callbridge does not model and one it has never heard of (y=),
# a session-level direction, a non-UTF-8 session name and a media c= override.
EVERYTHING = (
    b"v=0\r\n"
    b"o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
    b"s=Caf\xe9 SDP Seminar\r\n"
    b"i=A Seminar on the session description protocol\r\n"
    b"u=http://www.example.com/seminars/sdp.pdf\r\n"
    b"e=j.doe@example.com (Jane Doe)\r\n"
    b"c=IN IP4 224.2.17.12/127\r\n"
    b"b=AS:256\r\n"
    b"t=2873397496 2873404696\r\n"
    b"r=7d 1h 0 25h\r\n"
    b"z=2882844526 -1h 2898848070 0\r\n"
    b"y=something from the future\r\n"
    b"a=recvonly\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"i=voice\r\n"
    b"m=video 51372/2 RTP/AVP 99\r\n"
    b"c=IN IP4 127.0.0.2\r\n"
    b"b=AS:512\r\n"
    b"k=prompt\r\n"
    b"a=rtpmap:99 h263-1998/90000\r\n"
    b"a=sendrecv\r\n"
)


@pytest.mark.parametrize("data", [PHONE_OFFER, EVERYTHING])
def test_round_trip_is_byte_exact(data: bytes) -> None:
    sd = SessionDescription.parse(data)
    assert bytes(sd) == data
    assert sd.to_bytes() == data
    assert SessionDescription.parse(bytes(sd)) == sd


def test_str_input_parses_like_bytes() -> None:
    assert SessionDescription.parse(PHONE_OFFER.decode()) == SessionDescription.parse(PHONE_OFFER)


def test_lf_only_input_is_accepted_and_serialised_with_crlf() -> None:
    sd = SessionDescription.parse(PHONE_OFFER.replace(b"\r\n", b"\n"))
    assert bytes(sd) == PHONE_OFFER


def test_missing_final_newline_and_trailing_blank_lines_are_tolerated() -> None:
    assert bytes(SessionDescription.parse(PHONE_OFFER[:-2])) == PHONE_OFFER
    assert bytes(SessionDescription.parse(PHONE_OFFER + b"\r\n\r\n")) == PHONE_OFFER


def test_typed_fields() -> None:
    sd = SessionDescription.parse(EVERYTHING)
    assert sd.version == 0
    assert sd.origin == Origin("jdoe", "2890844526", 2890842807, "IN", "IP4", "10.47.16.5")
    assert sd.session_name == "Caf\udce9 SDP Seminar"  # the Latin-1 byte is kept, not guessed at
    assert sd.connection == Connection("IN", "IP4", "224.2.17.12/127")
    assert sd.timing == [Timing(2873397496, 2873404696)]
    assert sd.attributes == [Attribute("recvonly")]
    audio, video = sd.media
    assert (audio.media, audio.port, audio.port_count, audio.proto, audio.formats) == ("audio", 49170, None,
                                                                                        "RTP/AVP", ["0"])
    assert (video.media, video.port, video.port_count, video.proto, video.formats) == ("video", 51372, 2,
                                                                                        "RTP/AVP", ["99"])
    assert audio.connection is None
    assert sd.connection_for(0) == Connection("IN", "IP4", "224.2.17.12/127")
    assert sd.connection_for(video) == Connection("IN", "IP4", "127.0.0.2")
    assert video.attributes == [Attribute("rtpmap", "99 h263-1998/90000"), Attribute("sendrecv")]
    assert video.attribute("rtpmap") == "99 h263-1998/90000"
    assert video.attribute("sendrecv") == ""
    assert video.attribute("fmtp") is None


def test_phone_offer_fields() -> None:
    sd = SessionDescription.parse(PHONE_OFFER)
    (audio,) = sd.media
    assert audio.formats == ["0", "8", "101"]
    assert audio.attribute("fmtp") == "101 0-16"
    assert sd.direction() == "sendrecv"
    assert sd.direction(0) == "sendrecv"


def test_create_builds_a_well_formed_description() -> None:
    audio = MediaDescription.create("audio", 4000, "RTP/AVP", ["0", "101"])
    audio.add_attribute("rtpmap", "0 PCMU/8000")
    audio.add_attribute("sendrecv")
    sd = SessionDescription.create(Origin("-", "42", 1), connection=Connection("IN", "IP4", "127.0.0.1"),
                                   media=[audio])
    assert bytes(sd) == (
        b"v=0\r\no=- 42 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    assert SessionDescription.parse(bytes(sd)) == sd


def test_connection_and_port_setters_rewrite_in_place() -> None:
    sd = SessionDescription.parse(PHONE_OFFER)
    sd.connection = Connection("IN", "IP4", "127.0.0.9")
    sd.media[0].port = 0
    assert sd.media[0].rejected
    sd.media[0].connection = Connection("IN", "IP4", "127.0.0.8")  # inserted after m=, before a= (RFC 4566 §5)
    assert bytes(sd) == (
        PHONE_OFFER.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.9")
        .replace(b"m=audio 49170 RTP/AVP 0 8 101\r\n", b"m=audio 0 RTP/AVP 0 8 101\r\nc=IN IP4 127.0.0.8\r\n")
    )
    sd.media[0].connection = None
    sd.media[0].remove_attributes("rtpmap", "fmtp")
    assert [a.name for a in sd.media[0].attributes] == ["ptime"]


# --- direction -----------------------------------------------------------------------------------------------

def _with(session: str | None, *media: str | None) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    if session:
        lines.append(f"a={session}")
    for index, direction in enumerate(media):
        lines += [f"m=audio {4000 + 2 * index} RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
        if direction:
            lines.append(f"a={direction}")
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


DIRECTION_OR_NONE: list[str | None] = [None, *DIRECTIONS]


@pytest.mark.parametrize(("session", "media"), list(itertools.product(DIRECTION_OR_NONE, DIRECTION_OR_NONE)))
def test_direction_media_overrides_session_and_default_is_sendrecv(session: str | None, media: str | None) -> None:
    sd = _with(session, media)
    assert sd.direction() == (session or "sendrecv")
    assert sd.direction(0) == (media or session or "sendrecv")
    assert sd.direction(sd.media[0]) == sd.direction(0)


@pytest.mark.parametrize(
    ("session", "media", "new"),
    list(itertools.product(DIRECTION_OR_NONE, DIRECTION_OR_NONE, DIRECTIONS)),
)
def test_with_direction_sets_every_stream(session: str | None, media: str | None, new: Direction) -> None:
    original = _with(session, media, None)
    sd = original.with_direction(new)
    assert [sd.direction(0), sd.direction(1)] == [new, new]
    assert sd.own_direction is None  # moved from session level to the streams
    assert sd.media[0].own_direction == new and sd.media[1].own_direction == new
    assert sum(1 for a in sd.media[0].attributes if a.name in DIRECTIONS) == 1
    assert original == _with(session, media, None)  # the original is untouched
    assert SessionDescription.parse(bytes(sd)) == sd
    # everything that is not a direction is unchanged, in order
    strip = [line for line in bytes(original).split(b"\r\n") if line[2:].decode() not in DIRECTIONS]
    assert [line for line in bytes(sd).split(b"\r\n") if line[2:].decode() not in DIRECTIONS] == strip


def test_set_direction_replaces_the_attribute_where_it_was() -> None:
    sd = _with(None, "sendrecv")
    sd.media[0].add_attribute("ptime", "20")
    sd.set_direction("sendonly")
    assert [str(a) for a in sd.media[0].attributes] == ["rtpmap:0 PCMU/8000", "sendonly", "ptime:20"]


def test_set_direction_on_one_stream_only() -> None:
    sd = _with("recvonly", None, None)
    sd.set_direction("inactive", media=1)
    assert [sd.direction(0), sd.direction(1)] == ["recvonly", "inactive"]
    assert sd.own_direction == "recvonly"


def test_set_direction_skips_rejected_streams_and_refuses_nonsense() -> None:
    sd = _with(None, None, None)
    sd.media[1].port = 0
    sd.set_direction("sendonly")
    assert sd.media[0].own_direction == "sendonly"
    assert sd.media[1].own_direction is None
    with pytest.raises(ValueError):
        sd.set_direction("sideways")


def test_set_direction_without_media_sections_sets_session_level() -> None:
    sd = SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
    sd.set_direction("inactive")
    assert bytes(sd).endswith(b"t=0 0\r\na=inactive\r\n")
    assert sd.direction() == "inactive"


def test_hold_and_resume_directions_rfc3264_8_4() -> None:
    assert {d: hold_direction(d) for d in DIRECTIONS} == {
        "sendrecv": "sendonly", "sendonly": "sendonly", "recvonly": "inactive", "inactive": "inactive"}
    assert {d: resume_direction(d) for d in DIRECTIONS} == {
        "sendrecv": "sendrecv", "sendonly": "sendrecv", "recvonly": "recvonly", "inactive": "recvonly"}
    for direction in ("sendrecv", "recvonly"):
        assert resume_direction(hold_direction(direction)) == direction


def test_answer_direction_rfc3264_6_1() -> None:
    assert {d: answer_direction(d) for d in DIRECTIONS} == {
        "sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def test_with_hold_and_with_resume_per_stream() -> None:
    sd = _with(None, "sendrecv", "recvonly", None)
    held = sd.with_hold()
    assert [held.direction(i) for i in range(3)] == ["sendonly", "inactive", "sendonly"]
    resumed = held.with_resume()
    assert [resumed.direction(i) for i in range(3)] == ["sendrecv", "recvonly", "sendrecv"]
    inherited = _with("recvonly", None).with_hold()
    assert (inherited.own_direction, inherited.direction(0)) == (None, "inactive")


# --- versions ------------------------------------------------------------------------------------------------

def test_bump_version_keeps_session_id_and_changes_only_o_line() -> None:
    sd = SessionDescription.parse(PHONE_OFFER)
    assert sd.bump_version() == 2890844527
    assert sd.origin == Origin("alice", "2890844526", 2890844527, "IN", "IP4", "127.0.0.1")
    assert bytes(sd) == PHONE_OFFER.replace(b"2890844526 2890844526", b"2890844526 2890844527")
    sd.bump_version()
    assert sd.origin.sess_version == 2890844528


def test_rebase_origin_keeps_what_the_peer_knows() -> None:
    customer_knows = Origin("callbridge", "7001", 3, "IN", "IP4", "127.0.0.1")
    target_offer = SessionDescription.parse(PHONE_OFFER.replace(b"alice", b"bob"))
    rebased = rebase_origin(target_offer, customer_knows)
    assert rebased.origin == Origin("callbridge", "7001", 4, "IN", "IP4", "127.0.0.1")
    assert bytes(rebased) == PHONE_OFFER.replace(
        b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1", b"o=callbridge 7001 4 IN IP4 127.0.0.1")
    assert target_offer.origin.username == "bob"  # the input is not modified
    assert rebase_origin(rebased, rebased.origin).origin.sess_version == 5


# --- malformed input -----------------------------------------------------------------------------------------

MALFORMED = [
    b"",
    b"\r\n",
    b"o=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n",                          # no v=
    b"v=1\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n",                   # wrong version
    b"v=0\r\ns=-\r\nt=0 0\r\n",                                      # no o=
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nt=0 0\r\n",                 # no s=
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n",  # two o=
    b"v=0\r\no=- 1 IN IP4 127.0.0.1\r\ns=-\r\n",                     # o= short a field
    b"v=0\r\no=- 1 x IN IP4 127.0.0.1\r\ns=-\r\n",                   # version not a number
    b"v=0\r\no=- 1 \xd9\xa1 IN IP4 127.0.0.1\r\ns=-\r\n",            # not an ASCII digit
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4\r\n",       # c= short a field
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0\r\n",            # t= short a field
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP\r\n",         # no format
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n",      # port out of range
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio x RTP/AVP 0\r\n",          # port not a number
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 4000/0 RTP/AVP 0\r\n",     # zero port count
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\ns=-\r\n",  # s= in media
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\na=\r\n",             # empty attribute name
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\na=bad name\r\n",     # attribute name not a token
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nhello\r\n",          # not type=value
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nX=1\r\n",            # upper-case type
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n\r\nt=0 0\r\n",      # blank line inside
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=a\rb\r\n",                # bare CR
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=a\0b\r\n",                # NUL
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_sdp_raises_sdp_error_with_status_400(data: bytes) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(data)
    assert info.value.status == 400


def test_unencodable_text_raises_sdp_error() -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse("v=0\r\ns=\ud800\r\n")


SDP_LINE = st.builds(
    lambda kind, value: f"{kind}={value}",
    st.sampled_from("vosictmab" + "xyz"),
    st.text(alphabet=st.sampled_from(" 0123456789/:IPN4 audiortpmapRTP/AVP-\t"), max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.lists(SDP_LINE, max_size=12).map(lambda lines: "\r\n".join(["v=0", *lines]) + "\r\n"),
))
def test_random_input_raises_only_sdp_error(data: bytes | str) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError:
        return
    # whatever parses serialises to something that parses to the same description, and can be used
    again = SessionDescription.parse(bytes(sd))
    assert again == sd
    for index in range(len(sd.media)):
        sd.direction(index)
    sd.with_hold()
    sd.bump_version()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=len(PHONE_OFFER)))
def test_mutated_offer_raises_only_sdp_error(noise: bytes, at: int) -> None:
    try:
        sd = SessionDescription.parse(PHONE_OFFER[:at] + noise + PHONE_OFFER[at:])
    except SdpError:
        return
    assert SessionDescription.parse(bytes(sd)) == sd


def test_sdp_error_is_a_sip_error_with_status_400() -> None:
    from callbridge.sip.errors import SipError

    with pytest.raises(SipError) as info:
        SessionDescription.parse(b"v=0\r\n")
    assert isinstance(info.value, SdpError) and info.value.status == 400
