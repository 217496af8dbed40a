"""callbridge.client against a live callbridge on loopback: a node on SQLite with its HTTP app on uvicorn, agents
as `callbridge.phone`s registered with digest, customers behind the trunk on 127.0.0.2, the trunk's gateway on
127.0.0.3. Driven through `AgentboxClient` (in a worker thread: it blocks) and `AsyncAgentboxClient` alike:

- every one of the twelve verbs succeeding on real calls, with its typed result (the transfer's conn_id is the one
  the native API shows for the call);
- every exception class of `callbridge.client.errors` that the agentbox endpoint can answer, raised from what the
  live server sent;
- the concurrency limit on the wire: two requests held in flight by phones that delay their answers, a third
  refused (retry off) or served once a slot frees (retry on), and the client's own limit keeping a third request
  of its own from ever being refused;
- the native client: blind and attended transfers (complete and cancel), agents, calls, and the event stream
  resumed across the server ending each response, without a gap or a repeat in `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from agentbox_world import AUX, OP, AgentboxNode, main_doc, until

from callbridge.cli.serve import drain
from callbridge.client import (
    AgentAlreadyOnCall,
    AgentboxClient,
    AgentboxError,
    AgentboxResult,
    AgentNotFound,
    AgentNotLoggedIn,
    AsyncAgentboxClient,
    AsyncNativeClient,
    AuxCallResult,
    CallControlUnavailable,
    CallNotUpdated,
    ConcurrencyLimit,
    DialResult,
    DtmfResult,
    Event,
    InvalidParameter,
    InvalidToken,
    MethodNotAllowed,
    MissingParameters,
    NativeClient,
    NoActiveCall,
    NoCallToType,
    NoRecentCall,
    PhoneNotRegistered,
    RetryPolicy,
    ToggleResult,
    TokenLimitExceeded,
    TokenMissing,
    TransferInProgress,
    TransferResult,
    TransferTargetUnavailable,
    UnknownApi,
)
from callbridge.client.agentbox import ENDPOINT, parse, query
from callbridge.client.limits import NO_RETRY
from callbridge.phone import (
    CallEnded,
    DtmfReceived,
    Held,
    IncomingCall,
    Phone,
    Resumed,
)
from callbridge.sip.events import RequestReceived
from peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]
NUMBER = "3105550199"
QUOTA = 3  # the daily quota of the third token


@contextlib.asynccontextmanager
async def live_node(tmp_path: Path, *, gateway_port: int = 5060,
                    action_timeout: float = 5.0) -> AsyncIterator[AgentboxNode]:
    """agentbox_world's node with two more things in operation 0042: the time call control waits for a phone's
    answer (`action_timeout`), and a third token whose daily quota is QUOTA (tokens[OP][2])."""
    doc = main_doc(gateway_port=gateway_port)
    doc["operation"]["action_timeout"] = action_timeout
    doc["tokens"] = [*doc["tokens"], {"label": "quota", "daily_quota": QUOTA}]
    async with AgentboxNode.start(tmp_path, doc=doc) as world:
        yield world


class Box:
    """One of the two agentbox clients behind the same awaitable methods: the blocking one runs in a thread, so
    that the node (on this event loop) can answer it."""

    def __init__(self, kind: str, url: str, token: str, *, server: str | None = OP,
                 retry: RetryPolicy | None = None, max_in_flight: int = 2) -> None:
        self.kind = kind
        self.client: AgentboxClient | AsyncAgentboxClient
        if kind == "sync":
            self.client = AgentboxClient(url, token=token, server=server, retry=retry, max_in_flight=max_in_flight,
                                         timeout=20)
        else:
            self.client = AsyncAgentboxClient(url, token=token, server=server, retry=retry,
                                              max_in_flight=max_in_flight, timeout=20)

    def __getattr__(self, verb: str) -> Callable[..., Any]:
        method = getattr(self.client, verb)

        async def run(*args: Any, **kwargs: Any) -> Any:
            if self.kind == "sync":
                return await asyncio.to_thread(method, *args, **kwargs)
            return await method(*args, **kwargs)

        return run

    async def close(self) -> None:
        if isinstance(self.client, AgentboxClient):
            self.client.close()
        else:
            await self.client.aclose()


@contextlib.asynccontextmanager
async def box(kind: str, world: AgentboxNode, token: str | None = None, **options: Any) -> AsyncIterator[Box]:
    b = Box(kind, world.http.url, world.tokens[OP][0] if token is None else token, **options)
    try:
        yield b
    finally:
        await b.close()


async def raises(cls: type[AgentboxError], pending: Any, *, code: int, msg: str) -> AgentboxError:
    """Await `pending` and check it raised exactly `cls` (not a subclass, not a parent) with this code and msg."""
    with pytest.raises(AgentboxError) as info:
        await pending
    exc = info.value
    assert type(exc) is cls, repr(exc)
    assert (exc.code, exc.status, exc.msg) == (code, code, msg)
    return exc


def answer_reinvites(phone: Phone, how: Callable[[Any, Callable[[Any], None]], None]) -> None:
    """Route every in-dialog INVITE the phone receives through `how(event, handle)`; `handle(event)` is what the
    phone would have done (answer it). Other requests are handled as usual."""
    handle = phone._handlers[RequestReceived]

    def spy(event: Any) -> None:
        if event.dialog is not None and event.request.method == "INVITE":
            how(event, handle)
        else:
            handle(event)

    phone._handlers[RequestReceived] = spy


def refuse_reinvites(phone: Phone, status: int = 488) -> None:
    answer_reinvites(phone, lambda event, _handle: phone._respond(event.transaction, status))


def delay_reinvites(phone: Phone, seconds: float) -> None:
    """Answer re-INVITEs as usual, `seconds` late (the phone's own user-facing methods act the same way: on the
    endpoint, then wake the runtime)."""
    loop = asyncio.get_running_loop()

    def later(event: Any, handle: Callable[[Any], None]) -> None:
        def answer() -> None:
            handle(event)
            phone.runtime.wake()

        loop.call_later(seconds, answer)

    answer_reinvites(phone, later)


# --- the twelve verbs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_every_verb_on_real_calls(tmp_path: Path, kind: str) -> None:
    port = free_port("127.0.0.3")
    async with live_node(tmp_path, gateway_port=port) as world, box(kind, world) as b:
        native = AsyncNativeClient(world.http.url, token=world.tokens[OP][1])
        gateway = await world.gateway(port, answer="auto")
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto")
        customer, call, agent_call = await world.talking(agent)
        conn_id = (await native.get_agent("1001")).conn_id
        assert conn_id is not None and conn_id == world.conn_id()

        held = await b.hold("1001")
        assert held == ToggleResult(code=200, msg="Call has been put on hold", active=True)
        assert (await customer.wait_for(Held, call=call, timeout=2)).direction == "sendonly"
        assert (await native.get_agent("1001")).on_hold is True
        assert await b.hold("1001") == ToggleResult(code=200, msg="Call has been taken off hold", active=False)
        assert (await customer.wait_for(Resumed, call=call, timeout=2)).direction == "sendrecv"
        assert await b.mute("1001") == ToggleResult(code=200, msg="Microphone has been muted", active=True)
        await agent.wait_for(Held, call=agent_call, timeout=2)
        assert (await native.get_agent("1001")).muted is True
        assert await b.mute("1001") == ToggleResult(code=200, msg="Microphone has been unmuted", active=False)
        await agent.wait_for(Resumed, call=agent_call, timeout=2)

        tones = await b.dtmf("1001", "12#")
        assert tones == DtmfResult(code=200, msg="Tones have been sent", data={"tones": "12#"}, tones="12#")
        assert [(await customer.wait_for(DtmfReceived, call=call, timeout=2)).digit for _ in range(3)] == \
            ["1", "2", "#"]

        moved = await b.transfer("1001", "1002")
        assert moved == TransferResult(code=200, msg="Call has been transfer to 1002 number",
                                       data={"conn_id": conn_id}, conn_id=conn_id)
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: world.service.get_agent(OP, "1002").conn_id == conn_id, what="1002 on the call")
        assert (await native.get_call(conn_id)).agent_id == "1002"

        assert await b.hang("1002") == AgentboxResult(code=200, msg="Call has been hung up")
        assert (await customer.wait_for(CallEnded, call=call, timeout=5)).by == "remote"
        await target.wait_for(CallEnded, call=target_call, timeout=5)
        typed = await b.type("1002", "SALE", "NEW", comments="moved to 1002")
        assert typed == AgentboxResult(code=200, msg="Call has been typed")
        assert (await native.get_call(conn_id)).state == "ended"

        await until(lambda: world.state("1001") == "ready", what="1001 ready after the transfer")
        assert await b.change_status("1001", AUX) == AgentboxResult(
            code=200, msg=f"Agent status has been changed to {AUX}")
        assert (world.state("1001"), (await native.get_agent("1001")).aux_state) == (f"aux:{AUX}", AUX)
        assert await b.change_status("1001", "ready") == AgentboxResult(
            code=200, msg="Agent status has been changed to ready")
        assert await b.agent_display("1002", "hide", "dial") == AgentboxResult(code=200, msg="Display has been updated")
        assert (await native.get_agent("1002")).display == {"hungup": "show", "disposition": "show", "dial": "hide"}

        dialed = await b.dial("1001", NUMBER, customer_name="Ana")
        assert isinstance(dialed, DialResult) and dialed.conn_id
        assert dialed == DialResult(code=200, msg=f"Call has been dialed to {NUMBER}",
                                    data={"conn_id": dialed.conn_id}, conn_id=dialed.conn_id)
        ring = await agent.wait_for(IncomingCall, timeout=5)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        assert out.request.uri.user == NUMBER
        await until(lambda: world.service.get_call(OP, str(dialed.conn_id)).state == "connected", what="dialed")
        assert (await native.get_call(str(dialed.conn_id))).customer_number == NUMBER
        finished = await b.hang_type_ready("1001", "SALE", comments="done")
        assert finished == AgentboxResult(code=200, msg="Call has been hung up, typed and agent is ready")
        await gateway.wait_for(CallEnded, call=out.call, timeout=5)
        await agent.wait_for(CallEnded, call=ring.call, timeout=5)
        await until(lambda: world.state("1001") == "ready", what="1001 ready after hang_type_ready")

        again = await b.aux_call("1001", "3105550123")
        assert again == AuxCallResult(code=200, msg="Auxiliary call has been dialed to 3105550123",
                                      data={"conn_id": again.conn_id}, conn_id=again.conn_id)
        ring = await agent.wait_for(IncomingCall, timeout=5)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        assert out.request.uri.user == "3105550123"
        await until(lambda: world.service.get_call(OP, str(again.conn_id)).state == "connected", what="aux call")
        await ring.call.hangup()
        await gateway.wait_for(CallEnded, call=out.call, timeout=5)

        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert await b.recall("1001", NUMBER, later.replace(tzinfo=None), "manual") == AgentboxResult(
            code=200, msg="Recall has been scheduled")
        await native.aclose()


# --- every exception class -------------------------------------------------------------------------------------

CONFLICT = 409


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_every_error_class_from_a_live_node(tmp_path: Path, kind: str) -> None:
    async with live_node(tmp_path) as world, box(kind, world) as b:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="manual")
        customer = await world.customer()
        customer, _call, agent_call = await world.talking(agent, customer=customer)

        async with box(kind, world, token="") as anonymous:
            await raises(TokenMissing, anonymous.hang("1001"), code=401, msg="PLEASE ENTER THE WOLKVOX-TOKEN")
        async with box(kind, world, token="not-a-token") as stranger:
            await raises(InvalidToken, stranger.hang("1001"), code=403, msg="PLEASE VALIDATE TOKEN")
        async with box(kind, world, server="0077") as elsewhere:  # a good token naming another operation
            await raises(InvalidToken, elsewhere.hang("1001"), code=403, msg="PLEASE VALIDATE TOKEN")
        async with box(kind, world, token=world.tokens[OP][2]) as quota:
            for _ in range(QUOTA):  # answered requests count, whatever they answer
                await raises(AgentNotFound, quota.hang("9999"), code=404, msg="AGENT DOES NOT EXIST")
            await raises(TokenLimitExceeded, quota.hang("9999"), code=403, msg="TOKEN LIMIT EXCEEDED")
            await raises(TokenLimitExceeded, quota.change_status("1002", AUX), code=403, msg="TOKEN LIMIT EXCEEDED")
        assert world.state("1002") == "ready"

        await raises(UnknownApi, b.call(query("frob", ("agent_id", "1001"))), code=400,
                     msg="THE API YOU WANT TO CONSULT DOES NOT EXIST")
        await raises(MissingParameters, b.call(query("transfer", ("agent_id", "1001"))), code=400,
                     msg="SOME PARAMETERS ARE REQUIRED")
        bad = await raises(InvalidParameter, b.dtmf("1001", "12x"), code=400, msg="INVALID PARAMETER: tones")
        assert isinstance(bad, InvalidParameter) and bad.name == "tones"
        bad = await raises(InvalidParameter, b.transfer("1001", "12"), code=400,  # the dial plan: 7 digits or more
                           msg="INVALID PARAMETER: customer_phone")
        assert isinstance(bad, InvalidParameter) and bad.name == "customer_phone"
        await raises(AgentNotFound, b.hang("9999"), code=404, msg="AGENT DOES NOT EXIST")
        await raises(AgentNotFound, b.hang("2001"), code=404, msg="AGENT DOES NOT EXIST")  # 0077's agent
        await raises(AgentNotLoggedIn, b.hang("1003"), code=CONFLICT, msg="AGENT IS NOT LOGGED IN")
        await raises(PhoneNotRegistered, b.change_status("1003", "ready"), code=CONFLICT,
                     msg="AGENT PHONE IS NOT REGISTERED")
        await raises(NoActiveCall, b.hold("1002"), code=CONFLICT, msg="AGENT HAS NO ACTIVE CALL")
        await raises(NoRecentCall, b.aux_call("1002", NUMBER), code=CONFLICT, msg="NO RECENT CALL")
        await raises(NoCallToType, b.type("1002", "SALE", "NEW"), code=CONFLICT, msg="NO CALL TO TYPE")
        await raises(AgentAlreadyOnCall, b.dial("1001", NUMBER), code=CONFLICT,
                     msg="AGENT ALREADY HAS AN ACTIVE CALL")
        await raises(TransferTargetUnavailable, b.transfer("1001", "1003"), code=CONFLICT,
                     msg="TRANSFER TARGET IS NOT AVAILABLE")

        refuse_reinvites(customer)  # the customer's phone answers 488 to the hold's re-INVITE
        await raises(CallNotUpdated, b.hold("1001"), code=CONFLICT, msg="CALL COULD NOT BE UPDATED")
        assert (world.service.get_call(OP, world.conn_id()).held, world.state("1001")) == (False, "on_call")

        # The client itself only POSTs (Wolkvox documents POST only); any other method is refused by the server
        # before it looks at the token, and the client's reader maps that answer to MethodNotAllowed.
        get = await world.client.get(ENDPOINT, params={"api": "hang", "agent_id": "1001"},
                                     headers={"wolkvox-token": world.tokens[OP][0]})
        assert (get.status_code, get.headers["allow"]) == (405, "POST")
        with pytest.raises(MethodNotAllowed) as refused:
            parse("hang", get.status_code, get.content)
        assert (refused.value.code, refused.value.msg) == (405, "USE POST")

        moved = await b.transfer("1001", "1002")  # 1002 rings and does not answer yet
        ringing = (await target.wait_for(IncomingCall, timeout=5)).call
        await raises(TransferInProgress, b.transfer("1001", "1003"), code=CONFLICT,
                     msg="A TRANSFER IS ALREADY IN PROGRESS")
        await raises(TransferInProgress, b.hold("1001"), code=CONFLICT, msg="A TRANSFER IS ALREADY IN PROGRESS")
        await ringing.answer()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: world.service.get_agent(OP, "1002").conn_id == moved.conn_id, what="1002 on the call")

        # The node draining (what `callbridge serve` does on SIGTERM) with a call up: a new call is refused, the live
        # one keeps its verbs (this test answered 503 to hold here before the drain kept call control, on purpose).
        draining = asyncio.create_task(drain(world.node, 10.0))
        await until(lambda: world.node.switch.draining, what="draining")
        await raises(CallControlUnavailable, b.dial("1001", "3105550123"), code=503,
                     msg="CALL CONTROL IS NOT AVAILABLE")
        assert await b.hang("1002") == AgentboxResult(code=200, msg="Call has been hung up")  # ends the drain
        await asyncio.wait_for(draining, 10)
        await target.wait_for(CallEnded, call=ringing, timeout=5)


# --- the concurrency limit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_concurrency_limit_on_the_wire(tmp_path: Path, kind: str) -> None:
    """Two requests held in flight by phones that answer their re-INVITEs a second late fill the token's two
    slots; they are made outside the client under test, as another process using the same token would."""
    async with live_node(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto")
        customer, _call, _agent_call = await world.talking(agent)
        delay_reinvites(customer, 1.0)  # hold re-INVITEs the customer
        delay_reinvites(agent, 1.0)  # mute re-INVITEs the agent's phone

        async def fill_both_slots() -> list[httpx.Response]:
            slow = [asyncio.create_task(world.box("hold", agent_id="1001")),
                    asyncio.create_task(world.box("mute", agent_id="1001"))]
            await until(lambda: len(world.service._actions) == 2, what="two requests in flight")
            return list(await asyncio.gather(*slow))

        # Retry off: the third request is refused at once, having done nothing.
        filling = asyncio.create_task(fill_both_slots())
        await until(lambda: len(world.service._actions) == 2, what="two requests in flight")
        async with box(kind, world, retry=NO_RETRY) as impatient:
            refused = await raises(ConcurrencyLimit, impatient.change_status("1002", AUX), code=403,
                                   msg="EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)")
            assert isinstance(refused, ConcurrencyLimit) and refused.limit == 2
        assert world.state("1002") == "ready"  # the refused request did nothing
        assert [r.json()["msg"] for r in await filling] == ["Call has been put on hold", "Microphone has been muted"]

        # Retry on: the same request, refused while the slots are taken, is served once one frees.
        filling = asyncio.create_task(fill_both_slots())
        await until(lambda: len(world.service._actions) == 2, what="two requests in flight")
        started = asyncio.get_running_loop().time()
        async with box(kind, world, retry=RetryPolicy(attempts=20, base_delay=0.1, max_delay=0.2)) as patient:
            shown = await patient.agent_display("1002", "hide", "dial")
        waited = asyncio.get_running_loop().time() - started
        assert shown == AgentboxResult(code=200, msg="Display has been updated")
        assert waited >= 0.5  # it could only go through after a delayed re-INVITE was answered
        assert [r.json()["msg"] for r in await filling] == ["Call has been taken off hold",
                                                            "Microphone has been unmuted"]

        # The client's own limit: three requests through one client never put a third in flight, so none is
        # refused even without retrying.
        async with box(kind, world, retry=NO_RETRY) as polite:
            answers = list(await asyncio.gather(polite.hold("1001"), polite.mute("1001"),
                                           polite.agent_display("1002", "show", "dial")))
        assert answers == [ToggleResult(code=200, msg="Call has been put on hold", active=True),
                           ToggleResult(code=200, msg="Microphone has been muted", active=True),
                           AgentboxResult(code=200, msg="Display has been updated")]


# --- the native client -----------------------------------------------------------------------------------------

async def test_native_client_transfers_agents_and_calls(tmp_path: Path) -> None:
    async with live_node(tmp_path) as world:
        native = NativeClient(world.http.url, token=world.tokens[OP][0], timeout=20)

        async def api(method: str, *args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(getattr(native, method), *args, **kwargs)

        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto")
        agents = await api("list_agents")
        assert [(a.agent_id, a.state, a.registered) for a in agents] == [
            ("1001", "ready", True), ("1002", "ready", True), ("1003", "logout", False)]
        assert [a.agent_id for a in await api("list_agents", state="ready")] == ["1001", "1002"]
        _customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        calls = await api("list_calls")
        assert [(c.conn_id, c.state, c.direction, c.agent_id, c.queue) for c in calls] == [
            (conn_id, "connected", "inbound", "1001", "support")]
        detail = await api("get_call", conn_id)
        assert detail.customer_number == "3105550000"
        assert sorted(leg.role for leg in detail.legs) == ["agent", "customer"]
        assert "call.answered" in [e.type for e in detail.history]
        assert (await api("get_agent", "1001")).conn_id == conn_id

        # attended, cancelled: the customer comes back to 1001
        started = await api("create_transfer", "1001", "1002", kind="attended")
        assert (started.conn_id, started.kind, started.agent_id, started.target) == (conn_id, "attended", "1001",
                                                                                  "1002")
        consult = (await target.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: world.service.get_transfer(OP, started.id).state == "consulting", what="consulting")
        assert (await api("get_transfer", started.id)).state == "answered"
        cancelled = await api("cancel_transfer", started.id)
        assert (cancelled.id, cancelled.state, cancelled.finished) == (started.id, "cancelled", True)
        await target.wait_for(CallEnded, call=consult, timeout=5)
        await until(lambda: world.service.get_call(OP, conn_id).state == "connected", what="back with 1001")

        # attended, completed: the customer ends up with 1002
        started = await api("create_transfer", "1001", "1002", kind="attended")
        consult = (await target.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: world.service.get_transfer(OP, started.id).state == "consulting", what="consulting")
        completed = await api("complete_transfer", started.id)
        assert (completed.state, completed.outcome) == ("completed", "connected_to_target")
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        assert (await api("get_call", conn_id)).agent_id == "1002"
        await until(lambda: world.state("1001") == "ready", what="1001 free")

        # blind, back to 1001
        blind = await api("create_transfer", "1002", "1001")
        assert (blind.kind, blind.conn_id, blind.target) == ("blind", conn_id, "1001")
        new_agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        await target.wait_for(CallEnded, call=consult, timeout=5)
        await until(lambda: world.service.get_transfer(OP, blind.id).state == "completed", what="blind completed")
        assert (await api("get_transfer", blind.id)).state == "completed"
        assert (await api("get_call", conn_id)).transfers == 3 - 1  # the cancelled one moved nothing
        await call.hangup()
        await agent.wait_for(CallEnded, call=new_agent_call, timeout=5)
        ended = await api("list_calls", state="ended")
        assert [(c.conn_id, c.state) for c in ended] == [(conn_id, "ended")]
        native.close()


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting the event stream's requests (one per reconnect)."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/events":
            self.streams += 1
        return await super().handle_async_request(request)


async def test_event_stream_resumes_across_responses_without_gap_or_repeat(tmp_path: Path) -> None:
    """The server ends each stream response after `wait` (0.3 s); the client reconnects from the last seq it
    yielded. Events are made all along, so some fall between two responses."""
    async with live_node(tmp_path) as world:
        transport = CountingTransport()
        native = AsyncNativeClient(world.http.url, token=world.tokens[OP][0], transport=transport,
                                   reconnect=RetryPolicy(attempts=50, base_delay=0.05, max_delay=0.1))
        start = world.node.events.last_seq(OP)
        seen: list[Event] = []

        async def consume() -> None:
            async for event in native.events(after=start, wait=0.3):
                seen.append(event)

        consumer = asyncio.create_task(consume())
        agent = await world.agent("1001", answer="auto", ready=False)
        async with box("async", world) as b:
            for i in range(12):
                await b.change_status("1001", AUX if i % 2 == 0 else "ready")
                await asyncio.sleep(0.13)
        _customer, call, agent_call = await world.talking(agent)
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        last = world.node.events.last_seq(OP)
        await until(lambda: bool(seen) and seen[-1].seq == last, timeout=10, what="every event consumed")
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await native.aclose()

        seqs = [e.seq for e in seen]
        assert seqs == list(range(start + 1, last + 1))  # no gap, no repeat, in order
        kept = [(e.seq, e.type) for e in world.node.events.since(OP, start)]
        assert [(e.seq, e.type) for e in seen] == kept
        assert sum(1 for e in seen if e.type == "agent.state_changed") >= 12
        assert transport.streams >= 4  # responses of 0.3 s over the 12 * 0.13 s of status changes and the call
