"""Kamailio 5.6 as a loopback proxy and registrar: the C reference that benchmarks compare against.

    with Kamailio(default_route=("127.0.0.1", uas_port)) as kam:   # started and answering; stopped at the end
        ... send to ("127.0.0.1", kam.port) ...

The configuration (generated per instance) loads tm, sl, rr, usrloc (in memory), registrar, sanity and maxfwd:
- OPTIONS to the proxy itself (no user part) is answered 200 statelessly (a health check);
- REGISTER is saved in the location table;
- a request for a registered user goes to its contact; for anyone else it goes to ``default_route`` when one is
  given (404 otherwise); in-dialog requests follow their Route headers, and the ones without (SIPp's built-in uac
  ignores Record-Route) are routed like a new request;
- INVITEs are record-routed; everything is relayed statefully (tm).

Started in the foreground as docs/peers.md says: ``-DD -E -m 1024 -x tlsf``, ``children=1`` (keeps a call's 180
and 200 in order), no DNS, listening on 127.0.0.1 (UDP and TCP) only; stopped by killing its whole process group
(its workers outlive a killed main process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from . import require_binary, stop_process_group
from .ports import free_port

MODULES = ("kex", "corex", "tm", "sl", "rr", "pv", "maxfwd", "usrloc", "registrar", "sanity", "textops",
           "siputils", "xlog")


# The route's first checks, shared by every configuration: loops, broken requests, and OPTIONS to the server
# itself answered statelessly (the health check `Kamailio.start` waits for).
ROUTE_PRELUDE = """\
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (!sanity_check("1511", "7")) { exit; }
    if (is_method("OPTIONS") && uri == myself && $rU == $null) { sl_send_reply("200", "OK"); exit; }
"""


def kamailio_globals(host: str, port: int, children: int = 1, *, modules: tuple[str, ...] = MODULES,
                     tcp: bool = True, server_header: str | None = "kamailio-reference") -> str:
    """The head of a configuration: loopback only, no DNS, the workers, the modules, the location in memory."""
    loads = "\n".join(f'loadmodule "{m}.so"' for m in modules)
    tcp_listen = f"listen=tcp:{host}:{port}\n" if tcp else ""
    server = f'server_header="Server: {server_header}"\n' if server_header is not None else ""
    return f"""#!KAMAILIO
debug=1
log_stderror=yes
children={children}
tcp_children={children}
listen=udp:{host}:{port}
{tcp_listen}alias="{host}:{port}"
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
dns_cache_init=off
use_dns_failover=off
{server}
{loads}
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
"""


def kamailio_config(host: str, port: int, default_route: tuple[str, int] | None, children: int = 1) -> str:
    if default_route is not None:
        fallback = f'$du = "sip:{default_route[0]}:{default_route[1]}";'
    else:
        fallback = 'sl_send_reply("404", "Not Found"); exit;'
    return kamailio_globals(host, port, children) + f"""modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)

request_route {{
{ROUTE_PRELUDE}\
    if (has_totag() && loose_route()) {{ route(RELAY); }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ route(RELAY); }} exit; }}
    if (is_method("ACK") && t_check_trans()) {{ route(RELAY); }}
    if (is_method("REGISTER")) {{ if (!save("location")) {{ sl_reply_error(); }} exit; }}
    if (!has_totag() && is_method("INVITE")) {{ record_route(); }}
    if (uri == myself) {{
        if (!lookup("location")) {{ {fallback} }}
    }}
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


class Kamailio:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default_route: tuple[str, int] | None = None,
                 children: int = 1, shm_mb: int = 1024, workdir: Path | None = None) -> None:
        self.binary = require_binary("kamailio", "kamailio")
        self.host = host
        self.port = port or free_port(host)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kamailio-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.workdir / "kamailio.cfg"
        self.config_file.write_text(kamailio_config(host, self.port, default_route, children))
        self.log_file = self.workdir / "kamailio.log"
        self.shm_mb = shm_mb
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def argv(self) -> list[str]:
        return [self.binary, "-f", str(self.config_file), "-DD", "-E", "-m", str(self.shm_mb), "-x", "tlsf",
                "-Y", str(self.workdir)]

    def start(self, ready_timeout: float = 10.0) -> Kamailio:
        check = subprocess.run([*self.argv(), "-c"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejects its configuration:\n{check.stderr[-3000:]}")
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"kamailio exited ({self._proc.returncode}):\n{self.log()[-3000:]}")
            if self.options_ping(timeout=0.2) is not None:
                return self
        self.stop()
        raise RuntimeError(f"kamailio did not answer OPTIONS within {ready_timeout}s:\n{self.log()[-3000:]}")

    def options_ping(self, timeout: float = 1.0) -> bytes | None:
        """Send one OPTIONS over UDP to the proxy itself; its response, or None."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.host, 0))
            sock.settimeout(timeout)
            lport = sock.getsockname()[1]
            tag = uuid.uuid4().hex[:10]
            request = (
                f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{lport};branch=z9hG4bK{tag};rport\r\n"
                f"From: <sip:probe@{self.host}>;tag={tag}\r\n"
                f"To: <sip:{self.host}:{self.port}>\r\n"
                f"Call-ID: {tag}@{self.host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(request, (self.host, self.port))
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                return None
            return data

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        stop_process_group(proc, 5)
        # Workers may outlive the main process: the group goes as a whole.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Kamailio:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
