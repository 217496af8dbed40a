"""Signed webhooks: each wire event of an operation POSTed to that operation's webhook URLs (`openapi.json`,
`webhooks.event`).

Rules:
- One request per event, in seq order per URL: the next is sent once the previous was acknowledged or given up.
- A 2xx within 10 s acknowledges. Anything else (another status, a refused connection, a timeout) is retried
  after 1, 2, 4, 8... s, jittered (a factor drawn in [0.5, 1.0]), at most 10 minutes between tries, for up to 24
  hours after the first try; then the event is given up and counted.
- `Callbridge-Signature: t=<unix time>,v1=<hex>` where v1 = hex(HMAC-SHA256(secret, "<t>." + raw body)): the time
  is signed with the body. `verify_signature` is the receiver's side: recompute over the raw bytes, compare in
  constant time, refuse a `t` more than 5 minutes away.
- Bounded: each URL keeps at most `max_pending` undelivered events; past it the oldest are dropped and counted
  (a receiver down for a day must not grow the server's memory without limit).
- A target with an `events` filter gets only those event types (seq numbers then have gaps for it: `seq` counts
  the operation's events, not one receiver's); an empty filter means every event.
- Targets can be replaced while running (`set_targets`, after an administrative change): a target whose `key` is
  kept keeps its queue, and its pending events go to its new URL with its new secret (the delivery in progress is
  restarted, so the head event may arrive twice: receivers deduplicate by seq anyway), less those its new
  `events` filter no longer wants (dropped and counted); a removed target's pending events are dropped and counted;
  a new target starts with the next event.

Durable (`LogWebhookDispatcher`, what `bootstrap` builds): no queue in memory. Each target reads the event log
after its own cursor (memory, or the database after a restart or a long outage: bounded by retention, not by
`max_pending`), delivers what it wants in seq order with the same signature and retries, and saves its cursor
(`storage.webhook_cursors`) after each acknowledged or given-up event: at least once, and a restart or a crash
resumes where each target stopped. A target without a saved cursor starts at the operation's last seq. Each
target is its own task and database reads run off the loop, so a target that fails or hangs delays only itself.
On a cluster node (`follow_ownership`) a target delivers only while the node owns its operation and has taken it
over (`gained`): it then starts from the cursor stored by the previous owner, and stops at the next event once the
operation is gone (docs/cluster.md, "Any node answers the API").

Theory of operation: the event log calls `on_event` (synchronously, on the loop's thread) with every wire event;
it is appended to the queue of each target of that operation that wants it, and that target's delivery task, an
asyncio task started by `start()` (or by `set_targets` once started), is woken. The task delivers its queue's head
until acknowledged or given up, then the next. Webhook URLs come from configuration (`callbridge admin`, stored per
operation and read by the directory), never from a request, so this is not a way to make callbridge send requests
at arbitrary hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from callbridge.http.events import EventLog, WireEvent

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Callbridge-Signature"
SIGNATURE_TOLERANCE_S = 300.0


def sign(secret: str, body: bytes, t: int) -> str:
    """The header value for `body` sent at unix time `t`."""
    digest = hmac.new(secret.encode("utf-8"), str(t).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None,
                     tolerance: float = SIGNATURE_TOLERANCE_S) -> bool:
    """The receiver's check: well-formed, fresh and made with `secret` over exactly `body`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t_text, v1 = fields.get("t", ""), fields.get("v1", "")
    if not t_text.isdigit() or len(v1) != 64:
        return False
    t = int(t_text)
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, v1)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    operation_id: str
    url: str
    secret: str
    events: frozenset[str] = frozenset()  # event types sent; empty = every event
    key: str = ""  # what stays the same across reconfiguration (the stored webhook's id); "" = the URL

    @property
    def identity(self) -> tuple[str, str]:
        return self.operation_id, self.key or self.url

    def wants(self, event: WireEvent) -> bool:
        return self.operation_id == event.operation and (not self.events or event.type in self.events)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float = 1.0
    max_delay: float = 600.0
    give_up_after: float = 24 * 3600.0
    ack_timeout: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Before try `attempt + 1` (attempt 1 is the first retry): 1, 2, 4... s, jittered, capped."""
        base = min(self.max_delay, self.first_delay * (2 ** (attempt - 1)))
        return float(base * rng.uniform(0.5, 1.0))


@dataclass(slots=True)
class _Queue:
    target: WebhookTarget
    pending: deque[WireEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class WebhookStats:
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    given_up: int = 0
    dropped: int = 0


class WebhookDispatcher:
    def __init__(self, targets: Sequence[WebhookTarget], *, policy: RetryPolicy | None = None,
                 max_pending: int = 10_000, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.max_pending = max_pending
        self.stats = WebhookStats()
        self._queues = [_Queue(t) for t in targets]
        self._client = client
        self._own_client = client is None
        self._clock = clock
        self._rng = rng or random.Random()
        self._started = False
        self._retired: set[asyncio.Task[None]] = set()  # cancelled by set_targets, awaited by stop

    @property
    def targets(self) -> list[WebhookTarget]:
        return [q.target for q in self._queues]

    def pending(self) -> int:
        return sum(len(q.pending) for q in self._queues)

    def on_event(self, event: WireEvent) -> None:
        for queue in self._queues:
            if not queue.target.wants(event):
                continue
            queue.pending.append(event)
            while len(queue.pending) > self.max_pending:
                queue.pending.popleft()
                self.stats.dropped += 1
            queue.wake.set()

    def set_targets(self, targets: Sequence[WebhookTarget]) -> None:
        """Replace the targets (on the loop's thread): see the module's rules for what happens to queues."""
        kept = {q.target.identity: q for q in self._queues}
        queues = []
        for target in targets:
            queue = kept.pop(target.identity, None)
            if queue is None:
                queue = _Queue(target)
                self._spawn(queue)
            elif queue.target != target:
                queue.target = target
                wanted = deque(event for event in queue.pending if target.wants(event))
                self.stats.dropped += len(queue.pending) - len(wanted)  # a narrowed filter: no longer wanted
                queue.pending = wanted
                self._retire(queue)  # it may be waiting on the old URL, or sleeping in a backoff meant for it
                self._spawn(queue)
            queues.append(queue)
        for queue in kept.values():
            self._retire(queue)
            self.stats.dropped += len(queue.pending)
            queue.pending.clear()
        self._queues = queues

    def _spawn(self, queue: _Queue) -> None:
        if not self._started:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.ack_timeout, follow_redirects=False)
        if queue.pending:
            queue.wake.set()
        queue.task = asyncio.create_task(self._run(queue), name=f"webhook {queue.target.url}")

    def _retire(self, queue: _Queue) -> None:
        if queue.task is not None:
            queue.task.cancel()
            self._retired.add(queue.task)
            queue.task.add_done_callback(self._retired.discard)
            queue.task = None

    async def start(self) -> None:
        self._started = True
        for queue in self._queues:
            self._spawn(queue)

    async def stop(self) -> None:
        self._started = False
        tasks = [q.task for q in self._queues if q.task is not None] + list(self._retired)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for queue in self._queues:
            queue.task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, queue: _Queue) -> None:
        while True:
            if not queue.pending:
                queue.wake.clear()
                await queue.wake.wait()
                continue
            event = queue.pending[0]
            await self._deliver(queue.target, event)
            if queue.pending and queue.pending[0] is event:
                queue.pending.popleft()

    async def _deliver(self, target: WebhookTarget, event: WireEvent) -> None:
        started = self._clock()
        attempt = 0
        while True:
            self.stats.attempts += 1
            if await self._try(target, event):
                self.stats.delivered += 1
                return
            attempt += 1
            delay = self.policy.delay(attempt, self._rng)
            if self._clock() + delay - started > self.policy.give_up_after:
                self.stats.given_up += 1
                _log.warning("webhook %s: gave up on event %d after %d tries", target.url, event.seq, attempt)
                return
            self.stats.retries += 1
            await asyncio.sleep(delay)

    async def _try(self, target: WebhookTarget, event: WireEvent) -> bool:
        assert self._client is not None
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(target.secret, event.line,
                                                                              int(self._clock()))}
        try:
            response = await self._client.post(target.url, content=event.line, headers=headers,
                                               timeout=self.policy.ack_timeout)
        except httpx.HTTPError as exc:
            _log.info("webhook %s: event %d not delivered: %s", target.url, event.seq, exc)
            return False
        return 200 <= response.status_code < 300


@dataclass(slots=True)
class _Feed:
    target: WebhookTarget
    position: int  # the last seq delivered, given up or skipped
    task: asyncio.Task[None] | None = None


class LogWebhookDispatcher(WebhookDispatcher):
    """Webhooks delivered from the durable event log, with a stored cursor per target (see the module's rules)."""

    def __init__(self, targets: Sequence[WebhookTarget], *, log: EventLog,
                 save_cursor: Callable[[int, int], None] | None = None, saved: Mapping[int, int] | None = None,
                 page: int = 100, idle_wait: float = 30.0, policy: RetryPolicy | None = None,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        super().__init__([], policy=policy, client=client, clock=clock, rng=rng)
        self._log = log
        self._save_cursor = save_cursor
        self._saved = dict(saved or {})
        self._owns: Callable[[str], bool] | None = None  # a cluster node's lease check (`follow_ownership`)
        self._load_cursor: Callable[[int], int | None] | None = None
        self._resumable: set[str] = set()  # operations gained and taken over: their log has its seq
        self._gained: dict[str, asyncio.Event] = {}
        self._page = page
        self._idle_wait = idle_wait
        self._feeds = [self._feed(target) for target in targets]

    @property
    def targets(self) -> list[WebhookTarget]:
        return [feed.target for feed in self._feeds]

    def cursors(self) -> dict[tuple[str, str], int]:
        """Each target's identity -> the last seq it was given (delivered, given up or skipped)."""
        return {feed.target.identity: feed.position for feed in self._feeds}

    def pending(self) -> int:
        return sum(max(0, self._log.committed_seq(f.target.operation_id) - f.position) for f in self._feeds)

    def on_event(self, event: WireEvent) -> None:
        """Nothing to queue: each target reads the log, woken by the log itself."""

    def _feed(self, target: WebhookTarget) -> _Feed:
        webhook_id = int(target.key) if target.key.isdigit() else None
        position = self._saved.get(webhook_id) if webhook_id is not None else None
        if position is None:
            position = self._log.committed_seq(target.operation_id)
            if self._owned(target.operation_id):  # the owner's cursor is the owner's to write
                self._save(target, position)
        return _Feed(target, position)

    def _save(self, target: WebhookTarget, position: int) -> None:
        if self._save_cursor is not None and target.key.isdigit():
            self._saved[int(target.key)] = position
            self._save_cursor(int(target.key), position)

    def set_targets(self, targets: Sequence[WebhookTarget]) -> None:
        """A kept target keeps its cursor (its delivery in progress restarts); a new one starts at the last seq."""
        kept = {feed.target.identity: feed for feed in self._feeds}
        feeds = []
        for target in targets:
            feed = kept.pop(target.identity, None)
            if feed is None:
                feed = self._feed(target)
                self._spawn_feed(feed)
            elif feed.target != target:
                feed.target = target
                self._retire_feed(feed)
                self._spawn_feed(feed)
            feeds.append(feed)
        for feed in kept.values():
            self._retire_feed(feed)
        self._feeds = feeds

    def _spawn_feed(self, feed: _Feed) -> None:
        if not self._started:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.ack_timeout, follow_redirects=False)
        feed.task = asyncio.create_task(self._follow(feed), name=f"webhook {feed.target.url}")

    def _retire_feed(self, feed: _Feed) -> None:
        if feed.task is not None:
            feed.task.cancel()
            self._retired.add(feed.task)
            feed.task.add_done_callback(self._retired.discard)
            feed.task = None

    async def start(self) -> None:
        self._started = True
        for feed in self._feeds:
            self._spawn_feed(feed)

    async def stop(self) -> None:
        for feed in self._feeds:
            if feed.task is not None:
                self._retired.add(feed.task)
                feed.task = None
        await super().stop()

    def follow_ownership(self, owns: Callable[[str], bool], load_cursor: Callable[[int], int | None]) -> None:
        """A cluster node delivers an operation's webhooks only while it owns it, from the cursor stored by the node
        that owned it before (see the module's rules); call before `start`."""
        self._owns, self._load_cursor = owns, load_cursor

    def gained(self, operation_id: str) -> None:
        """This node owns `operation_id` and took it over (its log has the operation's seq): its targets resume."""
        self._resumable.add(operation_id)
        self._gained.setdefault(operation_id, asyncio.Event()).set()

    def _owned(self, operation_id: str) -> bool:
        if self._owns is None:
            return True
        if not self._owns(operation_id):
            self._resumable.discard(operation_id)  # lost: resumed only after the next takeover
            return False
        return operation_id in self._resumable

    async def _until_owned(self, feed: _Feed) -> None:
        """Wait while another node owns the target's operation; then resume at the stored cursor, which the owner
        before moved on."""
        op = feed.target.operation_id
        while not self._owned(op):
            gained = self._gained.setdefault(op, asyncio.Event())
            gained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gained.wait(), self._idle_wait)
        if self._load_cursor is not None and feed.target.key.isdigit():
            stored = await asyncio.to_thread(self._load_cursor, int(feed.target.key))
            if stored is not None:
                feed.position = stored
                self._saved[int(feed.target.key)] = stored

    async def _follow(self, feed: _Feed) -> None:
        op = feed.target.operation_id
        owned = self._owns is None
        while True:
            if not owned:
                await self._until_owned(feed)
                owned = True
            if not self._owned(op):
                owned = False  # lost to another node: it delivers from the cursor this node saved
                continue
            events = await self._log.read(op, feed.position, self._page)
            if not events:
                await self._log.wait(op, feed.position, self._idle_wait)
                continue
            if events[0].seq > feed.position + 1:  # fell out of retention while the target was behind
                self.stats.dropped += events[0].seq - feed.position - 1
            skipped = False
            for event in events:
                if not self._owned(op):
                    break
                if feed.target.wants(event):
                    await self._deliver(feed.target, event)
                    feed.position = event.seq
                    self._save(feed.target, event.seq)
                    skipped = False
                else:
                    feed.position = event.seq
                    skipped = True
            if skipped:
                self._save(feed.target, feed.position)
