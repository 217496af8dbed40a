"""The blocking client's CDR listing: `from`/`to`/`limit`/`cursor` as openapi.json names them, aware times as
RFC 3339, and `cdrs()` following `next_cursor` until the last page (httpx.MockTransport)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from callbridge.client import Cdr, NativeClient, Page

CDR = {"conn_id": "c-1", "direction": "inbound", "customer_number": "3105550000", "queue": "support",
       "agents": ["1001", "1002"], "started_at": "2025-01-31T12:00:00.000Z", "answered_at": "2025-01-31T12:00:02.000Z",
       "ended_at": "2025-01-31T12:01:00.000Z", "duration": 60.0, "talk_time": 58.0, "hangup_by": "customer",
       "sip_cause": None, "transfers": 1, "related_conn_id": None,
       "legs": [{"leg_id": "l-1", "role": "customer", "party": "3105550000", "state": "ended",
                 "started_at": "2025-01-31T12:00:00.000Z", "answered_at": "2025-01-31T12:00:02.000Z",
                 "ended_at": "2025-01-31T12:01:00.000Z", "sip_cause": None}]}


def test_cdrs_follow_the_cursor_to_the_last_page() -> None:
    seen: list[dict[str, str]] = []
    pages = {None: (["c-1", "c-2"], "k1"), "k1": (["c-3"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/cdrs"
        params = dict(request.url.params)
        seen.append(params)
        ids, following = pages[params.get("cursor")]
        return httpx.Response(200, json={"items": [{**CDR, "conn_id": i} for i in ids], "next_cursor": following})

    since = datetime(2025, 1, 31, tzinfo=UTC)
    with NativeClient("http://cb.test", token="t", transport=httpx.MockTransport(handler)) as client:
        assert [c.conn_id for c in client.cdrs(since=since, until="2025-02-01T00:00:00Z", page_size=2)] == [
            "c-1", "c-2", "c-3"]
        page = client.list_cdrs(limit=2)
    assert seen[0] == {"from": "2025-01-31T00:00:00+00:00", "to": "2025-02-01T00:00:00Z", "limit": "2"}
    assert seen[1] == {**seen[0], "cursor": "k1"}
    assert isinstance(page, Page) and page.next_cursor == "k1"
    cdr = page.items[0]
    assert isinstance(cdr, Cdr)
    assert (cdr.agents, cdr.duration, cdr.talk_time, cdr.transfers, cdr.legs[0].leg_id) == (
        ("1001", "1002"), 60.0, 58.0, 1, "l-1")


def test_a_time_without_a_zone_is_refused_before_sending() -> None:
    with NativeClient("http://cb.test", token="t",
                      transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client, \
            pytest.raises(ValueError, match="zone"):
        client.list_cdrs(since=datetime(2025, 1, 31))
