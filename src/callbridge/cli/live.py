"""`callbridge calls` and `callbridge events`: watching an operation through the native API
(:class:`callbridge.client.NativeClient`).

    callbridge calls                 a live table of the active calls and of the agents, refreshed every second
    callbridge calls --once          one table, then exit (``--json``: one JSON object ``{"calls": [...],
                                     "agents": [...]}`` as the API returned them)
    callbridge calls cdrs --from T --to T     the call detail records (`callbridge.cli.cdrs`)
    callbridge events                every event from now on, one line each: seq, time, type, data as key=value
    callbridge events --after 0      everything the server still keeps, then live (``--json``: NDJSON, one
                                     event object per line, as ``GET /v2/events`` sends them)

Both take ``--url`` and ``--token`` like ``callbridge agent`` (``$CALLBRIDGE_URL``, ``$CALLBRIDGE_TOKEN``); the native
API is scoped by the token alone, so no ``--server``. ``--count N`` stops after N tables or N events; otherwise they
run until Ctrl-C, which ends them with exit code 0. When stdout is not a terminal, ``calls`` prints one table per
refresh one after the other instead of redrawing.

``events`` first asks the stream for nothing (``wait=0``, ``limit=1``), so that an unreachable server, a bad token,
a bad ``--type`` or an ``--after`` the server no longer keeps end at once with their exit code; then it follows the
stream, which the client resumes from the last seq it printed whenever the connection drops, for as long as it
takes (a server restart), so no event is printed twice or lost.

Exit codes are those of :mod:`callbridge.cli.agent`: 0 ok, 1 other, 2 usage, 3 unreachable, 4 token, 5 not found,
6 conflict or state (410: ``--after`` older than what the server keeps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from callbridge.cli.common import (
    DEFAULT_URL,
    JsonOption,
    OneLineCommand,
    OneLineGroup,
    TokenOption,
    UrlOption,
    reporting_errors,
    require_token,
)
from callbridge.client import Agent, Call, Event, NativeClient
from callbridge.client.native import EVENTS_PATH

# Tests swap the client's transport for an httpx.MockTransport here; None is the real network.
TRANSPORT: httpx.BaseTransport | None = None
# The clock the durations in the tables are counted to (tests fix it).
clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731

live_app = typer.Typer(add_completion=False)
# `callbridge calls` alone is the live table below; its subcommands (`calls cdrs`, in cli/cdrs.py) read the past.
calls_app = typer.Typer(add_completion=False, cls=OneLineGroup, invoke_without_command=True,
                        no_args_is_help=False)


def native_client(url: str, token: str) -> NativeClient:
    return NativeClient(url, token=token, transport=TRANSPORT)


def _duration(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    seconds = max(0, int((now - since).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _text(value: str | None) -> str:
    return "" if value is None else value


def calls_table(calls: Sequence[Call], now: datetime) -> Table:
    table = Table(title=f"Calls ({len(calls)})", title_justify="left")
    for name in ("conn_id", "state", "direction", "customer", "agent", "queue", "transfers", "duration"):
        table.add_column(name, no_wrap=True)
    for call in calls:
        table.add_row(call.conn_id, call.state, _text(call.direction), _text(call.customer_number),
                      _text(call.agent_id), _text(call.queue), str(call.transfers), _duration(call.started_at, now))
    return table


def agents_table(agents: Sequence[Agent], now: datetime) -> Table:
    table = Table(title=f"Agents ({len(agents)})", title_justify="left")
    for name in ("agent", "name", "state", "registered", "call", "flags", "since"):
        table.add_column(name, no_wrap=True)
    for agent in agents:
        state = f"{agent.state} ({agent.aux_state})" if agent.aux_state else agent.state
        registered = {True: "yes", False: "no", None: ""}[agent.registered]
        flags = " ".join(name for name, on in (("hold", agent.on_hold), ("muted", agent.muted)) if on)
        table.add_row(agent.agent_id, _text(agent.name), state, registered, _text(agent.conn_id), flags,
                      _duration(agent.state_since, now))
    return table


def _snapshot(client: NativeClient) -> tuple[list[Call], list[Agent]]:
    return client.list_calls(state="active"), client.list_agents()


def _snapshots(client: NativeClient, count: int, interval: float) -> Iterator[tuple[list[Call], list[Agent]]]:
    """``count`` snapshots (0: for ever), ``interval`` seconds apart."""
    taken = 0
    while True:
        yield _snapshot(client)
        taken += 1
        if count and taken >= count:
            return
        time.sleep(interval)


@calls_app.callback(invoke_without_command=True)
def calls(ctx: typer.Context, url: UrlOption = DEFAULT_URL, token: TokenOption = None, json_out: JsonOption = False,
          once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
          count: Annotated[int, typer.Option("--count", min=0, help="Stop after this many refreshes (0: never).")] = 0,
          interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")] = 1.0,
          ) -> None:
    """A live table of the operation's active calls and its agents (`calls cdrs`: the call detail records)."""
    if ctx.invoked_subcommand is not None:
        return  # the subcommand takes its own --url and --token
    token = require_token(token, json_out=json_out)
    count = 1 if once else count
    console = Console(highlight=False)
    try:
        with reporting_errors(url, json_out=json_out), native_client(url, token) as client:
            snapshots = _snapshots(client, count, interval)
            if json_out or not console.is_terminal:
                for active, agents in snapshots:
                    if json_out:
                        typer.echo(json.dumps({"calls": [dict(c.raw) for c in active],
                                               "agents": [dict(a.raw) for a in agents]}, ensure_ascii=False))
                    else:
                        now = clock()
                        console.print(calls_table(active, now))
                        console.print(agents_table(agents, now))
                return
            with Live(console=console, auto_refresh=False) as live:
                for active, agents in snapshots:
                    now = clock()
                    live.update(Group(calls_table(active, now), agents_table(agents, now)), refresh=True)
    except KeyboardInterrupt:
        return


def _at(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.utcoffset() is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _value(value: Any) -> str:
    """A data value on the event line: plain when that reads back unambiguously, else as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def event_line(event: Event) -> str:
    fields = " ".join(f"{key}={_value(value)}" for key, value in event.data.items())
    return " ".join(part for part in (str(event.seq), _at(event.at) or "-", event.type, fields) if part)


def event_json(event: Event) -> str:
    return json.dumps({"seq": event.seq, "type": event.type, "at": _at(event.at), "operation": event.operation,
                       "data": dict(event.data)}, ensure_ascii=False)


def _probe_params(after: int | None, types: Sequence[str]) -> Mapping[str, str | int | float]:
    params: dict[str, str | int | float] = {"wait": 0, "limit": 1}
    if after is not None:
        params["after"] = after
    if types:
        params["types"] = ",".join(types)
    return params


@live_app.command(cls=OneLineCommand)
def events(url: UrlOption = DEFAULT_URL, token: TokenOption = None, json_out: JsonOption = False,
           after: Annotated[int | None, typer.Option("--after", min=0, show_default=False,
                                                     help="Start after this seq (0: all kept); default: now.")] = None,
           types: Annotated[list[str] | None, typer.Option("--type", show_default=False,
                                                           help="Only this event type (repeatable).")] = None,
           count: Annotated[int, typer.Option("--count", min=0, help="Stop after this many events (0: never).")] = 0,
           ) -> None:
    """Tail the operation's event stream, one line per event."""
    token = require_token(token, json_out=json_out)
    wanted = [t for t in types or [] if t]
    printed = 0
    try:
        with reporting_errors(url, json_out=json_out), native_client(url, token) as client:
            client.request("GET", EVENTS_PATH, params=_probe_params(after, wanted))
            if count == 0 or printed < count:
                for event in client.events(after=after, types=wanted or None):
                    typer.echo(event_json(event) if json_out else event_line(event))
                    printed += 1
                    if count and printed >= count:
                        break
    except KeyboardInterrupt:
        return
