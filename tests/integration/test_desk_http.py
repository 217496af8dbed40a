"""The desk's HTTP side against a live node (SQLite, SIP on loopback, uvicorn): sign-in answers, sessions and their
cookie, the flood defence on sign-ins, an agent's session acting on its own agent and call only (with real phones),
a supervisor seeing and acting on its own operation only, the board's end-call and listen checks, and the 503 page
without SIP.js."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from callnode import agent_phone, customer_phone, did_uri, until
from deskworld import OP, OTHER_OP, OTHER_SUPERVISOR, SUPERVISOR, DeskWorld
from starlette.requests import Request

from callbridge.http.desk_common import DeskConfig
from callbridge.http.desk_pages import DeskPages
from callbridge.phone import CallEnded, Held, IncomingCall, Phone

pytestmark = pytest.mark.timeout(60)
WRONG = b'{"ok": false, "error_id": "SIGN_IN_FAILED", "message": "Wrong operation, extension or password."}'


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskWorld]:
    world = DeskWorld.start(tmp_path_factory.mktemp("desk-http"))
    try:
        yield world
    finally:
        world.close()


_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def client(world: DeskWorld, source: str = "127.0.0.1") -> httpx.Client:
    """A browser-like client from `source` (a loopback address of its own keeps the sign-in bans apart)."""
    c = httpx.Client(base_url=world.url, timeout=10, transport=httpx.HTTPTransport(local_address=source))
    _OPEN.append(c)
    return c


def signed_in(world: DeskWorld, extension: str) -> httpx.Client:
    c = client(world)
    response = c.post("/agent/signin", json={"operation": OP, "extension": extension,
                                             "password": f"secret-{extension}"})
    assert response.status_code == 200, response.text
    return c


def state(world: DeskWorld, extension: str) -> str:
    return str(world.native_agent(extension)["state"])


def test_wrong_password_unknown_extension_and_unknown_operation_answer_the_same(world: DeskWorld) -> None:
    c = client(world, "127.0.0.11")
    answers = [c.post("/agent/signin", json=fields) for fields in (
        {"operation": OP, "extension": "1001", "password": "wrong-password"},
        {"operation": OP, "extension": "9999", "password": "wrong-password"},
        {"operation": "9999", "extension": "1001", "password": "secret-1001"},
        {"operation": OP.lower(), "extension": "1001", "password": "secret-1002"})]
    assert [(a.status_code, a.content) for a in answers] == [(401, WRONG)] * 4
    assert all("set-cookie" not in a.headers for a in answers)
    # by SIP domain works as well as by id
    good = c.post("/agent/signin", data={"operation": "0042.CALLBRIDGE.test", "extension": "1001",
                                         "password": "secret-1001"})
    assert good.status_code == 200 and good.json()["agent"] == {"extension": "1001", "name": "Agent 1001"}
    cookie = good.headers["set-cookie"]
    assert cookie.startswith("callbridge_desk=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "secret-1001" not in good.text and world.tokens[OP][0] not in good.text  # no secret in the page


def test_bad_sign_in_input_is_refused_clearly(world: DeskWorld) -> None:
    c = client(world, "127.0.0.12")
    missing = c.post("/agent/signin", json={"operation": OP, "extension": "1001"})
    assert (missing.status_code, missing.json()["message"]) == (400, "Fill in: password.")
    assert c.post("/agent/signin", content=b"{", headers={"content-type": "application/json"}).json()["message"] \
        == "The request body is not valid JSON."
    assert c.post("/agent/signin", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    foreign = c.post("/agent/signin", json={"operation": OP, "extension": "1001", "password": "secret-1001"},
                     headers={"origin": "http://evil.example"})
    assert (foreign.status_code, foreign.json()["message"]) == (403, "This request came from another site's page.")


def test_failed_sign_ins_ban_the_source_and_nobody_else(world: DeskWorld) -> None:
    attacker = client(world, "127.0.0.13")
    statuses = [attacker.post("/agent/signin", json={"operation": OP, "extension": "1001",
                                                     "password": f"guess-{i:04d}"}).status_code for i in range(11)]
    assert statuses == [401] * 11  # the 11th failure in the window bans
    banned = attacker.post("/agent/signin", json={"operation": OP, "extension": "1001", "password": "secret-1001"})
    assert banned.status_code == 429
    assert banned.json()["message"] == "Too many failed sign-ins from your address: wait a few minutes, then try again."
    assert attacker.post("/supervisor/signin", json={"operation": OP, "username": SUPERVISOR[0],
                                                     "password": SUPERVISOR[1]}).status_code == 429
    assert signed_in(world, "1001").get("/agent/api/session").status_code == 200  # another source is not banned


def test_sessions_forged_ended_and_of_the_wrong_kind_are_refused(world: DeskWorld) -> None:
    c = signed_in(world, "1003")
    assert c.get("/agent/api/session").status_code == 200
    value = c.cookies["callbridge_desk"]
    forged = client(world)
    forged.cookies.set("callbridge_desk", value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert forged.get("/agent/api/session").status_code == 401
    assert c.get("/supervisor/api/board").status_code == 401  # an agent's session is no supervisor's
    out = c.post("/agent/signout", json={})
    assert out.status_code == 200 and 'callbridge_desk=""' in out.headers["set-cookie"]
    stale = client(world)
    stale.cookies.set("callbridge_desk", value)
    body = stale.get("/agent/api/session").json()
    assert body == {"ok": False, "error_id": "NOT_SIGNED_IN",
                    "message": "You are not signed in (or your session ended): sign in again."}


def test_an_agents_session_acts_on_its_own_agent_only(world: DeskWorld) -> None:
    other: Phone = world.run(agent_phone(world.node, "1002", ready=False))  # 1002 registered, logged out
    try:
        me = signed_in(world, "1001")  # 1001's page, its phone not registered
        refused = me.post("/agent/api/state", json={"status": "ready", "agent_id": "1002"})
        assert (refused.status_code, refused.json()["error_id"]) == (409, "PHONE_NOT_REGISTERED")  # 1001's state
        assert state(world, "1002") == "logout"
        mine: Phone = world.run(agent_phone(world.node, "1001", ready=False))
        try:
            done = me.post("/agent/api/state", json={"status": "ready", "agent_id": "1002"})
            assert done.json() == {"ok": True, "message": "Agent status has been changed to ready"}
            assert (state(world, "1001"), state(world, "1002")) == ("ready", "logout")
            # nothing of the call verbs reaches another agent's call either: 1001 has none
            for action in ("hold", "hang", "mute"):
                answer = me.post(f"/agent/api/{action}", json={"agent_id": "1002"})
                assert (answer.status_code, answer.json()["error_id"]) == (409, "NO_ACTIVE_CALL")
            assert me.post("/agent/api/attended/complete", json={}).json()["error_id"] == "NO_TRANSFER"
            bad = me.post("/agent/api/state", json={"status": "lunch-break"})
            assert (bad.status_code, bad.json()["message"]) == (400, "INVALID PARAMETER: status")
        finally:
            world.run(mine.unregister(timeout=5))
            world.run(mine.close())
    finally:
        world.run(other.unregister(timeout=5))
        world.run(other.close())
    assert not world.on_loop(lambda: world.node.service.get_agent(OP, "1001").registered)


def test_the_desk_holds_the_signed_in_agents_real_call_and_the_board_ends_it(world: DeskWorld) -> None:
    async def setup() -> tuple[Phone, Phone, Any, Any]:
        agent = await agent_phone(world.node, "1003", ready=True, answer="auto")
        customer = await customer_phone()
        call = await customer.call(did_uri(world.node), timeout=5)
        agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: world.node.service.get_agent(OP, "1003").state == "on_call", what="1003 on call")
        return agent, customer, call, agent_call

    agent, customer, call, _agent_call = world.run(setup())
    try:
        desk = signed_in(world, "1003")
        snapshot = desk.get("/agent/api/session").json()["snapshot"]
        conn_id = snapshot["call"]["conn_id"]
        assert (snapshot["call"]["queue"], snapshot["call"]["state"]) == ("support", "connected")
        held = desk.post("/agent/api/hold", json={})
        assert held.json() == {"ok": True, "message": "Call has been put on hold"}
        assert world.run(customer.wait_for(Held, call=call, timeout=2)).direction == "sendonly"

        otto = client(world)
        assert otto.post("/supervisor/signin", json={"operation": OTHER_OP, "username": OTHER_SUPERVISOR[0],
                                                     "password": OTHER_SUPERVISOR[1]}).status_code == 200
        board = otto.get("/supervisor/api/board").json()
        assert [a["agent_id"] for a in board["agents"]] == ["1001", "2001"] and board["calls"] == []
        foreign = otto.post(f"/supervisor/api/calls/{conn_id}/end", json={})
        assert (foreign.status_code, foreign.json()["message"]) == (404, "CALL DOES NOT EXIST")
        changed = otto.post("/supervisor/api/agents/1002/state", json={"status": "ready"})
        assert (changed.status_code, changed.json()["message"]) == (404, "AGENT DOES NOT EXIST")

        maria = client(world)
        assert maria.post("/supervisor/signin", json={"operation": OP, "username": SUPERVISOR[0],
                                                      "password": SUPERVISOR[1]}).status_code == 200
        [live] = maria.get("/supervisor/api/board").json()["calls"]
        assert (live["conn_id"], live["agent_id"], live["state"]) == (conn_id, "1003", "held")
        ended = maria.post(f"/supervisor/api/calls/{conn_id}/end", json={})
        assert ended.json() == {"ok": True, "message": "Call has been hung up", "conn_id": conn_id}
        world.run(customer.wait_for(CallEnded, call=call, timeout=3))
        world.run(until(lambda: world.node.live_legs == 0, what="legs gone"))
        assert maria.get("/supervisor/api/board").json()["calls"] == []
    finally:
        world.run(agent.unregister(timeout=5))
        world.run(agent.close())
        world.run(customer.close())


def test_the_boards_listen_checks_the_operation_the_extension_and_the_relay_and_changes_nothing(
        world: DeskWorld) -> None:
    """This world has no relay: every check before the adapter's is met by a real call, then CALL_NOT_ANCHORED
    (the listening itself, through rtpengine, is test_desk_listen.py's)."""
    async def setup() -> tuple[Phone, Phone, Any]:
        agent = await agent_phone(world.node, "1001", ready=True, answer="auto")
        customer = await customer_phone()
        call = await customer.call(did_uri(world.node), timeout=5)
        await agent.wait_for(IncomingCall, timeout=5)
        await until(lambda: world.node.service.get_agent(OP, "1001").state == "on_call", what="1001 on call")
        return agent, customer, call

    agent, customer, call = world.run(setup())
    try:
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1001").conn_id)
        listen, stop = f"/supervisor/api/calls/{conn_id}/listen", f"/supervisor/api/calls/{conn_id}/listen/stop"
        nobody = client(world)
        assert (nobody.post(listen, json={"extension": "1001"}).status_code,
                nobody.post(stop, json={}).status_code) == (401, 401)
        otto = client(world)
        otto_in = otto.post("/supervisor/signin", json={"operation": OTHER_OP, "username": OTHER_SUPERVISOR[0],
                                                        "password": OTHER_SUPERVISOR[1]})
        assert otto_in.json()["supervisor"] == {"username": "otto", "name": "", "extension": ""}
        for foreign in (otto.post(listen, json={"extension": "1001"}), otto.post(stop, json={})):
            assert (foreign.status_code, foreign.json()) == (404, {
                "ok": False, "error_id": "CALL_NOT_FOUND", "message": "This call does not exist in your operation."})

        maria = client(world)
        maria_in = maria.post("/supervisor/signin", json={"operation": OP, "username": SUPERVISOR[0],
                                                          "password": SUPERVISOR[1]})
        assert maria_in.json()["supervisor"] == {"username": "maria", "name": "María", "extension": "1003"}
        answers = [(r.status_code, r.json()["error_id"], r.json()["message"]) for r in (
            maria.post(listen, json={}),
            maria.post(listen, json={"extension": "10a1"}),
            maria.post("/supervisor/api/calls/nosuchcall/listen", json={"extension": "1001"}),
            maria.post(listen, json={"extension": "9999"}),
            maria.post(listen, json={"extension": "1002"}),
            maria.post(listen, json={"extension": "1001"}),
            maria.post(listen, json={"on": "page", "page": "0123456789abcdef0123456789abcdef"}),
            maria.post(stop, json={}),
            maria.post(listen, json={"extension": "1001"}, headers={"origin": "http://elsewhere.test"}))]
        assert answers == [
            (400, "MISSING_PARAMETERS", "Fill in: extension (the phone that listens)."),
            (400, "INVALID_PARAMETER", "The extension is digits only (the phone that listens)."),
            (404, "CALL_NOT_FOUND", "This call does not exist in your operation."),
            (404, "EXTENSION_NOT_FOUND", "Extension 9999 is not one of this operation's agents: listen on a phone "
                                         "registered as one of its extensions."),
            (409, "PHONE_NOT_REGISTERED", "Extension 1002 has no phone registered now: register its phone and try "
                                          "again."),
            (409, "CALL_NOT_ANCHORED", "This call's media does not go through callbridge's relay (rtpengine): it "
                                       "cannot be listened to."),
            (409, "CALL_NOT_ANCHORED", "This call's media does not go through callbridge's relay (rtpengine): it "
                                       "cannot be listened to."),  # in the page: the same check
            (409, "MONITOR_NOT_STARTED", "Nobody listens to this call."),
            (403, "BAD_REQUEST", "This request came from another site's page.")]
        [live] = maria.get("/supervisor/api/board").json()["calls"]
        assert (live["conn_id"], live["state"], live["listener"]) == (conn_id, "connected", None)  # nothing changed
        history = world.on_loop(lambda: world.node.service.get_call(OP, conn_id).history)
        assert not [h for h in history if h[1].startswith("monitor")]
    finally:
        world.run(call.hangup())
        world.run(agent.unregister(timeout=5))
        world.run(agent.close())
        world.run(customer.close())
    world.run(until(lambda: world.node.live_legs == 0, what="legs gone"))
    ended = client(world)
    assert ended.post("/supervisor/signin", json={"operation": OP, "username": SUPERVISOR[0],
                                                  "password": SUPERVISOR[1]}).status_code == 200
    gone = ended.post(f"/supervisor/api/calls/{conn_id}/listen", json={"extension": "1001"})
    assert (gone.status_code, gone.json()["error_id"]) == (409, "CALL_ENDED")


def test_the_agent_page_says_to_run_setup_when_sip_js_is_missing(world: DeskWorld, tmp_path: Path) -> None:
    pages = DeskPages(DeskConfig(directory=world.node.storage.directory, library_dir=tmp_path))
    scope = {"type": "http", "method": "GET", "path": "/agent", "headers": [], "query_string": b""}
    response = asyncio.run(pages.agent(Request(scope)))
    assert response.status_code == 503 and b"run <code>scripts/setup</code>" in response.body
    served = httpx.get(f"{world.url}/agent", timeout=10)  # the checkout's web/node_modules: the page itself
    assert served.status_code == 200 and "default-src 'none'" in served.headers["content-security-policy"]
    assert httpx.get(f"{world.url}/desk/lib/sip.js/index.js", timeout=10).status_code == 200
    assert httpx.get(f"{world.url}/desk/lib/sip.js/..%2f..%2fpackage.json", timeout=10).status_code == 404


def test_the_board_counts_callers_waiting_in_a_queue(world: DeskWorld) -> None:
    async def queued() -> tuple[Phone, Any]:
        customer = await customer_phone("3105550777")
        call = await customer.call(did_uri(world.node), wait_answer=False)
        await until(lambda: any(c.state == "queued" for c in world.node.service.list_calls(OP)), what="queued")
        return customer, call

    maria = client(world)
    assert maria.post("/supervisor/signin", json={"operation": OP, "username": SUPERVISOR[0],
                                                  "password": SUPERVISOR[1]}).status_code == 200
    assert all(a["state"] == "logout" for a in maria.get("/supervisor/api/board").json()["agents"])
    customer, call = world.run(queued())
    try:
        board = maria.get("/supervisor/api/board").json()
        [support] = board["queues"]
        assert (support["name"], support["waiting"]) == ("support", 1) and support["oldest_since"] is not None
        [waiting] = board["calls"]
        assert (waiting["customer_number"], waiting["agent_id"], waiting["state"]) == ("3105550777", None, "queued")
        refused = maria.post(f"/supervisor/api/calls/{waiting['conn_id']}/end", json={})
        assert (refused.status_code, refused.json()["error_id"]) == (409, "NO_AGENT_ON_CALL")
    finally:
        world.run(call.hangup())
        world.run(customer.close())
    world.run(until(lambda: world.node.live_legs == 0, what="legs gone"))
    assert maria.get("/supervisor/api/board").json()["queues"][0]["waiting"] == 0


def test_an_attended_transfer_from_the_desk_and_nobody_elses_session_can_finish_it(world: DeskWorld) -> None:
    async def setup() -> tuple[Phone, Phone, Phone, Any, Any]:
        agent = await agent_phone(world.node, "1003", ready=True, answer="auto")
        target = await agent_phone(world.node, "1002", ready=True, answer="auto")
        customer = await customer_phone()
        call = await customer.call(did_uri(world.node), timeout=5)
        agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        return agent, target, customer, call, agent_call

    def transfer_state() -> str | None:
        call = world.node.service.get_call(OP, conn_id)
        return None if call.transfer_id is None else world.node.service.get_transfer(OP, call.transfer_id).state

    # 1003 was made ready first: idle longest, it takes the customer's call (longest idle first)
    agent, target, customer, call, agent_call = world.run(setup())
    try:
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1003").conn_id)
        assert conn_id is not None
        desk = signed_in(world, "1003")
        started = desk.post("/agent/api/attended", json={"target": "1002"})
        assert started.status_code == 200 and started.json()["message"] == "Consulting 1002"
        world.run(until(lambda: transfer_state() == "consulting", what="consulting"))
        assert desk.get("/agent/api/session").json()["snapshot"]["call"]["transfer"]["state"] == "consulting"

        other = signed_in(world, "1001")  # another agent's session: no transfer of its own to finish
        for action in ("attended/complete", "attended/cancel"):
            refused = other.post(f"/agent/api/{action}", json={"conn_id": conn_id, "agent_id": "1003"})
            assert (refused.status_code, refused.json()["error_id"]) == (409, "NO_TRANSFER")
        assert world.on_loop(transfer_state) == "consulting"

        done = desk.post("/agent/api/attended/complete", json={})
        assert done.json()["message"] == "Transfer completed"
        world.run(agent.wait_for(CallEnded, call=agent_call, timeout=5))
        world.run(until(lambda: world.node.service.get_agent(OP, "1002").conn_id == conn_id, what="1002 has it"))
        assert desk.get("/agent/api/session").json()["snapshot"]["call"] is None
        assert not call.ended  # the customer stays, now with 1002
    finally:
        world.run(customer.close())
        for phone in (agent, target):
            world.run(phone.unregister(timeout=5))
            world.run(phone.close())
    world.run(until(lambda: world.node.live_legs == 0, what="legs gone"))


def test_mute_tones_hang_disposition_and_callback_from_the_desk(world: DeskWorld) -> None:
    from callbridge.callcontrol.events import Dispositioned, DomainEvent, RecallScheduled
    from callbridge.phone import DtmfReceived

    seen: list[DomainEvent] = []

    async def setup() -> tuple[Phone, Phone, Any]:
        world.node.events.add_listener(seen.append)
        agent = await agent_phone(world.node, "1003", ready=True, answer="auto")
        customer = await customer_phone()
        call = await customer.call(did_uri(world.node), timeout=5)
        await agent.wait_for(IncomingCall, timeout=5)
        return agent, customer, call

    agent, customer, call = world.run(setup())
    try:
        desk = signed_in(world, "1003")
        conn_id = desk.get("/agent/api/session").json()["snapshot"]["call"]["conn_id"]
        assert desk.post("/agent/api/mute", json={}).json()["message"] == "Microphone has been muted"
        assert desk.get("/agent/api/session").json()["snapshot"]["agent"]["muted"] is True
        assert desk.post("/agent/api/mute", json={}).json()["message"] == "Microphone has been unmuted"
        bad = desk.post("/agent/api/dtmf", json={"tones": "12x"})
        assert (bad.status_code, bad.json()["message"]) == (400, "INVALID PARAMETER: tones")
        assert desk.post("/agent/api/dtmf", json={"tones": "4#"}).json() == {
            "ok": True, "message": "Tones have been sent", "tones": "4#"}
        digits = [world.run(customer.wait_for(DtmfReceived, call=call, timeout=2)).digit for _ in range(2)]
        assert digits == ["4", "#"]
        assert desk.post("/agent/api/hang", json={}).json()["message"] == "Call has been hung up"
        world.run(customer.wait_for(CallEnded, call=call, timeout=3))

        wrong = desk.post("/agent/api/disposition", json={"cod_act": "NOPE", "cod_act_2": "NEW"})
        assert (wrong.status_code, wrong.json()["message"]) == (400, "INVALID PARAMETER: cod_act")
        typed = desk.post("/agent/api/disposition", json={"cod_act": "SALE", "cod_act_2": "NEW", "comments": "ok"})
        assert typed.json() == {"ok": True, "message": "Call has been typed"}
        [disposition] = [e for e in seen if isinstance(e, Dispositioned)]
        assert (disposition.agent, disposition.conn_id, disposition.cod_act) == ("1003", conn_id, "SALE")
        late = desk.post("/agent/api/recall", json={"customer_phone": "3105550777", "date": "20991231235900",
                                                    "type_recall": "manual"})
        assert late.json() == {"ok": True, "message": "Recall has been scheduled"}
        [recall] = [e for e in seen if isinstance(e, RecallScheduled)]
        assert (recall.agent, recall.customer_phone, recall.type_recall) == ("1003", "3105550777", "manual")
    finally:
        world.run(agent.unregister(timeout=5))
        world.run(agent.close())
        world.run(customer.close())


def test_the_live_socket_needs_a_session_and_this_sites_page(world: DeskWorld) -> None:
    import json

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = world.url.replace("http://", "ws://") + "/agent/api/live"
    with connect(url, origin=world.url, open_timeout=5) as ws:  # no cookie: told why, then closed
        assert json.loads(ws.recv(timeout=5)) == {"type": "signed_out", "reason": "your session ended"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    desk = signed_in(world, "1001")
    cookie = f"callbridge_desk={desk.cookies['callbridge_desk']}"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="http://evil.example", additional_headers={"cookie": cookie}, open_timeout=5)
    assert refused.value.response.status_code == 403
    with connect(url, origin=world.url, additional_headers={"cookie": cookie}, open_timeout=5) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert (first["type"], first["agent"]["agent_id"], first["call"]) == ("snapshot", "1001", None)
        assert world.box("agent_display", agent_id="1001", display="hide", button="hungup").status_code == 200
        event = json.loads(ws.recv(timeout=2))
        assert (event["type"], event["event"]["type"], event["event"]["button"]) == (
            "event", "display_changed", "hungup")
        assert json.loads(ws.recv(timeout=2))["agent"]["display"]["hungup"] == "hide"
        desk.post("/agent/signout", json={})
        assert json.loads(ws.recv(timeout=2)) == {"type": "signed_out", "reason": "signed out"}
    world.box("agent_display", agent_id="1001", display="show", button="hungup")
