"""`Storage`: the storage adapter as the server wires it: one engine, one writer thread, the in-memory directory
and the repositories, opened and closed together.

    storage = Storage.open(url, node_id="node-1")   # migrates, starts the writer, loads the directory
    service = CallControl(directory=storage.directory, states=storage.states, records=storage.calls, ...)
    ...
    storage.close()                                 # flushes queued writes, stops the writer, disposes the pool

Start-up reads (`leftovers`, `pending_recalls`) are synchronous and happen before the loop serves traffic; from a
coroutine use the `a*` variants, which run in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from callbridge.callcontrol.restart import AgentRestart
from callbridge.storage.database import make_engine
from callbridge.storage.directory import Directory
from callbridge.storage.migrate import upgrade
from callbridge.storage.reconcile import Leftovers, close_leftovers, find_leftovers
from callbridge.storage.records import CallRecords, RecallRecords, StateRecords
from callbridge.storage.sip_state import DialogRecords, RegistrationRecords
from callbridge.storage.writer import Writer


class Storage:
    def __init__(self, engine: Engine, node_id: str, *, migrate: bool = True) -> None:
        if migrate:
            upgrade(engine)
        self.engine = engine
        self.node_id = node_id
        self.writer = Writer(engine).start()
        self.directory = Directory(engine).load()
        self.states = StateRecords(self.writer, node_id)
        self.calls = CallRecords(self.writer, node_id)
        self.recalls = RecallRecords(self.writer, node_id, engine)
        self.registrations = RegistrationRecords(self.writer, node_id)
        self.dialogs = DialogRecords(self.writer, node_id)

    @classmethod
    def open(cls, url: str | URL, node_id: str) -> Storage:
        return cls(make_engine(url), node_id)

    def leftovers(self, now: float | None = None) -> Leftovers:
        """What a crash of this node left behind (see `reconcile`)."""
        with self.engine.connect() as conn:
            return find_leftovers(conn, self.node_id, time.time() if now is None else now)

    def close_leftovers(self, now: float | None = None, event_rows: Sequence[dict[str, Any]] = (),
                        restarts: Sequence[AgentRestart] | None = None) -> Leftovers:
        """Close in the records what a crash left behind; call after the BYEs are sent. `event_rows` (the events
        reporting the agents' changes in `restarts`) commit in the same transaction as those changes."""
        self.writer.flush()
        with self.engine.begin() as conn:
            return close_leftovers(conn, self.node_id, time.time() if now is None else now, restarts=restarts,
                                   event_rows=event_rows)

    async def aleftovers(self, now: float | None = None) -> Leftovers:
        return await asyncio.to_thread(self.leftovers, now)

    async def aclose_leftovers(self, now: float | None = None, event_rows: Sequence[dict[str, Any]] = (),
                               restarts: Sequence[AgentRestart] | None = None) -> Leftovers:
        return await asyncio.to_thread(self.close_leftovers, now, event_rows, restarts)

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()
