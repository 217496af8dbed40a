"""The clients' limits: never more than two requests in flight per token, the concurrency refusal retried with
exponential backoff and jitter, a bounded number of times, and nothing else retried."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import httpx
import pytest

from callbridge.client import (
    AgentboxClient,
    AsyncAgentboxClient,
    AsyncNativeClient,
    ConcurrencyLimit,
    NoActiveCall,
    RetryPolicy,
)
from callbridge.http import contract

OK = contract.render(contract.envelope(200, "Call has been hung up"))
REFUSED = contract.concurrency_limit(2).body()


class AsyncCounter:
    """An async transport handler that holds each request for a while and counts how many overlap."""

    def __init__(self, hold: float = 0.05) -> None:
        self.hold = hold
        self.now = 0
        self.max_seen = 0
        self.total = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.total += 1
        self.max_seen = max(self.max_seen, self.now)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.now -= 1
        return httpx.Response(200, content=OK)


async def test_five_concurrent_calls_never_have_more_than_two_in_flight() -> None:
    counter = AsyncCounter()
    async with AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-a",
                                   transport=httpx.MockTransport(counter)) as box:
        results = await asyncio.gather(*(box.hang(str(1000 + i)) for i in range(5)))
    assert [r.msg for r in results] == ["Call has been hung up"] * 5
    assert counter.total == 5
    assert counter.max_seen == 2


async def test_the_limit_is_per_token_and_shared_between_clients_of_one_token() -> None:
    counter = AsyncCounter()
    transport = httpx.MockTransport(counter)
    a1 = AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-shared", transport=transport)
    a2 = AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-shared", transport=transport)
    await asyncio.gather(*(c.hang("1001") for c in (a1, a2, a1, a2, a1, a2)))
    assert counter.max_seen == 2
    other = AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-other", transport=transport)
    counter.max_seen = 0
    await asyncio.gather(a1.hang("1"), a1.hang("2"), other.hang("3"), other.hang("4"))
    assert counter.max_seen == 4  # two per token
    for c in (a1, a2, other):
        await c.aclose()


async def test_the_limit_is_configurable() -> None:
    counter = AsyncCounter()
    async with AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-c", max_in_flight=3,
                                   transport=httpx.MockTransport(counter)) as box:
        await asyncio.gather(*(box.hang("1001") for _ in range(7)))
    assert counter.max_seen == 3
    with pytest.raises(ValueError):
        AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-c", max_in_flight=0)


async def test_the_native_client_shares_the_limit() -> None:
    counter = AsyncCounter()

    async def handler(request: httpx.Request) -> httpx.Response:
        await counter(request)
        return httpx.Response(200, json={"items": []})

    transport = httpx.MockTransport(handler)
    box = AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-n", transport=httpx.MockTransport(counter))
    native = AsyncNativeClient("http://127.0.0.1:8080", token="tok-n", transport=transport)
    await asyncio.gather(box.hang("1"), native.list_agents(), box.hang("2"), native.list_calls(), native.list_agents())
    assert counter.max_seen == 2
    await box.aclose()
    await native.aclose()


def test_blocking_client_in_threads_never_has_more_than_two_in_flight() -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, content=OK)

    with AgentboxClient("http://127.0.0.1:8080", token="tok-threads", transport=httpx.MockTransport(handler)) as box:
        threads = [threading.Thread(target=box.hang, args=("1001",)) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert state["max"] == 2


def test_backoff_delays_grow_exponentially_with_jitter_and_are_bounded() -> None:
    top = RetryPolicy(attempts=6, base_delay=0.25, max_delay=2.0, jitter=lambda: 0.999999)
    assert [round(d, 3) for d in top.delays()] == [0.25, 0.5, 1.0, 2.0, 2.0]
    bottom = RetryPolicy(attempts=6, base_delay=0.25, max_delay=2.0, jitter=lambda: 0.0)
    assert list(bottom.delays()) == [0.125, 0.25, 0.5, 1.0, 1.0]
    assert list(RetryPolicy(attempts=1).delays()) == []
    default = RetryPolicy()
    assert default.attempts == 5
    assert all(0.5 * min(4.0, 0.25 * 2**n) <= d <= min(4.0, 0.25 * 2**n)
               for n, d in enumerate(default.delays()))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_refusals_are_retried_with_backoff_then_raise() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return httpx.Response(403, content=REFUSED)

    policy = RetryPolicy(attempts=4, base_delay=0.02, max_delay=1.0, jitter=lambda: 0.0)
    async with AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-r", retry=policy,
                                   transport=httpx.MockTransport(handler)) as box:
        with pytest.raises(ConcurrencyLimit) as caught:
            await box.hang("1001")
    assert caught.value.limit == 2
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # waits of 0.01, 0.02, 0.04 s (half of 0.02 * 2**n at zero jitter), each at least that long, growing
    for gap, floor in zip(gaps, (0.01, 0.02, 0.04), strict=True):
        assert gap >= floor * 0.95
    assert gaps[2] > gaps[0]


def test_a_refusal_then_success_answers_the_success() -> None:
    answers = [httpx.Response(403, content=REFUSED), httpx.Response(403, content=REFUSED),
               httpx.Response(200, content=OK)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    with AgentboxClient("http://127.0.0.1:8080", token="tok-s", transport=httpx.MockTransport(handler),
                        retry=RetryPolicy(attempts=5, base_delay=0.001)) as box:
        assert box.hang("1001").msg == "Call has been hung up"
    assert len(seen) == 3
    assert len({str(r.url) for r in seen}) == 1  # the same request each time


def test_other_errors_are_not_retried() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(409, content=contract.error("NO_ACTIVE_CALL").body())

    with AgentboxClient("http://127.0.0.1:8080", token="tok-o", transport=httpx.MockTransport(handler),
                        retry=RetryPolicy(attempts=5, base_delay=0.001)) as box, pytest.raises(NoActiveCall):
        box.hold("1001")
    assert len(seen) == 1


async def test_a_waiting_retry_lets_go_of_its_slot() -> None:
    # One request is refused twice and backs off (0.1 s, then 0.2 s). While it waits, the other four must still
    # get both slots: were the slot held during the backoff, they would run one at a time.
    refusals = {"left": 2}
    counter = AsyncCounter(hold=0.02)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["agent_id"] == "9":
            if refusals["left"]:
                refusals["left"] -= 1
                return httpx.Response(403, content=REFUSED)
            return httpx.Response(200, content=OK)
        return await counter(request)

    policy = RetryPolicy(attempts=5, base_delay=0.2, jitter=lambda: 0.0)
    async with AsyncAgentboxClient("http://127.0.0.1:8080", token="tok-w", retry=policy,
                                   transport=httpx.MockTransport(handler)) as box:
        slow = asyncio.ensure_future(box.hang("9"))
        await asyncio.sleep(0.01)  # the slow one has been refused and is backing off
        assert refusals["left"] == 1
        await asyncio.gather(*(box.hang("1") for _ in range(4)))
        assert not slow.done()  # the others finished during its backoff
        assert (await slow).msg == "Call has been hung up"
    assert (counter.total, counter.max_seen) == (4, 2)
