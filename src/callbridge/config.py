"""Runtime configuration of a callbridge node: addresses, ports, database, destination policy, drain time.

Every setting has a default for the embedded case (SQLite in the working directory, loopback ports) and can be set
from the environment (``CALLBRIDGE_<NAME>``) or, in the CLI, by a flag of the same name. The environment is read
once, by :func:`Settings.from_env`; nothing else in the package reads it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


class ConfigError(ValueError):
    """A setting has a value callbridge cannot use; the message names the setting."""


def _networks(value: str | tuple[str, ...]) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"allowed_networks: {item!r} is not a network ({exc})") from None
    if not out:
        raise ConfigError("allowed_networks: at least one network is required")
    return tuple(out)


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: {port} is out of range 0-65535")
    return port


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{name}: {value!r} is not a finite number of seconds, 0 or more")
    return seconds


@dataclass(frozen=True)
class Settings:
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    database_url: str = "sqlite:///callbridge.db"
    # Where callbridge may send SIP (requests and responses alike); see DESIGN.md "What the server sends".
    allowed_networks: tuple[str, ...] = field(default=LOOPBACK_NETWORKS)
    # Networks whose sources are never ignored by the flood defence (trunks are exempt on their own).
    trusted_networks: tuple[str, ...] = ()
    node_id: str = "node-1"
    drain_seconds: float = 30.0
    # How often a running node asks the database whether `callbridge admin` changed the directory (tokens, agents,
    # queues...); a change is served from the next poll on. 0 turns the poll off (the directory read at start-up
    # is kept until a restart).
    directory_poll_seconds: float = 2.0
    log_level: str = "INFO"
    # Digest algorithms the registrar and the INVITE challenge offer, in order: RFC 8760 prefers SHA-256 first,
    # but phones on libre 1.x (Debian 12's baresip) fail on any challenge that is not MD5: ("MD5",) serves them.
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sip_port", _port("sip_port", self.sip_port))
        object.__setattr__(self, "http_port", _port("http_port", self.http_port))
        object.__setattr__(self, "allowed_networks", _networks(self.allowed_networks))
        if self.trusted_networks:
            object.__setattr__(self, "trusted_networks", _networks(self.trusted_networks))
        try:
            drain = float(self.drain_seconds)
        except (TypeError, ValueError):
            raise ConfigError(f"drain_seconds: {self.drain_seconds!r} is not a number") from None
        if drain < 0:
            raise ConfigError("drain_seconds: must not be negative")
        object.__setattr__(self, "drain_seconds", drain)
        object.__setattr__(self, "directory_poll_seconds",
                           _seconds("directory_poll_seconds", self.directory_poll_seconds))
        algorithms = self.digest_algorithms
        if isinstance(algorithms, str):
            algorithms = tuple(a.strip() for a in algorithms.split(",") if a.strip())
        if not algorithms or any(a.upper() not in ("MD5", "SHA-256") for a in algorithms):
            raise ConfigError(f"digest_algorithms: {self.digest_algorithms!r} is not a list of MD5 and SHA-256")
        object.__setattr__(self, "digest_algorithms", tuple(a.upper() for a in algorithms))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CALLBRIDGE_*`` variables, then explicit overrides (flags) that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"CALLBRIDGE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
