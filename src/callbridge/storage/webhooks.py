"""Administration of an operation's webhook targets: where its events are POSTed, signed with a secret
(`callbridge.http.webhooks` delivers them).

Rules
- A target is a URL, a secret and an optional filter of event types, stored per operation (`schema.webhooks`);
  the same URL at most once per operation. Checked before anything is written, refusals are `AdminError`s naming
  the field, as everywhere in `administration`.
- The URL is `http` or `https`, names a host, carries no credentials (`user:password@`: the signature is what
  authenticates callbridge to the receiver, and a password in a URL ends up in logs), no fragment, and only
  printable ASCII. Host names are allowed (a CRM is usually a name); callbridge never resolves a name at load
  time, only httpx does when it delivers. The SIP destination policy does not apply to webhooks: they are
  configured by the operator, never taken from a request.
- The secret is stored as given (16 to 256 characters): HMAC signing needs the secret itself, so it cannot be
  hashed the way tokens and SIP passwords are. It is never printed.
- Every write bumps the directory's change counter (`directory.bump_version`), so running nodes pick up a new,
  changed or removed target at their next directory poll, without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, insert, select, update

from callbridge.storage import schema as s
from callbridge.storage.administration import AdminError, NotFound
from callbridge.storage.directory import Webhook, bump_version, read_operations, read_webhooks

# The wire event types (`openapi.json`, EventType); a test keeps the two lists equal.
EVENT_TYPES = (
    "call.offered", "call.answered", "call.held", "call.ended", "call.media_direct", "call.dtmf",
    "call.monitor_started", "call.monitor_ended",
    "transfer.created", "transfer.ringing", "transfer.answered", "transfer.completed", "transfer.failed",
    "transfer.cancelled", "agent.state_changed", "agent.display_changed",
)
MAX_URL_LENGTH = 2048
SECRET_LENGTH = (16, 256)
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_DIGITS = re.compile(r"[0-9]{1,18}")


def check_url(url: object) -> str:
    """The URL if it may be a webhook target; else an AdminError naming the field `url`."""
    if not isinstance(url, str) or not url:
        raise AdminError(f"url: {url!r} is not a URL")
    if len(url) > MAX_URL_LENGTH:
        raise AdminError(f"url: longer than {MAX_URL_LENGTH} characters")
    if not _PRINTABLE_ASCII.fullmatch(url):
        raise AdminError(f"url: {url!r} has spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AdminError(f"url: {url!r} is not a valid URL (host or port)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise AdminError(f"url: {url!r} is not an http or https URL")
    if "@" in parts.netloc:  # not echoed: it holds a password
        raise AdminError("url: credentials in the URL (user:password@) are refused; the signature authenticates")
    if not parts.hostname:
        raise AdminError(f"url: {url!r} names no host")
    if port == 0:
        raise AdminError(f"url: {url!r} has port 0")
    if parts.fragment or url.endswith("#"):
        raise AdminError(f"url: {url!r} has a fragment, which is never sent")
    return url


def _check_secret(secret: object) -> str:
    low, high = SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        raise AdminError(f"secret: {low} to {high} characters are required")
    return secret


def _check_events(events: object) -> list[str]:
    if isinstance(events, str) or not isinstance(events, Sequence):
        raise AdminError(f"events: {events!r} is not a list of event types")
    for event in events:
        if event not in EVENT_TYPES:
            raise AdminError(f"events: {event!r} is not an event type ({', '.join(EVENT_TYPES)})")
    if len(set(events)) != len(events):
        raise AdminError(f"events: {list(events)!r} names an event type twice")
    return list(events)


def _operation_must_exist(conn: Connection, operation_id: str) -> None:
    if operation_id not in {o.id for o in read_operations(conn)}:
        raise AdminError(f"operation {operation_id!r} does not exist")


def _url_must_be_free(conn: Connection, operation_id: str, url: str, *, other_than: int | None = None) -> None:
    t = s.webhooks
    query = select(t.c.id).where(t.c.operation_id == operation_id, t.c.url == url)
    if other_than is not None:
        query = query.where(t.c.id != other_than)
    if conn.execute(query).first() is not None:
        raise AdminError(f"url: {url!r} is already a webhook of operation {operation_id!r}")


def _by_id(conn: Connection, webhook_id: str, operation_id: str | None = None) -> Webhook:
    """The webhook; `NotFound` if there is none, or it belongs to another operation than the one given."""
    if not isinstance(webhook_id, str) or not _DIGITS.fullmatch(webhook_id):
        raise AdminError(f"webhook id: {webhook_id!r} is not a webhook id")
    for hook in read_webhooks(conn, operation_id):
        if hook.id == webhook_id:
            return hook
    raise NotFound(f"webhook {webhook_id} does not exist" + (f" in operation {operation_id!r}" if operation_id else ""))


def create_webhook(conn: Connection, operation_id: str, url: str, secret: str, *,
                   events: Sequence[str] = ()) -> Webhook:
    _operation_must_exist(conn, operation_id)
    check_url(url)
    _check_secret(secret)
    wanted = _check_events(events)
    _url_must_be_free(conn, operation_id, url)
    result = conn.execute(insert(s.webhooks).values(operation_id=operation_id, url=url, secret=secret,
                                                    events=wanted))
    bump_version(conn)
    key = result.inserted_primary_key
    assert key is not None
    return _by_id(conn, str(key[0]))


def update_webhook(conn: Connection, webhook_id: str, *, url: str | None = None, secret: str | None = None,
                   events: Sequence[str] | None = None, operation_id: str | None = None) -> Webhook:
    """Change what is given of a webhook (of `operation_id`, if given); the rest stays. `events=[]` sends every
    event again."""
    hook = _by_id(conn, webhook_id, operation_id)
    values: dict[str, object] = {}
    if url is not None:
        values["url"] = check_url(url)
        _url_must_be_free(conn, hook.operation_id, url, other_than=int(hook.id))
    if secret is not None:
        values["secret"] = _check_secret(secret)
    if events is not None:
        values["events"] = _check_events(events)
    if not values:
        raise AdminError("nothing to change: give a url, a secret or events")
    conn.execute(update(s.webhooks).where(s.webhooks.c.id == int(hook.id)).values(**values))
    bump_version(conn)
    return _by_id(conn, webhook_id)


def delete_webhook(conn: Connection, webhook_id: str, *, operation_id: str | None = None) -> Webhook:
    hook = _by_id(conn, webhook_id, operation_id)
    conn.execute(delete(s.webhooks).where(s.webhooks.c.id == int(hook.id)))
    bump_version(conn)
    return hook


def list_webhooks(conn: Connection, operation_id: str | None = None) -> list[Webhook]:
    if operation_id is not None:
        _operation_must_exist(conn, operation_id)
    return read_webhooks(conn, operation_id)
