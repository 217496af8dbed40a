"""Administration: changing and deleting what `administration` creates, resetting agents' passwords and rotating
tokens, on a connection the caller holds in a transaction.

Rules
- An update names the object by its key (operation id; queue, trunk name; extension; DID number; auxiliary state
  id; activity code group and code; token id) and takes create's keyword names for the fields that change; the
  rest stay. The merged object is checked exactly as create checks it (`admin_checks`), and keys cannot change.
- What does not exist, or belongs to another operation, is `NotFound`, naming the thing.
- A delete that would orphan live work, or an object that names this one, is refused (`admin_live`): nothing is
  cascaded behind the operator's back.
- Every change bumps the directory's counter (`directory.bump_version`) in the caller's transaction, so a running
  node reloads it at its next poll; a refused change raises before writing.
- Passwords are stored as HA1 digests only (MD5 and SHA-256 in the operation's realm). A rotated token is a new
  secret for the same token id: the old one is no longer found, the new one is returned once.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Connection, delete, insert, select, update

from callbridge.callcontrol.model import ActivityCode, Agent, AuxState, Did, Operation, Queue, Token, Trunk
from callbridge.storage import admin_checks as c
from callbridge.storage import admin_live as live
from callbridge.storage import credentials
from callbridge.storage import schema as s
from callbridge.storage.admin_checks import AdminError, NotFound
from callbridge.storage.directory import (
    bump_version,
    read_activity_codes,
    read_agents,
    read_aux_states,
    read_dids,
    read_operations,
    read_queues,
    read_token_by_hash,
    read_tokens,
    read_trunks,
)

_OPERATION_FIELDS = tuple(col.name for col in s.operations.c if col.name != "created_at")


T = TypeVar("T")


def _one(items: list[T], what: str) -> T:
    if not items:
        raise NotFound(f"{what} does not exist")
    return items[0]


def _merge(current: dict[str, Any], changes: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(current))
    expected = ", ".join(sorted(set(current) - set(keys)))
    if unknown:
        raise AdminError(f"unknown field(s) {', '.join(unknown)}; expected {expected}")
    for key in keys:
        if key in changes and changes[key] != current[key]:
            raise AdminError(f"{key}: {changes[key]!r} cannot change (it names the object); delete and create")
    if not changes:
        raise AdminError(f"nothing to change: give one of {expected}")
    return current | changes


def _refuse(reason: str | None) -> None:
    if reason is not None:
        raise AdminError(reason)


# --- operations ---------------------------------------------------------------------------------------------------


def get_operation(conn: Connection, operation_id: str) -> Operation:
    return _one([o for o in read_operations(conn) if o.id == operation_id], f"operation {operation_id!r}")


def operation_fields(conn: Connection, operation_id: str) -> dict[str, Any]:
    t = s.operations
    row = conn.execute(select(*(t.c[n] for n in _OPERATION_FIELDS)).where(t.c.id == operation_id)).first()
    if row is None:
        raise NotFound(f"operation {operation_id!r} does not exist")
    return dict(row._mapping)


def update_operation(conn: Connection, operation_id: str, /, **changes: Any) -> Operation:
    current = operation_fields(conn, operation_id)
    row = c.operation_row(_merge(current, changes, ("id",)))
    t = s.operations
    if conn.execute(select(t.c.id).where(t.c.sip_domain == row["sip_domain"], t.c.id != operation_id)).first():
        raise AdminError(f"sip_domain: {row['sip_domain']!r} already belongs to another operation")
    if (row["realm"] or row["sip_domain"]) != (current["realm"] or current["sip_domain"]) and read_agents(
            conn, operation_id):
        field = "realm" if "realm" in changes else "sip_domain"
        raise AdminError(f"{field}: {row[field]!r} changes the digest realm, which invalidates every agent's "
                         "password: delete the agents first, or keep the realm (set realm to the old one)")
    conn.execute(update(t).where(t.c.id == operation_id).values(**row))
    bump_version(conn)
    return get_operation(conn, operation_id)


def delete_operation(conn: Connection, operation_id: str) -> Operation:
    """The operation and everything it owns (its directory, tokens, webhooks, records), once no call is live."""
    operation = get_operation(conn, operation_id)
    _refuse(live.operation_in_use(conn, operation_id))
    conn.execute(delete(s.dids).where(s.dids.c.operation_id == operation_id))  # no foreign key to operations
    conn.execute(delete(s.operations).where(s.operations.c.id == operation_id))
    bump_version(conn)
    return operation


# --- queues -------------------------------------------------------------------------------------------------------


def get_queue(conn: Connection, operation_id: str, name: str) -> Queue:
    get_operation(conn, operation_id)
    return _one([q for q in read_queues(conn, operation_id) if q.name == name],
                f"queue {name!r} of operation {operation_id!r}")


def queue_fields(conn: Connection, operation_id: str, name: str) -> dict[str, Any]:
    q = get_queue(conn, operation_id, name)
    return {"name": q.name, "max_wait_seconds": q.max_wait_seconds, "ring_timeout": q.ring_timeout,
            "retry_after": q.retry_after, "recording": q.recording, "music": q.music, "music_name": q.music_name,
            "announcement": q.announcement, "announcement_name": q.announcement_name,
            "announcement_interval": q.announcement_interval}


def update_queue(conn: Connection, operation_id: str, name: str, /, **changes: Any) -> Queue:
    row = c.queue_row(_merge(queue_fields(conn, operation_id, name), changes, ("name",)))
    t = s.queues
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.name == name).values(**row))
    bump_version(conn)
    return get_queue(conn, operation_id, name)


def delete_queue(conn: Connection, operation_id: str, name: str) -> Queue:
    queue = get_queue(conn, operation_id, name)
    _refuse(live.queue_in_use(conn, operation_id, name))
    t = s.queues
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.name == name))
    bump_version(conn)
    return queue


# --- agents -------------------------------------------------------------------------------------------------------


def get_agent(conn: Connection, operation_id: str, extension: str) -> Agent:
    get_operation(conn, operation_id)
    return _one([a for a in read_agents(conn, operation_id) if a.extension == extension],
                f"agent {extension!r} of operation {operation_id!r}")


def agent_fields(conn: Connection, operation_id: str, extension: str) -> dict[str, Any]:
    a = get_agent(conn, operation_id, extension)
    return {"extension": a.extension, "name": a.name, "queues": list(a.queues)}


def update_agent(conn: Connection, operation_id: str, extension: str, /, **changes: Any) -> Agent:
    """Change an agent's name or queues (in order); `reset_agent_password` changes its password."""
    if "password" in changes:
        raise AdminError("password: use reset_agent_password (callbridge admin agent reset-password)")
    merged = _merge(agent_fields(conn, operation_id, extension), changes, ("extension",))
    row = c.agent_row(merged)
    queues = c.agent_queues(merged["queues"])
    known = {q.name for q in read_queues(conn, operation_id)}
    for queue in queues:
        if queue not in known:
            raise AdminError(f"queues: queue {queue!r} does not exist in operation {operation_id!r}")
    t, aq = s.agents, s.agent_queues
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.extension == extension).values(**row))
    if "queues" in changes:
        conn.execute(delete(aq).where(aq.c.operation_id == operation_id, aq.c.extension == extension))
        if queues:
            conn.execute(insert(aq), [{"operation_id": operation_id, "extension": extension, "queue": q,
                                       "position": i} for i, q in enumerate(queues)])
    bump_version(conn)
    return get_agent(conn, operation_id, extension)


def password_matches(agent: Agent, realm: str, password: str) -> bool:
    """Whether `password` is the agent's (its HA1 verifies): how `apply` leaves unchanged passwords alone."""
    return (credentials.ha1_sha256(agent.extension, realm, password) == agent.ha1_sha256
            and credentials.ha1_md5(agent.extension, realm, password) == agent.ha1_md5)


def reset_agent_password(conn: Connection, operation_id: str, extension: str, password: str) -> Agent:
    realm = get_operation(conn, operation_id).digest_realm
    get_agent(conn, operation_id, extension)
    c.password(password)
    t = s.agents
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.extension == extension).values(
        ha1_md5=credentials.ha1_md5(extension, realm, password),
        ha1_sha256=credentials.ha1_sha256(extension, realm, password)))
    bump_version(conn)
    return get_agent(conn, operation_id, extension)


def delete_agent(conn: Connection, operation_id: str, extension: str) -> Agent:
    """The agent, its queue memberships, registrations and state history, once it is on no call."""
    agent = get_agent(conn, operation_id, extension)
    _refuse(live.agent_in_use(conn, operation_id, extension))
    t = s.agents
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.extension == extension))
    bump_version(conn)
    return agent


# --- trunks and DIDs ----------------------------------------------------------------------------------------------


def get_trunk(conn: Connection, operation_id: str, name: str) -> Trunk:
    get_operation(conn, operation_id)
    return _one([t for t in read_trunks(conn, operation_id) if t.name == name],
                f"trunk {name!r} of operation {operation_id!r}")


def trunk_fields(conn: Connection, operation_id: str, name: str) -> dict[str, Any]:
    get_trunk(conn, operation_id, name)
    t = s.trunks
    row = conn.execute(select(t).where(t.c.operation_id == operation_id, t.c.name == name)).one()._mapping
    return {c.TRUNK_FIELDS.get(k, k): (list(v) if isinstance(v, list) else v)
            for k, v in row.items() if k != "operation_id"}


def update_trunk(conn: Connection, operation_id: str, name: str, /, **changes: Any) -> Trunk:
    row = c.trunk_row(_merge(trunk_fields(conn, operation_id, name), changes, ("name",)))
    t = s.trunks
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.name == name).values(**row))
    bump_version(conn)
    return get_trunk(conn, operation_id, name)


def delete_trunk(conn: Connection, operation_id: str, name: str) -> Trunk:
    trunk = get_trunk(conn, operation_id, name)
    _refuse(live.trunk_in_use(conn, operation_id, name))
    t = s.trunks
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.name == name))
    bump_version(conn)
    return trunk


def get_did(conn: Connection, operation_id: str, number: str) -> Did:
    get_operation(conn, operation_id)
    return _one([d for d in read_dids(conn, operation_id) if d.number == number],
                f"DID {number!r} of operation {operation_id!r}")


def did_fields(conn: Connection, operation_id: str, number: str) -> dict[str, Any]:
    d = get_did(conn, operation_id, number)
    return {"number": d.number, "queue": d.queue, "trunk": d.trunk or None}


def update_did(conn: Connection, operation_id: str, number: str, /, **changes: Any) -> Did:
    row = c.did_row(_merge(did_fields(conn, operation_id, number), changes, ("number",)))
    if row["queue"] not in {q.name for q in read_queues(conn, operation_id)}:
        raise AdminError(f"queue: queue {row['queue']!r} does not exist in operation {operation_id!r}")
    if row["trunk"] and row["trunk"] not in {t.name for t in read_trunks(conn, operation_id)}:
        raise AdminError(f"trunk: {row['trunk']!r} does not exist in operation {operation_id!r}")
    d = s.dids
    conn.execute(update(d).where(d.c.operation_id == operation_id, d.c.number == number).values(**row))
    bump_version(conn)
    return get_did(conn, operation_id, number)


def delete_did(conn: Connection, operation_id: str, number: str) -> Did:
    did = get_did(conn, operation_id, number)
    d = s.dids
    conn.execute(delete(d).where(d.c.operation_id == operation_id, d.c.number == number))
    bump_version(conn)
    return did


# --- auxiliary states and activity codes --------------------------------------------------------------------------


def get_aux_state(conn: Connection, operation_id: str, aux_id: str) -> AuxState:
    get_operation(conn, operation_id)
    return _one([x for x in read_aux_states(conn, operation_id) if x.id == aux_id],
                f"auxiliary state {aux_id!r} of operation {operation_id!r}")


def update_aux_state(conn: Connection, operation_id: str, aux_id: str, *, name: str) -> AuxState:
    get_aux_state(conn, operation_id, aux_id)
    row = c.aux_state_row({"aux_id": aux_id, "name": name})
    t = s.aux_states
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.id == aux_id).values(name=row["name"]))
    bump_version(conn)
    return get_aux_state(conn, operation_id, aux_id)


def delete_aux_state(conn: Connection, operation_id: str, aux_id: str) -> AuxState:
    aux = get_aux_state(conn, operation_id, aux_id)
    t = s.aux_states
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.id == aux_id))
    bump_version(conn)
    return aux


def get_activity_code(conn: Connection, operation_id: str, group: int, code: str) -> ActivityCode:
    get_operation(conn, operation_id)
    return _one([a for a in read_activity_codes(conn, operation_id) if a.group == group and a.code == code],
                f"activity code {code!r} of group {group} of operation {operation_id!r}")


def update_activity_code(conn: Connection, operation_id: str, group: int, code: str, *, name: str) -> ActivityCode:
    get_activity_code(conn, operation_id, group, code)
    row = c.activity_code_row({"group": group, "code": code, "name": name})
    t = s.activity_codes
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.code_group == group, t.c.code == code)
                 .values(name=row["name"]))
    bump_version(conn)
    return get_activity_code(conn, operation_id, group, code)


def delete_activity_code(conn: Connection, operation_id: str, group: int, code: str) -> ActivityCode:
    activity = get_activity_code(conn, operation_id, group, code)
    t = s.activity_codes
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.code_group == group, t.c.code == code))
    bump_version(conn)
    return activity


# --- tokens -------------------------------------------------------------------------------------------------------


def get_token(conn: Connection, operation_id: str, token_id: str) -> Token:
    get_operation(conn, operation_id)
    return _one([t for t in read_tokens(conn, operation_id) if t.id == str(token_id)],
                f"token {token_id} of operation {operation_id!r}")


def update_token(conn: Connection, operation_id: str, token_id: str, /, **changes: Any) -> Token:
    """Change a token's label, concurrency_limit or daily_quota (None: no quota); its secret stays."""
    token = get_token(conn, operation_id, token_id)
    current = {"label": token.label, "concurrency_limit": token.concurrency_limit, "daily_quota": token.daily_quota}
    row = c.token_row(_merge(current, changes, ()))
    t = s.tokens
    conn.execute(update(t).where(t.c.id == int(token.id)).values(**row))
    bump_version(conn)
    return get_token(conn, operation_id, token_id)


def rotate_token(conn: Connection, operation_id: str, token_id: str) -> tuple[Token, str]:
    """A new secret for the token: (its record, the new token, shown once). The old secret stops working."""
    token = get_token(conn, operation_id, token_id)
    if token.revoked:
        raise AdminError(f"token {token_id} is revoked; create a new one")
    plain = credentials.new_token()
    t = s.tokens
    conn.execute(update(t).where(t.c.id == int(token.id)).values(token_sha256=credentials.token_sha256(plain)))
    bump_version(conn)
    rotated = read_token_by_hash(conn, credentials.token_sha256(plain))
    assert rotated is not None
    return rotated, plain


def delete_token(conn: Connection, operation_id: str, token_id: str) -> Token:
    """The token's record itself (revoking keeps it, marked revoked): its secret is no longer found at all."""
    token = get_token(conn, operation_id, token_id)
    conn.execute(delete(s.tokens).where(s.tokens.c.id == int(token.id)))
    bump_version(conn)
    return token
