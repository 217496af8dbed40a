"""Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760; RFC 2617 and RFC 2069 clients).

Rules:
- Algorithms MD5, MD5-sess, SHA-256 and SHA-256-sess; qop `auth`, `auth-int`, or none (RFC 2069 clients). A
  challenge offers one header value per algorithm, SHA-256 first (RFC 8760 §2.3); the answering side picks the
  strongest one it supports. A challenger's algorithms are a default: `challenge` and `verify` take the list of
  one request (an operation's own offer) so that one realm keeps one nonce table whatever is offered in it.
- The server never needs a password: it looks up HA1 = H(username:realm:password), stored per base algorithm
  (MD5, SHA-256). The `-sess` variants derive their HA1 from that stored value, the nonce and the cnonce.
- Nonces are self-validating: base64url(issue time || 8 random bytes || HMAC-SHA-256(secret, both || realm)[:16]),
  so any nonce this server issued is recognised without keeping it, and one past its TTL is stale. A stale
  nonce answered with the right digest is reported as STALE, so that the caller re-challenges with
  `stale=true` and the phone retries without asking its user (RFC 7616 §3.3).
- Replay (RFC 7616 §3.4.4 `nc`): per nonce the highest nonce-count accepted is kept; a request reusing or
  lowering it is a replay. Without qop there is no nonce-count, so such a nonce is accepted once. The table holds
  only nonces that authenticated a request, drops entries whose nonce expired, and is capped: evicting a live
  entry raises a floor below which unknown nonces count as stale, so eviction can never re-open a replay.
- Only successful checks update the table, so someone who sees a nonce cannot burn its counts.
- An unknown user costs the same work and gets the same answer as a wrong password (a dummy HA1 is derived and
  the digest compared), so that the answer does not say which user names exist; the log detail keeps the
  difference.

Theory of operation: the UAS core calls `DigestChallenger.verify(...)` on a request's Authorization (or
Proxy-Authorization) values, and on failure answers 401 with `WWW-Authenticate` (or 407 with
`Proxy-Authenticate`) values from `challenge(now, stale=result.stale)`. The UAC core calls
`DigestResponder.authorize(...)` with the challenge values of a 401/407 and resends the request with the
returned credentials; it retries once, and again only when the new challenge says `stale=true`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import random
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from callbridge.sip.errors import SipError

__all__ = [
    "AuthError",
    "AuthReason",
    "AuthResult",
    "DigestChallenger",
    "DigestResponder",
    "LookupHA1",
    "challenge_is_stale",
    "digest_response",
    "format_auth_header",
    "ha1",
    "parse_auth_header",
]


class AuthError(SipError, ValueError):
    """A malformed WWW-/Proxy-Authenticate or Authorization value, or a challenge that cannot be answered."""

    def __init__(self, message: str, status: int | None = 400) -> None:
        super().__init__(message, status)


# canonical name -> (hashlib name, session variant)
_ALGORITHMS: Final[dict[str, tuple[str, bool]]] = {
    "SHA-256": ("sha256", False),
    "SHA-256-sess": ("sha256", True),
    "MD5": ("md5", False),
    "MD5-sess": ("md5", True),
}
_BY_UPPER: Final = {name.upper(): name for name in _ALGORITHMS}
_STRENGTH: Final = tuple(_ALGORITHMS)  # strongest first
_NC_MAX: Final = 0xFFFFFFFF


def _canonical_algorithm(name: str) -> str | None:
    return _BY_UPPER.get(name.upper())


def _base(algorithm: str) -> str:
    """The stored-HA1 algorithm of an algorithm: MD5 for MD5-sess, SHA-256 for SHA-256-sess."""
    return algorithm.removesuffix("-sess")


_CONSTRUCTORS: Final = {"md5": hashlib.md5, "sha256": hashlib.sha256}


def _h(algorithm: str, text: str) -> str:
    return _CONSTRUCTORS[_ALGORITHMS[algorithm][0]](text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password), what a server stores instead of the password (base algorithm)."""
    canonical = _canonical_algorithm(algorithm)
    if canonical is None:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    return _h(_base(canonical), f"{username}:{realm}:{password}")


def digest_response(algorithm: str, stored_ha1: str, nonce: str, method: str, uri: str, *, qop: str | None = None,
                    nc: str = "", cnonce: str = "", body: bytes = b"") -> str:
    """The `response` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2, RFC 2069 when `qop` is None)."""
    session_ha1 = _h(algorithm, f"{stored_ha1}:{nonce}:{cnonce}") if _ALGORITHMS[algorithm][1] else stored_ha1
    if qop == "auth-int":
        body_hash = hashlib.new(_ALGORITHMS[algorithm][0], body).hexdigest()
        ha2 = _h(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{session_ha1}:{nonce}:{ha2}")
    return _h(algorithm, f"{session_ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- header values (RFC 7235 §2.1 auth-param syntax, RFC 3261 §25.1) ----------------------------------------

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNQUOTED_VALUE_RE = re.compile(r'[^\s,"]+')  # tolerant: some agents send uri=sip:a@b unquoted
_WS = " \t\r\n"
_ALWAYS_QUOTED: Final = frozenset({"realm", "nonce", "opaque", "uri", "response", "cnonce", "username", "domain"})
_NEVER_QUOTED: Final = frozenset({"algorithm", "nc", "stale"})


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at text[pos] == '"'; returns (unescaped value, position after it)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        if (char < " " and char != "\t") or char == "\x7f":
            raise AuthError("control character in a quoted string")
        out.append(char)
        pos += 1
    raise AuthError("unterminated quoted string")


# One auth-param with its list separator, for the fast path of `parse_auth_header`: a quoted value without escapes
# or control characters, or an unquoted one without control characters. Anything else (escapes, an empty element,
# a bad character, a missing separator) leaves the fast path, and the exact parser below decides.
_FAST_PARAM_RE = re.compile(
    r'[ \t\r\n]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)[ \t\r\n]*=[ \t\r\n]*'
    r'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*)"|([^\s,"\x00-\x1f\x7f]+))[ \t\r\n]*(?:,|\Z)')


def _parse_fast(text: str, pos: int) -> dict[str, str] | None:
    """The params of a well-formed list (what phones send), or None when the exact parser must look at it."""
    params: dict[str, str] = {}
    end = len(text)
    match = _FAST_PARAM_RE.match
    while pos < end:
        found = match(text, pos)
        if found is None:
            return None
        name = found.group(1).lower()
        if name in params:
            return None
        quoted = found.group(2)
        params[name] = quoted if quoted is not None else found.group(3)
        pos = found.end()
    return params


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split a WWW-Authenticate / Authorization value into its scheme and its parameters.

    Parameter names are lower-cased; quoted values are unescaped. Garbage raises `AuthError` (status 400).
    """
    text = value.strip(_WS)
    match = _TOKEN_RE.match(text)
    if match is not None and (match.end() == len(text) or text[match.end()] in _WS):
        fast = _parse_fast(text, match.end())
        if fast is not None:
            return match.group(), fast
    if match is None:
        raise AuthError(f"no auth scheme in {value[:40]!r}")
    scheme = match.group()
    pos = match.end()
    params: dict[str, str] = {}
    if pos < len(text) and text[pos] not in _WS:
        raise AuthError(f"bad auth scheme in {value[:40]!r}")
    while True:
        pos = _skip_ws(text, pos)
        while pos < len(text) and text[pos] == ",":  # empty list elements are allowed (RFC 7230 §7)
            pos = _skip_ws(text, pos + 1)
        if pos >= len(text):
            return scheme, params
        name_match = _TOKEN_RE.match(text, pos)
        if name_match is None:
            raise AuthError(f"bad auth-param name at {text[pos:pos + 20]!r}")
        name = name_match.group().lower()
        pos = _skip_ws(text, name_match.end())
        if pos >= len(text) or text[pos] != "=":
            raise AuthError(f"auth-param {name!r} has no value")
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            param, pos = _quoted(text, pos)
        else:
            value_match = _UNQUOTED_VALUE_RE.match(text, pos)
            if value_match is None:
                raise AuthError(f"auth-param {name!r} has an empty value")
            param = value_match.group()
            if any(c < " " or c == "\x7f" for c in param):
                raise AuthError("control character in an auth-param")
            pos = value_match.end()
        if name in params:
            raise AuthError(f"auth-param {name!r} given twice")
        params[name] = param
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] != ",":
            raise AuthError(f"expected ',' at {text[pos:pos + 20]!r}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_header(scheme: str, params: Mapping[str, str], *, challenge: bool | None = None) -> str:
    """The inverse of `parse_auth_header`, quoting what RFC 7616 §3.3/§3.4 quote.

    `qop` is a quoted list in a challenge and a bare token in credentials; `challenge=None` tells them apart by
    the presence of `response`.
    """
    is_challenge = "response" not in params if challenge is None else challenge
    parts = []
    for name, value in params.items():
        lower = name.lower()
        if lower == "qop":
            quote = is_challenge
        elif lower in _ALWAYS_QUOTED:
            quote = True
        elif lower in _NEVER_QUOTED:
            quote = False
        else:
            quote = _TOKEN_RE.fullmatch(value) is None
        parts.append(f"{name}={_quote(value) if quote else value}")
    return f"{scheme} {', '.join(parts)}" if parts else scheme


def challenge_is_stale(challenge_values: str | Sequence[str]) -> bool:
    """True when a 401/407 says the previous credentials were right but their nonce stale (retry silently)."""
    values = [challenge_values] if isinstance(challenge_values, str) else challenge_values
    for value in values:
        try:
            scheme, params = parse_auth_header(value)
        except AuthError:
            continue
        if scheme.lower() == "digest" and params.get("stale", "").lower() == "true":
            return True
    return False


# --- the challenging side (UAS, registrar, proxy) --------------------------------------------------------------

class AuthReason(enum.Enum):
    OK = "ok"
    NO_CREDENTIALS = "no_credentials"
    MALFORMED = "malformed"            # credentials missing a field or with a bad one: answer 400
    BAD_REALM = "bad_realm"
    BAD_NONCE = "bad_nonce"            # not a nonce this server issued
    STALE = "stale"                    # right digest, expired nonce: re-challenge with stale=true
    REPLAY = "replay"                  # right digest, nonce-count already used: re-challenge with stale=true
    BAD_RESPONSE = "bad_response"
    UNKNOWN_USER = "unknown_user"      # log detail only; the reason says BAD_RESPONSE
    BAD_ALGORITHM = "bad_algorithm"    # log detail only; the reason says BAD_RESPONSE


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    reason: AuthReason          # what the caller acts on (never UNKNOWN_USER or BAD_ALGORITHM)
    username: str | None = None
    detail: AuthReason | None = None  # what the logs say; differs from `reason` only where the answer must not

    @property
    def stale(self) -> bool:
        """Re-challenge with stale=true: the client knows the password, only its nonce is used up."""
        return self.reason in (AuthReason.STALE, AuthReason.REPLAY)

    @property
    def log_reason(self) -> AuthReason:
        return self.detail if self.detail is not None else self.reason


LookupHA1 = Callable[[str, str, str], str | None]
"""`lookup_ha1(username, realm, algorithm)` -> stored HA1 for the base algorithm ("MD5" or "SHA-256"), or None."""

_NONCE_RAW = struct.Struct(">d8s")
_NONCE_MAC_LEN = 16
_NONCE_LEN = _NONCE_RAW.size + _NONCE_MAC_LEN


@dataclass(slots=True)
class _NonceUse:
    highest_nc: int
    expires: float


def _fail(reason: AuthReason, username: str | None = None, detail: AuthReason | None = None) -> AuthResult:
    return AuthResult(False, reason, username, detail)


class DigestChallenger:
    """Issues digest challenges for one realm and verifies the credentials answering them."""

    def __init__(self, realm: str, secret: bytes, nonce_ttl: float = 300.0,
                 algorithms: Sequence[str] = ("SHA-256", "MD5"), *, qop: Sequence[str] = ("auth",),
                 max_nonces: int = 100_000, random_bytes: Callable[[int], bytes] | None = None) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if nonce_ttl <= 0 or max_nonces < 1:
            raise ValueError("nonce_ttl and max_nonces must be positive")
        canonical = [_canonical_algorithm(a) for a in algorithms]
        if not canonical or None in canonical:
            raise ValueError(f"unsupported digest algorithms {algorithms!r}")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms: tuple[str, ...] = tuple(a for a in canonical if a is not None)
        self.qop = tuple(qop)
        if not set(self.qop) <= {"auth", "auth-int"}:
            raise ValueError(f"unsupported qop {qop!r}")
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8")
        # Keyed HMAC states, copied per use: hmac.digest() and hmac.new() release the GIL around OpenSSL on every
        # call, and a thread that gives up the GIL on the event loop waits for it behind the writer thread.
        self._hmacs = {name: hmac.new(secret, None, name) for name in ("sha256", "md5")}
        # The nonce's random part only keeps two nonces of the same instant apart; what makes a nonce unforgeable
        # is its HMAC, and anyone may obtain valid nonces by asking. So a PRNG seeded from the OS is enough, and
        # it spares a getrandom() system call per challenge.
        self._random_bytes = (random_bytes if random_bytes is not None
                              else random.Random(secrets.randbits(128)).randbytes)
        # (stale, algorithms offered) -> (before nonce, after nonce) per value
        self._templates: dict[tuple[bool, tuple[str, ...]], list[tuple[str, str]]] = {}
        self._max_nonces = max_nonces
        self._uses: OrderedDict[str, _NonceUse] = OrderedDict()
        self._evicted_floor = float("-inf")  # nonces issued at or before this and unknown count as stale

    # nonces
    def _keyed(self, digest: str, message: bytes) -> bytes:
        """HMAC(secret, message) with the digest named ("sha256" or "md5")."""
        state = self._hmacs[digest].copy()
        state.update(message)
        return state.digest()

    def _mac(self, raw: bytes) -> bytes:
        return self._keyed("sha256", raw + self._realm_bytes)[:_NONCE_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        raw = _NONCE_RAW.pack(now, self._random_bytes(8))
        return base64.urlsafe_b64encode(raw + self._mac(raw)).rstrip(b"=").decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """When this server issued `nonce`, or None if it did not."""
        try:
            blob = base64.urlsafe_b64decode(nonce.encode("ascii") + b"=" * (-len(nonce) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return None
        if len(blob) != _NONCE_LEN:
            return None
        raw, mac = blob[:_NONCE_RAW.size], blob[_NONCE_RAW.size:]
        if not hmac.compare_digest(mac, self._mac(raw)):
            return None
        issued: float = _NONCE_RAW.unpack(raw)[0]
        return issued

    def offered(self, algorithms: Sequence[str] | None = None) -> tuple[str, ...]:
        """The algorithms a challenge offers and a verification accepts: `algorithms` (canonical names, e.g. one
        operation's own list) or, when None, the challenger's. An unknown name is a `ValueError`."""
        if algorithms is None:
            return self.algorithms
        canonical = tuple(_canonical_algorithm(a) for a in algorithms)
        if not canonical or None in canonical:
            raise ValueError(f"unsupported digest algorithms {algorithms!r}")
        return canonical  # type: ignore[return-value]  # no None left, checked above

    def challenge(self, now: float, stale: bool = False, *,
                  algorithms: Sequence[str] | None = None) -> list[str]:
        """WWW-Authenticate (401) / Proxy-Authenticate (407) values: one per algorithm, in the order given
        (`algorithms`, else the challenger's own), so one realm's nonces serve several offers."""
        nonce = self.make_nonce(now)
        offered = self.offered(algorithms)
        templates = self._templates.get((stale, offered))
        if templates is None:
            # Everything but the nonce is the same for every challenge: formatted once, around a marker.
            marker = "\0nonce\0"
            templates = []
            for algorithm in offered:
                params = {"realm": self.realm, "nonce": marker, "algorithm": algorithm}
                if self.qop:
                    params["qop"] = ",".join(self.qop)
                if stale:
                    params["stale"] = "true"
                before, _, after = format_auth_header("Digest", params, challenge=True).partition(marker)
                templates.append((before, after))
            self._templates[(stale, offered)] = templates
        return [before + nonce + after for before, after in templates]

    @property
    def tracked_nonces(self) -> int:
        return len(self._uses)

    # verification
    def verify(self, method: str, credentials: Mapping[str, str] | str | None, lookup_ha1: LookupHA1,
               now: float, body: bytes = b"", *, algorithms: Sequence[str] | None = None) -> AuthResult:
        """Check credentials (the params of an Authorization value, or the raw value) for a request.

        Credentials in an algorithm not offered (`algorithms`, else the challenger's) fail as a wrong response
        does, so the caller answers a fresh challenge (a new 401/407): the client must answer one of the
        challenges it was given (RFC 8760 §2.4, RFC 7616 §3.4), and a weaker hash than offered is not taken."""
        offered = self.offered(algorithms)
        if credentials is None or not credentials:
            return _fail(AuthReason.NO_CREDENTIALS)
        if isinstance(credentials, str):
            try:
                scheme, params = parse_auth_header(credentials)
            except AuthError:
                return _fail(AuthReason.MALFORMED)
            if scheme.lower() != "digest":
                return _fail(AuthReason.NO_CREDENTIALS)
        else:
            params = {k.lower(): v for k, v in credentials.items()}
        username = params.get("username")
        if any(params.get(field) is None for field in ("username", "realm", "nonce", "uri", "response")):
            return _fail(AuthReason.MALFORMED, username)
        assert username is not None
        if params["realm"] != self.realm:
            return _fail(AuthReason.BAD_REALM, username)
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in offered:
            return _fail(AuthReason.BAD_RESPONSE, username, AuthReason.BAD_ALGORITHM)
        nonce = params["nonce"]
        issued = self.nonce_issued_at(nonce)
        if issued is None:
            return _fail(AuthReason.BAD_NONCE, username)
        qop = params.get("qop")
        nc_text, cnonce = params.get("nc", ""), params.get("cnonce", "")
        nc = 0
        if qop is not None:
            if qop not in self.qop or not cnonce or not re.fullmatch(r"[0-9A-Fa-f]{8}", nc_text):
                return _fail(AuthReason.MALFORMED, username)
            nc = int(nc_text, 16)
            if nc == 0:
                return _fail(AuthReason.MALFORMED, username)
        elif _ALGORITHMS[algorithm][1] and not cnonce:
            return _fail(AuthReason.MALFORMED, username)

        # Same work whether or not the user exists: the dummy is always derived, and always compared.
        base = _base(algorithm)
        dummy = self._keyed(_ALGORITHMS[base][0], f"dummy-ha1:{base}:{username}".encode()).hex()
        stored = lookup_ha1(username, self.realm, base)
        known = stored is not None
        expected = digest_response(algorithm, stored if stored is not None else dummy, nonce, method,
                                   params["uri"], qop=qop, nc=nc_text, cnonce=cnonce, body=body)
        matches = hmac.compare_digest(expected.encode(), params["response"].lower().encode("utf-8", "replace"))
        if not known:
            return _fail(AuthReason.BAD_RESPONSE, username, AuthReason.UNKNOWN_USER)
        if not matches:
            return _fail(AuthReason.BAD_RESPONSE, username)

        self._prune(now)
        use = self._uses.get(nonce)
        expires = issued + self.nonce_ttl
        if now > expires or (use is None and issued <= self._evicted_floor):
            return _fail(AuthReason.STALE, username)
        if use is not None and (qop is None or nc <= use.highest_nc):
            return _fail(AuthReason.REPLAY, username)
        # a nonce used without qop is spent: no later count can exceed this one
        highest = _NC_MAX if qop is None else nc
        if use is None:
            self._uses[nonce] = _NonceUse(highest, expires)
            self._enforce_cap()
        else:
            use.highest_nc = highest
            self._uses.move_to_end(nonce)
        return AuthResult(True, AuthReason.OK, username)

    def _prune(self, now: float) -> None:
        """Drop expired entries from the least recently used end (cheap, amortised over requests)."""
        while self._uses:
            nonce, use = next(iter(self._uses.items()))
            if use.expires >= now:
                break
            del self._uses[nonce]

    def _enforce_cap(self) -> None:
        if len(self._uses) <= self._max_nonces:
            return
        # Still too many live nonces: evict the least recently used down to 90 % of the cap, and remember the
        # newest issue time evicted so that those nonces cannot be replayed from a count of zero.
        target = max(1, self._max_nonces * 9 // 10)
        while len(self._uses) > target:
            _, use = self._uses.popitem(last=False)
            self._evicted_floor = max(self._evicted_floor, use.expires - self.nonce_ttl)


# --- the answering side (UAC, phone) ------------------------------------------------------------------------

@dataclass(slots=True)
class _Offer:
    algorithm: str
    params: dict[str, str]
    qop: str | None


class DigestResponder:
    """Answers digest challenges for one set of credentials; keeps nonce-counts per nonce."""

    _MAX_NONCES = 16

    def __init__(self, username: str, password: str | None = None, *, ha1: Mapping[str, str] | None = None,
                 cnonce_source: Callable[[], str] | None = None) -> None:
        """`password`, or `ha1` mapping a base algorithm ("MD5", "SHA-256") to HA1 for the realm it will meet."""
        if (password is None) == (ha1 is None):
            raise ValueError("give exactly one of password and ha1")
        self.username = username
        self._password = password
        self._ha1 = {} if ha1 is None else {_canonical_algorithm(k) or k: v for k, v in ha1.items()}
        self._cnonce = cnonce_source if cnonce_source is not None else (lambda: secrets.token_hex(8))
        self._nc: OrderedDict[str, int] = OrderedDict()
        self._last: _Offer | None = None

    def _stored_ha1(self, algorithm: str, realm: str) -> str | None:
        base = _base(algorithm)
        if self._password is not None:
            return ha1(self.username, realm, self._password, base)
        return self._ha1.get(base)

    def _choose(self, challenge: str | Sequence[str]) -> _Offer:
        values = [challenge] if isinstance(challenge, str) else list(challenge)
        offers: list[_Offer] = []
        for value in values:
            scheme, params = parse_auth_header(value)
            if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
                continue
            algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
            if algorithm is None or self._stored_ha1(algorithm, params["realm"]) is None:
                continue
            if "qop" in params:
                options = {q.strip().lower() for q in params["qop"].split(",")}
                qop = "auth" if "auth" in options else "auth-int" if "auth-int" in options else None
                if qop is None:
                    continue
            else:
                qop = None
            offers.append(_Offer(algorithm, params, qop))
        if not offers:
            raise AuthError("no digest challenge this phone can answer", status=None)
        return min(offers, key=lambda offer: _STRENGTH.index(offer.algorithm))

    def authorize(self, method: str, uri: str, challenge: str | Sequence[str], body: bytes = b"",
                  cnonce: str | None = None) -> str:
        """The Authorization / Proxy-Authorization value answering the 401/407 challenge value(s)."""
        offer = self._choose(challenge)
        self._last = offer
        return self._answer(offer, method, uri, body, cnonce)

    def reauthorize(self, method: str, uri: str, body: bytes = b"") -> str | None:
        """Credentials for a new request on the last nonce (next nonce-count), e.g. a REGISTER refresh."""
        if self._last is None or self._last.qop is None:
            return None  # without qop a nonce is good for one request only
        return self._answer(self._last, method, uri, body, None)

    def _answer(self, offer: _Offer, method: str, uri: str, body: bytes, cnonce: str | None) -> str:
        realm, nonce = offer.params["realm"], offer.params["nonce"]
        stored = self._stored_ha1(offer.algorithm, realm)
        assert stored is not None  # _choose only keeps answerable offers
        params = {"username": self.username, "realm": realm, "nonce": nonce, "uri": uri}
        nc_text = ""
        if offer.qop is not None or _ALGORITHMS[offer.algorithm][1]:
            cnonce = cnonce if cnonce is not None else self._cnonce()
        else:
            cnonce = ""
        if offer.qop is not None:
            nc = self._nc.pop(nonce, 0) + 1
            self._nc[nonce] = nc
            while len(self._nc) > self._MAX_NONCES:
                self._nc.popitem(last=False)
            nc_text = f"{nc:08x}"
        params["response"] = digest_response(offer.algorithm, stored, nonce, method, uri, qop=offer.qop,
                                             nc=nc_text, cnonce=cnonce, body=body)
        if "algorithm" in offer.params:
            params["algorithm"] = offer.algorithm
        if cnonce:
            params["cnonce"] = cnonce
        if "opaque" in offer.params:
            params["opaque"] = offer.params["opaque"]
        if offer.qop is not None:
            params["qop"] = offer.qop
            params["nc"] = nc_text
        return format_auth_header("Digest", params, challenge=False)
