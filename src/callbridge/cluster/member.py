"""The cluster member: the asyncio loop that keeps this node's leases, places free operations, and hands over.

    member = ClusterMember(engine, "node-a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=6.0)
    await member.start()        # joins (NodeIdInUse if the id is live elsewhere), runs a first round
    member.owns("0042")         # True while this node holds a live lease of that operation
    await member.drain()        # releases every lease, leaves the cluster; other nodes adopt at once
    (or `callbridge admin cluster drain NODE`: the member sees it at its next heartbeat and releases everything)
    await member.close()

Theory of operation
- One round every `lease_seconds / 3`: heartbeat, read a snapshot (live nodes, leases, operations) in one
  transaction, run the planner (`planner.py`), and carry out this node's steps, each a single conditional
  statement in its own short transaction (`leases.py`). A lease is renewed twice before it could expire, and an
  expired lease of a dead node is taken within one lease plus one round (6 s + 2 s by default, the target being
  10 s).
- The database runs in a worker thread; the loop only awaits it. Callbacks (`on_gained`, `on_lost`) run on the
  loop.
- Losing a lease (its renewal failed, the snapshot shows another owner or epoch, or the fence refused a write)
  drops it from the fence at once, so no later batch declares it, calls `on_lost`, and triggers a new round at once
  (the re-sync). A refused write wakes the loop the same way.
- Handing over (a RELEASE planned while this node is live: `admin cluster move`, `drain`): the node is asked
  first (`prepare_release`, on the loop), and the lease is renewed instead until it says its calls of that
  operation are settled and forgotten (`cluster.handover`); the writer is flushed (`flush`, in the worker thread)
  just before the release, so the new owner reads every record of them.
- Self-fencing: if no round has succeeded for a whole lease (the database is unreachable, the process was
  paused), every lease is dropped before anything else: by then another node may have taken them.
- A heartbeat that finds this node's id taken by another process (`NodeReplaced`) drops every lease and stops the
  member (`stopped` says why); the node must stop taking traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from callbridge.cluster import leases, nodes
from callbridge.cluster.fencing import Fence
from callbridge.cluster.planner import Action, LeaseView, NodeView, Step, plan

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 6.0


class ClusterMember:
    def __init__(self, engine: Engine, node_id: str, *, sip_host: str, sip_port: int, http_url: str = "",
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, fence: Fence | None = None,
                 on_gained: Callable[[str, int], None] | None = None,
                 on_lost: Callable[[str], None] | None = None,
                 prepare_release: Callable[[str], bool] | None = None,
                 flush: Callable[[], object] | None = None) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.engine = engine
        self.node_id = node_id
        self.sip_host, self.sip_port, self.http_url = sip_host, sip_port, http_url
        self.lease_seconds = lease_seconds
        self.interval = lease_seconds / 3
        self.fence = fence or Fence(node_id)
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.prepare_release = prepare_release
        self.flush = flush
        self.incarnation = nodes.new_incarnation()
        self.slot = 0
        self.draining = False
        self.paused = False  # tests: hold the renewals (the process still runs), as a long GC pause would
        self.stopped: str | None = None
        self.rounds = 0
        self._last_ok = 0.0
        self._wake = asyncio.Event()
        self._db = threading.Lock()  # a round's database work and the leave never interleave (worker threads)
        self._left = False
        self._owners: dict[str, str] = {}  # operation -> live holder, and node -> SIP address, as of the last round
        self._addresses: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unserved: set[str] = set()  # held, but being adopted or already handed over (`serves`)

    # -- what the node asks ---------------------------------------------------------------------------------
    def owns(self, operation_id: str) -> bool:
        return operation_id in self.fence.epochs()

    def serves(self, operation_id: str) -> bool:
        """Whether this node holds the operation and its live state is here: not while the calls of an operation
        just gained are being adopted (until `adopted`), nor once a handover forgot them (until the release).
        In those gaps the API answers 503, as for an owner that does not answer (cluster/forward.py)."""
        return operation_id in self.fence.epochs() and operation_id not in self._unserved

    def adopted(self, operation_id: str) -> None:
        """The take-over of an operation gained is done (`on_gained`'s work): its requests are served here."""
        self._unserved.discard(operation_id)

    @property
    def held(self) -> dict[str, int]:
        return self.fence.epochs()

    # -- life cycle ------------------------------------------------------------------------------------------
    async def start(self) -> ClusterMember:
        self._loop = asyncio.get_running_loop()
        self.fence.on_refused = self._refused
        self.slot = await asyncio.to_thread(self._join)
        await self.round()
        self._task = self._loop.create_task(self._run(), name=f"callbridge-cluster-{self.node_id}")
        return self

    def _join(self) -> int:
        with self.engine.begin() as conn:
            return nodes.join(conn, self.node_id, self.incarnation, sip_host=self.sip_host, sip_port=self.sip_port,
                              http_url=self.http_url, lease_seconds=self.lease_seconds)

    async def drain(self, timeout: float = 30.0, *, leave: bool = True) -> None:
        """Release every lease (other nodes adopt them in their next round) and leave the cluster. A handover
        may take a few rounds (`prepare_release`): bounded by `timeout`."""
        self.draining = True
        deadline = time.monotonic() + timeout
        await self.round()
        while self.fence.epochs() and time.monotonic() < deadline and self.stopped is None:
            await asyncio.sleep(min(self.interval, 0.2))
            await self.round()
        if leave:
            await self.close()  # no heartbeat of the loop may land after the leave and make this node live again
            await asyncio.to_thread(self._leave)

    def owner_address(self, operation_id: str) -> tuple[str, int] | None:
        """The SIP address of the live node holding `operation_id` as of the last round, when it is another one."""
        owner = self._owners.get(operation_id)
        if owner is None or owner == self.node_id:
            return None
        return self._addresses.get(owner)

    async def await_owners(self, operations: list[str], timeout: float) -> bool:
        """Wait (rounds going on) until another live node holds each of `operations`; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while any(self.owner_address(op) is None for op in operations):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(self.interval, 0.2))
            self.wake()
        return True

    async def others_live(self) -> bool:
        """Another live node that is not draining exists (a handover has somewhere to go)."""
        def read() -> bool:
            with self.engine.connect() as conn:
                return any(n.live and not n.draining and n.node_id != self.node_id
                           for n in nodes.read_nodes(conn, self.lease_seconds))
        return await asyncio.to_thread(read)

    def _leave(self) -> None:
        with self._db:  # a round already in its worker thread (its task cancelled) finishes first
            self._left = True
            with self.engine.begin() as conn:
                nodes.leave(conn, self.node_id, self.incarnation)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Run a round now (thread-safe)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def _refused(self) -> None:
        self.wake()

    async def _run(self) -> None:
        while self.stopped is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            if self.paused:
                continue
            try:
                await self.round()
            except Exception:
                log.warning("cluster round failed", exc_info=True)

    # -- one round -------------------------------------------------------------------------------------------
    async def round(self) -> list[Step]:
        """Self-fence if overdue, then heartbeat, plan and act; the steps carried out (tests read them)."""
        if self._last_ok and time.monotonic() - self._last_ok > self.lease_seconds:
            for op in list(self.fence.epochs()):
                self._lose(op, "no round succeeded for a whole lease")
        try:
            steps = await asyncio.to_thread(self._plan_sync)
            steps = [self._hand_over(step) for step in steps]
            done, gained, lost = await asyncio.to_thread(self._act_sync, steps)
        except nodes.NodeReplaced as exc:
            self.stopped = str(exc)
            for op in list(self.fence.epochs()):
                self._lose(op, "node id taken by another process")
            log.error("%s", exc)
            return []
        self._last_ok = time.monotonic()
        self.rounds += 1
        for op, why in lost:
            self._lose(op, why)
        for op, epoch in gained:
            log.info("cluster: node %s holds operation %s at epoch %d", self.node_id, op, epoch)
            if self.on_gained is not None:
                self.on_gained(op, epoch)
        return done

    def _lose(self, op: str, why: str) -> None:
        if op not in self.fence.epochs():
            return
        self.fence.drop(op)
        self._unserved.discard(op)
        log.warning("cluster: node %s no longer acts for operation %s (%s)", self.node_id, op, why)
        if self.on_lost is not None:
            self.on_lost(op)
        self.wake()  # re-sync: read the leases again at once

    def _hand_over(self, step: Step) -> Step:
        """A RELEASE waits (the lease renewed) until this node has let the operation's calls go."""
        if step.action is not Action.RELEASE or self.prepare_release is None:
            return step
        try:
            ready = self.prepare_release(step.operation_id)
        except Exception:
            log.exception("cluster: preparing the handover of operation %s failed", step.operation_id)
            ready = True  # the lease goes anyway: the new owner ends what it cannot adopt
        if ready:
            self._unserved.add(step.operation_id)  # its calls are forgotten here: the lease goes in this round
        return step if ready else Step(Action.RENEW, step.operation_id, step.epoch)

    def _plan_sync(self) -> list[Step]:
        with self._db:
            return [] if self._left else self._plan_locked()

    def _plan_locked(self) -> list[Step]:
        held = self.fence.epochs()
        with self.engine.begin() as conn:
            if nodes.heartbeat(conn, self.node_id, self.incarnation, draining=self.draining) and not self.draining:
                log.warning("cluster: node %s drains (asked by `callbridge admin cluster drain`): its operations "
                            "go to the other nodes", self.node_id)
                self.draining = True
            rows_of_nodes = [n for n in nodes.read_nodes(conn, self.lease_seconds) if n.live]
            live = [NodeView(n.node_id, n.draining) for n in rows_of_nodes]
            rows = {lease.operation_id: LeaseView(lease.node_id, lease.epoch, lease.expired, lease.move_to)
                    for lease in leases.read_all(conn)}
            self._addresses = {n.node_id: (n.sip_host, n.sip_port) for n in rows_of_nodes}
            self._owners = {op: row.node_id for op, row in rows.items() if row.node_id and not row.expired}
            operations = list(conn.execute(text("SELECT id FROM operations")).scalars())
        return plan(self.node_id, draining=self.draining, operations=operations, leases=rows, live_nodes=live,
                    held=held)

    def _act_sync(self, steps: list[Step]) -> tuple[list[Step], list[tuple[str, int]], list[tuple[str, str]]]:
        with self._db:
            return ([], [], []) if self._left else self._act_locked(steps)

    def _act_locked(self, steps: list[Step]) -> tuple[list[Step], list[tuple[str, int]], list[tuple[str, str]]]:
        if self.flush is not None and any(step.action is Action.RELEASE for step in steps):
            self.flush()  # every record of the calls handed over lands before the new owner reads them
        gained: list[tuple[str, int]] = []
        lost: list[tuple[str, str]] = []
        for step in steps:
            with self.engine.begin() as conn:
                if step.action is Action.RENEW:
                    assert step.epoch is not None
                    if not leases.renew(conn, step.operation_id, self.node_id, step.epoch, self.lease_seconds):
                        lost.append((step.operation_id, "renewal refused: the lease expired or changed hands"))
                elif step.action is Action.RELEASE:
                    assert step.epoch is not None
                    leases.release(conn, step.operation_id, self.node_id, step.epoch)
                    lost.append((step.operation_id, "released (drain or handover)"))
                elif step.action is Action.LOST:
                    lost.append((step.operation_id, "the lease changed hands"))
                else:
                    if self.on_gained is not None:
                        self._unserved.add(step.operation_id)  # before it is held: until `adopted`
                    epoch = leases.take(conn, step.operation_id, self.node_id, self.lease_seconds, step.epoch)
                    if epoch is not None:
                        self.fence.hold(step.operation_id, epoch)
                        gained.append((step.operation_id, epoch))
                    elif step.operation_id not in self.fence.epochs():
                        self._unserved.discard(step.operation_id)
        return steps, gained, lost
