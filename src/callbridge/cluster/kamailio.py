"""Kamailio in front of the cluster: the configuration callbridge ships, and the routing tables it reads.

- `render_config` fills `kamailio.cfg.tmpl` (next to this module): where the proxy listens, where its tables are,
  its JSON-RPC socket, how often it probes the nodes. The template's own comments say how it routes.
- The routing tables: `dispatcher.list`, a file (one dispatcher set per node, numbered by the node's slot, with its
  SIP address), and the htable "owners" in Kamailio's memory ("d:<sip domain>" and "n:<DID>" to the slot of the
  node holding the operation's lease). Why RPC rather than Kamailio reading PostgreSQL: Debian's Kamailio 5.6 has no
  db_postgres module (a separate package, not installed with it), and db_text caches its files with no reload; the
  dispatcher module reloads its list on an RPC and htable keys are set and deleted by RPC, which is all routing
  needs.
- `sync_once` renders the tables from PostgreSQL, rewrites the list when it changed (atomically: a temporary file
  renamed), and reloads it whenever what Kamailio has loaded (`dispatcher.list`) differs from the rendered list,
  not only when the file changed: a reload can fail after the file was written (Kamailio refuses a reload within
  `reload_delta` of the last one, "Ongoing reload"; or its RPC was not up yet at its start, having loaded the
  empty list), and a sync that trusted the file would never reload it. Then it reads the htable back
  (`htable.dump`) and sets or deletes the keys that differ. A restarted Kamailio has an empty htable; the next sync
  fills it (run it in a loop: `callbridge cluster kamailio-sync`).
An operation whose lease is free or expired keeps the last owner's slot until another node takes it: Kamailio's
probing says whether that node still answers (503 while it does not).
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")



@dataclass(frozen=True, slots=True)
class ProxySettings:
    host: str = "127.0.0.1"
    port: int = 5060
    tables: str = "/var/lib/callbridge/kamailio"
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 5090
    ping_interval: int = 2  # seconds between OPTIONS probes of each node
    children: int = 4


def render_config(settings: ProxySettings) -> str:
    values = {"host": settings.host, "port": settings.port, "tables": settings.tables,
              "rpc_host": settings.rpc_host, "rpc_port": settings.rpc_port,
              "ping_interval": settings.ping_interval, "children": settings.children}
    # ${name} placeholders only: Kamailio's own $pv and $(...) syntax is left alone
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), TEMPLATE.read_text(encoding="utf-8"))


_LEASE_KEYS = text("""
SELECT 'd:' || o.sip_domain AS key, n.slot, l.node_id IS NULL AS released
FROM cluster_leases l JOIN operations o ON o.id = l.operation_id LEFT JOIN cluster_nodes n ON n.node_id = l.node_id
UNION ALL
SELECT 'n:' || d.number AS key, n.slot, l.node_id IS NULL AS released
FROM dids d JOIN cluster_leases l ON l.operation_id = d.operation_id LEFT JOIN cluster_nodes n ON n.node_id = l.node_id
ORDER BY key
""")


@dataclass(frozen=True, slots=True)
class Tables:
    """What Kamailio routes by, read from PostgreSQL in one statement (one snapshot)."""

    dispatcher: str  # dispatcher.list: one set per node, numbered by its slot
    owners: dict[str, int]  # "d:<domain>" / "n:<DID>" -> slot of the lease's holder
    released: frozenset[str]  # keys of leases that name no node: released, not taken yet


def render_tables(conn: Connection) -> Tables:
    """The dispatcher list, the owners, and the keys of released leases. An operation whose lease was released (a
    handover: nobody holds it until the target's next round) has no owner here; `sync_once` leaves its keys as
    they are. Owners and released keys come from one statement: read in two, a lease taken between them was in
    neither, and its keys were deleted until the next sync (404 for the operation's new calls meanwhile)."""
    owners: dict[str, int] = {}
    released: set[str] = set()
    for key, slot, free in conn.execute(_LEASE_KEYS):
        if free:
            released.add(key)
        elif slot is not None:
            owners[key] = int(slot)
    # the nodes after the leases: every slot an owner names is in the list (a node that joined in between too)
    nodes = conn.execute(text("SELECT slot, sip_host, sip_port FROM cluster_nodes ORDER BY slot")).all()
    dispatcher = "".join(f"{slot} {_node_uri(host, port)} 0 0\n" for slot, host, port in nodes)
    return Tables(dispatcher, owners, frozenset(released))


def _node_uri(host: str, port: int) -> str:
    return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"


def _listed(dispatcher: str) -> set[tuple[int, str]]:
    """A dispatcher list file's (set, URI) pairs."""
    return {(int(fields[0]), fields[1]) for fields in (line.split() for line in dispatcher.splitlines()) if fields}


def _loaded(address: tuple[str, int]) -> set[tuple[int, str]]:
    """The (set, URI) pairs Kamailio's dispatcher has loaded now (none: its RPC says "No Destination Sets")."""
    try:
        result = rpc(address, "dispatcher.list")
    except RpcError as exc:
        if "No Destination Sets" in str(exc):
            return set()
        raise
    records = result.get("RECORDS", []) if isinstance(result, dict) else []
    return {(int(record["SET"]["ID"]), str(target["DEST"]["URI"]))
            for record in records for target in record["SET"].get("TARGETS", [])}


def write_file(path: Path, content: str) -> bool:
    """Replace `path` atomically with `content` unless it already holds it; whether it changed."""
    if path.exists() and path.read_text(encoding="utf-8") == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)
    return True


class RpcError(RuntimeError):
    pass


def rpc(address: tuple[str, int], method: str, *params: str | int, timeout: float = 2.0) -> object:
    """One JSON-RPC 2.0 call to Kamailio's jsonrpcs datagram socket; its result (RpcError on an error)."""
    request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((address[0], 0))
        sock.sendto(request, address)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            raise RpcError(f"Kamailio's JSON-RPC at {address[0]}:{address[1]} did not answer {method}") from None
    answer = json.loads(data)
    if "error" in answer:
        raise RpcError(f"{method}: {answer['error']}")
    return answer.get("result")


def _dumped(result: object) -> dict[str, int]:
    """htable.dump's answer as key -> value."""
    table: dict[str, int] = {}
    for entry in result if isinstance(result, list) else []:
        for item in entry.get("slot", []):
            table[str(item["name"])] = int(item["value"])
    return table


def sync_once(conn: Connection, tables: Path, rpc_address: tuple[str, int]) -> bool:
    """Bring Kamailio's dispatcher list and owners in step with PostgreSQL; whether anything changed."""
    rendered = render_tables(conn)
    owners = rendered.owners
    changed = write_file(tables / "dispatcher.list", rendered.dispatcher)
    if _loaded(rpc_address) != _listed(rendered.dispatcher):
        try:
            rpc(rpc_address, "dispatcher.reload")
            changed = True
        except RpcError as exc:  # within reload_delta of the last reload: the next sync reloads it
            if "Ongoing reload" not in str(exc):
                raise
    current = _dumped(rpc(rpc_address, "htable.dump", "owners"))
    # A released lease keeps its last owner's slot until the target takes it (within a round): the old owner
    # answers new calls 503 Retry-After and hands requests within its calls on, where a missing key would answer
    # 404 for the operation's calls in that moment.
    for key in sorted(set(current) - set(owners) - rendered.released):
        rpc(rpc_address, "htable.delete", "owners", key)
        changed = True
    for key, slot in sorted(owners.items()):
        if current.get(key) != slot:
            rpc(rpc_address, "htable.seti", "owners", key, slot)
            changed = True
    return changed
