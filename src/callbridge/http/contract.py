"""The agentbox contract (Wolkvox "Agent APIs v2") as data, and the native API's problem types.

Source of truth: ``docs/agentbox-contract.md``. Everything a handler needs to answer byte for byte as the contract
says lives here, free of Starlette and of the domain:

- :func:`envelope` builds ``{"code": "<status>", "error": <REASON or null>, "msg": ..., "data": ...}`` where
  ``code`` is the HTTP status as a digit string and ``error`` the upper-case reason phrase of a failure;
  :func:`render` serialises it the way the documentation's example is written (compact separators, UTF-8) for
  the content type :data:`CONTENT_TYPE`.
- :data:`ERRORS` is the contract's two error tables, one :class:`ErrorRow` per row under a stable key
  (``TOKEN_MISSING``, ``AGENT_NOT_FOUND``...). Two rows take an argument: ``INVALID_PARAMETER`` the parameter's
  name (:func:`invalid_parameter`), ``CONCURRENCY_LIMIT`` the configured limit (:func:`concurrency_limit`).
- :data:`PRECEDENCE` is the order in which errors win when several apply ("Which error wins"), as tiers; rows of
  one tier exclude each other. :func:`first_error` picks the winner.
- :data:`VERBS` is the twelve verbs: required and optional parameters, success messages, the ``data`` they answer.
- :data:`ERROR_IDS` maps the domain's ``error_id`` strings (``callcontrol.errors``) to rows.
- :func:`problem` builds the native API's RFC 9457 ``application/problem+json`` body for the same keys, plus
  :data:`NATIVE_ERRORS` that exist on the native API only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

CONTENT_TYPE: Final = "application/json; charset=utf-8"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json; charset=utf-8"
ENDPOINT_PATH: Final = "/api/v2/agentbox.php"
TOKEN_HEADER: Final = "wolkvox-token"
SERVER_HEADER: Final = "wolkvox_server"
DEFAULT_CONCURRENCY: Final = 2
REQUEST_TIMEOUT_S: Final = 60.0

# The upper-case reasons the contract names for `error`; 200 answers `error: null`.
REASONS: Final[Mapping[int, str]] = {
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    405: "METHOD NOT ALLOWED",
    409: "CONFLICT",
    410: "GONE",
    422: "UNPROCESSABLE CONTENT",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


def envelope(code: int, msg: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The response body: ``data`` appears only when given (the verbs that document it, on success)."""
    if code < 400:
        error = None
    elif code in REASONS:
        error = REASONS[code]
    else:
        raise ValueError(f"no contract reason for status {code}")
    body: dict[str, Any] = {"code": str(code), "error": error, "msg": msg}
    if data is not None:
        body["data"] = dict(data)
    return body


def render(body: Mapping[str, Any]) -> bytes:
    """Serialise as the documentation's example is written: ``{"code":"200","error":null,...}``, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- errors ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRow:
    """One row of the contract's error tables. ``msg`` is final; a template row keeps its ``{...}`` form."""

    key: str
    status: int
    msg: str
    when: str
    source: str  # "doc" (Wolkvox's documentation) or "ours" (callbridge's decision)
    parameter: str | None = None  # INVALID_PARAMETER: the offending parameter

    @property
    def error(self) -> str:
        return REASONS[self.status]

    def envelope(self) -> dict[str, Any]:
        return envelope(self.status, self.msg)

    def body(self) -> bytes:
        return render(self.envelope())


def _row(key: str, status: int, msg: str, when: str, source: str = "ours") -> ErrorRow:
    return ErrorRow(key=key, status=status, msg=msg, when=when, source=source)


# The table "Errors every verb can return", in the contract's order.
COMMON_ERRORS: Final[tuple[ErrorRow, ...]] = (
    _row("UNKNOWN_API", 400, "THE API YOU WANT TO CONSULT DOES NOT EXIST", "`api` missing or unknown", "doc"),
    _row("MISSING_PARAMETERS", 400, "SOME PARAMETERS ARE REQUIRED", "a required parameter is missing or empty", "doc"),
    _row("INVALID_PARAMETER", 400, "INVALID PARAMETER: {name}", "a parameter is malformed"),
    _row("TOKEN_MISSING", 401, "PLEASE ENTER THE WOLKVOX-TOKEN", "no `wolkvox-token` header", "doc"),
    _row("INVALID_TOKEN", 403, "PLEASE VALIDATE TOKEN",
         "unknown or revoked token, or `wolkvox_server` names another operation", "doc"),
    _row("CONCURRENCY_LIMIT", 403, "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN ({limit})",
         "a request beyond the token's limit of requests in flight", "doc"),
    _row("TOKEN_LIMIT_EXCEEDED", 403, "TOKEN LIMIT EXCEEDED", "daily quota of the token used up", "doc"),
    _row("AGENT_NOT_FOUND", 404, "AGENT DOES NOT EXIST", "no such extension in the token's operation"),
    _row("AGENT_NOT_LOGGED_IN", 409, "AGENT IS NOT LOGGED IN", "the verb needs a logged-in agent"),
    _row("NO_ACTIVE_CALL", 409, "AGENT HAS NO ACTIVE CALL", "a call verb without a call"),
    _row("ALREADY_ON_CALL", 409, "AGENT ALREADY HAS AN ACTIVE CALL", "dial while on a call"),
    _row("TRANSFER_IN_PROGRESS", 409, "A TRANSFER IS ALREADY IN PROGRESS", "second transfer of the same call"),
    _row("TARGET_NOT_AVAILABLE", 409, "TRANSFER TARGET IS NOT AVAILABLE",
         "the target extension's agent is logged out, unregistered or on another call"),
    _row("NUMBER_NOT_ALLOWED", 400, "INVALID PARAMETER: customer_phone",
         "the number is not allowed by the operation's dial plan"),
    _row("METHOD_NOT_ALLOWED", 405, "USE POST", "any method other than POST"),
    _row("CALL_CONTROL_UNAVAILABLE", 503, "CALL CONTROL IS NOT AVAILABLE", "the signalling side cannot act now"),
)

# The table "More errors of particular verbs" (its INVALID_PARAMETER row is the common one, with more names).
VERB_ERRORS: Final[tuple[ErrorRow, ...]] = (
    _row("PHONE_NOT_REGISTERED", 409, "AGENT PHONE IS NOT REGISTERED",
         "`change_status` to ready or aux without a live SIP registration"),
    _row("NO_RECENT_CALL", 409, "NO RECENT CALL", "`aux_call` without a call ended in the last 10 minutes"),
    _row("NO_CALL_TO_TYPE", 409, "NO CALL TO TYPE", "`type` with no call since the last disposition"),
    _row("CALL_NOT_UPDATED", 409, "CALL COULD NOT BE UPDATED",
         "the phone or carrier refused or did not answer a re-INVITE/INFO/BYE; the toggle is unchanged"),
)

ERRORS: Final[Mapping[str, ErrorRow]] = {row.key: row for row in COMMON_ERRORS + VERB_ERRORS}


def error(key: str) -> ErrorRow:
    """The row under ``key``; the two template rows take their defaults (use the helpers for arguments)."""
    if key == "INVALID_PARAMETER":
        raise ValueError("INVALID_PARAMETER needs the parameter's name: use invalid_parameter(name)")
    if key == "CONCURRENCY_LIMIT":
        return concurrency_limit(DEFAULT_CONCURRENCY)
    return ERRORS[key]


def invalid_parameter(name: str) -> ErrorRow:
    row = ERRORS["INVALID_PARAMETER"]
    return replace(row, msg=row.msg.format(name=name), parameter=name)


def concurrency_limit(limit: int = DEFAULT_CONCURRENCY) -> ErrorRow:
    row = ERRORS["CONCURRENCY_LIMIT"]
    return replace(row, msg=row.msg.format(limit=limit))


# "Which error wins", first match. Each tier is a set of keys that cannot apply together (or, for the call-state
# tier, that one check decides between); CALL_NOT_UPDATED comes last because it is the outcome of acting at all.
PRECEDENCE: Final[tuple[tuple[str, ...], ...]] = (
    ("METHOD_NOT_ALLOWED",),
    ("TOKEN_MISSING",),
    ("INVALID_TOKEN",),
    ("CONCURRENCY_LIMIT",),
    ("TOKEN_LIMIT_EXCEEDED",),
    ("UNKNOWN_API",),
    ("MISSING_PARAMETERS",),
    ("INVALID_PARAMETER",),
    ("AGENT_NOT_FOUND",),
    ("AGENT_NOT_LOGGED_IN",),
    ("NO_ACTIVE_CALL", "ALREADY_ON_CALL", "NO_RECENT_CALL", "NO_CALL_TO_TYPE", "PHONE_NOT_REGISTERED"),
    ("TRANSFER_IN_PROGRESS",),
    ("TARGET_NOT_AVAILABLE", "NUMBER_NOT_ALLOWED"),
    ("CALL_CONTROL_UNAVAILABLE",),
    ("CALL_NOT_UPDATED",),
)
_RANK: Final[Mapping[str, int]] = {key: rank for rank, tier in enumerate(PRECEDENCE) for key in tier}


def first_error(keys: Iterable[str]) -> str | None:
    """The key that wins among those that apply, or None when none does."""
    applicable = list(keys)
    for key in applicable:
        if key not in _RANK:
            raise KeyError(f"{key} is not a contract error")
    return min(applicable, key=_RANK.__getitem__, default=None)


# Domain error_id -> contract row key. TRANSFER_LIMIT (a call transferred more often than the configured hop limit,
# docs/design.md, "Transfer semantics", step 3) has no row of its own in the contract: to a Wolkvox client the
# call simply cannot reach the target, so it answers as TARGET_NOT_AVAILABLE; the native API tells the two apart.
ERROR_IDS: Final[Mapping[str, str]] = {
    "AGENT_NOT_FOUND": "AGENT_NOT_FOUND",
    "AGENT_NOT_LOGGED_IN": "AGENT_NOT_LOGGED_IN",
    "NO_ACTIVE_CALL": "NO_ACTIVE_CALL",
    "ALREADY_ON_CALL": "ALREADY_ON_CALL",
    "NO_RECENT_CALL": "NO_RECENT_CALL",
    "NO_CALL_TO_TYPE": "NO_CALL_TO_TYPE",
    "PHONE_NOT_REGISTERED": "PHONE_NOT_REGISTERED",
    "TRANSFER_IN_PROGRESS": "TRANSFER_IN_PROGRESS",
    "TARGET_NOT_AVAILABLE": "TARGET_NOT_AVAILABLE",
    "NUMBER_NOT_ALLOWED": "NUMBER_NOT_ALLOWED",
    "INVALID_PARAMETER": "INVALID_PARAMETER",
    "CALL_NOT_UPDATED": "CALL_NOT_UPDATED",
    "CALL_CONTROL_UNAVAILABLE": "CALL_CONTROL_UNAVAILABLE",
    "TRANSFER_LIMIT": "TARGET_NOT_AVAILABLE",
}


def row_for_error_id(error_id: str, *, parameter: str | None = None) -> ErrorRow:
    """The row a domain error answers with; INVALID_PARAMETER needs the parameter's name."""
    key = ERROR_IDS[error_id]
    if key == "INVALID_PARAMETER":
        if not parameter:
            raise ValueError("INVALID_PARAMETER needs the parameter's name")
        return invalid_parameter(parameter)
    return error(key)


# --- verbs -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    """One ``api=`` verb. ``messages`` maps an outcome to its success message template."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    messages: Mapping[str, str] = field(default_factory=dict)
    data: tuple[str, ...] = ()  # keys of `data` on success; empty: no `data`

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.required + self.optional

    def message(self, outcome: str = "done", **values: str) -> str:
        return self.messages[outcome].format(**values)


def _verb(name: str, required: tuple[str, ...], optional: tuple[str, ...] = (), *, data: tuple[str, ...] = (),
          **messages: str) -> Verb:
    return Verb(name=name, required=("agent_id", *required), optional=optional, messages=messages, data=data)


VERBS: Final[Mapping[str, Verb]] = {
    v.name: v
    for v in (
        _verb("transfer", ("customer_phone",), data=("conn_id",),
              done="Call has been transfer to {customer_phone} number"),
        _verb("dial", ("customer_phone",), ("customer_id", "customer_name"), data=("conn_id",),
              done="Call has been dialed to {customer_phone}"),
        _verb("hang", (), done="Call has been hung up"),
        _verb("hold", (), on="Call has been put on hold", off="Call has been taken off hold"),
        _verb("mute", (), on="Microphone has been muted", off="Microphone has been unmuted"),
        _verb("change_status", ("status",), done="Agent status has been changed to {status}"),
        _verb("type", ("cod_act", "cod_act_2"), ("comments",), done="Call has been typed"),
        _verb("hang_type_ready", ("cod_act",), ("cod_act_2", "comments"),
              done="Call has been hung up, typed and agent is ready"),
        _verb("dtmf", ("tones",), data=("tones",), done="Tones have been sent"),
        _verb("aux_call", ("customer_phone",), data=("conn_id",),
              done="Auxiliary call has been dialed to {customer_phone}"),
        _verb("agent_display", ("display", "button"), done="Display has been updated"),
        _verb("recall", ("customer_phone", "date", "type_recall"), done="Recall has been scheduled"),
    )
}

# Formats of the parameters whose syntax the contract fixes; a value that does not match answers
# INVALID_PARAMETER(name). Whether a well-formed value exists (an aux state, an activity code) is the domain's call.
PARAMETER_PATTERNS: Final[Mapping[str, re.Pattern[str]]] = {
    "agent_id": re.compile(r"[0-9]{1,32}"),
    "customer_phone": re.compile(r"\+?[0-9]{1,32}"),
    "tones": re.compile(r"[0-9*#A-D]{1,64}"),
    "date": re.compile(r"[0-9]{14}"),  # YYYYmmddHHiiss, in the operation's time zone
    "display": re.compile(r"show|hide"),
    "button": re.compile(r"hungup|disposition|dial"),
    "type_recall": re.compile(r"auto|manual"),
}


def parameter_is_well_formed(name: str, value: str) -> bool:
    pattern = PARAMETER_PATTERNS.get(name)
    return pattern is None or pattern.fullmatch(value) is not None


# --- the native API's problem details (RFC 9457) --------------------------------------------------------------------

PROBLEM_TYPE_PREFIX: Final = "urn:callbridge:problem:"

# Errors of the native API only; the agentbox rows above serve it too under the same keys.
NATIVE_ERRORS: Final[Mapping[str, ErrorRow]] = {
    row.key: row
    for row in (
        _row("TRANSFER_NOT_FOUND", 404, "TRANSFER DOES NOT EXIST", "no such transfer in the token's operation"),
        _row("CALL_NOT_FOUND", 404, "CALL DOES NOT EXIST", "no such conn_id in the token's operation"),
        _row("NOT_ATTENDED", 409, "TRANSFER IS NOT ATTENDED", "complete or cancel asked of a blind transfer"),
        _row("TRANSFER_NOT_ANSWERED", 409, "TRANSFER TARGET HAS NOT ANSWERED",
             "complete asked before the target answered"),
        _row("TRANSFER_FINISHED", 409, "TRANSFER HAS ALREADY FINISHED",
             "complete or cancel asked of a completed, failed or cancelled transfer"),
        _row("TRANSFER_LIMIT", 409, "CALL HAS BEEN TRANSFERRED TOO MANY TIMES",
             "the call reached the configured number of transfers"),
        _row("IDEMPOTENCY_KEY_REUSED", 422, "IDEMPOTENCY KEY WAS USED WITH ANOTHER REQUEST",
             "the Idempotency-Key was first sent with a different body"),
        _row("IDEMPOTENCY_KEY_IN_USE", 409, "A REQUEST WITH THIS IDEMPOTENCY KEY IS IN PROGRESS",
             "the first request with this Idempotency-Key has not answered yet"),
        _row("EVENTS_EXPIRED", 410, "EVENTS BEFORE THE OLDEST KEPT ONE WERE DISCARDED",
             "`after` is older than the oldest event the server still keeps"),
        _row("CALL_ENDED", 409, "CALL HAS ENDED", "a recording verb on a call that is no longer live"),
        _row("RECORDING_NOT_ALLOWED", 409, "RECORDING POLICY DOES NOT ALLOW IT",
             "policy never: nothing is recorded; policy always: the recording cannot be started or stopped "
             "(only paused)"),
        _row("RECORDING_UNAVAILABLE", 409, "CALL CANNOT BE RECORDED",
             "the call is not answered yet, or its media does not go through a relay"),
        _row("RECORDING_NOT_STARTED", 409, "CALL IS NOT BEING RECORDED",
             "pause, resume or stop asked of a call whose recording was not started"),
        _row("RECORDING_NOT_FOUND", 404, "RECORDING DOES NOT EXIST",
             "the call has no stored recording (not recorded, still live, or deleted by retention)"),
        _row("EXTENSION_NOT_FOUND", 404, "EXTENSION DOES NOT EXIST",
             "monitor: no agent of the token's operation has this extension"),
        _row("CALL_NOT_ANSWERED", 409, "CALL IS NOT ANSWERED",
             "monitor: the call is not answered yet (nobody talks to listen to)"),
        _row("CALL_NOT_ANCHORED", 409, "CALL MEDIA DOES NOT GO THROUGH A RELAY",
             "monitor: the call's media flows directly between the parties, so nobody can listen to it"),
        _row("MONITOR_IN_PROGRESS", 409, "SOMEONE LISTENS TO THE CALL ALREADY",
             "monitor: one listener per call at a time"),
        _row("MONITOR_NOT_STARTED", 409, "NOBODY LISTENS TO THE CALL",
             "monitor: stop or read the listening of a call nobody listens to"),
        _row("RANGE_NOT_SATISFIABLE", 416, "RANGE CANNOT BE SERVED",
             "the Range header is malformed or starts past the end of the recording"),
    )
}

# Native statuses that differ from the agentbox row of the same key: method errors are plain HTTP there.
_NATIVE_ONLY_FROM_AGENTBOX: Final = frozenset({"METHOD_NOT_ALLOWED"})
PROBLEM_KEYS: Final[tuple[str, ...]] = tuple(
    sorted((set(ERRORS) - _NATIVE_ONLY_FROM_AGENTBOX) | set(NATIVE_ERRORS))
)


def problem_type(key: str) -> str:
    """The stable ``type`` URI of a problem: ``urn:callbridge:problem:agent-not-found``."""
    return PROBLEM_TYPE_PREFIX + key.lower().replace("_", "-")


def problem(key: str, *, detail: str | None = None, instance: str | None = None, parameter: str | None = None,
            **extensions: Any) -> dict[str, Any]:
    """An RFC 9457 problem object for ``key``: ``type``, ``title`` (the contract's message), ``status``, ``error``
    (the key) and, for INVALID_PARAMETER, the ``parameter``; ``detail``, ``instance`` and extension members
    when given."""
    if key not in PROBLEM_KEYS:
        raise KeyError(f"{key} is not a problem of the native API")
    row = NATIVE_ERRORS.get(key) or ERRORS[key]
    if key == "INVALID_PARAMETER":
        if not parameter:
            raise ValueError("INVALID_PARAMETER needs the parameter's name")
        title = "INVALID PARAMETER"
        detail = detail or invalid_parameter(parameter).msg
    elif key == "CONCURRENCY_LIMIT":
        title = "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN"
    else:
        title = row.msg
    body: dict[str, Any] = {"type": problem_type(key), "title": title, "status": row.status, "error": key}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if parameter is not None:
        body["parameter"] = parameter
    body.update(extensions)
    return body
