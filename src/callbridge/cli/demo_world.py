"""What `callbridge demo` starts besides the node: the demo operation (`demo_operation`), the outside world behind
its trunk (`Gateway`), the operation's event stream kept in order for the steps (`EventWatch`), the HTTP server
the demo owns, and the checks the steps make (`within`, `expect`, `has_fields`: a failed one raises `StepFailed`).
The scenario is in `callbridge.cli.demo_steps`; the command in `callbridge.cli.demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn

from callbridge.client import AsyncNativeClient, Event
from callbridge.phone import Call, IncomingCall, Phone

T = TypeVar("T")

OPERATION = "0042"
DOMAIN = "0042.demo.callbridge"
AGENTS = ("1001", "1002", "1003")
WEB_AGENT = "1004"  # no demo phone: free for the agent's page in a browser (`--keep` prints its sign-in)
SUPERVISOR = ("supervisor", "demo-board-0042")
READY_ORDER = ("1002", "1003", "1001")  # so the longest-idle agent is not simply the first extension
DID = "6015550100"
CUSTOMER_NUMBER = "3001234567"
OUTSIDE_NUMBER = "3105550199"
BUSY_NUMBER = "3105550486"
CUSTOMER_HOST = "127.0.0.2"  # the trunk's inbound network
GATEWAY_HOST = "127.0.0.3"  # the trunk's outbound gateway
STEP_TIMEOUT = 8.0


def agent_password(extension: str) -> str:
    return f"demo-secret-{extension}"


def demo_operation(gateway_port: int) -> dict[str, Any]:
    """The demo's operation, in the format of `callbridge admin load` (see `callbridge.cli.admin`)."""
    return {
        "operation": {"id": OPERATION, "sip_domain": DOMAIN, "name": "callbridge demo", "acw_seconds": 0,
                      "after_transfer_state": "ready", "default_queue": "support", "ring_timeout": 10,
                      "transfer_timeout": 10},
        "queues": [{"name": "support", "max_wait_seconds": 20}],
        "agents": [{"extension": ext, "name": name, "password": agent_password(ext), "queues": ["support"]}
                   for ext, name in zip((*AGENTS, WEB_AGENT), ("Ana", "Luis", "Marta", "Web"), strict=True)],
        "trunks": [{"name": "carrier", "host": GATEWAY_HOST, "port": gateway_port, "dial_min_length": 7,
                    "dial_max_length": 15, "caller_id_policy": "customer",
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "demo"}],
        "supervisors": [{"username": SUPERVISOR[0], "password": SUPERVISOR[1], "name": "Demo supervisor"}],
    }


DEMO_OPERATION = demo_operation(5060)


class StepFailed(Exception):
    """Raised inside a step with what went wrong; the runner names the step."""


async def within(awaitable: Awaitable[T], what: str, timeout: float = STEP_TIMEOUT) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise StepFailed(f"no {what} within {timeout:.0f} s") from None


def has_fields(**wanted: Any) -> Callable[[Event], bool]:
    """An event predicate: its data has these values."""
    return lambda event: all(event.data.get(k) == v for k, v in wanted.items())


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


class EventWatch:
    """The operation's event stream (GET /v2/events through the native client), kept in order for the steps."""

    def __init__(self, client: AsyncNativeClient) -> None:
        self.client = client
        self.events: list[Event] = []
        self._new = asyncio.Event()
        self.on_event: Callable[[Event], None] | None = None

    async def run(self) -> None:
        async for event in self.client.events(after=0, wait=20.0):
            self.events.append(event)
            self._new.set()
            if self.on_event is not None:
                self.on_event(event)

    @property
    def mark(self) -> int:
        return len(self.events)

    async def expect(self, types: str | tuple[str, ...], since: int, what: str,
                     where: Callable[[Event], bool] = lambda e: True) -> Event:
        """The first event of ``types`` at or after index ``since`` that satisfies ``where``."""
        kinds = (types,) if isinstance(types, str) else types

        async def find() -> Event:
            index = since
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event.type in kinds and where(event):
                        return event
                self._new.clear()
                await self._new.wait()

        return await within(find(), f"{what} on the event stream")


@dataclass
class Gateway:
    """The outside world behind the trunk: answers every number after ringing ``ring`` seconds, but `BUSY_NUMBER`
    gets ``busy_status``, at once or (``busy_ring``) after ringing that long (with a relay: time to hear the
    ringback)."""

    phone: Phone
    busy_status: int = 486
    ring: float = 0.2
    busy_ring: float = 0.0
    dialled: list[tuple[str, str, int]] = field(default_factory=list)  # (number, caller id, what we answered)

    async def run(self) -> None:
        with self.phone.events() as stream:
            async for event in stream:
                if isinstance(event, IncomingCall):
                    request = event.request
                    number, caller = request.uri.user or "", request.from_.uri.user or ""
                    status = self.busy_status if number == BUSY_NUMBER else 200
                    self.dialled.append((number, caller, status))
                    if status >= 300 and not self.busy_ring:
                        await event.call.reject(status)
                    else:
                        await event.call.ring()
                        delay = self.ring if status < 300 else self.busy_ring
                        asyncio.get_running_loop().call_later(delay, _answer, event.call, status)


def _answer(call: Call, status: int) -> None:
    with contextlib.suppress(Exception):  # the caller may have given up meanwhile
        if status < 300:
            call.answer_now()
        else:
            call.reject_now(status)


class HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the demo owns Ctrl-C
        yield


def metric(page: str, name: str) -> float:
    """A sample's value on a Prometheus text page (0 when absent)."""
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
