"""`callbridge calls cdrs`: the operation's call detail records, as `GET /v2/cdrs` lists them, every page.

    callbridge calls cdrs --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z
    callbridge calls cdrs --from ... --to ... --json          one CDR object per line (NDJSON), as the API sent it
    callbridge calls cdrs --from ... --to ... --limit 50      at most 50 CDRs, then stop

The range is on `started_at`, ``--from`` inclusive and ``--to`` exclusive, RFC 3339 with a zone (``Z`` or
``±hh:mm``), checked by the server exactly as for `GET /v2/cdrs` (a malformed one: exit 2, ``INVALID PARAMETER:
from``). CDRs come oldest first; the command follows each page's ``next_cursor`` (`NativeClient.cdrs`) until the
last page, or until ``--limit`` CDRs were printed, so every CDR of the range is printed once even while new calls
end. ``--page-size`` is the API's ``limit`` per request (1-1000, 100 by default). Without ``--json`` the CDRs are
one table, printed once the last page came.

``--url`` and ``--token`` as for `callbridge calls` (``$CALLBRIDGE_URL``, ``$CALLBRIDGE_TOKEN``), after ``cdrs`` or
before it (``callbridge calls --url ... cdrs ...``); the token names the operation. Exit codes are those of
:mod:`callbridge.cli.agent`: 0 ok, 2 a bad flag or parameter, 3 unreachable, 4 the token, 1 anything else.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

try:  # Typer >= 0.22 carries its own copy of Click (as cli/root.py)
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover
    from click.core import ParameterSource  # type: ignore[assignment]

from callbridge.cli.common import (
    DEFAULT_URL,
    JsonOption,
    OneLineCommand,
    TokenOption,
    UrlOption,
    reporting_errors,
    require_token,
)
from callbridge.cli.live import calls_app, native_client
from callbridge.client import Cdr

MAX_PAGE_SIZE = 1000  # the API's largest `limit` (http/paging.py)

FromOption = Annotated[str, typer.Option("--from", show_default=False,
                                         help="Calls started at or after this RFC 3339 time (2026-12-01T00:00:00Z).")]
ToOption = Annotated[str, typer.Option("--to", show_default=False,
                                       help="Calls started before this RFC 3339 time.")]
LimitOption = Annotated[int, typer.Option("--limit", min=0, help="Print at most this many CDRs (0: all of the range).")]
PageSizeOption = Annotated[int, typer.Option("--page-size", min=1, max=MAX_PAGE_SIZE,
                                             help="CDRs per request (the API's limit).")]


def _time(when: datetime | None) -> str:
    return "" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def cdrs_table(records: Sequence[Cdr]) -> Table:
    table = Table(title=f"CDRs ({len(records)})", title_justify="left")
    for name in ("conn_id", "started", "direction", "customer", "queue", "agents", "transfers", "duration", "talk",
                 "hung up by", "SIP"):
        table.add_column(name, no_wrap=True)
    for cdr in records:
        table.add_row(cdr.conn_id, _time(cdr.started_at), cdr.direction or "", cdr.customer_number or "",
                      cdr.queue or "", ", ".join(cdr.agents), str(cdr.transfers), f"{cdr.duration:.1f} s",
                      f"{cdr.talk_time:.1f} s",
                      (cdr.hangup_by or "") + (f" ({cdr.end_reason})" if cdr.end_reason else ""),
                      "" if cdr.sip_cause is None else str(cdr.sip_cause))
    return table


def _capped(records: Iterable[Cdr], limit: int) -> Iterator[Cdr]:
    """The first `limit` records (all when 0), asking for no page beyond the one that holds the last."""
    return iter(records) if limit == 0 else itertools.islice(records, limit)


def _from_group(ctx: typer.Context, name: str, value: str | None) -> str | None:
    """`callbridge calls --url X cdrs ...`: the group's flag when typed there and not after `cdrs`."""
    parent = ctx.parent
    if (parent is not None and ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE
            and parent.get_parameter_source(name) is ParameterSource.COMMANDLINE):
        inherited: str | None = parent.params[name]
        return inherited
    return value


@calls_app.command("cdrs", cls=OneLineCommand)
def cdrs(ctx: typer.Context, since: FromOption, until: ToOption, url: UrlOption = DEFAULT_URL,
         token: TokenOption = None, json_out: JsonOption = False, limit: LimitOption = 0,
         page_size: PageSizeOption = 100) -> None:
    """The operation's call detail records started in [--from, --to), oldest first, every page."""
    url = _from_group(ctx, "url", url) or DEFAULT_URL
    token = require_token(_from_group(ctx, "token", token), json_out=json_out)
    with reporting_errors(url, json_out=json_out), native_client(url, token) as client:
        # a page no bigger than what is wanted: --limit 5 asks for 5, not 100
        size = min(page_size, limit) if limit else page_size
        records = _capped(client.cdrs(since=since, until=until, page_size=size), limit)
        if json_out:
            for cdr in records:
                typer.echo(json.dumps(dict(cdr.raw), ensure_ascii=False))
            return
        Console(highlight=False).print(cdrs_table(list(records)))
