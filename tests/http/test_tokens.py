"""Tokens (callbridge.http.auth): lookup by hash, revocation, the `wolkvox_server` check, two requests in flight
per token (the third refused at once, having done nothing), and the daily quota that restarts at midnight in the
operation's zone."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from http_world import BEARER, OP, QUOTA_TOKEN, TOKEN, World, assert_envelope, box

from callbridge.http import contract
from callbridge.http.auth import _HASH_CACHE_SIZE, Refused, TokenGate, hash_token, server_names_operation


def test_tokens_are_looked_up_by_their_sha256_hex() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_gate_refusals_in_order() -> None:
    world = World()
    gate = TokenGate(world.directory)
    for token, server, key in ((None, None, "TOKEN_MISSING"), ("", OP, "TOKEN_MISSING"),
                               ("nope", None, "INVALID_TOKEN"), (TOKEN, "0077", "INVALID_TOKEN"),
                               (TOKEN, "42", "INVALID_TOKEN")):
        with pytest.raises(Refused) as info:
            gate.authenticate(token, server)
        assert info.value.key == key
    principal = gate.authenticate(TOKEN, "0042")
    assert (principal.operation_id, principal.concurrency_limit) == (OP, 2)
    first, second = gate.admit(principal), gate.admit(principal)
    with pytest.raises(Refused) as info:
        gate.admit(principal)
    assert (info.value.key, info.value.limit) == ("CONCURRENCY_LIMIT", 2)
    first.release()
    first.release()  # idempotent: a slot is given back once
    assert gate.in_flight(principal.token_hash) == 1
    second.release()
    assert gate.in_flight(principal.token_hash) == 0


def test_a_token_seen_before_is_still_looked_up_each_time_so_revocation_applies_at_once() -> None:
    world = World()
    gate = TokenGate(world.directory)
    assert gate.authenticate(TOKEN).token_id == "t1"
    assert gate.authenticate(f"  {TOKEN} ").token_hash == hash_token(TOKEN)  # the stripped token's hash
    world.directory.tokens[hash_token(TOKEN)] = dataclasses.replace(world.directory.tokens[hash_token(TOKEN)],
                                                                    revoked=True)
    with pytest.raises(Refused) as info:
        gate.authenticate(TOKEN)
    assert info.value.key == "INVALID_TOKEN"


def test_many_unknown_tokens_neither_grow_the_hash_cache_without_bound_nor_change_the_answers() -> None:
    world = World()
    gate = TokenGate(world.directory)
    for i in range(3 * _HASH_CACHE_SIZE):
        with pytest.raises(Refused):
            gate.authenticate(f"unknown-{i}")
        assert len(gate._hashes) <= _HASH_CACHE_SIZE
    assert gate.authenticate(TOKEN).token_id == "t1"


def test_server_header_forms() -> None:
    assert server_names_operation("0042", "0042")
    assert server_names_operation("WV0042.wolkvox.com", "0042")
    assert not server_names_operation("wv0042.wolkvox.com.evil.test", "0042")
    assert not server_names_operation("042", "0042")


def test_daily_quota_restarts_at_midnight_in_the_operations_time_zone() -> None:
    zone = ZoneInfo("America/Bogota")
    now = [datetime(2026, 3, 1, 23, 59, 0, tzinfo=zone).timestamp()]
    world = World()
    gate = TokenGate(world.directory, clock=lambda: now[0])
    principal = gate.authenticate(QUOTA_TOKEN)
    for _ in range(3):
        gate.admit(principal).release()
    with pytest.raises(Refused) as info:
        gate.admit(principal)
    assert info.value.key == "TOKEN_LIMIT_EXCEEDED"
    assert gate.used_today(principal) == 3  # the refused request was not counted
    now[0] += 59  # 23:59:59 in Bogotá, already the next day in UTC: still refused
    with pytest.raises(Refused):
        gate.admit(principal)
    now[0] += 1  # local midnight
    gate.admit(principal).release()
    assert gate.used_today(principal) == 1


async def test_quota_over_http_and_concurrency_wins_over_quota() -> None:
    world = World()
    world.login("1001")
    world.connected_call("1001")
    headers = {"wolkvox-token": QUOTA_TOKEN}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        world.signalling.answers["hold"] = "manual"
        world.signalling.answers["unhold"] = "manual"
        first = asyncio.create_task(box(client, "hold", headers=headers, agent_id="1001"))
        second = asyncio.create_task(box(client, "agent_display", headers=headers, agent_id="1001",
                                         display="show", button="dial"))
        assert_envelope(await second, 200, None, "Display has been updated")
        third = asyncio.create_task(box(client, "agent_display", headers=headers, agent_id="1002",
                                        display="show", button="dial"))
        assert_envelope(await third, 200, None, "Display has been updated")
        # quota used up (3) and one request in flight: the quota answers
        r = contract.error("TOKEN_LIMIT_EXCEEDED")
        assert_envelope(await box(client, "hang", headers=headers, agent_id="1001"), r.status, r.error, r.msg)
        native = await client.get("/v2/agents", headers={"authorization": f"Bearer {QUOTA_TOKEN}"})
        assert native.status_code == 403 and native.json()["error"] == "TOKEN_LIMIT_EXCEEDED"
        (action_id,) = world.signalling.unanswered
        world.signalling.answer(action_id)
        assert_envelope(await first, 200, None, "Call has been put on hold")


async def test_three_in_parallel_on_one_token_the_third_is_refused_and_does_nothing(
        client: httpx.AsyncClient, world: World) -> None:
    world.login("1001", "1002", "1003")
    world.connected_call("1001")
    world.connected_call("1002")
    world.signalling.answers["hold"] = "manual"
    first = asyncio.create_task(box(client, "hold", agent_id="1001"))
    second = asyncio.create_task(box(client, "hold", agent_id="1002"))
    for _ in range(50):
        if len(world.signalling.unanswered) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(world.signalling.unanswered) == 2
    before = world.footprint()
    state_before = world.service.get_agent(OP, "1003").state
    r = contract.concurrency_limit(2)
    third = await box(client, "change_status", agent_id="1003", status="2")
    assert_envelope(third, 403, "FORBIDDEN", "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)")
    assert r.msg == "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)"
    native = await client.get("/v2/agents", headers=BEARER)
    assert native.status_code == 403 and native.json()["error"] == "CONCURRENCY_LIMIT"
    assert world.footprint() == before
    assert world.service.get_agent(OP, "1003").state == state_before == "ready"
    for action_id in list(world.signalling.unanswered):
        world.signalling.answer(action_id)
    assert_envelope(await first, 200, None, "Call has been put on hold")
    assert_envelope(await second, 200, None, "Call has been put on hold")
    assert_envelope(await box(client, "change_status", agent_id="1003", status="2"), 200, None,
                    "Agent status has been changed to 2")
