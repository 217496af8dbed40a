"""Supervisors: the accounts that sign in to an operation's board (`/supervisor`), and their passwords.

- A supervisor is (operation, username): it sees and acts on its operation only (docs/operations.md, "The
  supervisor's board"). Created, changed and deleted by `callbridge admin supervisor ...` and by an operation
  file's `[[supervisors]]`.
- The password is kept as a salted scrypt hash (RFC 7914; n=2^14, r=8, p=1): no digest needs it in any other form,
  so the slow hash is the one kept. `verify_password` spends the same work on an unknown account (a dummy hash),
  so a sign-in's answer time says nothing of which usernames exist.
- `extension` (optional, digits): the phone the board's Listen rings unless the supervisor types another (one of
  the operation's agents' extensions when it is used: the listening checks it then, so an agent created later may
  be named now).
- `SupervisorAccounts` is what the HTTP layer is given (bootstrap wires it): one indexed read per sign-in, off the
  event loop; nothing is cached, so a deleted supervisor cannot sign in again at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from callbridge.storage import admin_checks as c
from callbridge.storage import schema as s
from callbridge.storage.admin_checks import AdminError, NotFound

__all__ = ["Supervisor", "SupervisorAccounts", "create_supervisor", "delete_supervisor", "hash_password",
           "list_supervisors", "reset_supervisor_password", "update_supervisor", "verify_password"]

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,31}")
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class Supervisor:
    operation_id: str
    username: str
    name: str = ""
    password_hash: str = ""
    extension: str = ""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


_DUMMY = hash_password("no account has this password", salt=b"\0" * 16)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches the stored hash; with None (no such account), the same work and False."""
    try:
        scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except ValueError:
        return False
    return stored is not None and hmac.compare_digest(got.hex(), digest)


def _row_to(row: object) -> Supervisor:
    return Supervisor(row.operation_id, row.username, row.name, row.password_hash,  # type: ignore[attr-defined]
                      row.extension)  # type: ignore[attr-defined]


def _operation_must_exist(conn: Connection, operation_id: str) -> None:
    if conn.execute(select(s.operations.c.id).where(s.operations.c.id == operation_id)).first() is None:
        raise NotFound(f"operation {operation_id!r} does not exist")


def _get(conn: Connection, operation_id: str, username: str) -> Supervisor | None:
    t = s.supervisors
    row = conn.execute(select(t).where(t.c.operation_id == operation_id, t.c.username == username)).first()
    return None if row is None else _row_to(row)


def get_supervisor(conn: Connection, operation_id: str, username: str) -> Supervisor:
    _operation_must_exist(conn, operation_id)
    found = _get(conn, operation_id, username)
    if found is None:
        raise NotFound(f"supervisor {username!r} of operation {operation_id!r} does not exist")
    return found


def _extension(value: object) -> str:
    if value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # `--set extension=1009` reads as a TOML integer
    return c.check(c.DIGITS, "extension", value, "an extension (digits, up to 32)")


def create_supervisor(conn: Connection, operation_id: str, username: str, password: str, *,
                      name: str = "", extension: str = "") -> Supervisor:
    _operation_must_exist(conn, operation_id)
    c.check(USERNAME, "username", username, "a username (letters, digits, _ . @ -, up to 32)")
    c.text("name", name)
    _extension(extension)
    c.password(password)
    if _get(conn, operation_id, username) is not None:
        raise AdminError(f"supervisor {username!r} already exists in operation {operation_id!r}")
    conn.execute(insert(s.supervisors).values(operation_id=operation_id, username=username, name=name,
                                              password_hash=hash_password(password), extension=extension))
    return get_supervisor(conn, operation_id, username)


def list_supervisors(conn: Connection, operation_id: str) -> list[Supervisor]:
    _operation_must_exist(conn, operation_id)
    t = s.supervisors
    rows = conn.execute(select(t).where(t.c.operation_id == operation_id).order_by(t.c.username)).all()
    return [_row_to(r) for r in rows]


def update_supervisor(conn: Connection, operation_id: str, username: str, /, **changes: object) -> Supervisor:
    """Change a supervisor's name or extension (its password: `reset_supervisor_password`)."""
    get_supervisor(conn, operation_id, username)
    unknown = sorted(set(changes) - {"name", "extension"})
    if "password" in unknown:
        raise AdminError("password: use reset_supervisor_password (callbridge admin supervisor reset-password)")
    if unknown:
        raise AdminError(f"{unknown[0]}: a supervisor has no such field (name, extension)")
    values: dict[str, str] = {}
    if "name" in changes:
        values["name"] = c.text("name", changes["name"])
    if "extension" in changes:
        values["extension"] = _extension(changes["extension"])
    if values:
        t = s.supervisors
        conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.username == username).values(**values))
    return get_supervisor(conn, operation_id, username)


def reset_supervisor_password(conn: Connection, operation_id: str, username: str, password: str) -> Supervisor:
    get_supervisor(conn, operation_id, username)
    c.password(password)
    t = s.supervisors
    conn.execute(update(t).where(t.c.operation_id == operation_id, t.c.username == username)
                 .values(password_hash=hash_password(password)))
    return get_supervisor(conn, operation_id, username)


def delete_supervisor(conn: Connection, operation_id: str, username: str) -> Supervisor:
    found = get_supervisor(conn, operation_id, username)
    t = s.supervisors
    conn.execute(delete(t).where(t.c.operation_id == operation_id, t.c.username == username))
    return found


class SupervisorAccounts:
    """The board's sign-in check over the database (blocking: call it off the loop)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def verify(self, operation_id: str, username: str, password: str) -> Supervisor | None:
        """The supervisor when the password is theirs; None for a wrong password and for no such account alike."""
        with self._engine.connect() as conn:
            found = _get(conn, operation_id, username)
        ok = verify_password(found.password_hash if found else None, password)
        return found if ok and found is not None else None
