"""Digest authentication (RFC 7616 / RFC 8760 / RFC 2617): header syntax, hashes, challenger and responder."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip import auth
from callbridge.sip.auth import (
    AuthError,
    AuthReason,
    DigestChallenger,
    DigestResponder,
    challenge_is_stale,
    digest_response,
    format_auth_header,
    ha1,
    parse_auth_header,
)
from callbridge.sip.errors import SipError

REALM = "0042.callbridge.test"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = {"1001": "s3cret", "1002": "other"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else ha1(username, realm, password, algorithm)


def _challenger(**kwargs: object) -> DigestChallenger:
    return DigestChallenger(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


# --- RFC worked examples --------------------------------------------------------------------------------------

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _independent(hash_name: str) -> str:
    """RFC 7616 §3.4.1 recomputed with hashlib alone, for the §3.9.1 inputs."""
    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()
    a1 = h("Mufasa:http-auth@example.org:Circle of Life")
    a2 = h("GET:/dir/index.html")
    return h(f"{a1}:{RFC7616_NONCE}:00000001:{RFC7616_CNONCE}:auth:{a2}")


@pytest.mark.parametrize(("algorithm", "hash_name", "expected"), [
    ("MD5", "md5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "sha256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_3_9_1_example(algorithm: str, hash_name: str, expected: str) -> None:
    assert _independent(hash_name) == expected
    stored = ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    assert digest_response(algorithm, stored, RFC7616_NONCE, "GET", "/dir/index.html", qop="auth",
                           nc="00000001", cnonce=RFC7616_CNONCE) == expected
    challenge = (f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
                 f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"')
    header = DigestResponder("Mufasa", "Circle of Life").authorize("GET", "/dir/index.html", challenge,
                                                                   cnonce=RFC7616_CNONCE)
    scheme, params = parse_auth_header(header)
    assert scheme == "Digest"
    assert params == {"username": "Mufasa", "realm": "http-auth@example.org", "uri": "/dir/index.html",
                      "algorithm": algorithm, "nonce": RFC7616_NONCE, "nc": "00000001", "cnonce": RFC7616_CNONCE,
                      "qop": "auth", "response": expected, "opaque": RFC7616_OPAQUE}


def test_responder_picks_sha256_from_the_rfc7616_pair_of_challenges() -> None:
    challenges = [
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="{RFC7616_NONCE}"',
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="{RFC7616_NONCE}"',
    ]
    header = DigestResponder("Mufasa", "Circle of Life").authorize("GET", "/dir/index.html", challenges,
                                                                   cnonce=RFC7616_CNONCE)
    assert parse_auth_header(header)[1]["response"] == _independent("sha256")


def test_rfc2617_3_5_example_md5_without_algorithm_parameter() -> None:
    challenge = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = DigestResponder("Mufasa", "Circle Of Life").authorize("GET", "/dir/index.html", challenge,
                                                                   cnonce="0a4f113b")
    params = parse_auth_header(header)[1]
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert "algorithm" not in params  # not offered, so not named (MD5 is the default)
    assert params["nc"] == "00000001"


def test_ha1_values() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == "939e7578ed9e3c518a452acee763bce9"
    assert ha1("u", "r", "p", "sha-256") == hashlib.sha256(b"u:r:p").hexdigest()
    assert ha1("u", "r", "p", "MD5-sess") == hashlib.md5(b"u:r:p").hexdigest()  # -sess stores the base HA1
    with pytest.raises(AuthError):
        ha1("u", "r", "p", "SHA-512-256")


# --- header syntax --------------------------------------------------------------------------------------------

def test_parse_tolerates_whitespace_empty_elements_and_case() -> None:
    value = ' Digest  Realm = "a \\"b\\" c" ,, NONCE="n",algorithm=SHA-256 ,\tqop="auth,auth-int" ,stale=TRUE '
    scheme, params = parse_auth_header(value)
    assert scheme == "Digest"
    assert params == {"realm": 'a "b" c', "nonce": "n", "algorithm": "SHA-256", "qop": "auth,auth-int",
                      "stale": "TRUE"}


def test_parse_keeps_tabs_in_quoted_values_and_unescapes_after_plain_params() -> None:
    assert parse_auth_header('Digest realm="a\tb",nonce=n')[1] == {"realm": "a\tb", "nonce": "n"}
    assert parse_auth_header('Digest nonce="n", realm="x\\y"')[1] == {"nonce": "n", "realm": "xy"}


def test_parse_scheme_only_and_unquoted_uri() -> None:
    assert parse_auth_header("Digest") == ("Digest", {})
    assert parse_auth_header("Digest uri=sip:1001@127.0.0.1, nc=00000001")[1] == {
        "uri": "sip:1001@127.0.0.1", "nc": "00000001"}


@pytest.mark.parametrize("value", [
    "", "   ", '"Digest"', "Digest,realm=x", 'Digest realm="x', "Digest realm", "Digest realm=",
    'Digest realm="x" nonce="y"', 'Digest realm="x", realm="y"', 'Digest realm="a\x00b"', "Digest =x",
    'Digest realm="x"junk', "Digest realm=\x01", "Digest realm=x\xa0, nonce=y", 'Digest realm="a\x7f"',
    "Digest realm=x;y=\x1f",
])
def test_parse_garbage_raises_auth_error_with_status_400(value: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_auth_header(value)
    assert isinstance(info.value, SipError)
    assert info.value.status == 400


def test_format_quotes_per_rfc7616() -> None:
    assert format_auth_header("Digest", {"realm": "r", "nonce": "n", "algorithm": "MD5", "qop": "auth",
                                         "stale": "true", "domain": "sip:r"}) == (
        'Digest realm="r", nonce="n", algorithm=MD5, qop="auth", stale=true, domain="sip:r"')
    assert format_auth_header("Digest", {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:r",
                                         "response": "0a", "algorithm": "SHA-256", "cnonce": "c", "opaque": "o",
                                         "qop": "auth", "nc": "00000001"}) == (
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="0a", algorithm=SHA-256, '
        'cnonce="c", opaque="o", qop=auth, nc=00000001')
    assert format_auth_header("Digest", {"x": "a b", "y": "tok"}) == 'Digest x="a b", y=tok'
    assert format_auth_header("Digest", {"realm": 'q"\\'}) == 'Digest realm="q\\"\\\\"'


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["realm", "nonce", "username", "uri", "opaque", "x-y"]),
                       st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                                      blacklist_characters="\x7f")),
                       max_size=6))
def test_format_then_parse_round_trips(params: dict[str, str]) -> None:
    assert parse_auth_header(format_auth_header("Digest", params)) == ("Digest", params)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_random_header_text_raises_only_auth_error(value: str) -> None:
    try:
        parse_auth_header(value)
    except AuthError:
        pass
    try:
        DigestResponder("1001", "pw").authorize("REGISTER", "sip:r", value)
    except AuthError:
        pass
    _challenger().verify("REGISTER", value, lookup, 0.0)


# --- challenger <-> responder ---------------------------------------------------------------------------------

def test_challenge_offers_sha256_first_then_md5() -> None:
    values = _challenger().challenge(10.0)
    parsed = [parse_auth_header(v) for v in values]
    assert [p[1]["algorithm"] for p in parsed] == ["SHA-256", "MD5"]
    assert all(p[0] == "Digest" and p[1]["realm"] == REALM and p[1]["qop"] == "auth" for p in parsed)
    assert parsed[0][1]["nonce"] == parsed[1][1]["nonce"]
    assert "stale" not in parsed[0][1] and not challenge_is_stale(values)
    stale = _challenger().challenge(10.0, stale=True)
    assert challenge_is_stale(stale) and parse_auth_header(stale[1])[1]["stale"] == "true"
    assert _challenger().challenge(10.0)[0] != values[0]  # random part: a fresh nonce every time


@pytest.mark.parametrize("algorithm", ["SHA-256", "SHA-256-sess", "MD5", "MD5-sess"])
@pytest.mark.parametrize("qop", [("auth",), ("auth-int",), ()])
def test_round_trip_every_algorithm_and_qop(algorithm: str, qop: tuple[str, ...]) -> None:
    challenger = _challenger(algorithms=(algorithm,), qop=qop)
    responder = DigestResponder("1001", "s3cret")
    body = b"v=0\r\n"
    header = responder.authorize("INVITE", "sip:2000@127.0.0.1", challenger.challenge(100.0), body=body)
    params = parse_auth_header(header)[1]
    assert params["algorithm"] == algorithm
    assert params.get("qop") == (qop[0] if qop else None)
    result = challenger.verify("INVITE", header, lookup, 100.5, body=body)
    assert (result.ok, result.reason, result.username) == (True, AuthReason.OK, "1001")
    if qop == ("auth-int",):  # the body is covered
        other = responder.authorize("INVITE", "sip:2000@127.0.0.1", challenger.challenge(101.0), body=body)
        assert challenger.verify("INVITE", other, lookup, 101.0, body=b"v=1\r\n").reason == AuthReason.BAD_RESPONSE


def test_method_is_covered() -> None:
    challenger = _challenger()
    header = DigestResponder("1001", "s3cret").authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    assert challenger.verify("INVITE", header, lookup, 1.0).reason == AuthReason.BAD_RESPONSE
    assert challenger.verify("REGISTER", header, lookup, 1.0).ok


def test_responder_with_stored_ha1_uses_what_it_has() -> None:
    challenger = _challenger()
    responder = DigestResponder("1001", ha1={"MD5": ha1("1001", REALM, "s3cret")})
    header = responder.authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    assert parse_auth_header(header)[1]["algorithm"] == "MD5"
    assert challenger.verify("REGISTER", header, lookup, 1.0).ok
    with pytest.raises(ValueError):
        DigestResponder("1001")
    with pytest.raises(ValueError):
        DigestResponder("1001", "pw", ha1={"MD5": "x"})


@pytest.mark.parametrize("challenge", [
    "Basic realm=\"r\"",
    'Digest realm="r", nonce="n", algorithm=SHA-512-256',
    'Digest realm="r", nonce="n", qop="auth-conf"',
    'Digest realm="r"',
])
def test_responder_refuses_challenges_it_cannot_answer(challenge: str) -> None:
    with pytest.raises(AuthError):
        DigestResponder("1001", "pw").authorize("REGISTER", "sip:r", challenge)


def test_wrong_password_is_bad_response() -> None:
    challenger = _challenger()
    header = DigestResponder("1001", "wrong").authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    result = challenger.verify("REGISTER", header, lookup, 1.0)
    assert (result.ok, result.reason, result.detail, result.stale) == (False, AuthReason.BAD_RESPONSE, None, False)


def test_unknown_user_is_indistinguishable_from_a_wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    challenger = _challenger()
    calls: list[tuple[str, ...]] = []
    real = auth.digest_response

    def counting(*args: object, **kwargs: object) -> str:
        calls.append(tuple(type(a).__name__ for a in args))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth, "digest_response", counting)
    lookups: list[tuple[str, str, str]] = []

    def recording_lookup(username: str, realm: str, algorithm: str) -> str | None:
        lookups.append((username, realm, algorithm))
        return lookup(username, realm, algorithm)

    wrong_header = DigestResponder("1001", "nope").authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    unknown_header = DigestResponder("9999", "nope").authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    calls.clear()
    wrong = challenger.verify("REGISTER", wrong_header, recording_lookup, 1.0)
    unknown = challenger.verify("REGISTER", unknown_header, recording_lookup, 1.0)
    assert (wrong.ok, wrong.reason, wrong.stale) == (unknown.ok, unknown.reason, unknown.stale)
    assert unknown.reason == AuthReason.BAD_RESPONSE
    assert (wrong.log_reason, unknown.log_reason) == (AuthReason.BAD_RESPONSE, AuthReason.UNKNOWN_USER)
    assert lookups == [("1001", REALM, "SHA-256"), ("9999", REALM, "SHA-256")]
    assert len(calls) == 2 and calls[0] == calls[1]  # one digest computed on each path, same shape


# --- nonce expiry and replay ----------------------------------------------------------------------------------

def test_expired_nonce_with_right_password_is_stale() -> None:
    challenger = _challenger(nonce_ttl=300.0)
    header = DigestResponder("1001", "s3cret").authorize("REGISTER", "sip:r", challenger.challenge(1000.0))
    assert challenger.verify("REGISTER", header, lookup, 1300.0).ok  # the last second of its life
    late = DigestResponder("1001", "s3cret").authorize("REGISTER", "sip:r", challenger.challenge(1000.0))
    result = challenger.verify("REGISTER", late, lookup, 1300.01)
    assert (result.ok, result.reason, result.stale) == (False, AuthReason.STALE, True)
    wrong = DigestResponder("1001", "bad").authorize("REGISTER", "sip:r", challenger.challenge(1000.0))
    assert challenger.verify("REGISTER", wrong, lookup, 2000.0).reason == AuthReason.BAD_RESPONSE


def test_stale_rechallenge_then_retry_succeeds() -> None:
    challenger = _challenger(nonce_ttl=60.0)
    responder = DigestResponder("1001", "s3cret")
    responder.authorize("REGISTER", "sip:r", challenger.challenge(0.0))
    refresh = responder.reauthorize("REGISTER", "sip:r")
    assert refresh is not None
    result = challenger.verify("REGISTER", refresh, lookup, 120.0)
    assert result.stale
    again = challenger.challenge(120.0, stale=result.stale)
    assert challenge_is_stale(again)
    assert challenger.verify("REGISTER", responder.authorize("REGISTER", "sip:r", again), lookup, 121.0).ok


def _credentials(challenger: DigestChallenger, nonce: str, nc: int, *, qop: str | None = "auth",
                 password: str = "s3cret") -> dict[str, str]:
    stored = ha1("1001", REALM, password, "SHA-256")
    params = {"username": "1001", "realm": REALM, "nonce": nonce, "uri": "sip:r", "algorithm": "SHA-256"}
    if qop is None:
        params["response"] = digest_response("SHA-256", stored, nonce, "REGISTER", "sip:r")
    else:
        params.update(qop=qop, nc=f"{nc:08x}", cnonce="abc")
        params["response"] = digest_response("SHA-256", stored, nonce, "REGISTER", "sip:r", qop=qop,
                                             nc=f"{nc:08x}", cnonce="abc")
    return params


def test_nonce_count_must_increase() -> None:
    challenger = _challenger()
    nonce = challenger.make_nonce(0.0)
    verify = [challenger.verify("REGISTER", _credentials(challenger, nonce, nc), lookup, 1.0).reason
              for nc in (1, 1, 2, 5, 3, 5, 6)]
    assert verify == [AuthReason.OK, AuthReason.REPLAY, AuthReason.OK, AuthReason.OK, AuthReason.REPLAY,
                      AuthReason.REPLAY, AuthReason.OK]
    assert challenger.verify("REGISTER", _credentials(challenger, nonce, 7), lookup, 1.0).stale is False


def test_failed_attempts_do_not_burn_nonce_counts() -> None:
    challenger = _challenger()
    nonce = challenger.make_nonce(0.0)
    forged = _credentials(challenger, nonce, 9, password="guess")
    assert challenger.verify("REGISTER", forged, lookup, 1.0).reason == AuthReason.BAD_RESPONSE
    assert challenger.verify("REGISTER", _credentials(challenger, nonce, 1), lookup, 1.0).ok


def test_without_qop_a_nonce_is_good_once() -> None:
    challenger = _challenger(qop=())
    nonce = challenger.make_nonce(0.0)
    first = challenger.verify("REGISTER", _credentials(challenger, nonce, 0, qop=None), lookup, 1.0)
    second = challenger.verify("REGISTER", _credentials(challenger, nonce, 0, qop=None), lookup, 2.0)
    assert (first.reason, second.reason, second.stale) == (AuthReason.OK, AuthReason.REPLAY, True)
    responder = DigestResponder("1001", "s3cret")
    responder.authorize("REGISTER", "sip:r", challenger.challenge(3.0))
    assert responder.reauthorize("REGISTER", "sip:r") is None


def test_nonce_table_stays_bounded_and_eviction_does_not_reopen_replay() -> None:
    challenger = _challenger(max_nonces=10, nonce_ttl=1000.0)
    nonces = [challenger.make_nonce(float(t)) for t in range(50)]
    for nonce in nonces:
        assert challenger.verify("REGISTER", _credentials(challenger, nonce, 1), lookup, 60.0).ok
        assert challenger.tracked_nonces <= 10
    evicted = nonces[0]
    assert challenger.verify("REGISTER", _credentials(challenger, evicted, 1), lookup, 60.0).reason == (
        AuthReason.STALE)
    assert challenger.verify("REGISTER", _credentials(challenger, nonces[-1], 2), lookup, 60.0).ok
    fresh = challenger.make_nonce(61.0)
    assert challenger.verify("REGISTER", _credentials(challenger, fresh, 1), lookup, 62.0).ok


def test_expired_entries_are_pruned() -> None:
    challenger = _challenger(nonce_ttl=10.0)
    for t in range(5):
        challenger.verify("REGISTER", _credentials(challenger, challenger.make_nonce(float(t)), 1), lookup, t + 0.5)
    assert challenger.tracked_nonces == 5
    challenger.verify("REGISTER", _credentials(challenger, challenger.make_nonce(100.0), 1), lookup, 100.0)
    assert challenger.tracked_nonces == 1


# --- rejected credentials -------------------------------------------------------------------------------------

def test_rejections() -> None:
    challenger = _challenger()
    nonce = challenger.make_nonce(0.0)
    good = _credentials(challenger, nonce, 1)

    def reason(params: dict[str, str] | str | None, now: float = 1.0) -> AuthReason:
        return challenger.verify("REGISTER", params, lookup, now).reason

    assert reason(None) == AuthReason.NO_CREDENTIALS
    assert reason({}) == AuthReason.NO_CREDENTIALS
    assert reason('Basic dXNlcjpwYXNz') == AuthReason.MALFORMED  # token68 is not auth-param syntax
    assert reason('Bearer realm="x"') == AuthReason.NO_CREDENTIALS
    assert reason('Digest realm="x') == AuthReason.MALFORMED
    for missing in ("username", "realm", "nonce", "uri", "response"):
        assert reason({k: v for k, v in good.items() if k != missing}) == AuthReason.MALFORMED
    assert reason({**good, "nc": "1"}) == AuthReason.MALFORMED
    assert reason({**good, "nc": "00000000"}) == AuthReason.MALFORMED
    assert reason({k: v for k, v in good.items() if k != "cnonce"}) == AuthReason.MALFORMED
    assert reason({**good, "qop": "auth-int"}) == AuthReason.MALFORMED  # not offered
    assert reason({**good, "realm": "elsewhere"}) == AuthReason.BAD_REALM
    assert reason({**good, "nonce": nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")}) == AuthReason.BAD_NONCE
    assert reason({**good, "nonce": "not base64 !"}) == AuthReason.BAD_NONCE
    assert reason({**good, "nonce": "é"}) == AuthReason.BAD_NONCE
    assert reason({**good, "nonce": DigestChallenger(REALM, b"another secret!!").make_nonce(0.0)}) == (
        AuthReason.BAD_NONCE)
    assert reason({**good, "nonce": DigestChallenger("other", SECRET).make_nonce(0.0)}) == AuthReason.BAD_NONCE
    bad_algorithm = challenger.verify("REGISTER", {**good, "algorithm": "SHA-512-256"}, lookup, 1.0)
    assert (bad_algorithm.reason, bad_algorithm.log_reason) == (AuthReason.BAD_RESPONSE, AuthReason.BAD_ALGORITHM)
    sha_only = _challenger(algorithms=("SHA-256",))
    md5 = DigestResponder("1001", "s3cret").authorize(
        "REGISTER", "sip:r", f'Digest realm="{REALM}", nonce="{nonce}", qop="auth"')
    assert sha_only.verify("REGISTER", md5, lookup, 1.0).log_reason == AuthReason.BAD_ALGORITHM
    assert reason(good) == AuthReason.OK  # and none of the above spent its count
    second = _credentials(challenger, nonce, 2)
    assert reason({**second, "response": second["response"].upper()}) == AuthReason.OK  # hex case is not meaning


def test_challenger_validates_its_configuration() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, b"short")
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, nonce_ttl=0)
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, qop=("auth-conf",))
