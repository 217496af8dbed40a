"""Administration: creating and listing the directory (operations, queues, agents, tokens, trunks, DIDs,
auxiliary states, activity codes), validated, on a connection the caller holds in a transaction.

Rules
- Input is checked before anything is written, and every refusal is an `AdminError` whose message is one line
  naming the field and the value: the CLI prints it as is. Database errors never leak out as tracebacks.
- Passwords become HA1 digests in the operation's realm at once (`credentials`); tokens are generated here,
  returned in the clear exactly once, and stored as their SHA-256.
- Every write also bumps the directory's change counter in the same transaction (`directory.bump_version`), so
  a running node sees it at its next poll (`Directory.refresh`); a refused write bumps nothing (it raises first,
  and the caller rolls back).
- Changing and deleting live in `admin_changes`, the checks shared with them in `admin_checks`.
- These functions are synchronous: they run in the CLI, at start-up, or in a worker thread, never on the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from callbridge.callcontrol.model import (
    ActivityCode,
    Agent,
    AuxState,
    Did,
    Operation,
    Queue,
    Token,
    Trunk,
)
from callbridge.storage import admin_checks as c
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

__all__ = ["AdminError", "NotFound"]


def _operation(conn: Connection, operation_id: str) -> Operation:
    for operation in read_operations(conn):
        if operation.id == operation_id:
            return operation
    raise NotFound(f"operation {operation_id!r} does not exist")


def _exists(conn: Connection, query: object) -> bool:
    return conn.execute(query).first() is not None  # type: ignore[call-overload]


# --- operations -------------------------------------------------------------------------------------------------


def create_operation(
    conn: Connection, *, id: str, sip_domain: str, name: str = "", realm: str = "", time_zone: str = "UTC",
    acw_seconds: float = 0.0, after_transfer_state: str = "acw", default_queue: str | None = None,
    ring_timeout: float = 20.0, transfer_timeout: float = 30.0, dial_timeout: float = 45.0, max_transfers: int = 5,
    recent_call_window: float = 600.0, action_timeout: float = 5.0, token_concurrency_limit: int = 2,
    daily_quota: int | None = None, media_mode: str = "anchored", media_relay_down: str = "direct",
    hold_music: str = "", transfer_audio: str = "ringback", ringback_tone: str = "etsi",
    recording: str = "never", recording_retention_days: int | None = None, digest_algorithms: str | Sequence[str] = "",
) -> Operation:
    row = c.operation_row(dict(
        id=id, sip_domain=sip_domain, name=name, realm=realm, time_zone=time_zone, acw_seconds=acw_seconds,
        after_transfer_state=after_transfer_state, default_queue=default_queue, ring_timeout=ring_timeout,
        transfer_timeout=transfer_timeout, dial_timeout=dial_timeout, max_transfers=max_transfers,
        recent_call_window=recent_call_window, action_timeout=action_timeout,
        token_concurrency_limit=token_concurrency_limit, daily_quota=daily_quota, media_mode=media_mode,
        media_relay_down=media_relay_down, hold_music=hold_music, transfer_audio=transfer_audio,
        ringback_tone=ringback_tone, recording=recording, recording_retention_days=recording_retention_days,
        digest_algorithms=digest_algorithms))
    if _exists(conn, select(s.operations.c.id).where(s.operations.c.id == id)):
        raise AdminError(f"operation {id!r} already exists")
    if _exists(conn, select(s.operations.c.id).where(s.operations.c.sip_domain == sip_domain)):
        raise AdminError(f"sip_domain: {sip_domain!r} already belongs to another operation")
    conn.execute(insert(s.operations).values(**row))
    bump_version(conn)
    return _operation(conn, id)


def list_operations(conn: Connection) -> list[Operation]:
    return read_operations(conn)


# --- queues and agents --------------------------------------------------------------------------------------------


def create_queue(conn: Connection, operation_id: str, name: str, *, max_wait_seconds: float = 60.0,
                 ring_timeout: float | None = None, retry_after: int = 60,
                 recording: str | None = None, music: str = "", announcement: str = "",
                 announcement_interval: float = 30.0) -> Queue:
    """A queue; `music` and `announcement` are WAV files' paths ("" for none), converted once, here."""
    _operation(conn, operation_id)
    row = c.queue_row(dict(name=name, max_wait_seconds=max_wait_seconds, ring_timeout=ring_timeout,
                           retry_after=retry_after, recording=recording, music=music, announcement=announcement,
                           announcement_interval=announcement_interval))
    t = s.queues
    if _exists(conn, select(t.c.name).where(t.c.operation_id == operation_id, t.c.name == name)):
        raise AdminError(f"queue {name!r} already exists in operation {operation_id!r}")
    conn.execute(insert(t).values(operation_id=operation_id, **row))
    bump_version(conn)
    return Queue(operation_id, **row)


def _queue_must_exist(conn: Connection, operation_id: str, field: str, queue: str) -> None:
    t = s.queues
    if not _exists(conn, select(t.c.name).where(t.c.operation_id == operation_id, t.c.name == queue)):
        raise AdminError(f"{field}: queue {queue!r} does not exist in operation {operation_id!r}")


def create_agent(conn: Connection, operation_id: str, extension: str, password: str, *, name: str = "",
                 queues: Sequence[str] = ()) -> Agent:
    operation = _operation(conn, operation_id)
    row = c.agent_row(dict(extension=extension, name=name))
    c.password(password)
    queues = c.agent_queues(queues)
    for queue in queues:
        _queue_must_exist(conn, operation_id, "queues", queue)
    t = s.agents
    if _exists(conn, select(t.c.extension).where(t.c.operation_id == operation_id, t.c.extension == extension)):
        raise AdminError(f"agent {extension!r} already exists in operation {operation_id!r}")
    realm = operation.digest_realm
    agent = Agent(operation_id, extension, name, credentials.ha1_md5(extension, realm, password),
                  credentials.ha1_sha256(extension, realm, password), tuple(queues))
    conn.execute(insert(t).values(operation_id=operation_id, **row, ha1_md5=agent.ha1_md5,
                                  ha1_sha256=agent.ha1_sha256))
    if queues:
        conn.execute(insert(s.agent_queues), [
            {"operation_id": operation_id, "extension": extension, "queue": q, "position": i}
            for i, q in enumerate(queues)])
    bump_version(conn)
    return agent


def list_agents(conn: Connection, operation_id: str) -> list[Agent]:
    _operation(conn, operation_id)
    return read_agents(conn, operation_id)


def list_queues(conn: Connection, operation_id: str) -> list[Queue]:
    _operation(conn, operation_id)
    return read_queues(conn, operation_id)


# --- tokens -----------------------------------------------------------------------------------------------------


def create_token(conn: Connection, operation_id: str, *, label: str = "", concurrency_limit: int | None = None,
                 daily_quota: int | None = None) -> tuple[Token, str]:
    """A new token: (its record, the token itself). The token is not stored and cannot be shown again."""
    operation = _operation(conn, operation_id)
    limit = operation.token_concurrency_limit if concurrency_limit is None else concurrency_limit
    quota = operation.daily_quota if daily_quota is None else daily_quota
    c.token_row(dict(label=label, concurrency_limit=limit, daily_quota=quota))
    plain = credentials.new_token()
    digest = credentials.token_sha256(plain)
    conn.execute(insert(s.tokens).values(operation_id=operation_id, token_sha256=digest, label=label,
                                         concurrency_limit=limit, daily_quota=quota))
    bump_version(conn)
    token = read_token_by_hash(conn, digest)
    assert token is not None
    return token, plain


def list_tokens(conn: Connection, operation_id: str | None = None) -> list[Token]:
    if operation_id is not None:
        _operation(conn, operation_id)
    return read_tokens(conn, operation_id)


def revoke_token(conn: Connection, token_id: str) -> Token:
    if not isinstance(token_id, str) or not c.DIGITS.fullmatch(token_id):
        raise AdminError(f"token id: {token_id!r} is not a token id")
    t = s.tokens
    result = conn.execute(update(t).where(t.c.id == int(token_id), t.c.revoked.is_(False))
                          .values(revoked=True, revoked_at=datetime.now(UTC)))
    row = conn.execute(select(t.c.token_sha256, t.c.revoked).where(t.c.id == int(token_id))).first()
    if row is None:
        raise NotFound(f"token {token_id} does not exist")
    if result.rowcount == 0:
        raise AdminError(f"token {token_id} is already revoked")
    bump_version(conn)
    token = read_token_by_hash(conn, row.token_sha256)
    assert token is not None
    return token


def find_token(conn: Connection, plain: str) -> Token | None:
    """The token record of a plain token (revoked ones included: check `.revoked`), or None."""
    return read_token_by_hash(conn, credentials.token_sha256(plain))


# --- trunks and DIDs ----------------------------------------------------------------------------------------------


def create_trunk(
    conn: Connection, operation_id: str, name: str, host: str, *, port: int = 5060, transport: str = "udp",
    dial_patterns: Sequence[str] = (), dial_strip: int = 0, dial_prefix: str = "", dial_min_length: int = 3,
    dial_max_length: int = 20, caller_id_policy: str = "customer", caller_id_number: str = "",
    register: bool = False, username: str | None = None, password: str | None = None,
    auth_realm: str | None = None, inbound_networks: Sequence[str] = (), dtmf_mode: str = "rfc4733",
) -> Trunk:
    _operation(conn, operation_id)
    row = c.trunk_row(dict(
        name=name, host=host, port=port, transport=transport, dial_patterns=dial_patterns, dial_strip=dial_strip,
        dial_prefix=dial_prefix, dial_min_length=dial_min_length, dial_max_length=dial_max_length,
        caller_id_policy=caller_id_policy, caller_id_number=caller_id_number, register=register,
        username=username, password=password, auth_realm=auth_realm, inbound_networks=inbound_networks,
        dtmf_mode=dtmf_mode))
    t = s.trunks
    if _exists(conn, select(t.c.name).where(t.c.operation_id == operation_id, t.c.name == name)):
        raise AdminError(f"trunk {name!r} already exists in operation {operation_id!r}")
    conn.execute(insert(t).values(operation_id=operation_id, **row))
    bump_version(conn)
    return next(tr for tr in read_trunks(conn, operation_id) if tr.name == name)


def list_trunks(conn: Connection, operation_id: str) -> list[Trunk]:
    _operation(conn, operation_id)
    return read_trunks(conn, operation_id)


def create_did(conn: Connection, operation_id: str, number: str, queue: str, *, trunk: str | None = None) -> Did:
    _operation(conn, operation_id)
    c.did_row(dict(number=number, queue=queue, trunk=trunk))
    _queue_must_exist(conn, operation_id, "queue", queue)
    if trunk:
        t = s.trunks
        if not _exists(conn, select(t.c.name).where(t.c.operation_id == operation_id, t.c.name == trunk)):
            raise AdminError(f"trunk: {trunk!r} does not exist in operation {operation_id!r}")
    d = s.dids
    if _exists(conn, select(d.c.number).where(d.c.operation_id == operation_id, d.c.number == number)):
        raise AdminError(f"DID {number!r} already exists in operation {operation_id!r}")
    conn.execute(insert(d).values(operation_id=operation_id, number=number, queue=queue, trunk=trunk or None))
    bump_version(conn)
    return Did(operation_id, number, queue, trunk or "")


def list_dids(conn: Connection, operation_id: str) -> list[Did]:
    _operation(conn, operation_id)
    return read_dids(conn, operation_id)


# --- auxiliary states and activity codes --------------------------------------------------------------------------


def create_aux_state(conn: Connection, operation_id: str, aux_id: str, name: str) -> AuxState:
    _operation(conn, operation_id)
    c.aux_state_row(dict(aux_id=aux_id, name=name))
    t = s.aux_states
    if _exists(conn, select(t.c.id).where(t.c.operation_id == operation_id, t.c.id == aux_id)):
        raise AdminError(f"auxiliary state {aux_id!r} already exists in operation {operation_id!r}")
    conn.execute(insert(t).values(operation_id=operation_id, id=aux_id, name=name))
    bump_version(conn)
    return AuxState(operation_id, aux_id, name)


def list_aux_states(conn: Connection, operation_id: str) -> list[AuxState]:
    _operation(conn, operation_id)
    return read_aux_states(conn, operation_id)


def create_activity_code(conn: Connection, operation_id: str, group: int, code: str, name: str) -> ActivityCode:
    _operation(conn, operation_id)
    c.activity_code_row(dict(group=group, code=code, name=name))
    t = s.activity_codes
    if _exists(conn, select(t.c.code).where(t.c.operation_id == operation_id, t.c.code_group == group,
                                            t.c.code == code)):
        raise AdminError(f"activity code {code!r} of group {group} already exists in operation {operation_id!r}")
    conn.execute(insert(t).values(operation_id=operation_id, code_group=group, code=code, name=name))
    bump_version(conn)
    return ActivityCode(operation_id, 1 if group == 1 else 2, code, name)


def list_activity_codes(conn: Connection, operation_id: str) -> list[ActivityCode]:
    _operation(conn, operation_id)
    return read_activity_codes(conn, operation_id)
