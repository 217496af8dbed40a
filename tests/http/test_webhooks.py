"""Signed webhooks against a real receiver on loopback: the receiver verifies the signature over the raw body,
answers 500 first, and gets the same event again after the backoff; order per URL; other operations' events are
not sent; a receiver that never acknowledges is given up after the limit."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from http_world import OP, OTHER_OP, LiveServer, World, validate_against_document
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callbridge.http.webhooks import RetryPolicy, WebhookDispatcher, WebhookTarget, sign, verify_signature

SECRET = "whsec-test-0042"


class Receiver:
    """A webhook receiver as an integrator writes one: verify, then acknowledge (or fail on purpose)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[tuple[bool, dict[str, object]]] = []
        self.arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        raw = await request.body()
        ok = verify_signature(SECRET, request.headers.get("callbridge-signature", ""), raw)
        self.seen.append((ok, json.loads(raw)))
        self.arrived.set()
        if self.failures > 0:
            self.failures -= 1
            return Response("not now", status_code=500)
        return Response(status_code=204 if ok else 401)


def test_signature_scheme() -> None:
    body = b'{"seq":1}'
    header = sign("s3cret", body, 1735689600)
    assert header.startswith("t=1735689600,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("s3cret", header, body, now=1735689600 + 299)
    assert not verify_signature("s3cret", header, body, now=1735689600 + 301)  # too old
    assert not verify_signature("s3cret", header, body + b" ", now=1735689600)  # another body
    assert not verify_signature("other", header, body, now=1735689600)
    assert not verify_signature("s3cret", "v1=abc", body, now=1735689600)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(first_delay=1.0, max_delay=600.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(1, 13)]
    for n, delay in enumerate(delays, start=1):
        base = min(600.0, 2 ** (n - 1))
        assert base * 0.5 <= delay <= base


async def test_signed_delivery_retried_after_a_500_in_order() -> None:
    receiver = Receiver(failures=1)
    async with LiveServer(receiver.app) as hook_server:
        dispatcher = WebhookDispatcher(
            [WebhookTarget(OP, f"{hook_server.url}/hook", SECRET)],
            policy=RetryPolicy(first_delay=0.05, max_delay=0.2, give_up_after=30.0, ack_timeout=5.0))
        world = World(webhooks=dispatcher)
        async with LiveServer(world.app):  # the lifespan starts the delivery task
            world.login("1001")
            world.login("2001", op=OTHER_OP)  # not for this URL
            world.service.agent_display(OP, "1001", "hide", "dial")
            for _ in range(200):
                if sum(ok for ok, _ in receiver.seen) >= 3 and not dispatcher.pending():
                    break
                await asyncio.sleep(0.02)
        assert all(ok for ok, _ in receiver.seen)
        seqs = [event["seq"] for _, event in receiver.seen]
        assert seqs == [1, 1, 2]  # the first answered 500, came again, then the next in order
        assert {event["operation"] for _, event in receiver.seen} == {OP}
        for _, event in receiver.seen:
            validate_against_document({"$ref": "#/components/schemas/Event"}, event)
        assert (dispatcher.stats.delivered, dispatcher.stats.retries, dispatcher.stats.given_up) == (2, 1, 0)
        metrics = world.metrics.render()
        assert 'callbridge_webhook_deliveries_total{result="delivered"} 2' in metrics


async def test_a_receiver_that_never_acknowledges_is_given_up_and_the_next_event_goes() -> None:
    receiver = Receiver(failures=10_000)
    async with LiveServer(receiver.app) as hook_server:
        dispatcher = WebhookDispatcher(
            [WebhookTarget(OP, f"{hook_server.url}/hook", SECRET)],
            policy=RetryPolicy(first_delay=0.02, max_delay=0.05, give_up_after=0.3, ack_timeout=2.0))
        world = World(webhooks=dispatcher)
        await dispatcher.start()
        try:
            world.login("1001")
            world.service.agent_display(OP, "1001", "hide", "dial")
            for _ in range(300):
                if dispatcher.stats.given_up == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            await dispatcher.stop()
        assert dispatcher.stats.given_up == 2 and dispatcher.stats.delivered == 0
        seqs = [event["seq"] for _, event in receiver.seen]
        assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] == 2 and seqs.count(1) > 2


@pytest.mark.parametrize("max_pending", [2])
async def test_pending_events_are_bounded(max_pending: int) -> None:
    dispatcher = WebhookDispatcher([WebhookTarget(OP, "http://127.0.0.1:9/hook", SECRET)], max_pending=max_pending)
    world = World(webhooks=dispatcher)  # never started: everything stays pending
    world.login("1001", "1002", "1003")
    assert dispatcher.pending() == 2 and dispatcher.stats.dropped == 1
