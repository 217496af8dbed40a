"""`callbridge agent ...`: the agentbox verbs from the command line, through :class:`callbridge.client.AgentboxClient`.

    callbridge agent transfer 1002 --agent 1001          blind transfer of agent 1001's call to 1002
    callbridge agent dial 0573001234567 --agent 1001 --customer-name "Ana"
    callbridge agent hang | hold | mute --agent 1001
    callbridge agent status ready --agent 1001           (change_status: ready, logout or an aux state id)
    callbridge agent type 1 7 --agent 1001 --comments "called back"
    callbridge agent hang-type-ready 1 --agent 1001
    callbridge agent dtmf 123# --agent 1001
    callbridge agent display show dial --agent 1001      (agent_display)
    callbridge agent recall 0573001234567 20250131143000 --type auto --agent 1001
    callbridge agent aux-call 0573001234567 --agent 1001

Every command takes ``--url`` (default http://127.0.0.1:8080, or ``$CALLBRIDGE_URL``), ``--token`` (or
``$CALLBRIDGE_TOKEN``; the environment keeps it out of the process list), ``--server`` (the ``wolkvox_server``
header, or ``$CALLBRIDGE_SERVER``) and ``--json``. The request is the one Wolkvox documents (parameters in the query
string, no body); the same commands work against the Wolkvox cloud with ``--url https://wv0042.wolkvox.com``.

Output: the server's message on stdout (and ``conn_id: ...`` when the verb returns one); with ``--json`` one JSON
object instead, ``{"ok": true, "code", "msg", "data"}`` or ``{"ok": false, "exit_code", "code", "error", "msg",
"key"}``. A failure is also one line on stderr, ``error: ...``, never a traceback.

Exit codes (the same for ``callbridge calls`` and ``callbridge events``):

    0  ok
    1  anything else: an answer that is not the API's, a 5xx, 405
    2  usage: a bad or missing flag or argument, or a 400 (the server refused a parameter)
    3  the server cannot be reached: connection refused or reset, a timeout
    4  token: none given, 401, 403 (invalid token, foreign wolkvox_server, concurrency limit, quota)
    5  not found: 404 (no such agent, call or transfer)
    6  conflict or state: 409 (no active call, not logged in, target not available...), 410, 422
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import httpx
import typer

from callbridge.cli.common import (
    DEFAULT_URL,
    JsonOption,
    OneLineCommand,
    OneLineGroup,
    ServerOption,
    TokenOption,
    UrlOption,
    reporting_errors,
    require_token,
)
from callbridge.client import AgentboxClient
from callbridge.client.results import AgentboxResult

# Tests swap the client's transport for an httpx.MockTransport here; None is the real network.
TRANSPORT: httpx.BaseTransport | None = None


def _check_not_empty(value: str) -> str:
    if not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


AgentOption = Annotated[str, typer.Option("--agent", "-a", callback=_check_not_empty, show_default=False,
                                          help="The agent's extension (agent_id).")]


def agentbox_client(url: str, token: str, server: str | None) -> AgentboxClient:
    return AgentboxClient(url, token=token, server=server, transport=TRANSPORT)


def _print_result(result: AgentboxResult, *, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps({"ok": True, "code": result.code, "msg": result.msg, "data": dict(result.data)},
                              ensure_ascii=False))
        return
    typer.echo(result.msg or "OK")
    conn_id = getattr(result, "conn_id", None)
    if conn_id:
        typer.echo(f"conn_id: {conn_id}")


def _run(url: str, token: str | None, server: str | None, json_out: bool,
         verb: Callable[[AgentboxClient], AgentboxResult]) -> None:
    """One verb through the client, then its result or its error."""
    token = require_token(token, json_out=json_out)
    with reporting_errors(url, json_out=json_out), agentbox_client(url, token, server) as box:
        result = verb(box)
    _print_result(result, json_out=json_out)


agent_app = typer.Typer(no_args_is_help=True, add_completion=False, cls=OneLineGroup,
                        help="Act for an agent through the agentbox API (transfer, dial, hang, hold, ...).")


@agent_app.command(cls=OneLineCommand)
def transfer(number: Annotated[str, typer.Argument(help="Number or agent extension to transfer to.")],
             agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
             server: ServerOption = None, json_out: JsonOption = False) -> None:
    """Blind transfer of the agent's current call."""
    _run(url, token, server, json_out, lambda box: box.transfer(agent, number))


@agent_app.command(cls=OneLineCommand)
def dial(number: Annotated[str, typer.Argument(help="The customer's number.")], agent: AgentOption,
         customer_id: Annotated[str | None, typer.Option("--customer-id", show_default=False)] = None,
         customer_name: Annotated[str | None, typer.Option("--customer-name", show_default=False)] = None,
         url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
         json_out: JsonOption = False) -> None:
    """Call a customer from the agent's phone (the agent's phone rings first)."""
    _run(url, token, server, json_out, lambda box: box.dial(agent, number, customer_id=customer_id,
                                                                customer_name=customer_name))


@agent_app.command(cls=OneLineCommand)
def hang(agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
         json_out: JsonOption = False) -> None:
    """Hang up the agent's current call."""
    _run(url, token, server, json_out, lambda box: box.hang(agent))


@agent_app.command(cls=OneLineCommand)
def hold(agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
         json_out: JsonOption = False) -> None:
    """Toggle hold on the agent's current call."""
    _run(url, token, server, json_out, lambda box: box.hold(agent))


@agent_app.command(cls=OneLineCommand)
def mute(agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
         json_out: JsonOption = False) -> None:
    """Toggle the agent's microphone toward the customer."""
    _run(url, token, server, json_out, lambda box: box.mute(agent))


@agent_app.command(cls=OneLineCommand)
def status(state: Annotated[str, typer.Argument(metavar="STATUS", help="ready, logout or an aux state id.")],
           agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
           server: ServerOption = None, json_out: JsonOption = False) -> None:
    """Change the agent's status (change_status)."""
    _run(url, token, server, json_out, lambda box: box.change_status(agent, state))


@agent_app.command(name="type", cls=OneLineCommand)
def type_(cod_act: Annotated[str, typer.Argument(help="Activity code of group 1.")],
          cod_act_2: Annotated[str, typer.Argument(help="Activity code of group 2.")], agent: AgentOption,
          comments: Annotated[str | None, typer.Option("--comments", show_default=False)] = None,
          url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
          json_out: JsonOption = False) -> None:
    """Record the disposition of the agent's last call."""
    _run(url, token, server, json_out, lambda box: box.type(agent, cod_act, cod_act_2, comments=comments))


@agent_app.command(name="hang-type-ready", cls=OneLineCommand)
def hang_type_ready(cod_act: Annotated[str, typer.Argument(help="Activity code of group 1.")], agent: AgentOption,
                    cod_act_2: Annotated[str | None, typer.Option("--cod-act-2", show_default=False)] = None,
                    comments: Annotated[str | None, typer.Option("--comments", show_default=False)] = None,
                    url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
                    json_out: JsonOption = False) -> None:
    """Hang up, record the disposition and set the agent ready."""
    _run(url, token, server, json_out, lambda box: box.hang_type_ready(agent, cod_act, cod_act_2=cod_act_2,
                                                                           comments=comments))


@agent_app.command(cls=OneLineCommand)
def dtmf(tones: Annotated[str, typer.Argument(help="Digits 0-9, *, #, A-D.")], agent: AgentOption,
         url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
         json_out: JsonOption = False) -> None:
    """Send DTMF tones on the agent's current call."""
    _run(url, token, server, json_out, lambda box: box.dtmf(agent, tones))


class DisplayMode(StrEnum):
    show = "show"
    hide = "hide"


class Button(StrEnum):
    hungup = "hungup"
    disposition = "disposition"
    dial = "dial"


class RecallType(StrEnum):
    auto = "auto"
    manual = "manual"


@agent_app.command(cls=OneLineCommand)
def display(show: Annotated[DisplayMode, typer.Argument(metavar="show|hide", show_default=False)],
            button: Annotated[Button, typer.Argument(metavar="hungup|disposition|dial", show_default=False)],
            agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
            server: ServerOption = None, json_out: JsonOption = False) -> None:
    """Show or hide a button of the agent's console (agent_display)."""
    _run(url, token, server, json_out, lambda box: box.agent_display(agent, show.value, button.value))


def _recall_date(value: str) -> str:
    """``YYYYmmddHHiiss`` as the contract writes it, or an ISO 8601 local time turned into it."""
    if len(value) == 14 and value.isdigit():
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither YYYYmmddHHiiss nor an ISO 8601 time") from None
    if when.tzinfo is not None:
        raise typer.BadParameter("give the operation's local time, without a UTC offset")
    return when.strftime("%Y%m%d%H%M%S")


@agent_app.command(cls=OneLineCommand)
def recall(number: Annotated[str, typer.Argument(help="The number to call back.")],
           date: Annotated[str, typer.Argument(callback=_recall_date,
                                               help="When: YYYYmmddHHiiss or ISO 8601, operation's time zone.")],
           agent: AgentOption,
           kind: Annotated[RecallType, typer.Option("--type", show_default=False,
                                                    help="auto or manual (type_recall).")],
           url: UrlOption = DEFAULT_URL, token: TokenOption = None, server: ServerOption = None,
           json_out: JsonOption = False) -> None:
    """Schedule a callback."""
    _run(url, token, server, json_out, lambda box: box.recall(agent, number, date, kind.value))


@agent_app.command(name="aux-call", cls=OneLineCommand)
def aux_call(number: Annotated[str, typer.Argument(help="Another number of the last call's customer.")],
             agent: AgentOption, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
             server: ServerOption = None, json_out: JsonOption = False) -> None:
    """Call the last customer again on another number."""
    _run(url, token, server, json_out, lambda box: box.aux_call(agent, number))
