"""The cluster's command line (docs/cluster.md).

- `callbridge admin cluster nodes | leases | operations`: what the cluster's tables say, judged by PostgreSQL's
  clock (live nodes, lease holders and epochs, seconds left).
- `callbridge admin cluster move OPERATION NODE`: a handover with the calls: the holder stops taking new calls for
  the operation, lets its calls settle and forgets them (`cluster.handover`), releases the lease, and NODE takes
  it and adopts the calls from the records in its next round (`cluster.adopt`).
- `callbridge admin cluster drain NODE`: NODE hands every operation over the same way and takes none until it
  restarts; the other nodes adopt them with their calls.
- `callbridge cluster kamailio-config`: the Kamailio configuration of the front proxy, rendered from the template
  shipped in the package; `callbridge cluster kamailio-sync`: keeps that Kamailio's routing tables in step with the
  leases (once, or every `--interval` seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from callbridge.cli.admin import JSON_OPTION, admin_app, fail, run_in_database
from callbridge.cluster import kamailio, leases, nodes
from callbridge.cluster.member import DEFAULT_LEASE_SECONDS
from callbridge.storage.database import DATABASE_URL_ENV, DatabaseUrlError, make_engine

admin_cluster_app = typer.Typer(no_args_is_help=True, help="The cluster: nodes, leases, operations, handovers.")
admin_app.add_typer(admin_cluster_app, name="cluster")
cluster_app = typer.Typer(no_args_is_help=True, help="The cluster's front proxy (Kamailio).")

LEASE_OPTION = typer.Option(DEFAULT_LEASE_SECONDS, "--lease-seconds",
                            help="The nodes' lease length: a node is live while its heartbeat is younger.")


def _print(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    typer.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        typer.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _cluster_only(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise _Refused(f"a cluster needs PostgreSQL; the database URL names {conn.dialect.name}")


class _Refused(Exception):
    pass


def _run(ctx: typer.Context, action: Any) -> Any:
    def guarded(conn: Connection) -> Any:
        _cluster_only(conn)
        return action(conn)
    try:
        return run_in_database(ctx, guarded)
    except _Refused as exc:
        fail(str(exc))


@admin_cluster_app.command("nodes")
def cluster_nodes(ctx: typer.Context, lease_seconds: float = LEASE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """The nodes that joined, live or not."""
    rows = _run(ctx, lambda conn: [
        {"node": n.node_id, "slot": n.slot, "sip": f"{n.sip_host}:{n.sip_port}", "http": n.http_url,
         "live": n.live, "draining": n.draining, "heartbeat_age": round(n.heartbeat_age, 1)}
        for n in nodes.read_nodes(conn, lease_seconds)])
    _print(rows, ["node", "slot", "sip", "http", "live", "draining", "heartbeat_age"], as_json)


@admin_cluster_app.command("leases")
def cluster_leases(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every lease: holder, epoch, seconds left, handover target."""
    rows = _run(ctx, lambda conn: [
        {"operation": lease.operation_id, "node": lease.node_id or "", "epoch": lease.epoch,
         "expired": lease.expired, "seconds_left": round(lease.seconds_left, 1), "move_to": lease.move_to or ""}
        for lease in leases.read_all(conn)])
    _print(rows, ["operation", "node", "epoch", "expired", "seconds_left", "move_to"], as_json)


@admin_cluster_app.command("operations")
def cluster_operations(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every operation with the node that holds it live (empty when none does)."""
    def read(conn: Connection) -> list[dict[str, Any]]:
        return [{"operation": r.id, "sip_domain": r.sip_domain, "node": r.node or ""} for r in conn.execute(text(
            "SELECT o.id, o.sip_domain, CASE WHEN l.expires_at > now() THEN l.node_id END AS node "
            "FROM operations o LEFT JOIN cluster_leases l ON l.operation_id = o.id ORDER BY o.id"))]
    _print(_run(ctx, read), ["operation", "sip_domain", "node"], as_json)


@admin_cluster_app.command("move")
def cluster_move(ctx: typer.Context, operation_id: str, node_id: str,
                 lease_seconds: float = LEASE_OPTION) -> None:
    """Hand OPERATION over to NODE with its calls: the holder lets them go and releases its lease, NODE adopts
    them."""
    def move(conn: Connection) -> str:
        if conn.execute(text("SELECT 1 FROM operations WHERE id = :op"), {"op": operation_id}).first() is None:
            raise _Refused(f"no operation {operation_id!r}")
        target = next((n for n in nodes.read_nodes(conn, lease_seconds) if n.node_id == node_id), None)
        if target is None or not target.live or target.draining:
            raise _Refused(f"node {node_id!r} is not a live node of the cluster (see `callbridge admin cluster "
                           f"nodes`)")
        if not leases.request_move(conn, operation_id, node_id):
            raise _Refused(f"operation {operation_id!r} is not placed on any node yet")
        return node_id
    _run(ctx, move)
    typer.echo(f"operation {operation_id} moves to node {node_id}: its holder releases it and {node_id} adopts "
               f"it with its live calls within a few rounds")


@admin_cluster_app.command("drain")
def cluster_drain(ctx: typer.Context, node_id: str, lease_seconds: float = LEASE_OPTION) -> None:
    """Move every operation of NODE to the other nodes: NODE releases its leases in its next round and takes no
    more until it restarts; calls up on it are carried over to the new owners."""
    def drain(conn: Connection) -> list[str]:
        if not nodes.request_drain(conn, node_id, lease_seconds):
            raise _Refused(f"node {node_id!r} is not a live node of the cluster (see `callbridge admin cluster "
                           f"nodes`)")
        return [lease.operation_id for lease in leases.read_all(conn) if lease.node_id == node_id]
    held = _run(ctx, drain)
    typer.echo(f"node {node_id} drains: it releases {len(held)} operations ({', '.join(held) or 'none'}) in its "
               f"next round and the other nodes adopt them with their live calls")


@cluster_app.command("kamailio-config")
def kamailio_config(
    listen: str = typer.Option("127.0.0.1:5060", help="The proxy's SIP address, HOST:PORT (UDP and TCP)."),
    tables: str = typer.Option("/var/lib/callbridge/kamailio", help="Folder of the dispatcher list."),
    rpc: str = typer.Option("127.0.0.1:5090", help="Kamailio's JSON-RPC datagram socket, HOST:PORT."),
    ping_interval: int = typer.Option(2, min=1, help="Seconds between OPTIONS probes of each node."),
    children: int = typer.Option(4, min=1, help="Kamailio's UDP and TCP worker processes."),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here, not to stdout.")] = None,
) -> None:
    """Print the Kamailio configuration of the cluster's front proxy."""
    host, port = _address("--listen", listen)
    rpc_host, rpc_port = _address("--rpc", rpc)
    config = kamailio.render_config(kamailio.ProxySettings(host=host, port=port, tables=tables, rpc_host=rpc_host,
                                                           rpc_port=rpc_port, ping_interval=ping_interval,
                                                           children=children))
    if output is None:
        typer.echo(config, nl=False)
    else:
        output.write_text(config, encoding="utf-8")


@cluster_app.command("kamailio-sync")
def kamailio_sync(
    tables: Annotated[Path, typer.Option(help="Folder of the dispatcher list (as in kamailio-config).")],
    database_url: str = typer.Option(..., "--database-url", envvar=DATABASE_URL_ENV, help="The cluster's database."),
    rpc: str = typer.Option("127.0.0.1:5090", help="Kamailio's JSON-RPC datagram socket, HOST:PORT."),
    interval: float = typer.Option(1.0, min=0.1, help="Seconds between syncs."),
    once: bool = typer.Option(False, "--once", help="Sync once and exit."),
) -> None:
    """Keep Kamailio's routing tables in step with the leases in PostgreSQL."""
    address = _address("--rpc", rpc)
    try:
        engine = make_engine(database_url)
    except DatabaseUrlError as exc:
        fail(str(exc))
    try:
        while True:
            try:
                with engine.connect() as conn:
                    kamailio.sync_once(conn, tables, address)
            except (SQLAlchemyError, kamailio.RpcError) as exc:
                if once:
                    fail(str(getattr(exc, "orig", None) or exc).splitlines()[0])
                typer.echo(f"warning: {str(exc).splitlines()[0]}", err=True)
            if once:
                return
            time.sleep(interval)
    finally:
        engine.dispose()


def _address(flag: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT", param_hint=flag)
    return host, int(port)
