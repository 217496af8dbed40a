"""The installed `callbridge` command, as subprocesses, against a live node on loopback (tests/integration's
agentbox world: SQLite, SIP, uvicorn, agents as `callbridge.phone`s, a customer behind the trunk):

- `callbridge agent transfer|hold|hang|status ... --agent 1001 --url ... --token ... --server 0042` moving a real
  call, with their exact output and exit codes, successes and refusals;
- `callbridge calls --once --json` and `callbridge events --count N --json` against what the API itself answers;
- `callbridge admin` on the node's own SQLite file while it runs;
- the root command's bad input (an unknown command, a bad flag) and `callbridge serve` on an address in use: one
  line on stderr, never a traceback or a framed box.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from agentbox_world import AUX, OP, AgentboxNode, until

from callbridge.phone import CallEnded, Held, IncomingCall, Resumed

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

_SCRIPT = Path(sys.executable).parent / "callbridge"
CALLBRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "callbridge"]


async def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """`callbridge ARGS` in a subprocess (without any CALLBRIDGE_* variable of ours): exit code, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(*CALLBRIDGE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def target(world: AgentboxNode, token: str | None = None) -> list[str]:
    return ["--url", world.http.url, "--token", token or world.tokens[OP][0], "--server", OP]


async def native(world: AgentboxNode, path: str, **params: Any) -> Any:
    answer = await world.client.get(path, params=params,
                                    headers={"Authorization": f"Bearer {world.tokens[OP][1]}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_agent_commands_move_a_real_call(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto", ready=False)
        other = await world.agent("1002", answer="auto", ready=False)
        to = target(world)

        assert await cli("agent", "status", "ready", "--agent", "1001", *to) == (
            0, "Agent status has been changed to ready\n", "")
        assert world.state("1001") == "ready"
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        assert await cli("agent", "status", "ready", "--agent", "1002", *to) == (
            0, "Agent status has been changed to ready\n", "")

        assert await cli("agent", "hold", "--agent", "1001", *to) == (0, "Call has been put on hold\n", "")
        assert (await customer.wait_for(Held, call=call, timeout=2)).direction == "sendonly"
        assert await cli("agent", "hold", "--agent", "1001", *to, "--json") == (
            0, '{"ok": true, "code": 200, "msg": "Call has been taken off hold", "data": {}}\n', "")
        assert (await customer.wait_for(Resumed, call=call, timeout=2)).direction == "sendrecv"

        assert await cli("agent", "transfer", "1003", "--agent", "1001", *to) == (
            6, "", "error: 409 CONFLICT: TRANSFER TARGET IS NOT AVAILABLE\n")
        assert await cli("agent", "transfer", "1002", "--agent", "1001", *to) == (
            0, f"Call has been transfer to 1002 number\nconn_id: {conn_id}\n", "")
        other_call = (await other.wait_for(IncomingCall, timeout=5)).call
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: world.service.get_agent(OP, "1002").conn_id == conn_id, what="1002 on the call")

        assert await cli("agent", "hang", "--agent", "1001", *to) == (
            6, "", "error: 409 CONFLICT: AGENT HAS NO ACTIVE CALL\n")
        assert await cli("agent", "hang", "--agent", "1002", *to) == (0, "Call has been hung up\n", "")
        assert (await customer.wait_for(CallEnded, call=call, timeout=5)).by == "remote"
        await other.wait_for(CallEnded, call=other_call, timeout=5)
        assert world.service.get_call(OP, conn_id).state == "ended"

        assert await cli("agent", "hang", "--agent", "1002", *to, "--json") == (
            6, '{"ok": false, "exit_code": 6, "code": 409, "error": "CONFLICT", "msg": "AGENT HAS NO ACTIVE CALL", '
               '"key": "NO_ACTIVE_CALL"}\n', "error: 409 CONFLICT: AGENT HAS NO ACTIVE CALL\n")
        assert await cli("agent", "hold", "--agent", "9999", *to) == (
            5, "", "error: 404 NOT FOUND: AGENT DOES NOT EXIST\n")
        assert await cli("agent", "status", "ready", "--agent", "1003", *to) == (
            6, "", "error: 409 CONFLICT: AGENT PHONE IS NOT REGISTERED\n")
        assert await cli("agent", "status", "9", "--agent", "1001", *to) == (
            2, "", "error: 400 BAD REQUEST: INVALID PARAMETER: status\n")
        assert await cli("agent", "hold", "--agent", "1001", *target(world, "not-a-token")) == (
            4, "", "error: 403 FORBIDDEN: PLEASE VALIDATE TOKEN\n")
        assert await cli("agent", "hold", "--agent", "1001", "--url", world.http.url, "--token",
                         world.tokens[OP][0], "--server", "0077") == (
            4, "", "error: 403 FORBIDDEN: PLEASE VALIDATE TOKEN\n")
        assert await cli("agent", "hold", "--agent", "1001", "--url", world.http.url) == (
            4, "", "error: no token: pass --token or set CALLBRIDGE_TOKEN\n")
        with socket.socket() as closed:  # a port nobody listens on
            closed.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
            code, out, err = await cli("agent", "hold", "--agent", "1001", "--url", dead, "--token", "x")
        assert (code, out, err) == (3, "", f"error: cannot reach {dead}: [Errno 111] Connection refused\n")
        assert world.state("1001") == "ready" and world.state("1002") == "ready"


async def test_calls_and_events_as_json(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        _customer, call, agent_call = await world.talking(agent)
        to = ["--url", world.http.url, "--token", world.tokens[OP][0]]

        code, out, err = await cli("calls", "--once", "--json", *to)
        assert (code, err) == (0, "")
        listed = json.loads(out)
        assert list(listed) == ["calls", "agents"] and out.count("\n") == 1
        assert listed["calls"] == (await native(world, "/v2/calls", state="active"))["items"]
        assert listed["agents"] == (await native(world, "/v2/agents"))["items"]
        assert [(c["conn_id"], c["state"], c["agent_id"]) for c in listed["calls"]] == [
            (world.conn_id(), "connected", "1001")]

        # what the server keeps, from the first event on
        kept = [json.loads(e.line) for e in world.node.events.since(OP, 0)]
        code, out, err = await cli("events", "--after", "0", "--count", str(len(kept)), "--json", *to)
        assert (code, err) == (0, "")
        assert [json.loads(line) for line in out.splitlines()] == kept

        # live: the command is waiting when the events happen
        last = world.node.events.last_seq(OP)
        tail = asyncio.create_task(cli("events", "--after", str(last), "--count", "3", "--json", *to))
        await asyncio.sleep(1.0)
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        code, out, err = await tail
        assert (code, err) == (0, "")
        printed = [json.loads(line) for line in out.splitlines()]
        assert [e["seq"] for e in printed] == [last + 1, last + 2, last + 3]
        assert printed == [json.loads(e.line) for e in world.node.events.since(OP, last)][:3]
        assert printed[0]["type"] == "call.ended" or "call.ended" in [e["type"] for e in printed]

        code, out, err = await cli("events", "--after", "0", "--type", "call.frob", "--count", "1", *to)
        assert (code, out) == (2, "")
        assert err.startswith("error: 400 ") and err.count("\n") == 1


async def test_admin_on_the_running_node_database(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        await world.agent("1001", answer="auto", ready=False)
        db = ["--database-url", f"sqlite:///{tmp_path / 'callbridge.db'}"]
        code, out, err = await cli("admin", *db, "agent", "list", OP, "--json")
        assert (code, err) == (0, "")
        assert [(a["extension"], a["name"]) for a in json.loads(out)] == [
            ("1001", "Agent 1001"), ("1002", "Agent 1002"), ("1003", "Agent 1003")]

        code, out, err = await cli("admin", *db, "token", "create", OP, "--label", "cli", "--json")
        assert (code, err) == (0, "")
        made = json.loads(out)
        assert made["operation_id"] == OP
        # The node serves its directory from memory and sees administrators' changes at its next poll
        # (test_a_revoked_token_is_refused_without_a_restart); reloading here spares this test the wait.
        await world.node.storage.directory.reload()
        assert await cli("agent", "status", AUX, "--agent", "1001", *target(world, made["token"])) == (
            0, f"Agent status has been changed to {AUX}\n", "")
        assert world.state("1001") == f"aux:{AUX}"

        code, out, err = await cli("admin", *db, "token", "revoke", made["id"])
        assert (code, err) == (0, "") and made["id"] in out
        await world.node.storage.directory.reload()
        assert await cli("agent", "status", "ready", "--agent", "1001", *target(world, made["token"])) == (
            4, "", "error: 403 FORBIDDEN: PLEASE VALIDATE TOKEN\n")
        assert world.state("1001") == f"aux:{AUX}"

        code, out, err = await cli("admin", *db, "agent", "create", OP, "12ab", "--name", "X", "--password",
                                   "longenough")
        assert (code, out) == (1, "") and err.startswith("error: ") and err.count("\n") == 1


async def display_status(world: AgentboxNode, token: str) -> int:
    """The HTTP status of a harmless agentbox request (agent_display) made with `token`."""
    return (await world.box("agent_display", token=token, agent_id="1001", display="hide", button="dial")).status_code


async def until_status(world: AgentboxNode, token: str, status: int, within: float) -> float:
    """Wait (bounded) until a request with `token` answers `status`; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (answered := await display_status(world, token)) != status:
        assert loop.time() - start < within, f"still {answered} after {within} s, expected {status}"
        await asyncio.sleep(0.05)
    return loop.time() - start


async def test_a_revoked_token_is_refused_without_a_restart(tmp_path: Path) -> None:
    # Nothing here reloads the directory by hand: the node's own poll (directory_poll_seconds, default 2 s) must
    # bring `callbridge admin`'s changes in, a created token accepted and a revoked one refused.
    async with AgentboxNode.start(tmp_path) as world:
        poll = world.node.settings.directory_poll_seconds
        assert poll == 2.0
        db = ["--database-url", f"sqlite:///{tmp_path / 'callbridge.db'}"]
        reloads = world.node.storage.directory.reloads

        code, out, err = await cli("admin", *db, "token", "create", OP, "--label", "late", "--json")
        assert (code, err) == (0, "")
        made = json.loads(out)
        await until_status(world, made["token"], 200, within=poll + 5)
        assert await cli("agent", "display", "hide", "dial", "--agent", "1001", *target(world, made["token"])) == (
            0, "Display has been updated\n", "")

        _code, out, _ = await cli("admin", *db, "token", "list", OP, "--json")
        first = json.loads(out)[0]["id"]
        assert await display_status(world, world.tokens[OP][0]) == 200
        assert (await cli("admin", *db, "token", "revoke", first))[0] == 0
        await until_status(world, world.tokens[OP][0], 403, within=poll + 5)
        assert await cli("agent", "display", "hide", "dial", "--agent", "1001", *target(world)) == (
            4, "", "error: 403 FORBIDDEN: PLEASE VALIDATE TOKEN\n")
        assert await display_status(world, made["token"]) == 200  # the other token is untouched
        # One reload per change, not one per poll: the counter said when.
        assert world.node.storage.directory.reloads == reloads + 2


async def test_an_agent_created_while_the_node_runs_registers_and_takes_a_call(tmp_path: Path) -> None:
    # The registrar and the queue's routing (its index of idle agents) both see the new agent after the poll.
    async with AgentboxNode.start(tmp_path) as world:
        db = ["--database-url", f"sqlite:///{tmp_path / 'callbridge.db'}"]
        code, _out, err = await cli("admin", *db, "agent", "create", OP, "1004", "--name", "Late", "--password",
                                    "secret-1004", "--queue", "support")
        assert (code, err) == (0, "")
        directory = world.node.storage.directory
        await until(lambda: directory.get_agent(OP, "1004") is not None,
                    timeout=world.node.settings.directory_poll_seconds + 5, what="1004 in the directory")
        agent = await world.agent("1004", answer="auto")  # registered with digest (the registrar knows it), ready
        _customer, _call, _agent_call = await world.talking(agent, "1004")
        assert world.service.get_agent(OP, "1004").state == "on_call"


@pytest.mark.parametrize("argv", [["frob"], ["--bogus"], ["serve", "--sip-port", "x"], ["admin", "frob"],
                                  ["agent", "hold"], ["demo", "--bogus"]])
async def test_bad_input_at_any_level_is_one_line_and_exit_2(argv: list[str]) -> None:
    code, out, err = await cli(*argv)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.endswith(" --help')\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "\u256d" not in err  # no framed box


async def test_the_exact_lines() -> None:
    assert await cli("frob") == (2, "", "error: No such command 'frob'. (see 'callbridge --help')\n")
    assert await cli("serve", "--sip-port", "x") == (
        2, "", "error: Invalid value for '--sip-port': Input should be a valid integer, unable to parse string as "
               "an integer (see 'callbridge serve --help')\n")
    assert await cli("admin", "frob") == (2, "", "error: No such command 'frob'. (see 'callbridge admin --help')\n")


async def test_serve_on_an_address_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        http_port = int(world.http.url.rsplit(":", 1)[1])
        sip_host, sip_port = world.node.sip_address
        other_db = f"sqlite:///{tmp_path / 'other.db'}"
        assert (await cli("admin", "--database-url", other_db, "operation", "list", "--json"))[0] == 0  # migrated

        code, out, err = await cli("serve", "--http-port", str(http_port), "--sip-port", "0",
                                   "--database-url", other_db, cwd=tmp_path)
        assert (code, out, err) == (1, "", f"error: cannot start: HTTP 127.0.0.1:{http_port}: Address already in use\n")

        code, out, err = await cli("serve", "--http-port", "0", "--sip-port", str(sip_port),
                                   "--database-url", other_db, cwd=tmp_path)
        lines = err.splitlines()
        assert (code, out) == (1, "")
        assert lines[-1] == f"error: cannot start: SIP {sip_host}:{sip_port}: Address already in use"
        assert "Traceback" not in err and "╭" not in err
        assert all(" INFO " in line for line in lines[:-1]), err  # at most the migrations' log lines before it
        assert (await world.client.get("/health")).status_code == 200
