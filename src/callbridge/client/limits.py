"""How the clients stay within the server's limits: requests in flight per token, and retrying a refusal.

The agentbox contract (and Wolkvox) allows at most 2 requests in flight per token and refuses a third at once with
403 EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2), having done nothing. So the clients:

- hold a semaphore per (server, token) while a request is in flight, shared by every client of this process that
  uses the same token (a thread semaphore for the blocking clients, an asyncio one per event loop for the async
  ones), sized 2 unless configured otherwise;
- retry the refusal, which only happens when other processes use the token too, after an exponential backoff with
  jitter and a bounded number of attempts, letting go of the slot while they wait. No other error is retried: any
  other answer may mean the server acted (a toggle such as hold would flip twice).
"""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

DEFAULT_MAX_IN_FLIGHT = 2
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and delays for the concurrency refusal: delay ``n`` (0-based) is
    ``min(max_delay, base_delay * 2**n)`` scaled by a factor drawn in [0.5, 1.0) (equal jitter), so that clients
    refused together do not come back together."""

    attempts: int = 5  # in all, the first one included
    base_delay: float = 0.25
    max_delay: float = 4.0
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, n: int) -> float:
        """The wait before retry ``n`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(n, 62)) * (0.5 + 0.5 * self.jitter())

    def delays(self) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` of them."""
        for n in range(self.attempts - 1):
            yield self.delay(n)


NO_RETRY = RetryPolicy(attempts=1)

_thread_lock = threading.Lock()
_thread_semaphores: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
_loop_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                            dict[tuple[str, str, int], asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary())


def thread_slots(server: str, token: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore of blocking requests for ``token`` on ``server``."""
    if limit < 1:
        raise ValueError("the limit of requests in flight must be at least 1")
    with _thread_lock:
        return _thread_semaphores.setdefault((server, token, limit), threading.BoundedSemaphore(limit))


def loop_slots(server: str, token: str, limit: int) -> asyncio.Semaphore:
    """The semaphore of async requests for ``token`` on ``server`` in the running event loop."""
    if limit < 1:
        raise ValueError("the limit of requests in flight must be at least 1")
    per_loop = _loop_semaphores.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault((server, token, limit), asyncio.Semaphore(limit))
