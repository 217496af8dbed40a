"""The header multi-map of a SIP message (RFC 3261 §7.3).

Rules:
- Names are case-insensitive and compact forms are the same header as their long form (§7.3.3; RFC 3515 ``r``,
  RFC 3892 ``b``, RFC 4028 ``x``, RFC 6665 ``o``/``u``): every entry carries a key, its lower-case long name, and
  lookups go by key. The name is kept as written, for serialisation.
- Order is kept, across names too (a proxy must not reorder same-name fields; §7.3.1).
- Values are raw strings (folds already turned into single spaces by the parser). ``get_all`` splits
  comma-separated lists, respecting quoted strings and ``<...>``, for the headers whose grammar is a list
  (``LIST_HEADERS``); any other value, known or unknown, is one value even if it holds commas (authentication
  challenges and credentials, Date, free text).
- Fields added by code are checked: a name must be a non-empty run without ``:``, whitespace or line breaks, and a
  value must not contain CR or LF (``ValueError``), so that no value can inject a header or end the head early.
- ``cache`` holds the structured values the message accessors parsed; any mutation clears it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from callbridge.sip.addr import split_commas

__all__ = ["COMPACT_FORMS", "Headers", "header_key"]

COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "x": "session-expires",
    "u": "allow-events",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1, §20 and extensions): only these are split.
# Any other header, known or not, may carry commas inside one value (authentication parameters, Date, free text).
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "allow-events",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "accept-contact",
        "reject-contact",
        "request-disposition",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
        "diversion",
        "history-info",
        "p-asserted-identity",
        "p-preferred-identity",
        "privacy",
        "reason",
        "recv-info",
        "security-client",
        "security-server",
        "security-verify",
    }
)


_NOT_IN_NAME = re.compile(r"[: \t\r\n]")


def _checked(name: str, value: str) -> tuple[str, str, str]:
    """An entry built by code (not parsed): refuse what would break the framing when serialised."""
    if not name or _NOT_IN_NAME.search(name) is not None or "\r" in value or "\n" in value:
        raise ValueError(f"header field not allowed: {name[:40]!r}: {value[:40]!r}")
    return header_key(name), name, value.strip()


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case long form."""
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


class Headers:
    """Ordered, case-insensitive multi-map of header fields; built from ``(name, value)`` pairs."""

    __slots__ = ("_first", "_items", "cache")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [_checked(name, value) for name, value in items]
        self._first: dict[str, str] | None = None
        self.cache: dict[str, object] = {}

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]], first: dict[str, str] | None = None) -> Headers:
        """Adopt the parser's ``(key, name, stripped value)`` list and its first-value index."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._first = first
        headers.cache = {}
        return headers

    def first_values(self) -> dict[str, str]:
        """``key -> first field value`` (the raw line), built once and kept until the next mutation."""
        first = self._first
        if first is None:
            first = self._first = {key: value for key, _, value in reversed(self._items)}
        return first

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (for list headers: the first comma-separated element), or ``default``."""
        first = self._first
        if first is None:
            first = self.first_values()
        key = name if name in first else header_key(name)
        value = first.get(key)
        if value is None:
            return default
        if key not in LIST_HEADERS or "," not in value:
            return value
        for element in split_commas(value):
            if element:
                return element
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-separated lists split (empty elements dropped)."""
        key = header_key(name)
        values: list[str] = []
        split = key in LIST_HEADERS
        for item_key, _, value in self._items:
            if item_key == key:
                if split and "," in value:
                    values.extend(element for element in split_commas(value) if element)
                else:
                    values.append(value)
        return values

    def get_lines(self, name: str) -> list[str]:
        """Every field line of ``name`` as written (not split at commas)."""
        key = header_key(name)
        return [value for item_key, _, value in self._items if item_key == key]

    def add(self, name: str, value: str) -> None:
        self._items.append(_checked(name, value))
        self._changed()

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of the same name (a proxy pushing a Via, §16.6), else at the top."""
        entry = _checked(name, value)
        for index, (item_key, _, _) in enumerate(self._items):
            if item_key == entry[0]:
                self._items.insert(index, entry)
                break
        else:
            self._items.insert(0, entry)
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` with one, at the place of the first (or at the end)."""
        entry = _checked(name, value)
        key = entry[0]
        items: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    items.append(entry)
                    placed = True
            else:
                items.append(item)
        if not placed:
            items.append(entry)
        self._items = items
        self._changed()

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [item for item in self._items if item[0] != key]
        self._changed()

    def remove_first(self, name: str) -> None:
        """Remove the first value of ``name`` (a UAC popping its Via from a response, §8.1.3.3)."""
        key = header_key(name)
        for index, (item_key, item_name, value) in enumerate(self._items):
            if item_key == key:
                elements = split_commas(value) if key in LIST_HEADERS and "," in value else [value]
                if len(elements) > 1:
                    self._items[index] = (key, item_name, ", ".join(elements[1:]))
                else:
                    del self._items[index]
                break
        self._changed()

    def _changed(self) -> None:
        self._first = None
        self.cache.clear()

    def fields(self) -> list[tuple[str, str, str]]:
        """``(key, name, value)`` triples in order (for the serialiser)."""
        return self._items

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        first = self.first_values()
        return name in first or header_key(name) in first

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _, name, value in self._items]

    def keyed(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs: the canonical form compared by ``==``."""
        return [(key, value) for key, _, value in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.keyed() == other.keyed()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"
