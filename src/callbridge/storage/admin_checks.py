"""Administrative input checks: the rules a directory object's fields must meet, shared by creating, updating and
applying (`administration`, `admin_changes`, `apply`).

Rules
- Each `*_row` function takes every field of one object (create's keyword names) and returns the row's column
  values, or raises an `AdminError` whose message is one line naming the field and the value: the CLI prints it
  as is, and `apply` prefixes it with the key path (`agents[2].extension`).
- Checks here need no database: what depends on other rows (a queue must exist, a name must be free) is checked
  by the caller, in its transaction.
- `NotFound` is the refusal for a thing that does not exist, or that another operation owns: both read the same.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.media.audio import RELAY_MAX_SECONDS, AudioError, load_wav, wav_from_bytes


class AdminError(ValueError):
    """Refused administrative input; the message is one line for the operator."""


class NotFound(AdminError):
    """The thing named does not exist (or belongs to another operation)."""


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
DIGITS = re.compile(r"[0-9]{1,32}")
NUMBER = re.compile(r"\+?[0-9]{1,31}")
HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
MIN_PASSWORD = 8


def check(pattern: re.Pattern[str], field: str, value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AdminError(f"{field}: {value!r} is not {what}")
    return value


def number(field: str, value: object, *, minimum: float = 0, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise AdminError(f"{field}: {value!r} is not {'an integer' if integer else 'a number'}")
    if value < minimum:
        raise AdminError(f"{field}: {value} is below {minimum:g}")
    return value


def password(value: object) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD:
        raise AdminError(f"password: at least {MIN_PASSWORD} characters are required")
    return value


def text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise AdminError(f"{field}: {value!r} is not text")
    return value


DIGEST_ALGORITHMS = ("SHA-256", "MD5")  # what agents' stored HA1s answer; offered in this order (RFC 8760 §2.3)


def digest_algorithms(value: object) -> str:
    """An operation's digest offer as stored: "SHA-256,MD5", "SHA-256", "MD5", or "" (the node's setting).

    Takes a list or comma-separated text in any order and case; the offer is always SHA-256 first, the most
    preferred at the top (RFC 8760 §2.3), so the same set is stored the same way however it was written."""
    if value is None:
        return ""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",")] if value.strip() else []
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise AdminError(f"digest_algorithms: {value!r} is not a list of algorithms (SHA-256, MD5)")
    canonical = []
    for name in names:
        known = next((a for a in DIGEST_ALGORITHMS if a == name.upper()), None)
        if known is None:
            raise AdminError(f"digest_algorithms: {name!r} is not SHA-256 or MD5")
        if known in canonical:
            raise AdminError(f"digest_algorithms: {value!r} names {known} twice")
        canonical.append(known)
    return ",".join(a for a in DIGEST_ALGORITHMS if a in canonical)


def operation_row(f: dict[str, Any]) -> dict[str, Any]:
    check(NAME, "id", f["id"], "an operation id (letters, digits, '_', '.', '-'; up to 32)")
    check(HOST, "sip_domain", f["sip_domain"], "a SIP domain")
    text("name", f["name"])
    if f["realm"]:
        check(HOST, "realm", f["realm"], "a digest realm")
    try:
        ZoneInfo(f["time_zone"])
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise AdminError(f"time_zone: {f['time_zone']!r} is not an IANA time zone") from None
    if f["after_transfer_state"] not in ("acw", "ready"):
        raise AdminError(f"after_transfer_state: {f['after_transfer_state']!r} is not 'acw' or 'ready'")
    if f["default_queue"] is not None:
        check(NAME, "default_queue", f["default_queue"], "a queue name")
    if f["media_mode"] not in ("anchored", "direct"):
        raise AdminError(f"media_mode: {f['media_mode']!r} is not 'anchored' or 'direct'")
    if f["media_relay_down"] not in ("direct", "refuse"):
        raise AdminError(f"media_relay_down: {f['media_relay_down']!r} is not 'direct' or 'refuse'")
    if f["transfer_audio"] not in ("ringback", "music"):
        raise AdminError(f"transfer_audio: {f['transfer_audio']!r} is not 'ringback' or 'music'")
    if f["ringback_tone"] not in ("etsi", "us"):
        raise AdminError(f"ringback_tone: {f['ringback_tone']!r} is not 'etsi' or 'us'")
    recording_policy("recording", f.get("recording", "never"))
    if f.get("recording_retention_days") is not None:
        number("recording_retention_days", f["recording_retention_days"], minimum=1, integer=True)
    for field in ("acw_seconds", "ring_timeout", "transfer_timeout", "recent_call_window", "action_timeout"):
        number(field, f[field])
    number("dial_timeout", f["dial_timeout"], minimum=1)  # a customer's phone rings at least a second
    number("max_transfers", f["max_transfers"], integer=True)
    number("token_concurrency_limit", f["token_concurrency_limit"], minimum=1, integer=True)
    if f["daily_quota"] is not None:
        number("daily_quota", f["daily_quota"], minimum=1, integer=True)
    return {**f, **hold_music_columns(f["hold_music"], f.get("hold_music_name", "")),
            "digest_algorithms": digest_algorithms(f["digest_algorithms"])}


def hold_music_columns(value: object, name: str = "") -> dict[str, Any]:
    """`hold_music` as given (a WAV file's path, "" for the built-in music, or the converted bytes read back from
    the database) as its two columns (`audio_columns`)."""
    return audio_columns("hold_music", value, name)


def audio_columns(field: str, value: object, name: str = "") -> dict[str, Any]:
    """An audio setting `field` as given (a WAV file's path, "" for none, or the converted bytes read back from
    the database) as its two columns, `field` and `field`_name. A file is converted once, here (8 kHz mono 16-bit,
    `media.audio`); one that cannot be read, or is longer than the relay takes in one message, is refused with the
    file and the reason."""
    if value is None or value == "":
        return {field: None, f"{field}_name": ""}
    if isinstance(value, bytes):
        return {field: value, f"{field}_name": name}
    if not isinstance(value, str):
        raise AdminError(f"{field}: {value!r} is not a WAV file's path")
    try:
        audio = load_wav(value, max_seconds=RELAY_MAX_SECONDS)
    except AudioError as exc:
        raise AdminError(f"{field}: {exc}") from None
    return {field: audio.wav_bytes(), f"{field}_name": Path(value).name}


# A queue's announcement comes back at most this often: it must leave room for the music between two of them.
MIN_ANNOUNCEMENT_INTERVAL = 5.0


def queue_row(f: dict[str, Any]) -> dict[str, Any]:
    check(NAME, "name", f["name"], "a queue name (letters, digits, '_', '.', '-'; up to 32)")
    number("max_wait_seconds", f["max_wait_seconds"])
    if f["ring_timeout"] is not None:
        number("ring_timeout", f["ring_timeout"])
    number("retry_after", f["retry_after"], integer=True)
    if f.get("recording") is not None:
        recording_policy("recording", f["recording"])
    interval = f.get("announcement_interval", 30.0)
    number("announcement_interval", interval, minimum=MIN_ANNOUNCEMENT_INTERVAL)
    row = {**f, **audio_columns("music", f.get("music"), f.get("music_name", "")),
           **audio_columns("announcement", f.get("announcement"), f.get("announcement_name", "")),
           "announcement_interval": float(interval)}
    if row["announcement"] is not None:
        length = wav_from_bytes(row["announcement"], name="announcement").duration
        if length >= row["announcement_interval"]:
            raise AdminError(f"announcement_interval: {interval!r} s is not longer than the announcement "
                             f"({length:.1f} s): no music would play between two announcements")
    return row


RECORDING_POLICIES = ("always", "never", "on_demand")


def recording_policy(field: str, value: object) -> str:
    if value not in RECORDING_POLICIES:
        raise AdminError(f"{field}: {value!r} is not 'always', 'never' or 'on_demand'")
    return str(value)


def agent_queues(queues: object) -> list[str]:
    if isinstance(queues, str) or not isinstance(queues, Sequence):
        raise AdminError(f"queues: {queues!r} is not a list of queue names")
    if len(set(queues)) != len(queues):
        raise AdminError(f"queues: {list(queues)!r} names a queue twice")
    return list(queues)


def agent_row(f: dict[str, Any]) -> dict[str, Any]:
    """The agent's fields but its queues and password (kept apart: another table, and digests)."""
    check(DIGITS, "extension", f["extension"], "an extension (digits only)")
    return {"extension": f["extension"], "name": text("name", f["name"])}


def trunk_row(f: dict[str, Any]) -> dict[str, Any]:
    check(NAME, "name", f["name"], "a trunk name (letters, digits, '_', '.', '-'; up to 32)")
    check(HOST, "host", f["host"], "a host address")
    port = f["port"]
    number("port", port, minimum=1, integer=True)
    if port > 65535:
        raise AdminError(f"port: {port} is out of range 1-65535")
    if f["transport"] not in ("udp", "tcp"):
        raise AdminError(f"transport: {f['transport']!r} is not 'udp' or 'tcp'")
    for pattern in f["dial_patterns"]:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise AdminError(f"dial_patterns: {pattern!r} is not a regular expression ({exc})") from None
    number("dial_strip", f["dial_strip"], integer=True)
    if f["dial_prefix"] and not NUMBER.fullmatch(f["dial_prefix"]):
        raise AdminError(f"dial_prefix: {f['dial_prefix']!r} is not digits (with an optional leading '+')")
    number("dial_min_length", f["dial_min_length"], minimum=1, integer=True)
    number("dial_max_length", f["dial_max_length"], minimum=f["dial_min_length"], integer=True)
    policy = f["caller_id_policy"]
    if policy not in ("customer", "agent", "fixed"):
        raise AdminError(f"caller_id_policy: {policy!r} is not 'customer', 'agent' or 'fixed'")
    if f["caller_id_number"]:
        check(NUMBER, "caller_id_number", f["caller_id_number"], "a phone number")
    elif policy == "fixed":
        raise AdminError("caller_id_number: required with caller_id_policy 'fixed'")
    if (f["username"] is None) != (f["password"] is None):
        raise AdminError("username and password: give both or neither")
    if f["register"] and f["username"] is None:
        raise AdminError("register: registering to the provider needs a username and a password")
    if f["dtmf_mode"] not in ("rfc4733", "info"):
        raise AdminError(f"dtmf_mode: {f['dtmf_mode']!r} is not 'rfc4733' or 'info'")
    networks = []
    for network in f["inbound_networks"]:
        try:
            networks.append(str(ipaddress.ip_network(network, strict=False)))
        except (ValueError, TypeError):
            raise AdminError(f"inbound_networks: {network!r} is not a network") from None
    return {
        "name": f["name"], "host": f["host"], "port": port, "transport": f["transport"],
        "dial_patterns": list(f["dial_patterns"]), "dial_strip": f["dial_strip"], "dial_prefix": f["dial_prefix"],
        "dial_min_length": f["dial_min_length"], "dial_max_length": f["dial_max_length"],
        "caller_id_policy": policy, "caller_id_number": f["caller_id_number"], "register": f["register"],
        "auth_username": f["username"], "auth_password": f["password"], "auth_realm": f["auth_realm"],
        "inbound_networks": networks, "dtmf_mode": f["dtmf_mode"],
    }


TRUNK_FIELDS = {"auth_username": "username", "auth_password": "password"}  # column -> create's keyword


def did_row(f: dict[str, Any]) -> dict[str, Any]:
    check(NUMBER, "number", f["number"], "a phone number")
    check(NAME, "queue", f["queue"], "a queue name")
    return {"number": f["number"], "queue": f["queue"], "trunk": f["trunk"] or None}


def aux_state_row(f: dict[str, Any]) -> dict[str, Any]:
    check(DIGITS, "id", f["aux_id"], "an auxiliary state id (digits)")
    if not isinstance(f["name"], str) or not f["name"].strip():
        raise AdminError("name: an auxiliary state needs a name")
    return {"id": f["aux_id"], "name": f["name"]}


def activity_code_row(f: dict[str, Any]) -> dict[str, Any]:
    group = f["group"]
    if group not in (1, 2) or isinstance(group, bool):
        raise AdminError(f"group: {group!r} is not 1 or 2")
    check(NAME, "code", f["code"], "an activity code (letters, digits, '_', '.', '-'; up to 32)")
    if not isinstance(f["name"], str) or not f["name"].strip():
        raise AdminError("name: an activity code needs a name")
    return {"code_group": group, "code": f["code"], "name": f["name"]}


def token_row(f: dict[str, Any]) -> dict[str, Any]:
    text("label", f["label"])
    number("concurrency_limit", f["concurrency_limit"], minimum=1, integer=True)
    if f["daily_quota"] is not None:
        number("daily_quota", f["daily_quota"], minimum=1, integer=True)
    return {"label": f["label"], "concurrency_limit": f["concurrency_limit"], "daily_quota": f["daily_quota"]}
