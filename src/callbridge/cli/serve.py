"""`callbridge serve`: one node, SIP (UDP and TCP) and HTTP on one event loop, until SIGTERM or SIGINT.

Life of the process:
1. `bootstrap`: storage opened and migrated, SIP bound, what a crash left reconciled (dialogs from before ended with
   BYE on both legs, their calls closed in the records, agents brought to the state the restart rule gives,
   `callcontrol.restart`), registrations restored.
2. HTTP served on uvicorn (health, metrics, agentbox and the native API).
3. On SIGTERM/SIGINT, drain: new INVITEs, and REGISTERs that would add a binding, get 503 with Retry-After, logins
   (change_status from logout) answer 503 CALL CONTROL IS NOT AVAILABLE, and `/health` says so; live calls may
   finish for up to `drain_seconds`; whatever is still up then is ended cleanly (BYE to each party, the call closed
   by "system" in the records); then HTTP stops, the SIP sockets close and queued writes are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
import uvicorn

from callbridge.bootstrap import Node, bootstrap
from callbridge.cluster.nodes import ClusterStartError
from callbridge.config import ConfigError, Settings, check_on_this_machine
from callbridge.logs import configure_logging
from callbridge.transport.collector import tune_collector

__all__ = ["drain", "end_live_calls", "run", "serve_command"]

log = logging.getLogger("callbridge.serve")
SHUTDOWN_CAUSE = 503  # the Reason of the BYEs sent when the drain time is over


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: `run` owns SIGTERM/SIGINT and drains SIP first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen_http(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound here so that an address in use is an OSError naming it (uvicorn would log it and
    sys.exit() from inside its task)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, inherited by accepted sockets, is what makes asyncio set TCP_NODELAY on them: without it
    # small answers wait ~40 ms for delayed ACKs (tests/http/test_http_nodelay.py pins this)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"HTTP {host}:{port}: {exc.strerror or exc}") from exc
    return sock


async def run(settings: Settings, *, ready: Callable[[Node], None] | None = None,
              stop: asyncio.Event | None = None, **options: Any) -> None:
    """Serve until `stop` is set (or a signal arrives); `options` go to `bootstrap`."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    http_socket = _listen_http(settings.http_host, settings.http_port)  # taken: fails here, before anything starts
    try:
        node = await bootstrap(settings, **options)
    except OSError as exc:
        http_socket.close()
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        raise OSError(exc.errno, f"SIP {settings.sip_host}:{settings.sip_port}: {exc.strerror or exc}") from exc
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    # log_config=None: uvicorn's own lines go through the root logger, so `--log-format json` applies to them too
    # (its default configuration writes them in its own format); the app logs each request (http/request_log.py).
    http = _HttpServer(uvicorn.Config(node.app, host=settings.http_host, port=settings.http_port,
                                      log_level=settings.log_level.lower(), access_log=False, lifespan="on",
                                      log_config=None))
    node.metrics.gauge("callbridge_http_connections", "Open HTTP connections (WebSockets included).",
                       lambda: len(http.server_state.connections))
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    try:
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():
            http_task.result()  # raises what stopped it (e.g. the port is taken)
            raise RuntimeError("the HTTP server stopped at start-up")
        host, port = node.sip_address
        log.info("callbridge serving SIP on %s:%d (udp, tcp), HTTP on %s:%d", host, port, settings.http_host,
                 settings.http_port)
        if node.sip_ws_address is not None:
            scheme = "wss" if settings.sip_tls_cert else "ws"
            log.info("callbridge serving SIP over WebSocket on %s://%s:%d", scheme, *node.sip_ws_address)
        tune_collector()  # started: see callbridge.transport.collector
        if ready is not None:
            ready(node)
        await stop.wait()
        if node.cluster is not None and await _others_live(node):
            # a cluster node with somewhere to go hands its operations over with their calls (cluster.handover)
            log.info("stopping: handing every operation over to the other nodes with its calls")
            await node.cluster.drain(leave=False)
            await _linger(node)
        log.info("stopping: draining live calls for up to %.0f s", settings.drain_seconds)
        await drain(node, settings.drain_seconds)
        if node.cluster is not None:
            await node.cluster.drain()  # its operations are free for the other nodes at once
    finally:
        # open event streams end now (WebSockets close with 1001): uvicorn's shutdown waits for every response in
        # progress, and an NDJSON stream would otherwise hold the process for its whole `wait` (up to 300 s)
        node.app.state.streams.shutdown()
        http.should_exit = True
        with contextlib.suppress(Exception):
            await http_task
        for sig in installed:
            loop.remove_signal_handler(sig)
        await node.close()


HANDOVER_LINGER_SECONDS = 2.0  # after the new owners hold the operations: longer than Kamailio's sync interval


async def _others_live(node: Node) -> bool:
    """Another live cluster node can take this one's operations; False too when the database cannot say."""
    assert node.cluster is not None
    try:
        return await node.cluster.others_live()
    except Exception:
        log.warning("stopping: could not read the cluster's nodes; draining as a single node", exc_info=True)
        return False


async def _linger(node: Node) -> None:
    """Stay up until the new owners hold the operations handed over, and a little longer: until Kamailio's next
    sync, a party's request within a call handed over still reaches this node, which hands it on to the new
    owner (`b2bua.handover.hand_on`)."""
    assert node.cluster is not None and node.handover_state is not None
    handed = node.handover_state.handed
    if not handed:
        return
    if await node.cluster.await_owners(handed, timeout=3 * node.cluster.lease_seconds):
        await asyncio.sleep(HANDOVER_LINGER_SECONDS)
    else:
        log.warning("stopping: no node took operations %s over in time", ", ".join(handed))


async def drain(node: Node, seconds: float) -> None:
    """Stop taking calls, let live ones finish for up to `seconds`, then end the rest."""
    loop = asyncio.get_running_loop()
    node.switch.draining = True
    deadline = loop.time() + seconds
    while len(node.switch.legs) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    ended = end_live_calls(node)
    if ended:
        log.info("ended %d legs still live at the end of the drain", ended)
    deadline = loop.time() + 3.0
    # the BYEs' answers, CANCELs' 487s; transactions that only absorb retransmissions need no wait
    while node.endpoint.pending_transaction_count and loop.time() < deadline:
        await asyncio.sleep(0.02)


def end_live_calls(node: Node) -> int:
    """BYE (or CANCEL, or a final response to) every live leg, and close their calls as ended by "system"."""
    count = 0
    for leg in node.switch.legs:
        if leg.released:
            continue
        count += 1
        node.signalling.release(leg.leg_id, SHUTDOWN_CAUSE)
        node.service.on_leg_ended(leg.leg_id, "system")
    node.runtime.wake()
    return count


def serve_command(
    sip_host: str | None = typer.Option(
        None, help="SIP address (UDP and TCP), an IP address of this machine [env CALLBRIDGE_SIP_HOST; 127.0.0.1]"),
    sip_advertise: str | None = typer.Option(
        None, help="Address written in Via and Contact, if not --sip-host (NAT, load balancer) "
                   "[env CALLBRIDGE_SIP_ADVERTISE]"),
    sip_port: int | None = typer.Option(None, help="SIP port [env CALLBRIDGE_SIP_PORT; 5060]"),
    http_host: str | None = typer.Option(None, help="HTTP address [env CALLBRIDGE_HTTP_HOST; 127.0.0.1]"),
    http_port: int | None = typer.Option(None, help="HTTP port [env CALLBRIDGE_HTTP_PORT; 8080]"),
    database_url: str | None = typer.Option(
        None, help="Database URL [env CALLBRIDGE_DATABASE_URL; sqlite:///callbridge.db]"),
    allowed_networks: str | None = typer.Option(
        None, help="Networks SIP may be sent to, comma-separated [env CALLBRIDGE_ALLOWED_NETWORKS; loopback]"),
    trusted_networks: str | None = typer.Option(
        None, help="Networks never banned by the flood defence [env CALLBRIDGE_TRUSTED_NETWORKS]"),
    node_id: str | None = typer.Option(None, help="This node's id in the records [env CALLBRIDGE_NODE_ID; node-1]"),
    drain_seconds: float | None = typer.Option(
        None, help="On SIGTERM, how long live calls may go on [env CALLBRIDGE_DRAIN_SECONDS; 30]"),
    log_level: str | None = typer.Option(None, help="Log level [env CALLBRIDGE_LOG_LEVEL; INFO]"),
    log_format: str | None = typer.Option(None, help="text or json [env CALLBRIDGE_LOG_FORMAT; text]"),
    digest_algorithms: str | None = typer.Option(
        None, help="Digest algorithms offered, in order: MD5, SHA-256 [env CALLBRIDGE_DIGEST_ALGORITHMS; MD5]"),
    sip_ws_port: int | None = typer.Option(
        None, help="SIP over WebSocket (RFC 7118) port for browser phones; off when unset "
                   "[env CALLBRIDGE_SIP_WS_PORT]"),
    sip_tls_cert: str | None = typer.Option(
        None, help="PEM certificate: the WebSocket listener speaks TLS (wss) [env CALLBRIDGE_SIP_TLS_CERT]"),
    sip_tls_key: str | None = typer.Option(None, help="The certificate's PEM key [env CALLBRIDGE_SIP_TLS_KEY]"),
    rtpengine: Annotated[list[str] | None, typer.Option(
        "--rtpengine", help="An rtpengine relay, udp:HOST:PORT (its ng port); repeat it or give a comma list "
                            "[env CALLBRIDGE_RTPENGINE; none: media flows between the parties]")] = None,
    cluster: bool | None = typer.Option(
        None, "--cluster/--no-cluster", help="Run as a node of a cluster on PostgreSQL (docs/cluster.md) "
                                             "[env CALLBRIDGE_CLUSTER; off]"),
    lease_seconds: float | None = typer.Option(
        None, help="Cluster: how long an operation's lease lasts [env CALLBRIDGE_LEASE_SECONDS; 6]"),
    rtpengine_recording_dir: str | None = typer.Option(
        None, help="Where the rtpengine relays write recordings (their --recording-dir, pcap), as seen here "
                   "[env CALLBRIDGE_RTPENGINE_RECORDING_DIR; none: nothing is recorded]"),
    recordings_dir: str | None = typer.Option(
        None, help="Where recordings (one WAV per call) are kept [env CALLBRIDGE_RECORDINGS_DIR; recordings/ "
                   "beside the SQLite file, else in the working directory]"),
    rtpengine_dtmf_listen: str | None = typer.Option(
        None, help="HOST:PORT where the relays' DTMF log is received (rtpengine --dtmf-log-dest): the customer's "
                   "key presses become call.dtmf events [env CALLBRIDGE_RTPENGINE_DTMF_LISTEN; off]"),
    media_timeout_seconds: float | None = typer.Option(
        None, help="End an anchored call whose relay got no RTP from a party for this long; 0: never "
                   "[env CALLBRIDGE_MEDIA_TIMEOUT_SECONDS; 60]"),
    settings_file: str | None = typer.Option(
        None, "--settings", help="A TOML file with these settings' names as keys; flags and the environment win "
                                 "[env CALLBRIDGE_SETTINGS_FILE]"),
) -> None:
    """Run a callbridge node: SIP B2BUA and registrar, HTTP API, health and metrics."""
    try:
        settings = Settings.from_env(
            settings_file=settings_file,
            sip_host=sip_host, sip_advertise=sip_advertise, sip_port=sip_port, http_host=http_host,
            http_port=http_port, database_url=database_url, allowed_networks=allowed_networks,
            trusted_networks=trusted_networks, node_id=node_id, drain_seconds=drain_seconds, log_level=log_level,
            log_format=log_format, digest_algorithms=digest_algorithms, sip_ws_port=sip_ws_port,
            sip_tls_cert=sip_tls_cert, sip_tls_key=sip_tls_key, rtpengine=",".join(rtpengine) if rtpengine else None,
            cluster=cluster, lease_seconds=lease_seconds,
            rtpengine_recording_dir=rtpengine_recording_dir, recordings_dir=recordings_dir,
            rtpengine_dtmf_listen=rtpengine_dtmf_listen, media_timeout_seconds=media_timeout_seconds)
        check_on_this_machine(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(run(settings))
    except ClusterStartError as exc:  # another live node has this id, the schema is another version
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
