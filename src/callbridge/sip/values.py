"""Structured values of the extension headers a B2BUA reads: Replaces (RFC 3891), Event and Subscription-State
(RFC 6665), Session-Expires and Min-SE (RFC 4028). Every error is ``ParseError(400)``.
"""

from __future__ import annotations

from typing import NamedTuple

from callbridge.sip.addr import Params, is_token, parse_delta_seconds, parse_params, unquote_string
from callbridge.sip.errors import ParseError

__all__ = [
    "Event",
    "Replaces",
    "SessionExpires",
    "SubscriptionState",
    "parse_event",
    "parse_replaces",
    "parse_session_expires",
    "parse_subscription_state",
]


def _param_text(value: str | None) -> str | None:
    if value is not None and value.startswith('"'):
        return unquote_string(value)
    return value


class Replaces(NamedTuple):
    """``Replaces: call-id;to-tag=..;from-tag=..[;early-only]`` (RFC 3891 §6.1)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool
    params: Params


def parse_replaces(value: str) -> Replaces:
    call_id, semi, rest = value.strip().partition(";")
    call_id = call_id.strip()
    params = parse_params(";" + rest) if semi else {}
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not call_id or to_tag is None or from_tag is None:
        raise ParseError(f"Replaces needs a Call-ID, to-tag and from-tag: {value!r}")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params, params)


class Event(NamedTuple):
    """``Event: package[.template];id=..`` (RFC 6665 §8.2.1)."""

    package: str
    id: str | None
    params: Params


def parse_event(value: str) -> Event:
    package, semi, rest = value.strip().partition(";")
    package = package.strip()
    if not is_token(package):
        raise ParseError(f"bad Event package {package!r}")
    params = parse_params(";" + rest) if semi else {}
    return Event(package.lower(), _param_text(params.get("id")), params)


class SubscriptionState(NamedTuple):
    """``Subscription-State: active|pending|terminated;expires=..;reason=..;retry-after=..`` (RFC 6665 §8.2.3)."""

    state: str
    expires: int | None
    reason: str | None
    retry_after: int | None
    params: Params


def parse_subscription_state(value: str) -> SubscriptionState:
    state, semi, rest = value.strip().partition(";")
    state = state.strip()
    if not is_token(state):
        raise ParseError(f"bad Subscription-State {state!r}")
    params = parse_params(";" + rest) if semi else {}
    expires = params.get("expires")
    retry_after = params.get("retry-after")
    reason = params.get("reason")
    return SubscriptionState(
        state.lower(),
        parse_delta_seconds(expires) if expires is not None else None,
        reason.lower() if reason is not None else None,
        parse_delta_seconds(retry_after) if retry_after is not None else None,
        params,
    )


class SessionExpires(NamedTuple):
    """``Session-Expires: delta;refresher=uac|uas`` (RFC 4028 §4); ``Min-SE`` uses ``delta`` only."""

    delta: int
    refresher: str | None
    params: Params


def parse_session_expires(value: str) -> SessionExpires:
    delta, semi, rest = value.strip().partition(";")
    params = parse_params(";" + rest) if semi else {}
    refresher = params.get("refresher")
    return SessionExpires(parse_delta_seconds(delta), refresher.lower() if refresher else None, params)
