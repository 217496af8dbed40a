"""Loading a whole operation from one document (the parsed TOML of `callbridge admin load`; format in
`callbridge.cli.admin`). All or nothing: the caller runs it in one transaction, and the first refusal (an
`AdminError` naming the table entry and the field) rolls everything back. Loading creates only: to change an
operation already in the database so it matches its file, `admin_apply` plans and makes the differences."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from callbridge.callcontrol.model import Operation, Token
from callbridge.storage import administration as admin
from callbridge.storage.administration import AdminError
from callbridge.storage.database import make_engine
from callbridge.storage.migrate import upgrade
from callbridge.storage.supervisors import create_supervisor
from callbridge.storage.webhooks import create_webhook

SECTIONS = ("operation", "queues", "agents", "aux_states", "activity_codes", "trunks", "dids", "tokens",
            "webhooks", "supervisors")


@dataclass
class LoadResult:
    operation: Operation
    counts: dict[str, int] = field(default_factory=dict)
    tokens: list[tuple[Token, str]] = field(default_factory=list)  # (record, the token shown once)


def _entries(doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    value = doc.get(section, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AdminError(f"[[{section}]]: expected an array of tables")
    return value


def _call(where: str, fn: Callable[..., Any], positional: tuple[Any, ...], entry: Mapping[str, Any]) -> Any:
    """`fn(*positional, **entry)`, with the entry's keys checked against `fn`'s parameters first."""
    params = list(inspect.signature(fn).parameters.values())[len(positional):]
    known = {p.name for p in params}
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    unknown = sorted(set(entry) - known)
    if unknown:
        raise AdminError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    missing = [name for name in required if name not in entry]
    if missing:
        raise AdminError(f"{where}: missing key(s) {', '.join(missing)}")
    try:
        return fn(*positional, **entry)
    except AdminError as exc:
        raise AdminError(f"{where}: {exc}") from None


def load_operation(conn: Connection, doc: Mapping[str, Any]) -> LoadResult:
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise AdminError(f"unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    op_table = doc.get("operation")
    if not isinstance(op_table, dict):
        raise AdminError("[operation]: the file must have an [operation] table")
    operation = _call("[operation]", admin.create_operation, (conn,), op_table)
    result = LoadResult(operation)
    op = operation.id
    for i, q in enumerate(_entries(doc, "queues")):
        _call(f"queues[{i}]", admin.create_queue, (conn, op), q)
    if operation.default_queue is not None:
        names = {q.get("name") for q in _entries(doc, "queues")}
        if operation.default_queue not in names:
            raise AdminError(f"[operation]: default_queue {operation.default_queue!r} is not among [[queues]]")
    for i, a in enumerate(_entries(doc, "agents")):
        _call(f"agents[{i}]", admin.create_agent, (conn, op), a)
    for i, x in enumerate(_entries(doc, "aux_states")):
        entry = {("aux_id" if k == "id" else k): v for k, v in x.items()}
        _call(f"aux_states[{i}]", admin.create_aux_state, (conn, op), entry)
    for i, c in enumerate(_entries(doc, "activity_codes")):
        _call(f"activity_codes[{i}]", admin.create_activity_code, (conn, op), c)
    for i, t in enumerate(_entries(doc, "trunks")):
        _call(f"trunks[{i}]", admin.create_trunk, (conn, op), t)
    for i, d in enumerate(_entries(doc, "dids")):
        _call(f"dids[{i}]", admin.create_did, (conn, op), d)
    for i, t in enumerate(_entries(doc, "tokens")):
        result.tokens.append(_call(f"tokens[{i}]", admin.create_token, (conn, op), t))
    for i, w in enumerate(_entries(doc, "webhooks")):
        _call(f"webhooks[{i}]", create_webhook, (conn, op), w)
    for i, v in enumerate(_entries(doc, "supervisors")):
        _call(f"supervisors[{i}]", create_supervisor, (conn, op), v)
    result.counts = {section: len(_entries(doc, section)) for section in SECTIONS[1:]}
    return result


def load_into_fresh_database(url: str, doc: Mapping[str, Any]) -> LoadResult:
    """Migrate the database at `url` (created on first use; a no-op when it is up to date), then load `doc` into it
    in one transaction, on an engine of its own that is disposed before returning: how the demo, tests and
    benchmarks start from an operation document."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return load_operation(conn, doc)
    finally:
        engine.dispose()
