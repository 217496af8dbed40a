"""`callbridge admin apply FILE [--dry-run]`: make the database match an operation file (the TOML of
`loader`, docs/examples/operation.toml), as a plan of changes that can be shown first and then run.

Rules
- One pass computes and makes the changes in the caller's transaction (`apply_operation`): objects are created,
  then updated, in the order they depend on each other, and what the file no longer names is deleted last,
  dependants first. A dry run (`plan`) runs the same pass and rolls it back, so it checks everything a real run
  would, deletes refused for live work included; `execute` commits it, all or nothing.
- Objects are matched by their keys: the operation id, queue/trunk names, extensions, DID numbers, auxiliary state
  ids, activity (group, code), token labels, webhook URLs. A field changes only if its checked value differs from
  the stored one, so the same file twice is an empty plan, and an empty plan writes nothing (the directory's
  counter stays).
- Secrets are never shown: a password or secret that changes reads "(changed)". A plain password in the file is
  changed only if it does not verify against the stored HA1 (no rehash on re-apply). Tokens are named by label
  only (as `load` does): an existing token keeps its secret; a new one is generated and returned once.
- Bad input is refused as a whole, with the key path at fault (`agents[2].extension: ...`); a TOML syntax error
  with its line and column. Revoked tokens are history: apply neither matches nor deletes them.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from callbridge.callcontrol.model import Token
from callbridge.storage import admin_changes as ch
from callbridge.storage import admin_checks as c
from callbridge.storage import administration as admin
from callbridge.storage import supervisors as sv
from callbridge.storage import webhooks as wh
from callbridge.storage.admin_checks import AdminError
from callbridge.storage.directory import read_tokens
from callbridge.storage.loader import SECTIONS

CHANGED = "(changed)"
_KWARG = {"auth_username": "username", "auth_password": "password", "id": "aux_id", "code_group": "group",
          "music_name": "music", "announcement_name": "announcement"}
SECRETS = frozenset({"password", "secret"})  # a trunk's password, an agent's, a webhook's secret


@dataclass(frozen=True)
class Change:
    action: str  # create, update, delete
    kind: str  # operation, queue, agent, aux_state, activity_code, trunk, did, token, webhook
    key: str
    fields: tuple[tuple[str, str], ...] = ()  # (field, what changes), secrets as "(changed)"

    def line(self) -> str:
        shown = ", ".join(f"{name} {what}" for name, what in self.fields)
        return f"{self.action} {self.kind} {self.key}" + (f": {shown}" if shown else "")


@dataclass
class ApplyResult:
    operation_id: str
    changes: list[Change] = field(default_factory=list)
    tokens: list[tuple[Token, str]] = field(default_factory=list)  # created tokens: (record, token shown once)

    def lines(self) -> list[str]:
        """The plan, one line per change; [] when the database already matches the file."""
        return [change.line() for change in self.changes]


def parse_operation_file(text: str, source: str = "operation file") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AdminError(f"{source}: {exc}") from None


def read_operation_file(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminError(f"{path}: {exc}") from None
    return parse_operation_file(text, str(path))


_FIELD = re.compile(r"([a-z_]+): ")


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix refusals with the key path: `agents[2]` + `extension: ...` reads `agents[2].extension: ...`."""
    try:
        yield
    except AdminError as exc:
        message = str(exc)
        joined = f"{where}.{message}" if _FIELD.match(message) else f"{where}: {message}"
        raise type(exc)(joined) from None


def _fields(where: str, fn: Callable[..., Any], skip: int, entry: Mapping[str, Any],
            renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The entry as `fn`'s keyword arguments, defaults filled in; unknown or missing keys refused."""
    renamed = renamed or {}
    entry = {renamed.get(k, k): v for k, v in entry.items()}
    params = list(inspect.signature(fn).parameters.values())[skip:]
    known = {p.name for p in params}
    unknown = sorted(set(entry) - known)
    back = {v: k for k, v in renamed.items()}
    if unknown:
        names = ", ".join(sorted(back.get(k, k) for k in known))
        raise AdminError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {names}")
    missing = [back.get(p.name, p.name) for p in params if p.default is inspect.Parameter.empty and p.name not in entry]
    if missing:
        raise AdminError(f"{where}: missing key(s) {', '.join(missing)}")
    return {p.name: entry.get(p.name, p.default) for p in params}


def _entries(doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    value = doc.get(section, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AdminError(f"[[{section}]]: expected an array of tables")
    return value


def _shown(name: str, old: Any, new: Any) -> tuple[str, str]:
    if name in SECRETS or isinstance(new, bytes) or isinstance(old, bytes):  # audio: its name says what changed
        return name, CHANGED
    return name, f"{old!r} -> {new!r}"


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in new.items() if old.get(k) != v}


def _created(kind: str, key: str, fields: Mapping[str, Any], shown: tuple[str, ...]) -> Change:
    return Change("create", kind, key, tuple((n, CHANGED if n in SECRETS else repr(fields[n]))
                                             for n in shown if fields.get(n) not in (None, "", [], ())))


class _Run:
    def __init__(self, conn: Connection, doc: Mapping[str, Any]) -> None:
        self.conn, self.doc = conn, doc
        unknown = sorted(set(doc) - set(SECTIONS))
        if unknown:
            raise AdminError(f"unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
        table = doc.get("operation")
        if not isinstance(table, dict):
            raise AdminError("[operation]: the file must have an [operation] table")
        self.op_fields = _fields("operation", admin.create_operation, 1, table)
        with _at("operation"):
            c.check(c.NAME, "id", self.op_fields["id"], "an operation id (letters, digits, '_', '.', '-'; up to 32)")
        self.op: str = self.op_fields["id"]
        self.result = ApplyResult(self.op)
        self.sections = {name: _entries(doc, name) for name in SECTIONS[1:]}

    def add(self, change: Change) -> None:
        self.result.changes.append(change)

    def entries(self, section: str, fn: Callable[..., Any], key: Callable[[dict[str, Any]], Any],
                renamed: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(key path, fields) of each entry, keys named twice refused."""
        seen: dict[Any, str] = {}
        out = []
        for i, entry in enumerate(self.sections[section]):
            where = f"{section}[{i}]"
            fields = _fields(where, fn, 2, entry, renamed)
            k = key(fields)
            try:
                hash(k)
            except TypeError:
                raise AdminError(f"{where}: {k!r} is not a name, number or label") from None
            if k in seen:
                raise AdminError(f"{where}: {k!r} is already named by {seen[k]}")
            seen[k] = where
            out.append((where, fields))
        return out

    def operation(self) -> None:
        f, conn = self.op_fields, self.conn
        if self.op_fields["default_queue"] is not None:
            names = {q.get("name") for q in self.sections["queues"]}
            if f["default_queue"] not in names:
                raise AdminError(f"operation.default_queue: {f['default_queue']!r} is not among [[queues]]")
        with _at("operation"):
            try:
                current = ch.operation_fields(conn, self.op)
            except c.NotFound:
                admin.create_operation(conn, **f)
                self.add(_created("operation", repr(self.op), f, ("sip_domain", "name")))
                return
            changed = _diff(current, c.operation_row(f))
            if changed:
                ch.update_operation(conn, self.op, **changed)
                self.add(Change("update", "operation", repr(self.op),
                                tuple(_shown(k, current[k], v) for k, v in changed.items())))

    def simple(self, kind: str, section: str, create: Callable[..., Any], key: str,
               read: Callable[[Connection, str, Any], dict[str, Any]], check: Callable[[dict[str, Any]], Any],
               update: Callable[..., Any], renamed: Mapping[str, str] | None = None) -> set[Any]:
        """Create or update the entries of one section keyed by one field; the keys the file names."""
        keys = set()
        for where, f in self.entries(section, create, lambda f: f[key], renamed):
            keys.add(f[key])
            with _at(where):
                try:
                    current = read(self.conn, self.op, f[key])
                except c.NotFound:
                    create(self.conn, self.op, **f)
                    self.add(_created(kind, repr(f[key]), f, tuple(n for n in f if n != key)))
                    continue
                old, new = check(current), check(f)
                changed = {_KWARG.get(col, col): None for col in new if old.get(col) != new[col]}
                changed = {k: f[k] for k in changed}
                if changed:
                    update(self.conn, self.op, f[key], **changed)
                    self.add(Change("update", kind, repr(f[key]),
                                    tuple(_shown(k, current[k], f[k]) for k in changed)))
        return keys

    def agents(self) -> set[str]:
        keys = set()
        realm = ch.get_operation(self.conn, self.op).digest_realm
        for where, f in self.entries("agents", admin.create_agent, lambda f: f["extension"]):
            ext = f["extension"]
            keys.add(ext)
            with _at(where):
                try:
                    current = ch.agent_fields(self.conn, self.op, ext)
                except c.NotFound:
                    admin.create_agent(self.conn, self.op, **f)
                    self.add(_created("agent", repr(ext), f, ("name", "password", "queues")))
                    continue
                c.password(f["password"])
                wanted = {"name": f["name"], "queues": c.agent_queues(f["queues"])}
                changed = _diff(current, wanted)
                shown = [_shown(k, current[k], v) for k, v in changed.items()]
                if changed:
                    ch.update_agent(self.conn, self.op, ext, **changed)
                if not ch.password_matches(ch.get_agent(self.conn, self.op, ext), realm, f["password"]):
                    ch.reset_agent_password(self.conn, self.op, ext, f["password"])
                    shown.append(("password", CHANGED))
                if shown:
                    self.add(Change("update", "agent", repr(ext), tuple(shown)))
        return keys

    def activity_codes(self) -> set[tuple[int, str]]:
        keys = set()
        for where, f in self.entries("activity_codes", admin.create_activity_code,
                                     lambda f: (f["group"], f["code"])):
            k = (f["group"], f["code"])
            keys.add(k)
            with _at(where):
                c.activity_code_row(f)
                try:
                    current = ch.get_activity_code(self.conn, self.op, *k)
                except c.NotFound:
                    admin.create_activity_code(self.conn, self.op, **f)
                    self.add(_created("activity_code", f"{k[0]}/{k[1]!r}", f, ("name",)))
                    continue
                if current.name != f["name"]:
                    ch.update_activity_code(self.conn, self.op, *k, name=f["name"])
                    self.add(Change("update", "activity_code", f"{k[0]}/{k[1]!r}",
                                    (_shown("name", current.name, f["name"]),)))
        return keys

    def tokens(self) -> set[str]:
        operation = ch.get_operation(self.conn, self.op)
        live = [t for t in read_tokens(self.conn, self.op) if not t.revoked]
        kept = set()
        for where, f in self.entries("tokens", admin.create_token, lambda f: f["label"]):
            with _at(where):
                wanted = c.token_row({
                    "label": f["label"],
                    "concurrency_limit": (operation.token_concurrency_limit if f["concurrency_limit"] is None
                                          else f["concurrency_limit"]),
                    "daily_quota": operation.daily_quota if f["daily_quota"] is None else f["daily_quota"]})
                match = next((t for t in live if t.label == f["label"] and t.id not in kept), None)
                if match is None:
                    token, plain = admin.create_token(self.conn, self.op, **f)
                    kept.add(token.id)
                    self.result.tokens.append((token, plain))
                    self.add(_created("token", repr(f["label"]), wanted, ("concurrency_limit", "daily_quota")))
                    continue
                kept.add(match.id)
                current = {"label": match.label, "concurrency_limit": match.concurrency_limit,
                           "daily_quota": match.daily_quota}
                changed = _diff(current, wanted)
                if changed:
                    ch.update_token(self.conn, self.op, match.id, **changed)
                    self.add(Change("update", "token", f"{f['label']!r} (id {match.id})",
                                    tuple(_shown(k, current[k], v) for k, v in changed.items())))
        for token in live:
            if token.id not in kept:
                ch.delete_token(self.conn, self.op, token.id)
                self.add(Change("delete", "token", f"{token.label!r} (id {token.id})"))
        return kept

    def webhooks(self) -> None:
        hooks = {h.url: h for h in wh.list_webhooks(self.conn, self.op)}
        urls = set()
        for where, f in self.entries("webhooks", wh.create_webhook, lambda f: f["url"]):
            urls.add(f["url"])
            with _at(where):
                hook = hooks.get(f["url"])
                if hook is None:
                    wh.create_webhook(self.conn, self.op, **f)
                    self.add(_created("webhook", repr(f["url"]), f, ("secret", "events")))
                    continue
                current = {"secret": hook.secret, "events": list(hook.events)}
                changed = _diff(current, {"secret": f["secret"], "events": list(f["events"])})
                if changed:
                    wh.update_webhook(self.conn, hook.id, operation_id=self.op, **changed)
                    self.add(Change("update", "webhook", repr(f["url"]),
                                    tuple(_shown(k, current[k], v) for k, v in changed.items())))
        for url, hook in hooks.items():
            if url not in urls:
                wh.delete_webhook(self.conn, hook.id, operation_id=self.op)
                self.add(Change("delete", "webhook", repr(url)))

    def supervisors(self) -> None:
        """Supervisors by username: created, renamed or given another extension, their password reset when it no
        longer verifies, deleted when the file no longer names them."""
        stored = {v.username: v for v in sv.list_supervisors(self.conn, self.op)}
        named = set()
        for where, f in self.entries("supervisors", sv.create_supervisor, lambda f: f["username"]):
            named.add(f["username"])
            with _at(where):
                found = stored.get(f["username"])
                if found is None:
                    sv.create_supervisor(self.conn, self.op, **f)
                    self.add(_created("supervisor", repr(f["username"]), f, ("name", "extension", "password")))
                    continue
                shown = []
                if found.name != f["name"]:
                    sv.update_supervisor(self.conn, self.op, found.username, name=f["name"])
                    shown.append(_shown("name", found.name, f["name"]))
                if found.extension != f["extension"]:
                    sv.update_supervisor(self.conn, self.op, found.username, extension=f["extension"])
                    shown.append(_shown("extension", found.extension, f["extension"]))
                if not sv.verify_password(found.password_hash, f["password"]):
                    sv.reset_supervisor_password(self.conn, self.op, found.username, f["password"])
                    shown.append(_shown("password", "", ""))
                if shown:
                    self.add(Change("update", "supervisor", repr(found.username), tuple(shown)))
        for username in stored:
            if username not in named:
                sv.delete_supervisor(self.conn, self.op, username)
                self.add(Change("delete", "supervisor", repr(username)))


def _aux_fields(conn: Connection, operation_id: str, aux_id: str) -> dict[str, Any]:
    return {"aux_id": aux_id, "name": ch.get_aux_state(conn, operation_id, aux_id).name}


def _delete_absent(run: _Run, keys: dict[str, set[Any]]) -> None:
    """What the database holds and the file no longer names, dependants first."""
    conn, op = run.conn, run.op
    stored: list[tuple[str, list[Any], Callable[..., Any]]] = [
        ("did", [d.number for d in admin.list_dids(conn, op)], ch.delete_did),
        ("agent", [a.extension for a in admin.list_agents(conn, op)], ch.delete_agent),
        ("activity_code", [(a.group, a.code) for a in admin.list_activity_codes(conn, op)], ch.delete_activity_code),
        ("aux_state", [x.id for x in admin.list_aux_states(conn, op)], ch.delete_aux_state),
        ("trunk", [t.name for t in admin.list_trunks(conn, op)], ch.delete_trunk),
        ("queue", [q.name for q in admin.list_queues(conn, op)], ch.delete_queue),
    ]
    for kind, present, remove in stored:
        for key in present:
            if key not in keys[kind]:
                shown = f"{key[0]}/{key[1]!r}" if isinstance(key, tuple) else repr(key)
                with _at(f"delete {kind} {shown}"):
                    remove(conn, op, *(key if isinstance(key, tuple) else (key,)))
                run.add(Change("delete", kind, shown))


def apply_operation(conn: Connection, doc: Mapping[str, Any]) -> ApplyResult:
    """Make the operation in the database match `doc`, in the caller's transaction; the changes made."""
    run = _Run(conn, doc)
    run.operation()
    keys: dict[str, set[Any]] = {}
    keys["queue"] = run.simple("queue", "queues", admin.create_queue, "name", ch.queue_fields, c.queue_row,
                               ch.update_queue)
    keys["agent"] = run.agents()
    keys["aux_state"] = run.simple("aux_state", "aux_states", admin.create_aux_state, "aux_id", _aux_fields,
                                   c.aux_state_row, ch.update_aux_state, {"id": "aux_id"})
    keys["activity_code"] = run.activity_codes()
    keys["trunk"] = run.simple("trunk", "trunks", admin.create_trunk, "name", ch.trunk_fields, c.trunk_row,
                               ch.update_trunk)
    keys["did"] = run.simple("did", "dids", admin.create_did, "number", ch.did_fields, c.did_row, ch.update_did)
    run.tokens()
    run.webhooks()
    run.supervisors()
    _delete_absent(run, keys)
    return run.result


def plan(engine: Engine, doc: Mapping[str, Any]) -> ApplyResult:
    """`--dry-run`: what `execute` would change, checked as it would be, and rolled back. Its `tokens` are empty."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = apply_operation(conn, doc)
        finally:
            transaction.rollback()
    result.tokens = []
    return result


def plan_lines(engine: Engine, doc: Mapping[str, Any]) -> list[str]:
    """The dry run's plan as the CLI prints it, one line per change; [] when nothing would change."""
    return plan(engine, doc).lines()


def execute(engine: Engine, doc: Mapping[str, Any]) -> ApplyResult:
    """Apply `doc` in one transaction: every change, or (on the first refusal) none."""
    with engine.begin() as conn:
        return apply_operation(conn, doc)
