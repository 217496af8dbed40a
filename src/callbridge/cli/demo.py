"""`callbridge demo`: callbridge moving a real call on this machine, in well under a minute, with nothing to set up.

What it does
- Starts a node in-process (`callbridge.bootstrap`) on SQLite in a temporary directory, SIP (UDP and TCP) and HTTP
  (uvicorn) on free loopback ports, the destination policy allowing loopback only.
- Loads a demo operation (`DEMO_OPERATION`): three agents, a queue, a trunk whose customers come from 127.0.0.2
  and whose gateway is 127.0.0.3, a DID and a token.
- Starts `callbridge.phone` phones, real SIP over real sockets: the customer (127.0.0.2), the agents 1001-1003
  (127.0.0.1, registering with digest) and the outside world behind the trunk's gateway (127.0.0.3), which answers
  every number but `BUSY_NUMBER`, for which it answers 486 Busy Here.
- Plays the scenario through the public API only (the Python client over HTTP: agentbox verbs, native resources,
  the event stream): agents made ready, the customer calls in, the longest-idle agent answers, hold and unhold,
  transfer to another agent, a transfer to a busy number that comes back to the agent, a transfer to an outside
  number, hang up; then the CDR.

Every step is checked, not announced: what the phones saw (SIP), what the event stream said and what the API
reports must agree with what the step should have done, within `STEP_TIMEOUT` seconds. One line per step, with a
check mark and its time; the first step that does not happen as expected is named and the command exits 1.

`callbridge demo --keep` then puts a new call up and leaves everything running, printing `curl` commands (real
token, real ports) to act on it by hand, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from callbridge.bootstrap import Node, bootstrap
from callbridge.client import AgentboxError, AsyncAgentboxClient, AsyncNativeClient, Event
from callbridge.config import Settings
from callbridge.phone import Call, CallEnded, CallState, Held, IncomingCall, Phone, Resumed
from callbridge.storage.loader import load_into_fresh_database
from callbridge.storage.records import read_cdr

__all__ = ["DEMO_OPERATION", "STEP_TITLES", "Demo", "DemoFailed", "demo_command", "play"]

T = TypeVar("T")

OPERATION = "0042"
DOMAIN = "0042.demo.callbridge"
AGENTS = ("1001", "1002", "1003")
READY_ORDER = ("1002", "1003", "1001")  # so the longest-idle agent is not simply the first extension
DID = "6015550100"
CUSTOMER_NUMBER = "3001234567"
OUTSIDE_NUMBER = "3105550199"
BUSY_NUMBER = "3105550486"
CUSTOMER_HOST = "127.0.0.2"  # the trunk's inbound network
GATEWAY_HOST = "127.0.0.3"  # the trunk's outbound gateway
STEP_TIMEOUT = 8.0

STEP_TITLES = (
    "demo operation loaded",
    "callbridge started",
    "agents registered with digest",
    "agents made ready through the API",
    "customer calls in",
    "longest-idle agent answers",
    "hold",
    "unhold",
    "transfer to another agent",
    "transfer to a busy number comes back to the agent",
    "transfer to an outside number",
    "customer hangs up",
    "CDR written",
)


def _password(extension: str) -> str:
    return f"demo-secret-{extension}"


def demo_operation(gateway_port: int) -> dict[str, Any]:
    """The demo's operation, in the format of `callbridge admin load` (see `callbridge.cli.admin`)."""
    return {
        "operation": {"id": OPERATION, "sip_domain": DOMAIN, "name": "callbridge demo", "acw_seconds": 0,
                      "after_transfer_state": "ready", "default_queue": "support", "ring_timeout": 10,
                      "transfer_timeout": 10},
        "queues": [{"name": "support", "max_wait_seconds": 20}],
        "agents": [{"extension": ext, "name": name, "password": _password(ext), "queues": ["support"]}
                   for ext, name in zip(AGENTS, ("Ana", "Luis", "Marta"), strict=True)],
        "trunks": [{"name": "carrier", "host": GATEWAY_HOST, "port": gateway_port, "dial_min_length": 7,
                    "dial_max_length": 15, "caller_id_policy": "customer",
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "demo"}],
    }


DEMO_OPERATION = demo_operation(5060)


class DemoFailed(Exception):
    """A step did not happen as expected; ``number`` and ``title`` name it."""

    def __init__(self, number: int, title: str, reason: str) -> None:
        super().__init__(f"step {number} ({title}): {reason}")
        self.number, self.title, self.reason = number, title, reason


class StepFailed(Exception):
    """Raised inside a step with what went wrong; the runner names the step."""


async def _within(awaitable: Awaitable[T], what: str, timeout: float = STEP_TIMEOUT) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise StepFailed(f"no {what} within {timeout:.0f} s") from None


def _fields(**wanted: Any) -> Callable[[Event], bool]:
    """An event predicate: its data has these values."""
    return lambda event: all(event.data.get(k) == v for k, v in wanted.items())


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


class EventWatch:
    """The operation's event stream (GET /v2/events through the native client), kept in order for the steps."""

    def __init__(self, client: AsyncNativeClient) -> None:
        self.client = client
        self.events: list[Event] = []
        self._new = asyncio.Event()
        self.on_event: Callable[[Event], None] | None = None

    async def run(self) -> None:
        async for event in self.client.events(after=0, wait=20.0):
            self.events.append(event)
            self._new.set()
            if self.on_event is not None:
                self.on_event(event)

    @property
    def mark(self) -> int:
        return len(self.events)

    async def expect(self, types: str | tuple[str, ...], since: int, what: str,
                     where: Callable[[Event], bool] = lambda e: True) -> Event:
        """The first event of ``types`` at or after index ``since`` that satisfies ``where``."""
        kinds = (types,) if isinstance(types, str) else types

        async def find() -> Event:
            index = since
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event.type in kinds and where(event):
                        return event
                self._new.clear()
                await self._new.wait()

        return await _within(find(), f"{what} on the event stream")


@dataclass
class Gateway:
    """The outside world behind the trunk: answers every number after a short ring, but `BUSY_NUMBER` gets
    ``busy_status``."""

    phone: Phone
    busy_status: int = 486
    dialled: list[tuple[str, str, int]] = field(default_factory=list)  # (number, caller id, what we answered)

    async def run(self) -> None:
        with self.phone.events() as stream:
            async for event in stream:
                if isinstance(event, IncomingCall):
                    request = event.request
                    number, caller = request.uri.user or "", request.from_.uri.user or ""
                    status = self.busy_status if number == BUSY_NUMBER else 200
                    self.dialled.append((number, caller, status))
                    if status >= 300:
                        await event.call.reject(status)
                    else:
                        await event.call.ring()
                        asyncio.get_running_loop().call_later(0.2, _answer, event.call)


def _answer(call: Call) -> None:
    with contextlib.suppress(Exception):  # the caller may have given up meanwhile
        call.answer_now()


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the demo owns Ctrl-C
        yield


class Demo:
    """The demo's world: node, HTTP server, phones, clients. ``await Demo.start()``, then the steps, ``close()``."""

    def __init__(self, console: Console, *, busy_status: int = 486) -> None:
        self.console = console
        self.busy_status = busy_status
        self.tmp = tempfile.TemporaryDirectory(prefix="callbridge-demo-")
        self.node: Node | None = None
        self.http: _HttpServer | None = None
        self.http_task: asyncio.Task[None] | None = None
        self.http_port = 0
        self.token = ""
        self.phones: dict[str, Phone] = {}
        self.gateway: Gateway | None = None
        self.box: AsyncAgentboxClient | None = None
        self.native: AsyncNativeClient | None = None
        self.watch: EventWatch | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.step_number = 0
        self.conn_id = ""
        self.customer_call: Call | None = None
        self.agent_calls: dict[str, Call] = {}
        self._call_mark = 0
        self._holder = READY_ORDER[0]  # the agent the customer is with
        self.database_url = ""
        self._http_socket: socket.socket | None = None
        self._after_line: list[Any] = []  # what a step prints under its line (the CDR table)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # --- the step runner ------------------------------------------------------------------------------------
    async def step(self, title: str, body: Callable[[], Awaitable[str]]) -> None:
        self.step_number += 1
        number = self.step_number
        started = time.perf_counter()
        try:
            with self.console.status(f"{title} ..."):
                detail = await body()
        except StepFailed as exc:
            raise DemoFailed(number, title, str(exc)) from None
        except AgentboxError as exc:
            raise DemoFailed(number, title, f"the API refused: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise DemoFailed(number, title, f"{type(exc).__name__}: {exc}") from None
        elapsed = time.perf_counter() - started
        self.console.print(f"[green]✓[/green] {number:>2} {title}: {detail} [dim]({elapsed:.2f} s)[/dim]",
                           soft_wrap=True, highlight=False)
        for renderable in self._after_line:
            self.console.print(renderable, soft_wrap=True)
        self._after_line.clear()

    def _api(self) -> tuple[AsyncAgentboxClient, AsyncNativeClient, EventWatch]:
        assert self.box is not None and self.native is not None and self.watch is not None
        return self.box, self.native, self.watch

    # --- setting up -------------------------------------------------------------------------------------------
    async def load(self) -> str:
        self.gateway = Gateway(await Phone.start(host=GATEWAY_HOST, user="gateway", name="gateway"),
                               busy_status=self.busy_status)
        self.phones["gateway"] = self.gateway.phone
        self.tasks.append(asyncio.create_task(self.gateway.run()))
        url = f"sqlite:///{Path(self.tmp.name) / 'callbridge.db'}"
        result = await asyncio.to_thread(_load, url, demo_operation(self.gateway.phone.port))
        _expect(len(result) == 1, "the operation file made no token")
        self.token = result[0]
        self.database_url = url
        return (f"operation {OPERATION} into SQLite in a temporary directory: agents {', '.join(AGENTS)}, "
                f"queue support, trunk carrier (customers from {CUSTOMER_HOST}, gateway {GATEWAY_HOST}), DID {DID}, "
                "a token")

    async def start_node(self) -> str:
        settings = Settings(sip_host="127.0.0.1", sip_port=0, http_host="127.0.0.1", http_port=0,
                            database_url=self.database_url, node_id="demo", log_level="WARNING")
        self.node = node = await bootstrap(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.http_port = sock.getsockname()[1]
        self._http_socket = sock
        self.http = _HttpServer(uvicorn.Config(node.app, log_level="warning", access_log=False, lifespan="on",
                                               timeout_graceful_shutdown=1))
        self.http_task = asyncio.create_task(self.http.serve(sockets=[sock]))
        await _within(self._until(lambda: self.http is not None and self.http.started), "HTTP server start")
        self.box = AsyncAgentboxClient(self.base_url, token=self.token, server=OPERATION)
        self.native = AsyncNativeClient(self.base_url, token=self.token)
        self.watch = EventWatch(self.native)
        self.tasks.append(asyncio.create_task(self.watch.run()))
        health = await self.native.request("GET", "/health")
        _expect(isinstance(health, dict), f"/health answered {health!r}")
        host, port = node.sip_address
        return f"SIP {host}:{port} (UDP, TCP), HTTP {self.base_url}, destination policy loopback only"

    async def register_agents(self) -> str:
        assert self.node is not None
        for ext in AGENTS:
            phone = await Phone.start(host="127.0.0.1", user=ext, domain=DOMAIN, password=_password(ext),
                                      name=f"agent-{ext}", answer="auto", ring_delay=0.2)
            self.phones[ext] = phone
            await _within(phone.register(self.node.sip_address, expires=300), f"REGISTER 200 OK for {ext}")
        _, native, _ = self._api()
        agents = {a.agent_id: a for a in await native.list_agents()}
        for ext in AGENTS:
            _expect(agents.get(ext) is not None and agents[ext].registered is True,
                    f"the API does not report {ext} registered")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{self.base_url}/metrics")).text
        challenged = _metric(metrics, 'callbridge_registrar_total{outcome="challenged"}')
        _expect(challenged >= len(AGENTS), f"/metrics counts {challenged} digest challenges")
        return (f"{', '.join(AGENTS)} answered the 401 digest challenge (realm {DOMAIN}); "
                "the API reports them registered")

    async def make_ready(self) -> str:
        box, native, watch = self._api()
        since = watch.mark
        for ext in READY_ORDER:
            result = await box.change_status(ext, "ready")
            _expect(result.code == 200, f"change_status {ext}: {result.code} {result.msg}")
            await watch.expect("agent.state_changed", since, f"agent.state_changed to ready for {ext}",
                               _fields(agent_id=ext, state="ready"))
            await asyncio.sleep(0.05)  # distinct idle times
        states = {a.agent_id: a.state for a in await native.list_agents()}
        _expect(all(states.get(ext) == "ready" for ext in AGENTS), f"agents are {states}")
        return f"api=change_status&status=ready for {', '.join(READY_ORDER)}, in that order"

    # --- the scenario -----------------------------------------------------------------------------------------
    async def customer_calls(self) -> str:
        assert self.node is not None
        _, _, watch = self._api()
        if "customer" not in self.phones:
            self.phones["customer"] = await Phone.start(host=CUSTOMER_HOST, user=CUSTOMER_NUMBER,
                                                        name="customer")
        self._call_mark = since = watch.mark
        host, port = self.node.sip_address
        self.customer_call = await self.phones["customer"].call(f"sip:{DID}@{host}:{port}", wait_answer=False)
        offered = await watch.expect("call.offered", since, "call.offered")
        self.conn_id = str(offered.data.get("conn_id"))
        return (f"{CUSTOMER_NUMBER} ({CUSTOMER_HOST}) called DID {DID}; queue support offered it to "
                f"{offered.data.get('agent_id')} (conn_id {self.conn_id})")

    async def longest_idle_answers(self, expected: str = READY_ORDER[0]) -> str:
        _, native, watch = self._api()
        answered = await watch.expect("call.answered", self._call_mark, "call.answered",
                                      _fields(conn_id=self.conn_id))
        agent = answered.data.get("agent_id")
        _expect(agent == expected, f"{agent} answered; the longest-idle agent is {expected}")
        incoming = await _within(self.phones[expected].wait_for(IncomingCall, timeout=STEP_TIMEOUT),
                                 f"INVITE at {expected}'s phone")
        self.agent_calls[expected] = incoming.call
        call = self.customer_call
        assert call is not None
        await _within(call.wait_answered(STEP_TIMEOUT), "200 OK at the customer's phone")
        await self._media_between(expected)
        view = await native.get_agent(expected)
        _expect(view.state == "on_call" and view.conn_id == self.conn_id,
                f"the API says {expected} is {view.state} on {view.conn_id}")
        return f"{expected} (ready longest) answered; customer and {expected} exchange SDP directly"

    async def hold(self, on: bool) -> str:
        box, _, watch = self._api()
        customer, call = self.phones["customer"], self.customer_call
        agent = self._holder
        since = watch.mark
        customer.clear_history()
        result = await box.hold(agent)
        _expect(result.active is on, f"api=hold answered {result.msg!r}")
        kind = Held if on else Resumed
        seen = await _within(customer.wait_for(kind, call=call, timeout=STEP_TIMEOUT),
                             f"{'hold' if on else 'unhold'} re-INVITE at the customer's phone")
        await watch.expect("call.held", since, "call.held", _fields(held=on))
        return f"api=hold -> {result.msg!r}; the customer's phone got a re-INVITE with a={seen.direction}"

    async def transfer_to_agent(self, source: str, target: str) -> str:
        box, native, watch = self._api()
        since = watch.mark
        result = await box.transfer(source, target)
        _expect(result.conn_id == self.conn_id, f"transfer answered conn_id {result.conn_id}, not {self.conn_id}")
        incoming = await _within(self.phones[target].wait_for(IncomingCall, timeout=STEP_TIMEOUT),
                                 f"INVITE at {target}'s phone")
        self.agent_calls[target] = incoming.call
        await watch.expect("transfer.completed", since, "transfer.completed",
                           _fields(conn_id=self.conn_id))
        await _within(self.phones[source].wait_for(CallEnded, call=self.agent_calls[source], timeout=STEP_TIMEOUT),
                      f"BYE at {source}'s phone")
        await self._media_between(target)
        view = await native.get_agent(target)
        _expect(view.state == "on_call" and view.conn_id == self.conn_id, f"the API says {target} is {view.state}")
        self._holder = target
        return f"api=transfer&customer_phone={target}: {target} answered, {source} released, same conn_id"

    async def transfer_busy(self, agent: str) -> str:
        box, native, watch = self._api()
        customer = self.phones["customer"]
        since = watch.mark
        customer.clear_history()
        await box.transfer(agent, BUSY_NUMBER)
        outcome = await watch.expect(("transfer.failed", "transfer.completed"), since,
                                     "transfer.failed or transfer.completed",
                                     _fields(conn_id=self.conn_id))
        _expect(outcome.type == "transfer.failed",
                f"the transfer to {BUSY_NUMBER} ended {outcome.type} (the number should have been busy)")
        cause, back = outcome.data.get("sip_cause"), outcome.data.get("outcome")
        _expect(cause == 486 and back == "back_with_agent",
                f"transfer.failed says sip_cause {cause}, outcome {back}")
        await _within(customer.wait_for(Resumed, call=self.customer_call, timeout=STEP_TIMEOUT),
                      "re-INVITE taking the customer off hold")
        _expect(not self.agent_calls[agent].ended, f"{agent}'s call ended")
        await self._media_between(agent)
        view = await native.get_agent(agent)
        _expect(view.state == "on_call" and view.conn_id == self.conn_id, f"the API says {agent} is {view.state}")
        return f"{BUSY_NUMBER} answered 486 Busy Here; the customer is back with {agent} (transfer.failed)"

    async def transfer_outside(self, agent: str) -> str:
        box, native, watch = self._api()
        assert self.gateway is not None
        since = watch.mark
        await box.transfer(agent, OUTSIDE_NUMBER)
        outcome = await watch.expect(("transfer.failed", "transfer.completed"), since, "transfer.completed",
                                     _fields(conn_id=self.conn_id))
        _expect(outcome.type == "transfer.completed",
                f"the transfer ended {outcome.type} (sip_cause {outcome.data.get('sip_cause')})")
        await _within(self.phones[agent].wait_for(CallEnded, call=self.agent_calls[agent], timeout=STEP_TIMEOUT),
                      f"BYE at {agent}'s phone")
        gateway = self.gateway.phone
        await self._until(lambda: self._customer_media_port() == gateway.rtp_port)
        number, caller, _ = self.gateway.dialled[-1]
        _expect(number == OUTSIDE_NUMBER, f"the gateway was called for {number}")
        view = await native.get_agent(agent)
        _expect(view.state == "ready", f"the API says {agent} is {view.state} after the transfer")
        return f"{OUTSIDE_NUMBER} answered at the gateway (caller ID {caller}); {agent} released and ready"

    async def hang_up(self) -> str:
        _, native, watch = self._api()
        assert self.gateway is not None and self.customer_call is not None
        since = watch.mark
        gateway_call = next(iter(self.gateway.phone.calls), None)
        await self.customer_call.hangup()
        ended = await watch.expect("call.ended", since, "call.ended", _fields(conn_id=self.conn_id))
        _expect(ended.data.get("ended_by") == "customer", f"call.ended says ended_by {ended.data.get('ended_by')}")
        if gateway_call is not None:
            await _within(self.gateway.phone.wait_for(CallEnded, call=gateway_call, timeout=STEP_TIMEOUT),
                          "BYE at the gateway")
        active = await native.list_calls(state="active")
        _expect(not active, f"the API still lists {len(active)} active calls")
        return f"BYE from the customer; the outside party got BYE; call.ended after {ended.data.get('duration_s')} s"

    async def cdr(self) -> str:
        assert self.node is not None
        node = self.node
        await asyncio.to_thread(node.storage.writer.flush)
        cdr = await asyncio.to_thread(_read_cdr, node, self.conn_id)
        _expect(cdr is not None, f"no CDR for {self.conn_id}")
        assert cdr is not None
        agents = list(cdr.agents)
        _expect(agents == [READY_ORDER[0], READY_ORDER[2]], f"the CDR names agents {agents}")
        _expect(cdr.hangup_by == "customer", f"the CDR says hangup_by {cdr.hangup_by}")
        parties = [leg.party for leg in cdr.legs]
        _expect(OUTSIDE_NUMBER in parties and BUSY_NUMBER in parties, f"the CDR's legs are {parties}")
        self._after_line.append(_cdr_table(cdr))
        return (f"{cdr.conn_id}: agents {', '.join(agents)}, {cdr.transfer_count} transfers, {len(cdr.legs)} legs, "
                f"hung up by {cdr.hangup_by}")

    # --- checks shared by the steps ------------------------------------------------------------------------
    def _customer_media_port(self) -> int | None:
        call = self.customer_call
        sdp = call.remote_sdp if call is not None else None
        return sdp.media[0].port if sdp is not None and sdp.media else None

    async def _media_between(self, agent: str) -> None:
        """The customer's SDP names the agent's media port and the agent's names the customer's (pass-through)."""
        phone, call = self.phones[agent], self.agent_calls[agent]
        customer = self.phones["customer"]
        await self._until(lambda: call.state is CallState.ESTABLISHED, f"ACK at {agent}'s phone")
        await self._until(lambda: self._customer_media_port() == phone.rtp_port,
                          f"the customer's media pointed at {agent}")
        remote = call.remote_sdp
        _expect(remote is not None and bool(remote.media) and remote.media[0].port == customer.rtp_port,
                f"{agent}'s media does not point at the customer")

    @staticmethod
    async def _until(predicate: Callable[[], bool], what: str = "condition") -> None:
        async def poll() -> None:
            while not predicate():
                await asyncio.sleep(0.02)

        await _within(poll(), what)

    # --- the whole scenario -------------------------------------------------------------------------------------
    async def play(self) -> None:
        first, second = READY_ORDER[0], READY_ORDER[2]
        self._holder = first
        for title, body in zip(STEP_TITLES, (
            self.load, self.start_node, self.register_agents, self.make_ready, self.customer_calls,
            self.longest_idle_answers, lambda: self.hold(True), lambda: self.hold(False),
            lambda: self.transfer_to_agent(first, second), lambda: self.transfer_busy(second),
            lambda: self.transfer_outside(second), self.hang_up, self.cdr,
        ), strict=True):
            await self.step(title, body)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for phone in self.phones.values():
            with contextlib.suppress(Exception):
                await phone.close()
        if self.box is not None:
            await self.box.aclose()
        if self.native is not None:
            await self.native.aclose()
        if self.http is not None and self.http_task is not None:
            self.http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.http_task, 5)
        if self._http_socket is not None:
            self._http_socket.close()
        if self.node is not None:
            await self.node.close()
        self.tmp.cleanup()


def _metric(page: str, name: str) -> float:
    """A sample's value on a Prometheus text page (0 when absent)."""
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _load(url: str, doc: dict[str, Any]) -> list[str]:
    return [plain for _, plain in load_into_fresh_database(url, doc).tokens]


def _read_cdr(node: Node, conn_id: str) -> Any:
    with node.storage.engine.connect() as conn:
        return read_cdr(conn, conn_id)


def _clock(start: float, at: float | None) -> str:
    return "" if at is None else f"+{at - start:.2f} s"


def _cdr_table(cdr: Any) -> Table:
    table = Table(title=f"CDR {cdr.conn_id}  ({cdr.direction}, customer {cdr.customer_number}, queue {cdr.queue}, "
                        f"{cdr.transfer_count} transfers, hung up by {cdr.hangup_by}, {cdr.duration:.2f} s)",
                  title_justify="left")
    for column in ("leg", "role", "party", "started", "answered", "ended", "SIP", "ended by"):
        table.add_column(column)
    for index, leg in enumerate(cdr.legs, 1):
        table.add_row(str(index), leg.role, leg.party, _clock(cdr.started_at, leg.created_at),
                      _clock(cdr.started_at, leg.answered_at), _clock(cdr.started_at, leg.ended_at),
                      "" if leg.sip_status is None else str(leg.sip_status), leg.ended_by or "")
    return table


# --- --keep: a call up, curl commands, until Ctrl-C --------------------------------------------------------------


def curl_commands(base_url: str, token: str, agent: str) -> list[tuple[str, str]]:
    """(what, command) pairs for trying the API by hand: POST, no body, both headers, the real token and port."""

    def box(query: str) -> str:
        return (f"curl -sS -X POST -H 'wolkvox-token: {token}' -H 'wolkvox_server: {OPERATION}' "
                f"'{base_url}/api/v2/agentbox.php?{query}'")

    return [
        ("hold (again to unhold)", box(f"api=hold&agent_id={agent}")),
        ("transfer to another agent", box(f"api=transfer&agent_id={agent}&customer_phone=1001")),
        ("transfer to a busy number", box(f"api=transfer&agent_id={agent}&customer_phone={BUSY_NUMBER}")),
        ("transfer to an outside number", box(f"api=transfer&agent_id={agent}&customer_phone={OUTSIDE_NUMBER}")),
        ("hang up", box(f"api=hang&agent_id={agent}")),
        ("agents (native API)", f"curl -sS -H 'Authorization: Bearer {token}' '{base_url}/v2/agents'"),
        ("calls (native API)", f"curl -sS -H 'Authorization: Bearer {token}' '{base_url}/v2/calls?state=all'"),
        ("event stream", f"curl -sSN -H 'Authorization: Bearer {token}' -H 'Accept: application/x-ndjson' "
                         f"'{base_url}/v2/events?after=0'"),
    ]


async def _keep(demo: Demo, console: Console) -> None:
    _, _, watch = demo._api()
    await demo.customer_calls()
    agent = READY_ORDER[1]  # idle longest now: the other two took calls since
    await demo.longest_idle_answers(agent)
    console.print(f"\n[bold]Still running.[/bold] A new call is up: customer {CUSTOMER_NUMBER} with agent {agent} "
                  f"(conn_id {demo.conn_id}). Try the API by hand:\n", soft_wrap=True, highlight=False)
    for what, command in curl_commands(demo.base_url, demo.token, agent):
        console.print(f"[dim]# {what}[/dim]", highlight=False)
        console.print(command, soft_wrap=True, highlight=False, markup=False)
    console.print("\nEvents are printed below as they happen. Ctrl-C stops everything.\n", highlight=False)
    watch.on_event = lambda e: console.print(_event_line(e), soft_wrap=True, highlight=False, markup=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print("stopping: phones hang up, the server closes", highlight=False)


_EVENT_FIELDS = ("agent_id", "state", "target", "held", "outcome", "sip_cause", "ended_by")


def _event_line(event: Event) -> str:
    fields = " ".join(f"{k}={event.data[k]}" for k in _EVENT_FIELDS if event.data.get(k) is not None)
    return f"event {event.seq} {event.type} {fields}"


# --- the command ----------------------------------------------------------------------------------------------


async def play(console: Console, *, keep: bool = False, busy_status: int = 486) -> int:
    """Run the demo; 0 when every step happened as expected, 1 otherwise (the failed step is printed)."""
    console.print("[bold]callbridge demo[/bold]: a customer, three agents and an outside line, all on this "
                  "machine, driven through the API\n", highlight=False, soft_wrap=True)
    demo = Demo(console, busy_status=busy_status)
    started = time.perf_counter()
    try:
        await demo.play()
        console.print(f"\n[green]✓[/green] all {len(STEP_TITLES)} steps happened as expected in "
                      f"{time.perf_counter() - started:.1f} s", highlight=False)
        if keep:
            await _keep(demo, console)
        return 0
    except DemoFailed as failure:
        console.print(f"[red]✗[/red] {failure.number:>2} {failure.title}: {failure.reason}", soft_wrap=True,
                      highlight=False)
        console.print(f"\n[red]demo failed at step {failure.number} ({failure.title})[/red]", highlight=False)
        return 1
    finally:
        await demo.close()


def demo_command(
    keep: bool = typer.Option(False, "--keep", help="Leave the server and phones running with a call up and print "
                                                    "curl commands to try the API by hand, until Ctrl-C."),
) -> None:
    """Run callbridge with phones on this machine and play a call through the API (transfers included)."""
    code = asyncio.run(play(Console(), keep=keep))
    raise typer.Exit(code)
