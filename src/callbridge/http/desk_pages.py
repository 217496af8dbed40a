"""The desk's pages and their routes: `/agent` (the agent's page) and `/supervisor` (the board), their scripts and
style (`http/web/`, in the package), and SIP.js, served from where `npm ci` put it (`web/node_modules`, pinned by
`web/package-lock.json`; never a CDN).

- When SIP.js is not there, `/agent` answers 503 with a page that says to run `scripts/setup`.
- Pages carry a Content-Security-Policy: scripts and styles from this server only (no inline script), sockets
  to this server's host and its SIP WebSocket; frames refused.
- Library files are served only from inside the library's folder (the path is resolved and checked), and only
  `.js` files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from callbridge.callcontrol.errors import CallControlError
from callbridge.callcontrol.events import DomainEvent
from callbridge.callcontrol.service import CallControlService
from callbridge.http import contract
from callbridge.http.actions import ActionWaiter
from callbridge.http.desk_agent import AgentDesk, agent_snapshot
from callbridge.http.desk_board import SupervisorBoard, board_snapshot
from callbridge.http.desk_common import DeskConfig
from callbridge.http.desk_live import DeskHub
from callbridge.http.desk_sessions import Session, SessionTable

WEB = resources.files("callbridge.http").joinpath("web")
ASSETS = {"agent.js": "text/javascript", "supervisor.js": "text/javascript", "desk.js": "text/javascript",
          "desk.css": "text/css"}
SIPJS = "sip.js/lib"  # inside the library folder
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' {ws}; "
       "media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
MISSING_LIBRARY = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>callbridge: set-up needed</title>
</head><body><h1>The agent's page is not set up</h1>
<p>The browser SIP library (SIP.js) is missing on this server: run <code>scripts/setup</code> in callbridge's folder
(it runs <code>npm ci</code> in <code>web/</code>), then reload this page.</p></body></html>
"""


def _page(name: str, ws_sources: str) -> Response:
    body = WEB.joinpath(name).read_bytes()
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": CSP.format(ws=ws_sources), "cache-control": "no-store",
                             "x-content-type-options": "nosniff", "referrer-policy": "same-origin"})


class DeskPages:
    def __init__(self, config: DeskConfig) -> None:
        self._library = config.library_dir
        self._ws = "ws: wss:"  # the page's own host and the SIP WebSocket's port: any port of it

    def library_present(self) -> bool:
        return (self._library / SIPJS / "index.js").is_file()

    async def agent(self, request: Request) -> Response:
        if not self.library_present():
            return Response(MISSING_LIBRARY, status_code=503, media_type="text/html; charset=utf-8")
        return _page("agent.html", self._ws)

    async def supervisor(self, request: Request) -> Response:
        return _page("supervisor.html", self._ws)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        kind = ASSETS.get(name)
        if kind is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(WEB.joinpath(name).read_bytes(), media_type=kind,
                        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})

    async def library(self, request: Request) -> Response:
        root = (self._library / SIPJS).resolve()
        wanted = (root / request.path_params["path"]).resolve()
        if not wanted.is_relative_to(root) or wanted.suffix != ".js" or not wanted.is_file():
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(wanted.read_bytes(), media_type="text/javascript",
                        headers={"cache-control": "max-age=3600", "x-content-type-options": "nosniff"})


def _agent_wants(service: CallControlService, session: Session) -> Callable[[DomainEvent], bool]:
    """The agent's events: those naming it, and those of its calls (remembered as it takes them)."""
    mine: set[str] = set()

    def wants(event: DomainEvent) -> bool:
        agent, conn = getattr(event, "agent", None), getattr(event, "conn_id", None)
        if agent == session.user:
            if conn:
                if len(mine) > 1000:
                    mine.clear()
                mine.add(conn)
            return True
        if conn is None:
            return False
        if conn in mine:
            return True
        try:
            current = service.get_agent(session.operation_id, session.user).conn_id
        except CallControlError:
            return False
        if current == conn:
            mine.add(conn)
            return True
        return False

    return wants


def desk_routes(service: CallControlService, waiter: ActionWaiter, config: DeskConfig, *,
                request_timeout: float = contract.REQUEST_TIMEOUT_S) -> tuple[list[BaseRoute], DeskHub]:
    """The desk's routes and its hub (whose `on_domain_event` the caller adds to the event log's listeners)."""
    sessions = SessionTable(clock=time.time)
    hub = DeskHub(sessions)
    agent = AgentDesk(service, waiter, sessions, config, request_timeout=request_timeout)
    board = SupervisorBoard(service, waiter, sessions, config, request_timeout=request_timeout, refresh=hub.refresh)
    pages = DeskPages(config)

    def agent_view(session: Session) -> dict[str, Any]:
        view = agent_snapshot(service, session.operation_id, session.user)
        view.pop("now", None)
        return view

    async def agent_live(ws: WebSocket) -> None:
        await hub.serve(ws, "agent", agent_view, lambda s: _agent_wants(service, s))

    async def board_live(ws: WebSocket) -> None:
        try:
            await hub.serve(ws, "supervisor", lambda s: board_snapshot(service, config, s.operation_id),
                            lambda s: lambda event: not event.name.startswith("action_"))
        finally:  # the page's listening goes with its socket (desk_board: a crashed page leaves none behind)
            board.page_closed(ws.query_params.get("page", ""))

    routes: list[BaseRoute] = [
        Route("/agent", pages.agent, methods=["GET"]),
        Route("/agent/signin", agent.sign_in, methods=["POST"]),
        Route("/agent/signout", agent.sign_out, methods=["POST"]),
        Route("/agent/api/session", agent.session_info, methods=["GET"]),
        Route("/agent/api/available-agents", agent.available_agents, methods=["GET"]),
        Route("/agent/api/{action:path}", agent.act, methods=["POST"]),
        WebSocketRoute("/agent/api/live", agent_live),
        Route("/supervisor", pages.supervisor, methods=["GET"]),
        Route("/supervisor/signin", board.sign_in, methods=["POST"]),
        Route("/supervisor/signout", board.sign_out, methods=["POST"]),
        Route("/supervisor/api/board", board.board, methods=["GET"]),
        Route("/supervisor/api/agents/{agent_id}/state", board.agent_state, methods=["POST"]),
        Route("/supervisor/api/calls/{conn_id}/end", board.end_call, methods=["POST"]),
        Route("/supervisor/api/calls/{conn_id}/listen", board.listen, methods=["POST"]),
        Route("/supervisor/api/calls/{conn_id}/listen/stop", board.stop_listening, methods=["POST"]),
        Route("/supervisor/api/calls/{conn_id}/listen/answer", board.listen_answer, methods=["POST"]),
        WebSocketRoute("/supervisor/api/live", board_live),
        Route("/desk/static/{name}", pages.asset, methods=["GET"]),
        Route("/desk/lib/sip.js/{path:path}", pages.library, methods=["GET"]),
    ]
    return routes, hub

