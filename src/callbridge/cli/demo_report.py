"""What `callbridge demo` prints besides its step lines: the CDR's table, the `curl` commands of `--keep` and its
live event lines.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from callbridge.cli.demo_world import BUSY_NUMBER, OPERATION, OUTSIDE_NUMBER
from callbridge.client import Event


def _clock(start: float, at: float | None) -> str:
    return "" if at is None else f"+{at - start:.2f} s"


def cdr_table(cdr: Any) -> Table:
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


def curl_commands(base_url: str, token: str, agent: str, *, page_agent: str | None = None) -> list[tuple[str, str]]:
    """(what, command) pairs for trying the API by hand: POST, no body, both headers, the real token and port;
    with `page_agent`, the transfer that brings the call to the agent's page."""

    def box(query: str) -> str:
        return (f"curl -sS -X POST -H 'wolkvox-token: {token}' -H 'wolkvox_server: {OPERATION}' "
                f"'{base_url}/api/v2/agentbox.php?{query}'")

    page = [("transfer to the agent's page (signed in and ready)",
             box(f"api=transfer&agent_id={agent}&customer_phone={page_agent}"))] if page_agent else []
    return [
        ("hold (again to unhold)", box(f"api=hold&agent_id={agent}")),
        *page,
        ("transfer to another agent", box(f"api=transfer&agent_id={agent}&customer_phone=1001")),
        ("transfer to a busy number", box(f"api=transfer&agent_id={agent}&customer_phone={BUSY_NUMBER}")),
        ("transfer to an outside number", box(f"api=transfer&agent_id={agent}&customer_phone={OUTSIDE_NUMBER}")),
        ("hang up", box(f"api=hang&agent_id={agent}")),
        ("agents (native API)", f"curl -sS -H 'Authorization: Bearer {token}' '{base_url}/v2/agents'"),
        ("calls (native API)", f"curl -sS -H 'Authorization: Bearer {token}' '{base_url}/v2/calls?state=all'"),
        ("event stream", f"curl -sSN -H 'Authorization: Bearer {token}' -H 'Accept: application/x-ndjson' "
                         f"'{base_url}/v2/events?after=0'"),
    ]


_EVENT_FIELDS = ("agent_id", "state", "target", "held", "outcome", "sip_cause", "ended_by")


def event_line(event: Event) -> str:
    fields = " ".join(f"{k}={event.data[k]}" for k in _EVENT_FIELDS if event.data.get(k) is not None)
    return f"event {event.seq} {event.type} {fields}"
