"""The scenario of `callbridge demo` (`Demo`): the world it starts (node, HTTP server, phones, clients) and its
steps, each checked against what the phones saw, what the event stream said and what the API reports; a step that
does not happen as expected ends the demo with `DemoFailed` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console

from callbridge.bootstrap import Node, bootstrap
from callbridge.cli.demo_media import Hearing, anchored, customer_media_port, media_between
from callbridge.cli.demo_report import cdr_table
from callbridge.cli.demo_world import (
    AGENTS,
    BUSY_NUMBER,
    CUSTOMER_HOST,
    CUSTOMER_NUMBER,
    DID,
    DOMAIN,
    GATEWAY_HOST,
    OPERATION,
    OUTSIDE_NUMBER,
    READY_ORDER,
    STEP_TIMEOUT,
    EventWatch,
    Gateway,
    HttpServer,
    StepFailed,
    agent_password,
    demo_operation,
    expect,
    has_fields,
    metric,
    within,
)
from callbridge.client import AgentboxError, AsyncAgentboxClient, AsyncNativeClient
from callbridge.config import Settings
from callbridge.phone import Call, CallEnded, CallState, Held, IncomingCall, Phone, Resumed
from callbridge.storage.loader import load_into_fresh_database
from callbridge.storage.records import read_cdr

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


class DemoFailed(Exception):
    """A step did not happen as expected; ``number`` and ``title`` name it."""

    def __init__(self, number: int, title: str, reason: str) -> None:
        super().__init__(f"step {number} ({title}): {reason}")
        self.number, self.title, self.reason = number, title, reason


class Demo:
    """The demo's world: node, HTTP server, phones, clients. ``await Demo.start()``, then the steps, ``close()``."""

    def __init__(self, console: Console, *, busy_status: int = 486, rtpengine: tuple[str, ...] = (),
                 relay_binary: str | None = None, played: dict[str, float] | None = None) -> None:
        self.console = console
        self.busy_status = busy_status
        self.rtpengine = rtpengine  # relays (udp:HOST:PORT): calls anchored, the agent's page takes audio
        self.hearing = Hearing(self, relay_binary=relay_binary, played=played)  # with a relay: tones measured
        self.tmp = tempfile.TemporaryDirectory(prefix="callbridge-demo-")
        self.node: Node | None = None
        self.http: HttpServer | None = None
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

    def api(self) -> tuple[AsyncAgentboxClient, AsyncNativeClient, EventWatch]:
        assert self.box is not None and self.native is not None and self.watch is not None
        return self.box, self.native, self.watch

    # --- setting up -------------------------------------------------------------------------------------------
    async def load(self) -> str:
        media, ring = self.hearing.media, self.hearing.ring
        self.gateway = Gateway(await Phone.start(host=GATEWAY_HOST, user="gateway", name="gateway", media=media),
                               busy_status=self.busy_status, ring=ring, busy_ring=ring if media else 0.0)
        self.phones["gateway"] = self.gateway.phone
        self.tasks.append(asyncio.create_task(self.gateway.run()))
        url = f"sqlite:///{Path(self.tmp.name) / 'callbridge.db'}"
        result = await asyncio.to_thread(_load, url, demo_operation(self.gateway.phone.port))
        expect(len(result) == 1, "the operation file made no token")
        self.token = result[0]
        self.database_url = url
        return (f"operation {OPERATION} into SQLite in a temporary directory: agents {', '.join(AGENTS)}, "
                f"queue support, trunk carrier (customers from {CUSTOMER_HOST}, gateway {GATEWAY_HOST}), DID {DID}, "
                "a token")

    async def start_node(self) -> str:
        self.rtpengine = await self.hearing.start_relay(Path(self.tmp.name))
        settings = Settings(sip_host="127.0.0.1", sip_port=0, http_host="127.0.0.1", http_port=0,
                            database_url=self.database_url, node_id="demo", log_level="WARNING", sip_ws_port=0,
                            rtpengine=self.rtpengine)
        self.node = node = await bootstrap(settings)
        media = node.switch.anchor.media
        if media is not None:
            await within(self._until(media.available, "the relay up"), "the media relay answering ng pings")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.http_port = sock.getsockname()[1]
        self._http_socket = sock
        self.http = HttpServer(uvicorn.Config(node.app, log_level="warning", access_log=False, lifespan="on",
                                               timeout_graceful_shutdown=1))
        self.http_task = asyncio.create_task(self.http.serve(sockets=[sock]))
        await within(self._until(lambda: self.http is not None and self.http.started), "HTTP server start")
        self.box = AsyncAgentboxClient(self.base_url, token=self.token, server=OPERATION)
        self.native = AsyncNativeClient(self.base_url, token=self.token)
        self.watch = EventWatch(self.native)
        self.tasks.append(asyncio.create_task(self.watch.run()))
        health = await self.native.request("GET", "/health")
        expect(isinstance(health, dict), f"/health answered {health!r}")
        host, port = node.sip_address
        return (f"SIP {host}:{port} (UDP, TCP), HTTP {self.base_url}, destination policy loopback only"
                f"{self.hearing.relay_note()}")

    async def register_agents(self) -> str:
        assert self.node is not None
        for ext in AGENTS:
            phone = await Phone.start(host="127.0.0.1", user=ext, domain=DOMAIN, password=agent_password(ext),
                                      name=f"agent-{ext}", answer="auto", ring_delay=self.hearing.ring,
                                      media=self.hearing.media)
            self.phones[ext] = phone
            await within(phone.register(self.node.sip_address, expires=300), f"REGISTER 200 OK for {ext}")
        _, native, _ = self.api()
        agents = {a.agent_id: a for a in await native.list_agents()}
        for ext in AGENTS:
            expect(agents.get(ext) is not None and agents[ext].registered is True,
                    f"the API does not report {ext} registered")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{self.base_url}/metrics")).text
        challenged = metric(metrics, 'callbridge_registrar_total{outcome="challenged"}')
        expect(challenged >= len(AGENTS), f"/metrics counts {challenged} digest challenges")
        return (f"{', '.join(AGENTS)} answered the 401 digest challenge (realm {DOMAIN}); "
                "the API reports them registered")

    async def make_ready(self) -> str:
        box, native, watch = self.api()
        since = watch.mark
        for ext in READY_ORDER:
            result = await box.change_status(ext, "ready")
            expect(result.code == 200, f"change_status {ext}: {result.code} {result.msg}")
            await watch.expect("agent.state_changed", since, f"agent.state_changed to ready for {ext}",
                               has_fields(agent_id=ext, state="ready"))
            await asyncio.sleep(0.05)  # distinct idle times
        states = {a.agent_id: a.state for a in await native.list_agents()}
        expect(all(states.get(ext) == "ready" for ext in AGENTS), f"agents are {states}")
        return f"api=change_status&status=ready for {', '.join(READY_ORDER)}, in that order"

    # --- the scenario -----------------------------------------------------------------------------------------
    async def customer_calls(self) -> str:
        assert self.node is not None
        _, _, watch = self.api()
        if "customer" not in self.phones:
            # with a relay the customer's phone sends real RTP (a tone, once answered) and measures what it hears
            self.phones["customer"] = await Phone.start(host=CUSTOMER_HOST, user=CUSTOMER_NUMBER,
                                                        name="customer", media=self.hearing.media)
        self._call_mark = since = watch.mark
        host, port = self.node.sip_address
        self.customer_call = await self.phones["customer"].call(f"sip:{DID}@{host}:{port}", wait_answer=False)
        offered = await watch.expect("call.offered", since, "call.offered")
        self.conn_id = str(offered.data.get("conn_id"))
        return (f"{CUSTOMER_NUMBER} ({CUSTOMER_HOST}) called DID {DID}; queue support offered it to "
                f"{offered.data.get('agent_id')} (conn_id {self.conn_id})")

    async def longest_idle_answers(self, expected: str = READY_ORDER[0]) -> str:
        _, native, watch = self.api()
        answered = await watch.expect("call.answered", self._call_mark, "call.answered",
                                      has_fields(conn_id=self.conn_id))
        agent = answered.data.get("agent_id")
        expect(agent == expected, f"{agent} answered; the longest-idle agent is {expected}")
        incoming = await within(self.phones[expected].wait_for(IncomingCall, timeout=STEP_TIMEOUT),
                                 f"INVITE at {expected}'s phone")
        self.agent_calls[expected] = incoming.call
        call = self.customer_call
        assert call is not None
        await within(call.wait_answered(STEP_TIMEOUT), "200 OK at the customer's phone")
        media = await media_between(self, expected)
        view = await native.get_agent(expected)
        expect(view.state == "on_call" and view.conn_id == self.conn_id,
                f"the API says {expected} is {view.state} on {view.conn_id}")
        return f"{expected} (ready longest) answered; {media}"

    async def hold(self, on: bool) -> str:
        box, _, watch = self.api()
        customer, call = self.phones["customer"], self.customer_call
        agent = self._holder
        since = watch.mark
        customer.clear_history()
        result = await box.hold(agent)
        expect(result.active is on, f"api=hold answered {result.msg!r}")
        kind = Held if on else Resumed
        seen = await within(customer.wait_for(kind, call=call, timeout=STEP_TIMEOUT),
                             f"{'hold' if on else 'unhold'} re-INVITE at the customer's phone")
        await watch.expect("call.held", since, "call.held", has_fields(held=on))
        return f"api=hold -> {result.msg!r}; the customer's phone got a re-INVITE with a={seen.direction}"

    async def transfer_to_agent(self, source: str, target: str) -> str:
        box, native, watch = self.api()
        since = watch.mark
        result = await box.transfer(source, target)
        expect(result.conn_id == self.conn_id, f"transfer answered conn_id {result.conn_id}, not {self.conn_id}")
        incoming = await within(self.phones[target].wait_for(IncomingCall, timeout=STEP_TIMEOUT),
                                 f"INVITE at {target}'s phone")
        self.agent_calls[target] = incoming.call
        await watch.expect("transfer.completed", since, "transfer.completed",
                           has_fields(conn_id=self.conn_id))
        await within(self.phones[source].wait_for(CallEnded, call=self.agent_calls[source], timeout=STEP_TIMEOUT),
                      f"BYE at {source}'s phone")
        await media_between(self, target)
        view = await native.get_agent(target)
        expect(view.state == "on_call" and view.conn_id == self.conn_id, f"the API says {target} is {view.state}")
        self._holder = target
        return f"api=transfer&customer_phone={target}: {target} answered, {source} released, same conn_id"

    async def transfer_busy(self, agent: str) -> str:
        box, native, watch = self.api()
        customer = self.phones["customer"]
        since = watch.mark
        customer.clear_history()
        await box.transfer(agent, BUSY_NUMBER)
        outcome = await watch.expect(("transfer.failed", "transfer.completed"), since,
                                     "transfer.failed or transfer.completed",
                                     has_fields(conn_id=self.conn_id))
        expect(outcome.type == "transfer.failed",
                f"the transfer to {BUSY_NUMBER} ended {outcome.type} (the number should have been busy)")
        cause, back = outcome.data.get("sip_cause"), outcome.data.get("outcome")
        expect(cause == 486 and back == "back_with_agent",
                f"transfer.failed says sip_cause {cause}, outcome {back}")
        await within(customer.wait_for(Resumed, call=self.customer_call, timeout=STEP_TIMEOUT),
                      "re-INVITE taking the customer off hold")
        expect(not self.agent_calls[agent].ended, f"{agent}'s call ended")
        await media_between(self, agent)
        view = await native.get_agent(agent)
        expect(view.state == "on_call" and view.conn_id == self.conn_id, f"the API says {agent} is {view.state}")
        return f"{BUSY_NUMBER} answered 486 Busy Here; the customer is back with {agent} (transfer.failed)"

    async def transfer_outside(self, agent: str) -> str:
        box, native, watch = self.api()
        assert self.gateway is not None
        since = watch.mark
        await box.transfer(agent, OUTSIDE_NUMBER)
        outcome = await watch.expect(("transfer.failed", "transfer.completed"), since, "transfer.completed",
                                     has_fields(conn_id=self.conn_id))
        expect(outcome.type == "transfer.completed",
                f"the transfer ended {outcome.type} (sip_cause {outcome.data.get('sip_cause')})")
        await within(self.phones[agent].wait_for(CallEnded, call=self.agent_calls[agent], timeout=STEP_TIMEOUT),
                      f"BYE at {agent}'s phone")
        gateway = self.gateway.phone
        if anchored(self):  # the customer's side keeps the relay's port; the relay moved its media to the gateway
            await self._until(lambda: any(c.state is CallState.ESTABLISHED for c in gateway.calls),
                              "the gateway's call up")
        else:
            await self._until(lambda: customer_media_port(self) == gateway.rtp_port)
        number, caller, _ = self.gateway.dialled[-1]
        expect(number == OUTSIDE_NUMBER, f"the gateway was called for {number}")
        view = await native.get_agent(agent)
        expect(view.state == "ready", f"the API says {agent} is {view.state} after the transfer")
        return f"{OUTSIDE_NUMBER} answered at the gateway (caller ID {caller}); {agent} released and ready"

    async def hang_up(self) -> str:
        _, native, watch = self.api()
        assert self.gateway is not None and self.customer_call is not None
        since = watch.mark
        gateway_call = next(iter(self.gateway.phone.calls), None)
        await self.customer_call.hangup()
        ended = await watch.expect("call.ended", since, "call.ended", has_fields(conn_id=self.conn_id))
        expect(ended.data.get("ended_by") == "customer", f"call.ended says ended_by {ended.data.get('ended_by')}")
        if gateway_call is not None:
            await within(self.gateway.phone.wait_for(CallEnded, call=gateway_call, timeout=STEP_TIMEOUT),
                          "BYE at the gateway")
        active = await native.list_calls(state="active")
        expect(not active, f"the API still lists {len(active)} active calls")
        return f"BYE from the customer; the outside party got BYE; call.ended after {ended.data.get('duration_s')} s"

    async def cdr(self) -> str:
        assert self.node is not None
        node = self.node
        await asyncio.to_thread(node.storage.writer.flush)
        cdr = await asyncio.to_thread(_read_cdr, node, self.conn_id)
        expect(cdr is not None, f"no CDR for {self.conn_id}")
        assert cdr is not None
        agents = list(cdr.agents)
        expect(agents == [READY_ORDER[0], READY_ORDER[2]], f"the CDR names agents {agents}")
        expect(cdr.hangup_by == "customer", f"the CDR says hangup_by {cdr.hangup_by}")
        parties = [leg.party for leg in cdr.legs]
        expect(OUTSIDE_NUMBER in parties and BUSY_NUMBER in parties, f"the CDR's legs are {parties}")
        self._after_line.append(cdr_table(cdr))
        return (f"{cdr.conn_id}: agents {', '.join(agents)}, {cdr.transfer_count} transfers, {len(cdr.legs)} legs, "
                f"hung up by {cdr.hangup_by}")

    # --- checks shared by the steps (and by demo_media) --------------------------------------------------------
    @staticmethod
    async def _until(predicate: Callable[[], bool], what: str = "condition") -> None:
        async def poll() -> None:
            while not predicate():
                await asyncio.sleep(0.02)

        await within(poll(), what)

    # --- the whole scenario -------------------------------------------------------------------------------------
    async def play(self) -> None:
        first, second = READY_ORDER[0], READY_ORDER[2]
        self._holder = first
        hearing = self.hearing.steps(first, second)  # with a relay: what each party heard, measured
        for title, body in zip(STEP_TITLES, (
            self.load, self.start_node, self.register_agents, self.make_ready, self.customer_calls,
            self.longest_idle_answers, lambda: self.hold(True), lambda: self.hold(False),
            lambda: self.transfer_to_agent(first, second), lambda: self.transfer_busy(second),
            lambda: self.transfer_outside(second), self.hang_up, self.cdr,
        ), strict=True):
            for heading, run in ((title, body), *hearing.get(title, ())):
                await self.step(heading, run)

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
        self.hearing.close()
        self.tmp.cleanup()


def _load(url: str, doc: dict[str, Any]) -> list[str]:
    return [plain for _, plain in load_into_fresh_database(url, doc).tokens]


def _read_cdr(node: Node, conn_id: str) -> Any:
    with node.storage.engine.connect() as conn:
        return read_cdr(conn, conn_id)
