"""SDP (RFC 4566) parse and serialise, with the offer/answer helpers of RFC 3264 that a B2BUA needs.

Rules:
- A description is kept as its ordered lines, `(type, value)`, split into the session-level part and one part per
  `m=` section. Typed fields (origin, connection, timing, attributes, the media line) are read from those lines
  when asked for and written back into them in place. Lines callbridge does not model (i=, u=, b=, k=, r=, z=,
  types it has never heard of) are kept untouched and in order, so parsing and serialising well-formed SDP gives
  the same bytes back. Input may end its lines with LF alone; output always uses CRLF (RFC 4566 §5).
- Parsing checks what a consumer relies on and raises `SdpError` (status 400, nothing else) otherwise: `v=0`
  first, exactly one well-formed `o=` and one `s=` at session level, well-formed `c=`, `t=`, `m=` and `a=`
  lines, no session-only line inside a media section, no NUL or bare CR in a line. Field order beyond that is
  not enforced (RFC 4566 §5 defines one, but real agents break it and nothing here depends on it).
- Media direction (RFC 3264 §5.1, §6.1): a media section's own direction attribute wins over the session-level
  one; with neither, the stream is `sendrecv`.
- Hold (RFC 3264 §8.4): the holding side offers `sendonly` where it offered `sendrecv` and `inactive` where it
  offered `recvonly` (the far end already holds); resuming undoes exactly that.
- Versions (RFC 3264 §8): each modified offer in a session carries the same `o=` session id and a higher
  version. A B2BUA that hands one party an SDP written by another (a transfer's new far end) must rewrite `o=`
  to the origin that party already knows, version + 1 — `rebase_origin`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, cast

from callbridge.sip.errors import SipError

__all__ = [
    "DIRECTIONS",
    "Attribute",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "Timing",
    "answer_direction",
    "hold_direction",
    "inactive_answer",
    "rebase_origin",
    "resume_direction",
]


class SdpError(SipError, ValueError):
    """Malformed SDP; `status` is 400, the response a request carrying it deserves (RFC 3261 §21.4.1)."""

    def __init__(self, message: str, status: int | None = 400) -> None:
        super().__init__(message, status)


Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: Final[tuple[Direction, ...]] = ("sendrecv", "sendonly", "recvonly", "inactive")

_HOLD: Final[dict[Direction, Direction]] = {
    "sendrecv": "sendonly", "recvonly": "inactive", "sendonly": "sendonly", "inactive": "inactive",
}
_RESUME: Final[dict[Direction, Direction]] = {
    "sendonly": "sendrecv", "inactive": "recvonly", "sendrecv": "sendrecv", "recvonly": "recvonly",
}
_ANSWER: Final[dict[Direction, Direction]] = {
    "sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive",
}

_DIGITS = re.compile(r"[0-9]+\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_TYPE = re.compile(r"[a-z]\Z")
# RFC 4566 §5: lines that may only appear in the session-level part
_SESSION_ONLY: Final = frozenset("vosueptrz")

Line = tuple[str, str]


def hold_direction(current: Direction) -> Direction:
    """The direction to offer to put a stream on hold, given the direction offered so far (RFC 3264 §8.4)."""
    return _HOLD[current]


def resume_direction(current: Direction) -> Direction:
    """The direction to offer to take a stream off hold, given the held direction offered so far."""
    return _RESUME[current]


def answer_direction(offered: Direction) -> Direction:
    """The direction an answerer that is willing to do everything offered puts in its answer (RFC 3264 §6.1)."""
    return _ANSWER[offered]


def _as_direction(value: str) -> Direction:
    if value not in DIRECTIONS:
        raise ValueError(f"not an SDP direction: {value!r}")
    return value


def _number(text: str, what: str) -> int:
    if not _DIGITS.match(text):
        raise SdpError(f"{what} is not a number: {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Origin:
    """`o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>` (RFC 4566 §5.2)."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        fields = value.split()
        if len(fields) != 6:
            raise SdpError(f"o= needs 6 fields: {value!r}")
        username, sess_id, version, nettype, addrtype, address = fields
        return cls(username, sess_id, _number(version, "o= sess-version"), nettype, addrtype, address)

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")

    def next_version(self) -> Origin:
        return dataclasses.replace(self, sess_version=self.sess_version + 1)


@dataclass(frozen=True, slots=True)
class Connection:
    """`c=<nettype> <addrtype> <connection-address>` (RFC 4566 §5.7); a multicast /ttl stays in `address`."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        fields = value.split()
        if len(fields) != 3:
            raise SdpError(f"c= needs 3 fields: {value!r}")
        return cls(*fields)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Timing:
    """`t=<start-time> <stop-time>` (RFC 4566 §5.9), NTP seconds; 0 0 is an unbounded session."""

    start: int
    stop: int

    @classmethod
    def parse(cls, value: str) -> Timing:
        fields = value.split()
        if len(fields) != 2:
            raise SdpError(f"t= needs 2 fields: {value!r}")
        return cls(_number(fields[0], "t= start"), _number(fields[1], "t= stop"))

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """`a=<name>` (a property attribute, value None) or `a=<name>:<value>` (RFC 4566 §5.13)."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        if not _TOKEN.match(name):
            raise SdpError(f"bad attribute name: {text!r}")
        return cls(name, value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


class _Section:
    """Ordered lines of one part of a description, with the attribute and connection accessors both parts share."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.lines == self.lines

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _values(self, kind: str) -> Iterator[str]:
        return (value for k, value in self.lines if k == kind)

    @property
    def connection(self) -> Connection | None:
        for value in self._values("c"):
            return Connection.parse(value)
        return None

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        self._replace("c", None if connection is None else str(connection))

    @property
    def attributes(self) -> list[Attribute]:
        return [Attribute.parse(value) for value in self._values("a")]

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=<name>:<value>` here; "" for a property attribute; None when absent."""
        for attr in self.attributes:
            if attr.name == name:
                return "" if attr.value is None else attr.value
        return None

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.lines.append(("a", str(Attribute(name, value))))

    def remove_attributes(self, *names: str) -> None:
        self.lines[:] = [(k, v) for k, v in self.lines if k != "a" or Attribute.parse(v).name not in names]

    @property
    def own_direction(self) -> Direction | None:
        """The direction attribute written in this part itself, if any."""
        for value in self._values("a"):
            if value in DIRECTIONS:
                return value
        return None

    def _set_own_direction(self, direction: Direction | None) -> None:
        """Write `direction` where the first direction attribute was (appending if there was none); drop others."""
        new: list[Line] = []
        placed = direction is None
        for kind, value in self.lines:
            if kind == "a" and value in DIRECTIONS:
                if not placed:
                    new.append(("a", cast(str, direction)))
                    placed = True
                continue
            new.append((kind, value))
        if not placed:
            new.append(("a", cast(str, direction)))
        self.lines[:] = new

    def _replace(self, kind: str, value: str | None) -> None:
        """Set the single line of `kind` in place; add it at the position RFC 4566 §5 orders it; None removes."""
        for index, (k, _) in enumerate(self.lines):
            if k == kind:
                if value is None:
                    del self.lines[index]
                else:
                    self.lines[index] = (kind, value)
                return
        if value is not None:
            self.lines.insert(self._insert_position(kind), (kind, value))

    def _insert_position(self, kind: str) -> int:
        order = self._order()
        rank = order.index(kind) if kind in order else len(order)
        for index, (k, _) in enumerate(self.lines):
            if k in order and order.index(k) > rank:
                return index
        return len(self.lines)

    def _order(self) -> str:
        raise NotImplementedError


class MediaDescription(_Section):
    """One media section: `m=<media> <port>[/<count>] <proto> <fmt> ...` and the lines under it."""

    __slots__ = ()

    @classmethod
    def create(cls, media: str, port: int, proto: str, formats: list[str]) -> MediaDescription:
        if not formats:
            raise SdpError("m= needs at least one format")
        return cls([("m", " ".join([media, str(port), proto, *formats]))])

    def _order(self) -> str:
        return "micbka"

    def _fields(self) -> list[str]:
        return self.lines[0][1].split()

    @property
    def media(self) -> str:
        return self._fields()[0]

    @property
    def port(self) -> int:
        return int(self._fields()[1].partition("/")[0])

    @port.setter
    def port(self, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        fields = self._fields()
        _, sep, count = fields[1].partition("/")
        fields[1] = f"{port}{sep}{count}"
        self.lines[0] = ("m", " ".join(fields))

    @property
    def port_count(self) -> int | None:
        _, sep, count = self._fields()[1].partition("/")
        return int(count) if sep else None

    @property
    def proto(self) -> str:
        return self._fields()[2]

    @property
    def formats(self) -> list[str]:
        return self._fields()[3:]

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is declined or disabled (RFC 3264 §6, §8.2)."""
        return self.port == 0

    def _validate(self) -> None:
        fields = self._fields()
        if len(fields) < 4:
            raise SdpError(f"m= needs media, port, proto and a format: {self.lines[0][1]!r}")
        if not _TOKEN.match(fields[0]):
            raise SdpError(f"bad m= media: {fields[0]!r}")
        port, sep, count = fields[1].partition("/")
        if _number(port, "m= port") > 65535:
            raise SdpError(f"m= port out of range: {port}")
        if sep and _number(count, "m= port count") == 0:
            raise SdpError("m= port count must be positive")


class SessionDescription(_Section):
    """An SDP session description: the session-level lines and the media sections, in their order."""

    __slots__ = ("media",)

    def __init__(self, lines: list[Line], media: list[MediaDescription] | None = None) -> None:
        super().__init__(lines)
        self.media: list[MediaDescription] = [] if media is None else media

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionDescription) and (other.lines, other.media) == (self.lines, self.media)

    def _order(self) -> str:
        return "vosiuepcbtrzka"

    @classmethod
    def create(cls, origin: Origin, session_name: str = "-", connection: Connection | None = None,
               media: list[MediaDescription] | None = None) -> SessionDescription:
        lines: list[Line] = [("v", "0"), ("o", str(origin)), ("s", session_name)]
        if connection is not None:
            lines.append(("c", str(connection)))
        lines.append(("t", "0 0"))
        return cls(lines, media)

    # --- parse and serialise ---
    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse one description; anything malformed raises `SdpError` and nothing else."""
        if isinstance(data, str):
            try:
                data = data.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                raise SdpError("SDP text is not encodable") from exc
        # surrogateescape keeps bytes that are not UTF-8 (an s= in Latin-1) so they serialise back unchanged
        text = data.decode("utf-8", "surrogateescape")
        raw_lines = text.split("\n")
        if raw_lines[-1] == "":
            raw_lines.pop()
        while raw_lines and raw_lines[-1] in ("", "\r"):  # blank lines after the last line are tolerated
            raw_lines.pop()
        if not raw_lines:
            raise SdpError("empty SDP")
        session: list[Line] = []
        media: list[MediaDescription] = []
        current = session
        for raw in raw_lines:
            line = raw[:-1] if raw.endswith("\r") else raw
            kind, eq, value = line.partition("=")
            if not eq or not _TYPE.match(kind):
                raise SdpError(f"not an SDP line: {line[:40]!r}")
            if "\r" in value or "\0" in value:
                raise SdpError("CR or NUL inside an SDP line")
            if kind == "m":
                section = MediaDescription([(kind, value)])
                section._validate()
                media.append(section)
                current = section.lines
                continue
            if current is not session and kind in _SESSION_ONLY:
                raise SdpError(f"{kind}= inside a media section")
            current.append((kind, value))
        sd = cls(session, media)
        sd._validate()
        return sd

    def _validate(self) -> None:
        if not self.lines or self.lines[0] != ("v", "0"):
            raise SdpError("SDP must start with v=0")
        counts = {kind: sum(1 for k, _ in self.lines if k == kind) for kind in "vos"}
        if counts != {"v": 1, "o": 1, "s": 1}:
            raise SdpError(f"SDP needs exactly one v=, o= and s= line, found {counts}")
        self.origin  # noqa: B018 - parsed to validate
        for section in (self, *self.media):
            for kind, value in section.lines:
                if kind == "c":
                    Connection.parse(value)
                elif kind == "a":
                    Attribute.parse(value)
                elif kind == "t":
                    Timing.parse(value)

    def to_bytes(self) -> bytes:
        out = [f"{kind}={value}\r\n" for kind, value in self.lines]
        for section in self.media:
            out.extend(f"{kind}={value}\r\n" for kind, value in section.lines)
        return "".join(out).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"SessionDescription.parse({self.to_bytes()!r})"

    def copy(self) -> SessionDescription:
        return SessionDescription(list(self.lines), [MediaDescription(list(m.lines)) for m in self.media])

    # --- session-level fields ---
    @property
    def version(self) -> int:
        return int(self.lines[0][1])

    @property
    def origin(self) -> Origin:
        return Origin.parse(next(self._values("o")))

    @origin.setter
    def origin(self, origin: Origin) -> None:
        self._replace("o", str(origin))

    @property
    def session_name(self) -> str:
        return next(self._values("s"))

    @property
    def timing(self) -> list[Timing]:
        return [Timing.parse(value) for value in self._values("t")]

    def connection_for(self, media: int | MediaDescription) -> Connection | None:
        """The connection a media section uses: its own c= line, or else the session-level one."""
        section = self.media[media] if isinstance(media, int) else media
        own = section.connection
        return own if own is not None else self.connection

    # --- versions (RFC 3264 §8) ---
    def bump_version(self) -> int:
        """Increase the o= sess-version by one, keeping the session id; returns the new version."""
        origin = self.origin.next_version()
        self.origin = origin
        return origin.sess_version

    # --- direction (RFC 3264 §5.1, §6.1, §8.4) ---
    def direction(self, media: int | MediaDescription | None = None) -> Direction:
        """The direction of one media section (its own attribute, or else the session's), or of the session."""
        if media is not None:
            section = self.media[media] if isinstance(media, int) else media
            own = section.own_direction
            if own is not None:
                return own
        session = self.own_direction
        return session if session is not None else "sendrecv"

    def set_direction(self, direction: Direction | str, media: int | MediaDescription | None = None) -> None:
        """Write `direction` on one media section, or on every stream that is not rejected (port 0).

        Setting it on every stream moves the direction from the session level down to the media sections, so a
        later per-stream change cannot be masked by a stale session-level attribute. Rejected streams are left
        as they are: their direction means nothing.
        """
        checked = _as_direction(direction)
        if media is not None:
            section = self.media[media] if isinstance(media, int) else media
            section._set_own_direction(checked)
            return
        if not self.media:
            self._set_own_direction(checked)
            return
        self._set_own_direction(None)
        for section in self.media:
            if not section.rejected:
                section._set_own_direction(checked)

    def with_direction(self, direction: Direction | str) -> SessionDescription:
        """A copy with `direction` on every stream."""
        sd = self.copy()
        sd.set_direction(direction)
        return sd

    def _map_directions(self, table: dict[Direction, Direction]) -> SessionDescription:
        sd = self.copy()
        if not sd.media:
            sd._set_own_direction(table[sd.direction()])
            return sd
        wanted = [table[sd.direction(m)] for m in sd.media]
        sd._set_own_direction(None)
        for section, direction in zip(sd.media, wanted, strict=True):
            if not section.rejected:
                section._set_own_direction(direction)
        return sd

    def with_hold(self) -> SessionDescription:
        """A copy that puts every stream on hold (RFC 3264 §8.4); the caller bumps the version."""
        return self._map_directions(_HOLD)

    def with_resume(self) -> SessionDescription:
        """A copy that takes every stream off hold; the caller bumps the version."""
        return self._map_directions(_RESUME)


def rebase_origin(sd: SessionDescription, previous_origin: Origin) -> SessionDescription:
    """A copy of `sd` (written by some other party) whose o= is `previous_origin` with its version + 1.

    A B2BUA that connects a party to a new far end announces the new far end's SDP to it as a modification of the
    session that party already knows: same username, session id and address, higher version (RFC 3264 §8).
    """
    rebased = sd.copy()
    rebased.origin = previous_origin.next_version()
    return rebased


# RFC 3725 §4: the "black hole" address, to which packets are never sent off the host; `::` its IPv6 equivalent.
_BLACK_HOLE: Final[dict[str, str]] = {"IP4": "0.0.0.0", "IP6": "::"}
# The discard port (RFC 863): an accepted stream needs a port other than 0 (RFC 3264 §6), and no media goes to it.
DISCARD_PORT: Final = 9


def inactive_answer(offer: SessionDescription, origin: Origin) -> SessionDescription:
    """An answer to `offer` that sends and receives nothing, with `origin` as its o=.

    RFC 3264 §6: one m= line per offered stream, in order; a rejected stream (port 0) stays rejected; every other
    stream is accepted with one format of the offer (the first that is not `telephone-event`, with its rtpmap and
    fmtp lines), `a=inactive`, the discard port, and the black-hole connection address of RFC 3725 §4 in the
    offer's address family. The party that made the offer has its session answered and sends no media until a
    later offer changes it (RFC 3725 §4.3 step 3).
    """
    first = next((c for c in (offer.connection, *(m.connection for m in offer.media)) if c is not None), None)
    family = first.addrtype if first is not None and first.addrtype in _BLACK_HOLE else "IP4"
    media: list[MediaDescription] = []
    for offered in offer.media:
        if offered.rejected:
            media.append(MediaDescription.create(offered.media, 0, offered.proto, offered.formats))
            continue
        rtpmaps = {value.partition(" ")[0]: value for name, value in
                   ((a.name, a.value or "") for a in offered.attributes) if name == "rtpmap"}
        chosen = next((f for f in offered.formats if not rtpmaps.get(f, "").lower().partition(" ")[2]
                       .startswith("telephone-event")), offered.formats[0])
        section = MediaDescription.create(offered.media, DISCARD_PORT, offered.proto, [chosen])
        for attr in offered.attributes:
            if attr.name in ("rtpmap", "fmtp") and (attr.value or "").partition(" ")[0] == chosen:
                section.add_attribute(attr.name, attr.value)
        section.add_attribute("inactive")
        media.append(section)
    return SessionDescription.create(origin, "-", Connection("IN", family, _BLACK_HOLE[family]), media)
