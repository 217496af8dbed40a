"""The durable event log's write rate and one webhook target's delivery lag, under bench/transfers.py's traffic.

The run is exactly bench/transfers.py's (callbridge in a child process on SQLite, `callbridge.phone` agents, SIPp
customers behind the trunk, blind transfers through the agentbox endpoint at `--rate`, change_status beside them;
the same flags), with two things added:

- **Events written per second at the log**: the operation's highest `seq` in the `events` table (read from the
  server's SQLite file with a connection of this process, WAL: committed rows only) when the first transfer is
  requested and when the last target answered; the figure is the difference over that time. Every event is
  written in the storage writer's batch of the change it reports (docs/operations.md, "Event log"), so this is the
  rate at which events became durable, not the rate they were published.
- **Webhook delivery lag**: one webhook target, registered in the operation file (`[[webhooks]]`), is a small
  HTTP/1.1 server in this process on 127.0.0.1 that answers 204 at once. For every event it receives, lag = the
  time it arrived minus the event's own `at` (the server's clock when the domain emitted it; the same machine's
  clock, `at` truncated to the millisecond, so a lag reads at most 1 ms high). Printed: p50, p99 and max over the
  events of the transfer phase, and whether every event of the run reached the receiver, in order, once (at
  least once is the contract; a repeat is counted, not hidden). The set-up's events are delivered before the
  first transfer is requested, so the lag is the transfer traffic's own: a target delivers one event at a time
  (http/webhooks.py), so when the log is written faster than one target takes events, the lag is that backlog.

Run (prints the transfer figures of bench/transfers.py, then these):

    .venv/bin/python bench/event_log.py --calls 2000 --rate 300 [--record]
    .venv/bin/python bench/event_log.py --quick        # tiny mode (tests/bench)

`--record` appends its two rows to bench/RESULTS.md (no ceiling measured in the same run: the log's rate is set
by the traffic, so the row gives the transfers/s beside it, and the lag has no peer to compare with).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import transfers  # the run itself: bench/transfers.py

HOST = "127.0.0.1"
WEBHOOK_SECRET = "bench-event-log-webhook-secret"
STALL_SECONDS = 30.0  # waiting for the receiver to catch up: give up after this long without a new event
CATCH_UP_CAP_SECONDS = 900.0  # and after this long in all
SETUP_CATCH_UP_CAP_SECONDS = 300.0  # before the transfers: the customers' SIPp waits for them (its -timeout)


@dataclass
class Received:
    seq: int
    type: str
    lag_ms: float
    arrived: float  # time.time()


@dataclass
class Receiver:
    """A webhook target: HTTP/1.1 with keep-alive, one POST per event, answered 204 with no body."""

    events: list[Received] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _open: dict[asyncio.StreamWriter, asyncio.Task[Any]] = field(default_factory=dict)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            handlers = list(self._open.values())
            for writer in list(self._open):  # keep-alive connections: their handlers then end on EOF
                writer.close()
            if handlers:  # let them end before the loop does (a handler cancelled at exit logs a traceback)
                await asyncio.wait(handlers, timeout=2)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                self._take(body, arrived)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._open.pop(writer, None)
            writer.close()

    def _take(self, body: bytes, arrived: float) -> None:
        try:
            event = json.loads(body)
            at = datetime.fromisoformat(event["at"]).timestamp()
            self.events.append(Received(int(event["seq"]), str(event["type"]), (arrived - at) * 1000, arrived))
        except (ValueError, KeyError, TypeError) as exc:
            self.bad.append(f"{exc}: {body[:200]!r}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/events"


def last_seq(database_url: str) -> int:
    """The operation's highest seq committed to the event log (0 before any event)."""
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute("SELECT MAX(seq) FROM events WHERE operation_id = ?", (transfers.OPERATION,)).fetchone()
    return int(row[0] or 0)


@dataclass
class EventLogProbe:
    """bench/transfers.py's `Probe`: the log's seq and the receiver's count at the phase's two ends."""

    receiver: Receiver
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    seq_before: int = 0
    seq_after: int = 0
    seq_final: int = 0
    t_before: float = 0.0
    t_after: float = 0.0
    caught_up_in: float | None = None

    async def before(self, database_url: str) -> None:
        # the set-up's events (registrations, agents made ready, calls up) delivered first, so that the lag
        # measured is the transfers' own, not the set-up's backlog
        await self.catch_up(database_url, SETUP_CATCH_UP_CAP_SECONDS)
        self.seq_before = await asyncio.to_thread(last_seq, database_url)
        self.t_before = time.time()

    async def after(self, database_url: str) -> None:
        self.seq_after = await asyncio.to_thread(last_seq, database_url)
        self.t_after = time.time()

    async def finish(self, database_url: str) -> None:
        """Wait until the receiver has every event the log holds, the customers' hang-ups included."""
        self.caught_up_in = await self.catch_up(database_url, CATCH_UP_CAP_SECONDS)
        self.seq_final = await asyncio.to_thread(last_seq, database_url)

    async def catch_up(self, database_url: str, cap: float) -> float | None:
        """Seconds until the receiver had the log's last seq; None when it stalled (no new event for
        `STALL_SECONDS`) or took longer than `cap` seconds."""
        started = time.monotonic()
        seen, progress = -1, started
        while True:
            last = await asyncio.to_thread(last_seq, database_url)
            now_seen = max((e.seq for e in self.receiver.events), default=0)
            now = time.monotonic()
            if now_seen >= last:
                return now - started
            if now_seen > seen:
                seen, progress = now_seen, now
            if now - progress > STALL_SECONDS or now - started > cap:
                return None
            await asyncio.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(probe: EventLogProbe, transfers_per_second: float) -> tuple[list[str], bool]:
    receiver = probe.receiver
    written = probe.seq_after - probe.seq_before
    seconds = probe.t_after - probe.t_before
    rate = written / seconds if seconds > 0 else 0.0
    phase = [e.lag_ms for e in receiver.events if probe.seq_before < e.seq <= probe.seq_after]
    seqs = [e.seq for e in receiver.events]
    repeats = len(seqs) - len(set(seqs))
    missing = sorted(set(range(1, probe.seq_final + 1)) - set(seqs))
    in_order = all(a < b for a, b in itertools.pairwise(seqs))
    print(f"event log: {written:,} events written in {seconds:.2f} s of transfers (seq {probe.seq_before} -> "
          f"{probe.seq_after}): {rate:,.1f} events/s")
    print(f"webhook lag over those {len(phase):,} events: p50 {pct(phase, 0.5):.1f} ms, p99 {pct(phase, 0.99):.1f} ms, "
          f"max {max(phase, default=float('nan')):.1f} ms")
    caught = "never" if probe.caught_up_in is None else f"{probe.caught_up_in:.1f} s after the customers were done"
    print(f"webhook delivery: {len(set(seqs)):,} of {probe.seq_final:,} events of the run received, "
          f"{len(missing)} missing, {repeats} repeated, in order: {'yes' if in_order else 'no'}; caught up {caught}")
    for bad in receiver.bad[:5]:
        print(f"  unreadable delivery: {bad}")
    ok = (written > 0 and len(phase) == written and not missing and not receiver.bad
          and probe.caught_up_in is not None)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [
        f"| event log write rate (bench/event_log.py): events made durable (committed with their change) while "
        f"bench/transfers.py's blind transfers run (load average {load}) | {rate:,.1f} events/s "
        f"| {transfers_per_second:,.1f} transfers/s in the same run | {rate / transfers_per_second:.1f} events per "
        f"transfer | none set",
        f"| webhook delivery lag (bench/event_log.py): one local receiver, receive time minus the event's `at`, "
        f"{len(phase):,} events of the transfer phase; p50 {pct(phase, 0.5):.1f} ms, max "
        f"{max(phase, default=float('nan')):.1f} ms | p99 {pct(phase, 0.99):.1f} ms | no peer | n/a | none set",
    ] if transfers_per_second > 0 else []
    return rows, ok


async def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], EventLogProbe]:
    receiver = Receiver()
    await receiver.start()
    probe = EventLogProbe(receiver, webhooks=[{"url": receiver.url, "secret": WEBHOOK_SECRET}])
    try:
        result = await transfers.measure(args, workdir, probe)
    finally:
        await receiver.close()
    return result, probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args = transfers.with_quick(transfers.add_arguments(parser).parse_args())
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result, probe = asyncio.run(run(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-event-log-") as tmp:
            result, probe = asyncio.run(run(args, Path(tmp)))
    _, transfers_ok = transfers.report(result)
    completed = result["server"].get("completed", 0)
    per_second = completed / result["done_in"] if result["done_in"] else 0.0
    rows, ok = report(probe, per_second)
    if args.record:
        command = f"`.venv/bin/python bench/event_log.py --calls {args.calls} --rate {args.rate:g}`"
        with open(transfers.ROOT / "bench" / "RESULTS.md", "a") as out:
            for row in rows:
                out.write(f"{row} | {command} | {time.strftime('%Y-%m-%d')} |\n")
    return 0 if ok and transfers_ok else 1


if __name__ == "__main__":
    sys.exit(main())
