"""What the SIP benchmarks share: one operation loaded into a fresh database, `callbridge serve` in a process of
its own, agents registered with digest at a SIPp address, Kamailio with a digest registrar, memory of a process
tree, and the row each script appends to bench/RESULTS.md.

The production path every benchmark runs (issue 4, "Benchmarks"):
- `callbridge serve` exactly as an operator runs it (SQLite file, write-through, defences at their defaults);
- the carrier (SIPp's uac) sends from 127.0.0.2, the trunk's inbound network: trunk addresses are exempt from the
  flood ban, as in production;
- the agents' phones are one SIPp process on 127.0.0.4 that registered every agent with digest; N phones behind
  one address send more than the per-source flood limit, so that address is in the configured allow-list
  (`--trusted-networks`, the production switch for an office NAT or an SBC in front of phones). The same holds for
  the REGISTER benchmark's source, 127.0.0.5. Nothing else is changed from the defaults.

Ramps: a step runs a fresh target at one rate; the ramp stops at the first step that fails. The figure is the
highest rate whose step passed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the real-peer harness: tests/peers
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from peers import stop_process_group  # noqa: E402
from peers.kamailio import MODULES, ROUTE_PRELUDE, Kamailio, kamailio_globals  # noqa: E402
from peers.ports import free_port  # noqa: E402
from peers.sipp import Sipp, SippResult  # noqa: E402,F401  (re-exported for the scripts)

OP = "0042"
DOMAIN = "0042.callbridge.test"
DID = "6000"
TRUNK_HOST = "127.0.0.2"      # the carrier: the trunk's inbound network
GATEWAY_HOST = "127.0.0.3"    # the trunk's outbound gateway (unused by the benchmarks)
AGENTS_HOST = "127.0.0.4"     # the SIPp uas that every agent registered at
REGISTER_HOST = "127.0.0.5"   # the REGISTER benchmark's SIPp
RESULTS = ROOT / "bench" / "RESULTS.md"
BUFF_SIZE = 4 * 1024 * 1024   # SIPp's socket buffers (docs/peers.md: the kernel drops beyond 5,000/s without)


def agent_extensions(count: int, first: int = 10001) -> list[str]:
    return [str(first + i) for i in range(count)]


def operation_doc(agents: Sequence[str], *, ring_timeout: float = 10.0, max_wait: float = 20.0) -> dict[str, Any]:
    """One operation, ACW 0, one queue with every agent, a trunk from TRUNK_HOST delivering DID, one API token."""
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": ring_timeout},
        "queues": [{"name": "support", "max_wait_seconds": max_wait, "retry_after": 5}],
        "agents": [{"extension": ext, "name": f"Agent {ext}", "password": f"secret-{ext}", "queues": ["support"]}
                   for ext in agents],
        "trunks": [{"name": "carrier", "host": GATEWAY_HOST, "port": 5060, "dial_min_length": 7,
                    "inbound_networks": [f"{TRUNK_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "bench"}],
    }


def load(db_url: str, doc: dict[str, Any]) -> str:
    """Migrate and load the operation (as `callbridge admin load` does); the API token it made."""
    from callbridge.storage.loader import load_into_fresh_database

    return load_into_fresh_database(db_url, doc).tokens[0][1]


# -- callbridge serve --------------------------------------------------------------------------------------------
class CallbridgeServe:
    """`callbridge serve` as a subprocess on a fresh SQLite file in `workdir`, with the operation loaded."""

    def __init__(self, workdir: Path, agents: Sequence[str], *, trusted: Sequence[str] = (),
                 extra_args: Sequence[str] = (), operation: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{workdir / 'callbridge.db'}"
        doc = operation_doc(agents)
        doc["operation"].update(operation or {})  # per-operation settings a benchmark varies (media_mode)
        self.token = load(self.db_url, doc)
        self.sip_port = free_port("127.0.0.1")
        self.http_port = free_port("127.0.0.1", udp=False)
        self.trusted = tuple(trusted)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def sip_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.sip_port

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "callbridge", "serve", "--sip-host", "127.0.0.1",
                "--sip-port", str(self.sip_port), "--http-port", str(self.http_port),
                "--database-url", self.db_url, "--drain-seconds", "2", "--log-level", "WARNING"]
        if self.trusted:
            args += ["--trusted-networks", ",".join(self.trusted)]
        return args + list(self.extra_args)

    def start(self, timeout: float = 30.0) -> CallbridgeServe:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        with open(self.workdir / "serve.log", "wb") as out:
            self._proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"callbridge serve exited ({self._proc.returncode}):\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"{self.http_url}/health", timeout=1) as answer:
                if answer.status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"callbridge serve did not become healthy within {timeout}s:\n{self.log()[-3000:]}")

    def metric(self, name: str, timeout: float = 15.0) -> float | None:
        """One unlabelled value from /metrics; None when absent or when the node does not answer in time (busy)."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=timeout) as answer:
                for line in answer.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.split()[1])
        except (OSError, urllib.error.URLError):
            return None
        return None

    def log(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        stop_process_group(proc, 30)

    def __enter__(self) -> CallbridgeServe:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def register_agents(registrar: tuple[str, int], agents: Sequence[str], *, host: str, port: int) -> None:
    """Register every agent with digest from host:port, the address the agents' SIPp uas then listens on: the
    registrar sends requests for an agent to where its REGISTER came from (RFC 3581), so that is the uas."""
    load = DigestRegisterLoad(registrar, agents, host=host, port=port)
    try:
        run = load.run(rate=500, count=len(agents))
    finally:
        load.close()
    if not run.passed:
        raise RuntimeError(f"registering the agents failed: {run}")


def make_ready(http_url: str, token: str, agents: Sequence[str]) -> None:
    """Every agent `ready`, through the agentbox API's change_status (as a CRM or the agent's toolbar does)."""
    from callbridge.client import AgentboxClient

    with AgentboxClient(http_url, token=token, server=OP) as box:
        for ext in agents:
            box.change_status(ext, "ready")


# -- a digest REGISTER load generator ------------------------------------------------------------------------------
CALL_ID_HEADER = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
CHALLENGE_HEADER = re.compile(rb"\r\nWWW-Authenticate[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
DIGEST_PARAM = re.compile(rb'([A-Za-z-]+)=(?:"([^"]*)"|([^,\s]+))')


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class _Pending:
    user: str
    call_id: str
    message: bytes
    started: float
    sent_at: float
    interval: float = 0.5  # RFC 3261 T1, doubled per retransmission (Timer E)


@dataclass
class RegisterRun:
    """What one paced run of registrations gave."""

    rate: float
    count: int
    ok: int = 0
    failed: dict[int, int] = field(default_factory=dict)  # status -> count
    timeouts: int = 0
    retransmissions: int = 0
    send_span: float = 0.0     # first to last new REGISTER sent
    elapsed: float = 0.0       # first sent to last answered
    latencies: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every registration done with 200, none failed or lost, and the generator kept the pace (±5 %)."""
        on_pace = self.count <= 1 or self.send_span <= (self.count / self.rate) * 1.05 + 0.05
        return self.ok == self.count and not self.failed and not self.timeouts and on_pace

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def __str__(self) -> str:
        return (f"{self.ok}/{self.count} ok, failed {self.failed or 0}, {self.timeouts} lost, "
                f"{self.retransmissions} retransmissions, sent over {self.send_span:.1f}s, "
                f"p50 {self.percentile(0.5) * 1000:.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms")


class DigestRegisterLoad:
    """Phones registering with digest (RFC 3261 §10.2, §22.2; MD5 with qop=auth, what nearly every phone does):
    REGISTER, 401 with a challenge, REGISTER with credentials, 200. Paced at a given rate from one UDP socket,
    many users in turn; lost requests are retransmitted as Timer E does (0.5 s doubling) and a registration with
    no final answer after `timeout` is lost. One process, no threads: the work per registration is two sends, two
    receives, a regular expression and three MD5s, far below what a registrar spends on it.

    Why not SIPp: SIPp 3.6.1 reads only the first WWW-Authenticate of a 401 (callbridge offers SHA-256 first, then
    MD5, as RFC 7616 §3.7 orders them; SIPp refuses anything but MD5), and its `[authentication]` keyword cannot
    take the user from an injection file (a nested `[field0]` is sent literally)."""

    def __init__(self, registrar: tuple[str, int], users: Sequence[str], *, host: str, port: int = 0,
                 domain: str = DOMAIN, expires: int = 3600) -> None:
        self.registrar = registrar
        self.users = list(users)
        self.domain = domain
        self.expires = expires
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFF_SIZE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFF_SIZE)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self._ha1 = {u: md5_hex(f"{u}:{domain}:secret-{u}") for u in self.users}
        self._ha2 = md5_hex(f"REGISTER:sip:{domain}")
        self._serial = 0
        self._tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sock.close()

    def _register(self, user: str, call_id: str, cseq: int, authorization: str | None) -> bytes:
        self._serial += 1
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{self._tag}{self._serial};rport",
            f"From: <sip:{user}@{self.domain}>;tag={self._tag}{cseq}",
            f"To: <sip:{user}@{self.domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{self.host}:{self.port}>",
            "Max-Forwards: 70",
            f"Expires: {self.expires}",
            "User-Agent: callbridge-bench",
        ]
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def _authorization(self, user: str, data: bytes) -> str | None:
        for found in CHALLENGE_HEADER.finditer(data):
            value = found.group(1)
            params = {m.group(1).lower().decode(): (m.group(2) if m.group(2) is not None else m.group(3)).decode()
                      for m in DIGEST_PARAM.finditer(value)}
            if params.get("algorithm", "MD5").upper() != "MD5" or "nonce" not in params:
                continue
            realm, nonce, uri = params.get("realm", self.domain), params["nonce"], f"sip:{self.domain}"
            cnonce = secrets.token_hex(4)
            if "auth" in params.get("qop", ""):
                response = md5_hex(f"{self._ha1[user]}:{nonce}:00000001:{cnonce}:auth:{self._ha2}")
                extra = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
            else:
                response = md5_hex(f"{self._ha1[user]}:{nonce}:{self._ha2}")
                extra = ""
            opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
            return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                    f'response="{response}", algorithm=MD5{extra}{opaque}')
        return None

    def run(self, rate: float, count: int, *, timeout: float = 8.0) -> RegisterRun:
        result = RegisterRun(rate, count)
        pending: dict[bytes, _Pending] = {}
        sock, dest = self.sock, self.registrar
        start = time.perf_counter()
        sent = done = 0
        last_sent = last_done = start
        next_scan = start + 0.1
        run_id = secrets.token_hex(3)
        while done < count:
            now = time.perf_counter()
            due = min(count, int((now - start) * rate) + 1)
            while sent < due:
                user = self.users[sent % len(self.users)]
                call_id = f"{run_id}-{sent}@{self.host}"
                message = self._register(user, call_id, 1, None)
                sock.sendto(message, dest)
                pending[call_id.encode()] = _Pending(user, call_id, message, now, now)
                sent += 1
                last_sent = now
            select.select([sock], [], [], 0.0005 if sent < count else 0.01)
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                found = CALL_ID_HEADER.search(data)
                entry = pending.get(found.group(1).strip()) if found else None
                if entry is None or not data.startswith(b"SIP/2.0 "):
                    continue  # a retransmitted answer to a registration already done
                status = int(data[8:11])
                now = time.perf_counter()
                if status < 200:
                    continue
                if status == 401 and b"\r\nCSeq: 1 " in data:
                    authorization = self._authorization(entry.user, data)
                    if authorization is not None:
                        entry.message = self._register(entry.user, entry.call_id, 2, authorization)
                        entry.sent_at, entry.interval = now, 0.5
                        sock.sendto(entry.message, dest)
                        continue
                if status == 401 or b"\r\nCSeq: 2 " in data or status >= 300:
                    del pending[found.group(1).strip()]  # type: ignore[union-attr]
                    done += 1
                    last_done = now
                    if status == 200:
                        result.ok += 1
                        result.latencies.append(now - entry.started)
                    else:
                        result.failed[status] = result.failed.get(status, 0) + 1
            now = time.perf_counter()
            if now >= next_scan:
                next_scan = now + 0.1
                for key, entry in list(pending.items()):
                    if now - entry.started > timeout:
                        del pending[key]
                        result.timeouts += 1
                        done += 1
                    elif now - entry.sent_at >= entry.interval:
                        sock.sendto(entry.message, dest)
                        entry.sent_at, entry.interval = now, min(entry.interval * 2, 4.0)
                        result.retransmissions += 1
        result.send_span = last_sent - start
        result.elapsed = last_done - start
        return result


# -- memory ------------------------------------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split among their sharers), from smaps_rollup; 0 when unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def process_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def tree_memory(pgid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over the processes of a process group."""
    pids = process_group(pgid)
    return sum(rss_kb(p) for p in pids), sum(pss_kb(p) for p in pids)


# -- Kamailio as a digest registrar --------------------------------------------------------------------------------
def kamailio_registrar_config(host: str, port: int, *, children: int = 1) -> str:
    """A registrar with digest and no database: the password of user U is "secret-U" (`pv_www_authenticate`
    checks it as a pseudo-variable template), the bindings in usrloc's memory, qop=auth as callbridge offers."""
    head = kamailio_globals(host, port, children, modules=(*MODULES, "auth"), tcp=False, server_header=None)
    return head + f"""modparam("auth", "nonce_count", 0)
modparam("auth", "qop", "auth")

request_route {{
{ROUTE_PRELUDE}\
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "secret-$au", "0")) {{ www_challenge("$td", "1"); exit; }}
        if ($au != $tU) {{ sl_send_reply("403", "Forbidden"); exit; }}
        consume_credentials();
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


def start_kamailio_registrar(host: str = "127.0.0.1") -> Kamailio:
    kam = Kamailio(host=host)
    kam.config_file.write_text(kamailio_registrar_config(host, kam.port))
    return kam.start()


# -- rtpengine with many calls ------------------------------------------------------------------------------------
def relay_for(workdir: Path, need: int, extra_args: Sequence[str] = ()) -> Any:
    """tests/peers' `Rtpengine` (not started) whose media ports are a block of the kernel's ephemeral range with at
    least `need` of them free.

    The tests' free-port probe hands out ports below that range and needs every port of a block free: a block of
    thousands is rarely found there on a machine running other tests, and rtpengine holding it would take ports
    that another test was just handed. In the ephemeral range the kernel's own picks skip the ports rtpengine
    holds, and rtpengine skips the ones in use (other processes' sockets: the block is twice what is needed)."""
    import random

    from peers.ports import _ephemeral_range
    from peers.rtpengine import Rtpengine

    relay = Rtpengine(workdir=workdir, extra_args=tuple(extra_args), ports=8)
    low, high = _ephemeral_range()
    span = min(2 * need, high - low)
    for _ in range(50):
        start = random.randint(low, high - span) & ~1
        free = sum(_udp_bindable(relay.host, port) for port in range(start, start + span))
        if free >= need:
            last = start + span - 1
            relay.port_min, relay.port_max = start, last if last % 2 else last - 1  # RTP even, RTCP odd
            return relay
    raise RuntimeError(f"no block of the ephemeral range {low}-{high} has {need} free ports")


def _udp_bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- results -----------------------------------------------------------------------------------------------------
def record(benchmark: str, figure: str, ceiling: str, ratio: str, target: str, command: str) -> str:
    day = datetime.date.today().isoformat()
    row = f"| {benchmark} | {figure} | {ceiling} | {ratio} | {target} | `{command}` | {day} |\n"
    with open(RESULTS, "a") as out:
        out.write(row)
    return row


def command_line(script: str, argv: Sequence[str]) -> str:
    return " ".join([".venv/bin/python", script, *(a for a in argv if a != "--no-record")])


def machine_load() -> str:
    """The load average, printed with each run: the machine may be shared with other work."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


@dataclass
class Step:
    target: str
    rate: int
    passed: bool
    detail: str


def ramp(target: str, rates: Sequence[int], run_step: Callable[[int], tuple[bool, str]]) -> list[Step]:
    steps = []
    for rate in rates:
        passed, detail = run_step(rate)
        steps.append(Step(target, rate, passed, detail))
        print(f"  {target:11} {rate:6,}/s  {'PASS' if passed else 'FAIL'}  {detail}", flush=True)
        if not passed:
            break
    return steps


def best(steps: Sequence[Step]) -> int:
    return max((s.rate for s in steps if s.passed), default=0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"
