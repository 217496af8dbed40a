"""The desk's live sockets: `/agent/api/live` and `/supervisor/api/live`, WebSockets authenticated by the session
cookie (the browser sends it with the upgrade; SameSite=Strict keeps other sites' pages from doing so).

Rules:
- Live, never polled: the hub listens to the service's domain events (the same ones the event log and the
  webhooks are made from) and wakes the sockets of the event's operation only. A woken socket sends the events
  that concern its viewer, `{"type": "event", "event": {...}}` (the agent's: its own state, display and calls; the
  supervisor's: every event of its operation), then a fresh `{"type": "snapshot", ...}` when the view changed.
  So `api=agent_display` or a CRM's `api=hold` shows on the page as soon as the service has done it.
- A session that ends (sign-out, or a newer sign-in of the same agent) is told `{"type": "signed_out", "reason":
  ...}` and its socket closed with 4001; the page says so and does not reconnect. A socket without a live session
  (signed out, expired, or lost when callbridge restarted) is accepted only to be told the same and closed; one
  from another site's page (its Origin is not this Host) is refused before the upgrade. At shutdown every socket
  is closed with 1001 (going away): the page says the connection dropped and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.callcontrol.events import DomainEvent
from callbridge.http.desk_common import same_origin
from callbridge.http.desk_sessions import Kind, Session, SessionTable
from callbridge.http.resources import rfc3339

_log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4001
CLOSE_GOING_AWAY = 1001
NO_SESSION = "your session ended"
MAX_QUEUED = 200  # events kept for one socket between two sends; older ones are dropped (the snapshot follows)


@dataclass(eq=False)
class _Viewer:
    operation_id: str
    wants: Callable[[DomainEvent], bool]
    queue: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED))
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class DeskHub:
    """The domain listener and the open sockets it wakes."""

    def __init__(self, sessions: SessionTable) -> None:
        self._sessions = sessions
        self._viewers: dict[str, set[_Viewer]] = {}
        self._closing = asyncio.Event()
        self.open_sockets = 0

    def on_domain_event(self, event: DomainEvent) -> None:
        """Called inside the service's publish: only queues and wakes (no I/O here)."""
        for viewer in self._viewers.get(event.operation_id, ()):
            if viewer.wants(event):
                viewer.queue.append(event.as_dict())
            viewer.wake.set()

    def refresh(self, operation_id: str) -> None:
        """Wake the operation's sockets for a change no domain event tells (a listener's phone starts ringing):
        each sends a fresh snapshot if its view changed."""
        for viewer in self._viewers.get(operation_id, ()):
            viewer.wake.set()

    def shutdown(self) -> None:
        self._closing.set()

    def reopen(self) -> None:
        """The application starts serving (again: a server may stop and start the same application)."""
        self._closing.clear()

    async def serve(self, ws: WebSocket, kind: Kind, snapshot: Callable[[Session], dict[str, Any]],
                    wants: Callable[[Session], Callable[[DomainEvent], bool]]) -> None:
        if not same_origin(ws):
            await ws.close(1008)  # another site's page: refused before the upgrade
            return
        session = self._sessions.session_of(ws, kind)
        await ws.accept()
        if session is None:  # ended meanwhile, or lost with a restart: the page must hear why, not retry forever
            await ws.send_text(json.dumps({"type": "signed_out", "reason": NO_SESSION}))
            await ws.close(CLOSE_SIGNED_OUT)
            return
        viewer = _Viewer(session.operation_id, wants(session))
        self._viewers.setdefault(session.operation_id, set()).add(viewer)
        self.open_sockets += 1
        receiver = asyncio.create_task(_drain(ws))
        last: dict[str, Any] | None = None
        try:
            while True:
                viewer.wake.clear()
                while viewer.queue:
                    await ws.send_text(json.dumps({"type": "event", "event": viewer.queue.popleft()}))
                view = snapshot(session)
                if view != last:
                    last = view
                    await ws.send_text(json.dumps({"type": "snapshot", "now": rfc3339(time.time()), **view}))
                if session.ended is not None:
                    await ws.send_text(json.dumps({"type": "signed_out", "reason": session.ended}))
                    await ws.close(CLOSE_SIGNED_OUT)
                    return
                if self._closing.is_set():
                    await ws.close(CLOSE_GOING_AWAY)
                    return
                waits = [asyncio.ensure_future(viewer.wake.wait()), asyncio.ensure_future(session.changed.wait()),
                         asyncio.ensure_future(self._closing.wait())]
                try:
                    await asyncio.wait([*waits, receiver], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                if receiver.done():
                    return
        except (WebSocketDisconnect, RuntimeError):
            pass
        except Exception:
            _log.exception("desk socket failed")
            with contextlib.suppress(Exception):
                await ws.close(1011)
        finally:
            self.open_sockets -= 1
            self._viewers[session.operation_id].discard(viewer)
            receiver.cancel()


async def _drain(ws: WebSocket) -> None:
    """The page sends nothing that matters; this notices the close."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return
