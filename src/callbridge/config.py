"""Runtime configuration of a callbridge node: addresses, ports, database, destination policy, drain time.

Every setting has a default for the embedded case (SQLite in the working directory, loopback ports) and can be set
in a TOML settings file (the same keys as the fields below), from the environment (``CALLBRIDGE_<NAME>``) or, in the
CLI, by a flag of the same name; the flag wins over the environment, which wins over the file. The environment is
read once, by :func:`Settings.from_env`; nothing else in the package reads it.

Rules
- Every value is checked when the settings are built, before anything starts: a bad one raises `ConfigError`,
  whose message starts with the setting's name (``sip_host: ...``) and says what is allowed.
- What can only be checked on this machine (that ``sip_host`` is one of its addresses, that the SQLite file's
  folder is writable) is checked by :func:`check_on_this_machine`, which `callbridge serve` calls before it binds.
- ``sip_host`` is where SIP is bound; ``sip_advertise`` (default: ``sip_host``) is what goes into Via and Contact,
  for a node behind NAT or a load balancer. Neither may be a wildcard (0.0.0.0, ::): a peer cannot send to it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from callbridge.storage.database import DatabaseUrlError, normalise_url

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


def _ip(name: str, value: Any, *, wildcard_ok: bool = False) -> str:
    try:
        address = ipaddress.ip_address(str(value).strip("[]"))
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an IP address (callbridge never resolves names)") from None
    if address.is_unspecified and not wildcard_ok:
        raise ConfigError(f"{name}: {value!r} is a wildcard: give an address of this machine that peers can reach")
    return str(address)


def _listen(name: str, value: Any) -> str:
    """``HOST:PORT`` (IPv6 in brackets) to listen on: an IP literal and a port 0-65535; normalised."""
    host, colon, port_text = str(value).strip().rpartition(":")
    if not colon or not host:
        raise ConfigError(f"{name}: {value!r} is not HOST:PORT")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(f"{name}: {value!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
    address = ipaddress.ip_address(_ip(name, host.strip("[]"), wildcard_ok=True))
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name}: port {port_text!r} in {value!r} is not a port number 0-65535")
    return f"[{address}]:{int(port_text)}" if address.version == 6 else f"{address}:{int(port_text)}"


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (as `_listen` normalised it) as an address tuple."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _relays(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """rtpengine relays: ``udp:HOST:PORT`` each (IPv6 in brackets), a comma list or a sequence; normalised."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        scheme, _, rest = item.partition(":")
        if scheme.lower() != "udp" or not rest:
            raise ConfigError(f"rtpengine: {item!r} is not udp:HOST:PORT (rtpengine's ng control protocol is UDP)")
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise ConfigError(f"rtpengine: {item!r} has no port: use udp:HOST:PORT")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ConfigError(f"rtpengine: {item!r}: write an IPv6 address in brackets, udp:[ADDRESS]:PORT")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"rtpengine: {host!r} in {item!r} is not an IP address "
                              "(callbridge never resolves names)") from None
        if address.is_unspecified:
            raise ConfigError(f"rtpengine: {item!r} is a wildcard address: name the relay's own address")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"rtpengine: port {port_text!r} in {item!r} is not a port number 1-65535")
        host_text = f"[{address}]" if address.version == 6 else str(address)
        normal = f"udp:{host_text}:{int(port_text)}"
        if normal in out:
            raise ConfigError(f"rtpengine: {normal!r} is named twice")
        out.append(normal)
    return tuple(out)


def relay_address(relay: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` (as `Settings.rtpengine` holds it) as an address tuple."""
    host, _, port = relay.removeprefix("udp:").rpartition(":")
    return host.strip("[]"), int(port)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _choice(name: str, value: Any, allowed: tuple[str, ...], *, upper: bool) -> str:
    text = str(value).upper() if upper else str(value).lower()
    if text not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return text


def _database_url(value: Any) -> str:
    url = str(value)
    try:
        parsed = normalise_url(url)
    except DatabaseUrlError as exc:
        raise ConfigError(f"database_url: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(f"database_url: {url!r} names no file: use sqlite:///FILE (sqlite:////abs/path.db)")
    return url


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{name}: {value!r} is not a finite number of seconds, 0 or more")
    return seconds


def _min_expires(value: Any) -> int:
    try:
        seconds = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"registration_min_expires: {value!r} is not a whole number of seconds") from None
    if not 1 <= seconds <= 3600:
        raise ConfigError(f"registration_min_expires: {seconds} is out of range 1-3600")
    return seconds


def _folder(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if any(c in text for c in "\0\r\n"):
        raise ConfigError(f"{name}: {text!r} is not a folder's path (it holds a NUL or a line break)")
    return text


@dataclass(frozen=True)
class Settings:
    sip_host: str = "127.0.0.1"
    # What goes into Via and Contact when it is not sip_host (a node behind NAT or a load balancer).
    sip_advertise: str | None = None
    sip_port: int = 5060
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    database_url: str = "sqlite:///callbridge.db"
    # Where callbridge may send SIP (requests and responses alike):
    # docs/design.md, "What the server sends, and where".
    allowed_networks: tuple[str, ...] = field(default=LOOPBACK_NETWORKS)
    # Networks whose sources are never ignored by the flood defence (trunks are exempt on their own).
    trusted_networks: tuple[str, ...] = ()
    node_id: str = "node-1"
    drain_seconds: float = 30.0
    # How often a running node asks the database whether `callbridge admin` changed the directory (tokens, agents,
    # queues...); a change is served from the next poll on. 0 turns the poll off (the directory read at start-up
    # is kept until a restart).
    directory_poll_seconds: float = 2.0
    # The shortest registration interval the registrar grants (RFC 3261 §10.3 step 6: shorter asks get 423 with
    # Min-Expires); between 1 and 3600 s. Shorter means more REGISTER refreshes, and a phone that vanished is
    # noticed sooner: at a restart, a registration expired while the node was down logs its agent out.
    registration_min_expires: int = 60
    log_level: str = "INFO"
    # "text" (one line per record) or "json" (one JSON object per line, for log collectors).
    log_format: str = "text"
    # Digest algorithms the registrar and the INVITE challenge offer, in order. RFC 8760 prefers SHA-256 first, but
    # phones on libre 1.x (Debian 12's baresip), SIPp and many desk phones fail on any challenge that is not MD5,
    # so the default is MD5 alone; "SHA-256,MD5" offers both (phones that know SHA-256 then use it).
    digest_algorithms: tuple[str, ...] = ("MD5",)
    # SIP over WebSocket (RFC 7118) for browser phones: off unless a port is given (0 takes a free one), on
    # sip_host. With a certificate and its key (PEM files) the listener speaks TLS (wss); otherwise a proxy in
    # front terminates TLS (docs/operations.md).
    sip_ws_port: int | None = None
    sip_tls_cert: str | None = None
    sip_tls_key: str | None = None
    # rtpengine relays (ng control, ``udp:HOST:PORT``); none: media flows between the parties (docs/design.md,
    # "Media"). With one or more, calls are anchored on them as each operation's media mode says.
    rtpengine: tuple[str, ...] = ()
    # A node of a cluster on PostgreSQL (docs/cluster.md): it joins under node_id, holds leases of the operations
    # placed on it, and declares their epochs on every write. A lease lasts lease_seconds (PostgreSQL's clock) and
    # is renewed every third of it; a dead node's operations are taken over within about lease_seconds * 4/3.
    cluster: bool = False
    lease_seconds: float = 6.0
    # Where the relays write their recordings (rtpengine's --recording-dir, pcap method) as this machine sees it:
    # the relay on this machine, or its folder mounted here. None: calls are not recorded whatever the policy.
    rtpengine_recording_dir: str | None = None
    # Where recordings are kept (one WAV per recorded call). None: "recordings" beside the SQLite file, or in the
    # working directory with PostgreSQL.
    recordings_dir: str | None = None
    # Where callbridge listens for the relays' DTMF log (``HOST:PORT``, an IP literal; rtpengine's
    # ``--dtmf-log-dest`` names it): the customer's key presses become ``call.dtmf`` events. None: not listened for.
    rtpengine_dtmf_listen: str | None = None
    # An anchored call whose relay received no RTP from one of its parties (the customer, or the party the
    # customer talks to) for this long is ended: BYE both ways, CDR end_reason "media_timeout" (docs/operations.md,
    # "Dead media"). A party on hold or muted (it was told not to send) is not judged. 0 turns it off.
    media_timeout_seconds: float = 60.0
    # Before that, a call whose parties all sent media and have all been silent at the relay this long is anchored
    # afresh once (new sockets on a relay, a re-INVITE to each party): rtpengine 10.5 stops reading a socket for good
    # once it fell behind (docs/peers.md), and the call would be silent until the time-out. Only when shorter than
    # the time-out; 0: never.
    media_revive_seconds: float = 10.0
    # An anchored queue caller that no agent can take at once rings (180) this long before the queue's music starts
    # (183 and the relay's audio): one an agent takes within it costs the relay nothing more than any call
    # (docs/operations.md, "Audio: what each party hears"). 0: the music at once.
    queue_music_delay_seconds: float = 1.0
    # How often each relay is pinged. A relay that leaves a ping unanswered through the ng retransmissions (4 s) is
    # down for new calls; after `rtpengine_pings_to_lose` such pings in a row (or when its uptime shows it
    # restarted), the calls it held are re-anchored on another relay or ended (docs/operations.md, "A relay that
    # dies mid-call"): detection within that many times this plus 4 s.
    rtpengine_ping_seconds: float = 5.0
    rtpengine_pings_to_lose: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "sip_host", _ip("sip_host", self.sip_host))
        if self.sip_advertise is not None and self.sip_advertise != "":
            object.__setattr__(self, "sip_advertise", _ip("sip_advertise", self.sip_advertise))
        else:
            object.__setattr__(self, "sip_advertise", None)
        object.__setattr__(self, "http_host", _ip("http_host", self.http_host, wildcard_ok=True))
        object.__setattr__(self, "database_url", _database_url(self.database_url))
        object.__setattr__(self, "log_level", _choice("log_level", self.log_level, LOG_LEVELS, upper=True))
        object.__setattr__(self, "log_format", _choice("log_format", self.log_format, LOG_FORMATS, upper=False))
        if not isinstance(self.node_id, str) or not _NODE_ID.fullmatch(self.node_id):
            raise ConfigError(f"node_id: {self.node_id!r} is not 1-64 letters, digits, '.', '_' or '-'")
        object.__setattr__(self, "sip_port", _port("sip_port", self.sip_port))
        object.__setattr__(self, "http_port", _port("http_port", self.http_port))
        if self.sip_ws_port is not None and str(self.sip_ws_port) != "":
            object.__setattr__(self, "sip_ws_port", _port("sip_ws_port", self.sip_ws_port))
        else:
            object.__setattr__(self, "sip_ws_port", None)
        for name in ("sip_tls_cert", "sip_tls_key"):
            if not getattr(self, name):
                object.__setattr__(self, name, None)
        if (self.sip_tls_cert is None) != (self.sip_tls_key is None):
            raise ConfigError("sip_tls_cert: a certificate and its key go together (sip_tls_cert and sip_tls_key)")
        if self.sip_tls_cert is not None and self.sip_ws_port is None:
            raise ConfigError("sip_tls_cert: TLS is for the WebSocket listener; set sip_ws_port too")
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
        try:
            media_timeout = float(self.media_timeout_seconds)
        except (TypeError, ValueError):
            raise ConfigError(f"media_timeout_seconds: {self.media_timeout_seconds!r} is not a number") from None
        if media_timeout < 0 or media_timeout != media_timeout:
            raise ConfigError("media_timeout_seconds: must not be negative (0 turns it off)")
        object.__setattr__(self, "media_timeout_seconds", media_timeout)
        object.__setattr__(self, "media_revive_seconds", _seconds("media_revive_seconds", self.media_revive_seconds))
        object.__setattr__(self, "queue_music_delay_seconds",
                           _seconds("queue_music_delay_seconds", self.queue_music_delay_seconds))
        ping = _seconds("rtpengine_ping_seconds", self.rtpengine_ping_seconds)
        if ping <= 0:
            raise ConfigError(f"rtpengine_ping_seconds: {self.rtpengine_ping_seconds!r} is not more than 0")
        object.__setattr__(self, "rtpengine_ping_seconds", ping)
        try:
            pings_to_lose = int(str(self.rtpengine_pings_to_lose))
        except ValueError:
            raise ConfigError(f"rtpengine_pings_to_lose: {self.rtpengine_pings_to_lose!r} is not a whole number") \
                from None
        if pings_to_lose < 1:
            raise ConfigError(f"rtpengine_pings_to_lose: {self.rtpengine_pings_to_lose!r} is not at least 1")
        object.__setattr__(self, "rtpengine_pings_to_lose", pings_to_lose)
        object.__setattr__(self, "directory_poll_seconds",
                           _seconds("directory_poll_seconds", self.directory_poll_seconds))
        object.__setattr__(self, "registration_min_expires", _min_expires(self.registration_min_expires))
        if isinstance(self.cluster, str):
            if self.cluster.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigError(f"cluster: {self.cluster!r} is not true or false")
            object.__setattr__(self, "cluster", self.cluster.strip().lower() in ("1", "true", "yes", "on"))
        lease = _seconds("lease_seconds", self.lease_seconds)
        if lease < 1:
            raise ConfigError(f"lease_seconds: {self.lease_seconds!r} is under 1 s")
        object.__setattr__(self, "lease_seconds", lease)
        if self.cluster and not self.database_url.startswith("postgresql"):
            raise ConfigError("cluster: a cluster needs PostgreSQL (database_url postgresql://...)")
        algorithms = self.digest_algorithms
        if isinstance(algorithms, str):
            algorithms = tuple(a.strip() for a in algorithms.split(",") if a.strip())
        if not algorithms or any(a.upper() not in ("MD5", "SHA-256") for a in algorithms):
            raise ConfigError(f"digest_algorithms: {self.digest_algorithms!r} is not a list of MD5 and SHA-256")
        object.__setattr__(self, "digest_algorithms", tuple(a.upper() for a in algorithms))
        object.__setattr__(self, "rtpengine", _relays(self.rtpengine))
        for name in ("rtpengine_recording_dir", "recordings_dir"):
            object.__setattr__(self, name, _folder(name, getattr(self, name)))
        if self.rtpengine_dtmf_listen is not None and self.rtpengine_dtmf_listen != "":
            object.__setattr__(self, "rtpengine_dtmf_listen", _listen("rtpengine_dtmf_listen",
                                                                      self.rtpengine_dtmf_listen))
        else:
            object.__setattr__(self, "rtpengine_dtmf_listen", None)

    @property
    def recordings_path(self) -> Path:
        """The folder recordings are kept in (see `recordings_dir`)."""
        if self.recordings_dir is not None:
            return Path(self.recordings_dir)
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///"):]).parent / "recordings"
        return Path("recordings")

    @property
    def rtpengine_relays(self) -> tuple[tuple[str, int], ...]:
        """The configured relays as (IP literal, port)."""
        return tuple(relay_address(relay) for relay in self.rtpengine)

    @property
    def advertised_sip_host(self) -> str:
        """The address written in Via and Contact."""
        return self.sip_advertise or self.sip_host

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, settings_file: str | Path | None = None,
                 **overrides: Any) -> Settings:
        """Defaults, then the settings file (``settings_file`` or ``CALLBRIDGE_SETTINGS_FILE``), then
        ``CALLBRIDGE_*`` variables, then explicit overrides (flags) that are not None."""
        env = os.environ if environ is None else environ
        path = settings_file if settings_file is not None else env.get("CALLBRIDGE_SETTINGS_FILE") or None
        values: dict[str, Any] = read_settings_file(path) if path is not None else {}
        for f in fields(cls):
            raw = env.get(f"CALLBRIDGE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The TOML settings file's values by setting name; an unknown key or a bad file is a `ConfigError`."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"settings_file: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings_file: {str(path)!r} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"settings_file: {str(path)!r}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        values[name] = ",".join(map(str, value)) if isinstance(value, list) else value
    return values


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server TLS context of the WebSocket listener; a file that cannot be read or used is a `ConfigError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        raise ConfigError(f"sip_tls_cert: cannot read {cert!r} or {key!r}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"sip_tls_cert: {cert!r} and {key!r} are not a PEM certificate and its key: "
                          f"{exc.reason or exc}") from None
    return context


def check_on_this_machine(settings: Settings) -> None:
    """What only this machine can tell: ``sip_host`` and ``http_host`` are its addresses, the SQLite file's folder
    exists and is writable. Raises `ConfigError` naming the setting; binds nothing that stays bound."""
    for name in ("sip_host", "http_host"):
        host = getattr(settings, name)
        if ipaddress.ip_address(host).is_unspecified:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((host, 0))
        except OSError:
            raise ConfigError(f"{name}: {host!r} is not an address of this machine") from None
    if settings.sip_tls_cert is not None and settings.sip_tls_key is not None:
        tls_context(settings.sip_tls_cert, settings.sip_tls_key)
    if settings.database_url.startswith("sqlite:///"):
        file = Path(settings.database_url[len("sqlite:///"):])
        folder = file.parent if str(file.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"database_url: the folder {str(folder)!r} of the SQLite file does not exist")
        try:  # a real write: os.access says yes to root even on a read-only file system
            with tempfile.TemporaryFile(dir=folder):
                pass
            if file.exists():
                with file.open("r+b"):
                    pass
        except OSError as exc:
            raise ConfigError(f"database_url: {str(file)!r} is not writable: {exc.strerror or exc}") from None
    _writable_folder("recordings_dir", settings.recordings_path)
    if settings.rtpengine_recording_dir is not None and not Path(settings.rtpengine_recording_dir).is_dir():
        raise ConfigError(f"rtpengine_recording_dir: {settings.rtpengine_recording_dir!r} is not a folder")


def _writable_folder(name: str, folder: Path) -> None:
    """`folder` is a writable folder, or can be made in a folder that exists; raises `ConfigError` naming `name`."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{name}: {str(folder)!r} is not a folder")
    if not folder.exists():
        parent = folder.parent if str(folder.parent) else Path(".")
        if not parent.is_dir():
            raise ConfigError(f"{name}: the folder {str(parent)!r} that would hold {str(folder)!r} does not exist")
        try:
            folder.mkdir()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot make {str(folder)!r}: {exc.strerror or exc}") from None
    try:  # a real write, as for the database (os.access says yes to root on a read-only file system)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: {str(folder)!r} is not writable: {exc.strerror or exc}") from None
