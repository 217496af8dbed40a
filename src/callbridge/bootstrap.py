"""The one place where callbridge is wired together.

    node = await bootstrap(settings)          # storage opened, SIP listening, leftovers of a crash reconciled
    node.service.change_status("0042", "1001", "ready")
    ...
    await node.close()                         # SIP closed, writes flushed, storage closed

`bootstrap` needs a running event loop (the SIP runtime lives on it). With `sip_port=0` a free port is taken; the
bound address is `node.sip_address` (UDP and TCP share the port). The HTTP application is built (`node.app`) but
not served: `callbridge.serve` runs it on uvicorn; tests may serve it or call the service directly.

Start-up order (docs/design.md, "Storage"): open storage (migrations, directory) → bind SIP → read what a crash left
(`Storage.leftovers`) → BYE every dialog left from before on both legs (`Endpoint.restore_dialog`) → close those
calls in the records and bring their agents to the state the restart rule gives (`callcontrol.restart`:
`Storage.close_leftovers` writes the changes with their `agent.state_changed` events, `AgentDesk.restore` sets them
in memory) → restore the registrations still valid (their agents are reported registered) → schedule stored recalls →
register the trunks that register to their provider (`b2bua.trunks`) → take traffic → poll the directory for
administrative changes every `directory_poll_seconds` (`Directory.watch`; after a reload the trunks' networks and the
idle-agent index are rebuilt, and so are the webhook dispatcher's targets, since they are derived from the directory;
every other reader asks the directory on each use).

The event log is durable (`storage.event_log`): before the service is built it continues each operation's seq
from the database, the writer seals its batches per loop turn and reports commits to the log, webhooks deliver
from the log with stored cursors, and a background task prunes events older than the retention
(`CALLBRIDGE_EVENT_RETENTION_DAYS`, default 7) every `EVENT_PRUNE_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette

from callbridge.b2bua.defence import Defence, DefenceConfig
from callbridge.b2bua.dialogs import RESTORED_CSEQ_GAP
from callbridge.b2bua.media_watch import MediaWatch
from callbridge.b2bua.ports import B2buaDirectory, DialogRecord, DialogStore, Media, RegistrationStore
from callbridge.b2bua.registrar import ChallengerPool, RegistrarLimits
from callbridge.b2bua.relay_loss import RelayLoss
from callbridge.b2bua.signalling import SipSignalling
from callbridge.b2bua.switch import Switch
from callbridge.b2bua.trunks import TrunkRegistrationConfig
from callbridge.callcontrol.ports import TimerHandle
from callbridge.callcontrol.service import CallControlService
from callbridge.cluster.adopt import TakenOver, take_over
from callbridge.cluster.forward import ForwardToOwner
from callbridge.cluster.handover import HandedOver, Handovers
from callbridge.cluster.member import ClusterMember
from callbridge.cluster.nodes import prepare_schema
from callbridge.config import Settings, listen_address, tls_context
from callbridge.http.app import create_app
from callbridge.http.auth import TokenGate
from callbridge.http.desk_common import DeskConfig
from callbridge.http.events import EventLog
from callbridge.http.metrics import MetricsRegistry
from callbridge.http.webhooks import LogWebhookDispatcher, WebhookDispatcher, WebhookTarget
from callbridge.media.dtmf_log import DtmfLogListener, LoggedDigit
from callbridge.media.relays import RelaySet, RelayTimers
from callbridge.media.rtpengine import RtpengineMedia
from callbridge.media.shell import NgShell
from callbridge.node_metrics import node_metrics
from callbridge.sip.dialog import DialogState
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.timers import TimerConfig
from callbridge.storage import Leftovers, Storage
from callbridge.storage.database import make_engine
from callbridge.storage.directory import Directory
from callbridge.storage.event_log import DEFAULT_RETENTION_DAYS, RETENTION_ENV, EventStore
from callbridge.storage.history import History
from callbridge.storage.open_recordings import RecordingJournalStore
from callbridge.storage.recordings import RECORDING_PRUNE_INTERVAL_S, RecordingArchive
from callbridge.storage.supervisors import SupervisorAccounts
from callbridge.storage.token_usage import TokenUsage
from callbridge.storage.webhook_cursors import CursorStore
from callbridge.transport import DestinationPolicy, Runtime, bind_udp

__all__ = ["Node", "bootstrap"]

log = logging.getLogger(__name__)
USER_AGENT = "callbridge"
EVENT_PRUNE_INTERVAL_S = 3600.0
# The desk's sign-ins (agents' page, supervisors' board) count failures per source like SIP does, with their own
# table: 10 wrong passwords in a minute ban the address from signing in for 5 minutes (loopback included).
SIGN_IN_DEFENCE = DefenceConfig(scanner_filter=False, failure_limit=10, failure_window=60.0, ban_seconds=300.0)


def retention_days_from_env(environ: dict[str, str] | None = None) -> float:
    """`CALLBRIDGE_EVENT_RETENTION_DAYS` (a positive number of days), else 7."""
    raw = (os.environ if environ is None else environ).get(RETENTION_ENV, "")
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        raise ValueError(f"{RETENTION_ENV}: {raw!r} is not a number of days") from None
    if not 0 < days < float("inf"):
        raise ValueError(f"{RETENTION_ENV}: {raw!r} is not a positive number of days")
    return days


class WallClock:
    """The domain's Clock: wall-clock seconds (records are stamped with it)."""

    def now(self) -> float:
        return time.time()


class LoopScheduler:
    """The domain's Scheduler on the event loop; what a timeout does to SIP is sent at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, after: Callable[[], None]) -> None:
        self._loop = loop
        self._after = after

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        def run() -> None:
            try:
                callback()
            except Exception:
                log.exception("a domain timer failed")
            self._after()

        return self._loop.call_later(delay, run)


@dataclass
class Node:
    """Everything `bootstrap` made, for `serve`, the tests and the benchmarks."""

    settings: Settings
    storage: Storage
    endpoint: Endpoint
    runtime: Runtime
    switch: Switch
    signalling: SipSignalling
    service: CallControlService
    events: EventLog
    metrics: MetricsRegistry
    app: Starlette
    sip_address: tuple[str, int]
    reconciled: Leftovers | None = None
    sip_ws_address: tuple[str, int] | None = None  # the SIP WebSocket listener (RFC 7118), when one was asked for
    directory_watch: asyncio.Task[None] | None = None
    webhooks: WebhookDispatcher | None = None  # the operations' webhook targets, rebuilt after each reload
    event_pruning: asyncio.Task[None] | None = None
    media_shell: NgShell | None = None  # the rtpengine relays' ng socket, when --rtpengine names any
    cluster: ClusterMember | None = None  # a cluster node's leases (docs/cluster.md); None on a single node
    takeovers: list[TakenOver] = field(default_factory=list)  # what each operation gained took over (cluster.adopt)
    handovers: list[HandedOver] = field(default_factory=list)  # operations given to another node (cluster.handover)
    handover_state: Handovers | None = None  # a cluster node's side of handovers
    _takeover_tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    recordings: RecordingArchive | None = None  # recorded calls joined into WAVs and stored (storage/recordings.py)
    recording_pruning: asyncio.Task[None] | None = None
    media_watch: MediaWatch | None = None  # the relay's reports of anchored calls' media (DTMF)
    dtmf_listener: DtmfLogListener | None = None  # the relays' DTMF log, when --rtpengine-dtmf-listen names it
    media_watching: asyncio.Task[None] | None = None  # dead media: the relay's counters polled (media_watch.py)
    _closed: bool = field(default=False, repr=False)

    @property
    def live_legs(self) -> int:
        return len(self.switch.legs)

    async def close(self) -> None:
        """Stop SIP and storage (live calls are not ended here: `serve` drains them first)."""
        if self._closed:
            return
        self._closed = True
        for task in (self.directory_watch, self.event_pruning, self.recording_pruning, self.media_watching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.close()
        for task in list(self._takeover_tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.switch.trunk_registrations.unregister()  # Expires: 0 at each provider, a bounded wait
        self.switch.close()
        await self.runtime.close()
        if self.dtmf_listener is not None:
            self.dtmf_listener.close()
        if self.media_shell is not None:
            # the relay calls the drain ended are deleted before the socket goes (bounded by the ng time-out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.switch.anchor.settle(), timeout=5.0)
            self.media_shell.close()
        if self.recordings is not None:  # the joins of calls that ended, before the writer closes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recordings.settle(), timeout=30.0)
        await asyncio.to_thread(self.storage.close)


async def bootstrap(settings: Settings, *, timers: TimerConfig | None = None, session_expires: int | None = 1800,
                    min_se: int = 90, defence: DefenceConfig | None = None,
                    registrar_limits: RegistrarLimits | None = None, rng: random.Random | None = None,
                    secret: bytes | None = None, reconcile: bool = True, listen_tcp: bool = True,
                    trunk_registration: TrunkRegistrationConfig | None = None,
                    event_retention_days: float | None = None,
                    event_prune_interval: float = EVENT_PRUNE_INTERVAL_S) -> Node:
    """`event_retention_days`: None reads `CALLBRIDGE_EVENT_RETENTION_DAYS` (default 7)."""
    loop = asyncio.get_running_loop()
    retention_days = retention_days_from_env() if event_retention_days is None else event_retention_days
    storage = await asyncio.to_thread(_open_storage, settings)
    try:
        return await _wire(settings, storage, loop, timers=timers, session_expires=session_expires, min_se=min_se,
                           defence=defence, registrar_limits=registrar_limits, rng=rng, secret=secret,
                           reconcile=reconcile, listen_tcp=listen_tcp, trunk_registration=trunk_registration,
                           retention_s=retention_days * 86400.0, prune_interval=event_prune_interval)
    except BaseException:
        await asyncio.to_thread(storage.close)
        raise


async def _wire(settings: Settings, storage: Storage, loop: asyncio.AbstractEventLoop, *,
                timers: TimerConfig | None, session_expires: int | None, min_se: int,
                defence: DefenceConfig | None, registrar_limits: RegistrarLimits | None,
                rng: random.Random | None, secret: bytes | None, reconcile: bool, listen_tcp: bool,
                trunk_registration: TrunkRegistrationConfig | None, retention_s: float,
                prune_interval: float) -> Node:
    sock = _bind_sip_udp(settings.sip_host, settings.sip_port, tcp_too=listen_tcp)
    host, port = sock.getsockname()[:2]
    # Via and Contact carry the advertised address (a node behind NAT or a load balancer); the socket is bound to
    # sip_host.
    endpoint = Endpoint(settings.sip_advertise or host, port, timers or TimerConfig(), rng or random.Random(),
                        user="callbridge", user_agent=USER_AGENT, session_expires=session_expires, min_se=min_se,
                        auto_ack=False)
    exempt = tuple(settings.trusted_networks)
    guard = Defence(defence or DefenceConfig(exempt_networks=exempt))
    # The B2BUA's ports (b2bua/ports.py) are the storage adapter's repositories: the B2BUA imports no storage.
    directory: B2buaDirectory = storage.directory
    dialogs: DialogStore = storage.dialogs
    registrations: RegistrationStore = storage.registrations
    media_shell, media = await _media_plane(settings, rng)
    switch = Switch(endpoint, directory, defence=guard,
                    challengers=ChallengerPool(secret or secrets.token_bytes(32),
                                               algorithms=settings.digest_algorithms),
                    dialogs=dialogs, registrations=registrations, wall_clock=time.time,
                    loop=loop, trunk_registration=trunk_registration, media=media,
                    registrar_limits=registrar_limits or RegistrarLimits(min_expires=settings.registration_min_expires))
    runtime = Runtime(switch, policy=DestinationPolicy(settings.allowed_networks), on_event=switch.on_event,
                      loop=loop)
    try:
        await runtime.listen_udp(sock=sock)
        if listen_tcp:
            await runtime.listen_tcp(host, port)
        ws_address = None
        if settings.sip_ws_port is not None:
            tls = (tls_context(settings.sip_tls_cert, settings.sip_tls_key)
                   if settings.sip_tls_cert is not None and settings.sip_tls_key is not None else None)
            ws_address = await runtime.listen_ws(host, settings.sip_ws_port, ssl_context=tls)
    except BaseException:
        await runtime.close()  # before the socket is closed: the runtime unregisters its file descriptor
        sock.close()
        if media_shell is not None:
            media_shell.close()
        raise
    signalling = SipSignalling(switch)
    store = EventStore(storage.writer, storage.engine)
    events = EventLog(retention_s=retention_s, store=store)
    events.restore(await asyncio.to_thread(store.bounds))  # before anything publishes: seq continues
    storage.writer.seal_on(loop)
    events.bind(loop)
    service = CallControlService(directory=storage.directory, states=storage.states, records=storage.calls,
                                 recalls=storage.recalls, signalling=signalling, events=events, clock=WallClock(),
                                 scheduler=LoopScheduler(loop, runtime.wake), node_id=settings.node_id)
    switch.attach(service, runtime)
    metrics = node_metrics(endpoint, runtime, switch)
    _media_metrics(metrics, switch, media_shell)
    cursors = CursorStore(storage.writer, storage.engine)
    webhooks = LogWebhookDispatcher(webhook_targets(storage.directory), log=events, save_cursor=cursors.save,
                                    saved=await asyncio.to_thread(cursors.load))  # started and stopped with the app
    desk = DeskConfig(directory=storage.directory, supervisors=SupervisorAccounts(storage.engine),
                      sip_ws=_page_ws_address(settings, ws_address), sip_wss=settings.sip_tls_cert is not None,
                      failures=Defence(SIGN_IN_DEFENCE), clock=time.monotonic,
                      page_listening=switch.anchor.listeners)
    # a cluster's nodes count daily quotas in the database: one count, kept across a failover (storage/token_usage)
    gate = TokenGate(storage.directory, ledger=TokenUsage(storage.engine)) if settings.cluster else None
    app = create_app(service=service, directory=storage.directory, events=events, metrics=metrics,
                     webhooks=webhooks, healthy=lambda: not switch.draining, history=History(storage.engine),
                     desk=desk, gate=gate)
    node = Node(settings, storage, endpoint, runtime, switch, signalling, service, events, metrics, app,
                (host, port), webhooks=webhooks, media_shell=media_shell)
    node.sip_ws_address = ws_address
    if settings.rtpengine_recording_dir is not None:
        # a restart finishing a recording whose row lost the customer's port reads it from the customer's dialog's
        # SDP (storage/open_recordings.customer_sent_sdp)
        switch.dialogs.sdps = True
    if settings.cluster:
        # Before anything writes (reconciliation included): every batch declares the leases' epochs.
        member = ClusterMember(storage.engine, settings.node_id, sip_host=settings.advertised_sip_host,
                               sip_port=port, http_url=f"http://{settings.http_host}:{settings.http_port}",
                               lease_seconds=settings.lease_seconds)
        storage.writer.fence = member.fence
        switch.dialogs.sdps = True  # another node adopting a call starts from its dialogs' SDPs (cluster.adopt)
        handovers = Handovers(node)
        member.prepare_release = handovers.ready  # a handover lets the calls go before the lease (cluster.handover)
        member.flush = lambda: storage.writer.flush(10.0)

        def gained(operation_id: str, _epoch: int) -> None:
            handovers.gained(operation_id)
            _take_over(node, operation_id, member.adopted)

        member.on_gained = gained
        member.on_lost = handovers.lost
        switch.handed.owner_of = member.owner_address  # requests of dialogs handed over go on to the owner
        node.handover_state = handovers
        webhooks.follow_ownership(member.owns, cursors.load_one)  # the owner delivers, from the stored cursor
        app.state.streams.owns = member.owns  # a stream of an operation moved away ends (http/streams.py)
        # any node answers the API: a request for an operation another node holds is forwarded to it
        app.add_middleware(ForwardToOwner, gate=app.state.gate, member=member, engine=storage.engine)
        try:
            await member.start()
        except BaseException:
            await member.close()
            await runtime.close()
            raise
        node.cluster = member
    if media_shell is not None:
        shell, loss = media_shell, RelayLoss(switch)  # calls whose relay died: re-anchored or ended (relay_loss.py)
        shell.on_relay_down = lambda address: loss.lost(shell.relays.calls_on(address))
        try:
            watch, node.dtmf_listener = await _media_watch(settings, switch, loss.revive)
        except OSError:  # the DTMF log's address cannot be bound (in use, not this machine's)
            await node.close()
            raise
        node.media_watch = watch
        metrics.counter("callbridge_media_watch_total", "What the relays reported of anchored calls' media: dtmf "
                        "(the customer's digits reported), dtmf_ignored, polls (of the RTP counters), "
                        "media_timeouts (calls ended for dead media), revivals (calls anchored afresh after a "
                        "silence).", lambda: dict(watch.stats), label="counter")
        if settings.media_timeout_seconds > 0:
            node.media_watching = loop.create_task(watch.run(), name="callbridge-media-watch")
    # before reconciliation, which finishes the recordings a crash left (their WAVs go to the archive)
    node.recordings = RecordingArchive(settings.recordings_path, storage.writer, storage.engine)
    switch.anchor.recorder.sink = node.recordings
    switch.anchor.waiting.delay = settings.queue_music_delay_seconds
    switch.anchor.recorder.journal = RecordingJournalStore(storage.writer, settings.node_id, time.time)
    if reconcile:
        node.reconciled = await _reconcile(node)
    service.restore()  # a short read at start-up; its timers must be armed on the loop
    switch.start_trunks()
    node.event_pruning = loop.create_task(events.prune_every(prune_interval), name="callbridge-event-pruning")
    node.recording_pruning = loop.create_task(node.recordings.prune_every(RECORDING_PRUNE_INTERVAL_S),
                                              name="callbridge-recording-pruning")
    if settings.directory_poll_seconds > 0:
        node.directory_watch = loop.create_task(
            storage.directory.watch(settings.directory_poll_seconds, lambda: _directory_changed(node)),
            name="callbridge-directory-watch")
    return node


def _take_over(node: Node, operation_id: str, adopted: Callable[[str], None]) -> None:
    """An operation just gained: take over what dead nodes left of it, on a task of its own (cluster.adopt);
    `adopted(operation_id)` once done (the API serves it from then on: `ClusterMember.serves`)."""
    async def run() -> None:
        try:
            node.takeovers.append(await take_over(node, operation_id))
        except Exception:
            log.exception("cluster: taking operation %s over failed", operation_id)
        finally:
            adopted(operation_id)
        if isinstance(node.webhooks, LogWebhookDispatcher):
            node.webhooks.gained(operation_id)  # its targets resume, the log having the operation's seq

    task = asyncio.get_running_loop().create_task(run(), name=f"callbridge-takeover-{operation_id}")
    node._takeover_tasks.add(task)
    task.add_done_callback(node._takeover_tasks.discard)


def _page_ws_address(settings: Settings, bound: tuple[str, int] | None) -> tuple[str | None, int] | None:
    """Where the agent's page connects its SIP.js: the advertised host, else the bound one; None for the host
    when bound to every address (the page then uses the host it was loaded from)."""
    if bound is None:
        return None
    host = settings.sip_advertise or bound[0]
    return (None if host in ("0.0.0.0", "::") else host), bound[1]


def _open_storage(settings: Settings) -> Storage:
    """The storage of a node; a cluster node checks the schema version first (`cluster.nodes.prepare_schema`)."""
    if not settings.cluster:
        return Storage.open(settings.database_url, settings.node_id)
    engine = make_engine(settings.database_url)
    try:
        prepare_schema(engine, settings.lease_seconds)
        return Storage(engine, settings.node_id, migrate=False)
    except BaseException:
        engine.dispose()
        raise


def _directory_changed(node: Node) -> None:
    """Rebuild what is derived from the directory after `Directory.watch` reloaded it."""
    node.switch.reload_trunks()
    node.service.reindex_agents()
    if node.webhooks is not None:
        node.webhooks.set_targets(webhook_targets(node.storage.directory))


def webhook_targets(directory: Directory) -> list[WebhookTarget]:
    """Every operation's stored webhooks as the dispatcher's targets (keyed by id: a changed URL keeps its queue)."""
    return [WebhookTarget(hook.operation_id, hook.url, hook.secret, frozenset(hook.events), key=hook.id)
            for hook in directory.list_webhooks()]


def _bind_sip_udp(host: str, port: int, *, tcp_too: bool) -> socket.socket:
    """The UDP socket; with port 0, one whose port is also free for TCP (SIP listens on both at one port), since
    the kernel picks the UDP port without looking at TCP: a port taken by a TCP connection would fail listen_tcp."""
    if port != 0 or not tcp_too:
        return bind_udp(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        sock = bind_udp(host, 0)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, sock.getsockname()[1]))
            except OSError:
                sock.close()
                continue
        return sock
    raise OSError(f"no port free for both UDP and TCP on {host}")


async def _reconcile(node: Node) -> Leftovers:
    """End what a crash left (see the module docstring); returns what was found."""
    storage, switch = node.storage, node.switch
    found = await storage.aleftovers()
    # A peer at a registered agent's source address is that agent's phone, maybe behind NAT: BYE it there.
    agents_at = {(r.source_host, r.source_port) for r in found.registrations}
    for record in found.dialogs:
        peer = (record.peer_host, record.peer_port)
        try:
            switch.end_restored_dialog(_dialog_state(record), peer if peer in agents_at else None, record.transport)
        except Exception:
            log.exception("could not end the dialog of leg %s left from before", record.leg_id)
    relays = {d.conn_id: d.media_relay for d in found.dialogs if d.media_relay}
    held = node.cluster.held if node.cluster is not None else None
    for left in found.recordings:  # stopped on its relay, the relay's call deleted, joined into its WAV
        if held is None or left.operation_id in held:
            switch.anchor.finish_left(left, relays.pop(left.conn_id, None))
    for conn_id, relay in sorted(relays.items()):
        switch.anchor.delete_left(conn_id, relay)  # an anchored call's relay call ends with it
    if found.dialogs:
        await asyncio.sleep(0.05)  # let the BYEs leave before the records say they are over
    now = time.time()
    # the agents' passages through the restart, decided once from what was read: the rows reconciliation writes and
    # the events numbered here come from the same decisions, in reconciliation's own transaction
    restarts = found.agents
    registrations = found.registrations
    if node.cluster is not None:
        # A cluster node restarted under its old id reconciles only the operations it holds again (its first round
        # ran before this): an operation another node holds now was handed over or taken over with its agents,
        # whose newest state rows may still be this id's; they are the owner's now, not this restart's.
        held = node.cluster.held
        restarts = [agent for agent in restarts if agent.operation_id in held]
        registrations = [r for r in registrations if r.operation_id in held]
    changes = node.events.restarted(restarts, now)
    closed = await storage.aclose_leftovers(now, node.events.rows(changes), restarts)
    node.events.show(changes)
    node.service.restore_agents(restarts)  # before the registrations are reported (a later loop turn)
    switch.restore_registrations(registrations)
    kept = len(restarts) - len(changes)
    if closed.calls or closed.dialogs or changes:
        log.warning("reconciled at start-up: %d calls closed, %d dialogs ended, %d agents kept their state, "
                    "%d changed", len(closed.calls), len(closed.dialogs), kept, len(changes))
    elif kept:
        log.info("restored at start-up: %d agents kept their state", kept)
    return closed


def _dialog_state(record: DialogRecord) -> DialogState:
    return DialogState(call_id=record.call_id, local_tag=record.local_tag, remote_tag=record.remote_tag,
                       local_seq=record.local_cseq + RESTORED_CSEQ_GAP, remote_seq=record.remote_cseq,
                       local_uri=record.local_uri, remote_uri=record.remote_uri, remote_target=record.remote_target,
                       route_set=record.route_set, secure=False, is_uac=False)


async def _media_plane(settings: Settings, rng: random.Random | None) -> tuple[NgShell | None, Media | None]:
    """The rtpengine relays of `--rtpengine`, pinged from now on; none configured: no media plane (direct)."""
    if not settings.rtpengine:
        return None, None
    shell = NgShell(RelaySet(settings.rtpengine_relays, rng or random.Random(),
                             timers=RelayTimers(ping_interval=settings.rtpengine_ping_seconds,
                                                 pings_to_lose=settings.rtpengine_pings_to_lose)))
    spool = Path(settings.rtpengine_recording_dir) if settings.rtpengine_recording_dir is not None else None
    await shell.start()
    return shell, RtpengineMedia(shell, recording_dir=spool)


async def _media_watch(settings: Settings, switch: Switch,
                       revive: Callable[[str], bool]) -> tuple[MediaWatch, DtmfLogListener | None]:
    """What the relays report of anchored calls' media: the customer's DTMF from their DTMF log (when
    `--rtpengine-dtmf-listen` names where rtpengine's `--dtmf-log-dest` sends it), and dead media (polled by the
    task bootstrap starts when `media_timeout_seconds` is not 0)."""
    watch = MediaWatch(switch, timeout=settings.media_timeout_seconds,
                       revive_after=settings.media_revive_seconds, revive=revive)
    if settings.rtpengine_dtmf_listen is None:
        return watch, None

    def digit(d: LoggedDigit) -> None:
        watch.dtmf(d.conn_id, d.leg_id, d.digit, d.duration_ms)

    listener = DtmfLogListener({host for host, _ in settings.rtpengine_relays}, digit)
    await listener.start(*listen_address(settings.rtpengine_dtmf_listen))
    return watch, listener


def _media_metrics(registry: MetricsRegistry, switch: Switch, media_shell: NgShell | None) -> None:
    """The media plane's numbers on `/metrics` (here, not in `node_metrics`: only bootstrap knows the relay)."""
    registry.counter("callbridge_media_calls_total", "Calls by media outcome at their start (anchored, direct, "
                     "direct_relay_down, refused_relay_down), media steps that failed mid-call, and queue callers "
                     "whose music waited for a relay that did not keep up (queue_music_deferred).",
                     lambda: dict(switch.anchor.stats), label="outcome")
    if media_shell is not None:
        relays = media_shell.relays
        registry.gauge("callbridge_media_relay_up", "1 when the rtpengine relay answers its pings, else 0.",
                       lambda: {f"{host}:{port}": int(r.up) for (host, port), r in relays.relays.items()},
                       label="relay")
        registry.counter("callbridge_media_ng_total", "ng control protocol counters (sent: requests made; queued: "
                         "of them, those that waited for the relay's window; queued_setup: of those, the set-up "
                         "commands; withdrawn: queued ones never sent; retransmissions, replies, timeouts, "
                         "queued_timeouts: time-outs still in the queue; unparseable, unknown_cookie, wrong_source: "
                         "datagrams dropped).", lambda: dict(relays.client.stats), label="counter")
        registry.gauge("callbridge_media_ng_outstanding", "ng requests sent to the relay and not answered yet (its "
                       "window, 64 at most).",
                       lambda: {f"{host}:{port}": relays.client.outstanding((host, port))[0]
                                for host, port in relays.relays}, label="relay")
        registry.gauge("callbridge_media_ng_queued", "ng requests waiting for the relay's window.",
                       lambda: {f"{host}:{port}": relays.client.queued((host, port)) for host, port in relays.relays},
                       label="relay")
