"""Row writes: how the writer thread turns a run of queued inserts, upserts, updates and deletes into few statements.

Theory of operation
- The event loop queues plain tuples (`Insert`, `Upsert`, `Update`, `Delete`: a table, its key columns, a dict of
  values); nothing is built or compiled on the loop. The writer thread applies a *run* of them (the row writes
  between two queued callables) inside its batch's transaction.
- Tables are applied in the order they first appear in the run, so a parent row written before its children still
  lands first. Within one table:
  * only inserts: one INSERT per column set, in order (on SQLite one multi-row INSERT, elsewhere an executemany);
  * upserts, updates and deletes, all by the same key columns (the table's primary key or a unique constraint):
    folded per key into the one effect the sequence has (rules below), then executed as the DELETEs, then the
    UPDATEs, then the INSERT ... ON CONFLICT statements, each kind one statement per column set;
  * anything else (inserts mixed with the other kinds, keys of several shapes): item by item, in order.
- Folding, per key, keeps `(delete, insert_row, update_values)`: applied as "DELETE the row if `delete`; UPDATE
  `update_values` if the row is there; INSERT `insert_row` if it is not". Each new write composes with it:
    Delete           -> (True, None, {})
    Upsert(v)        -> insert_row = insert_row | v (or v), update_values = update_values | v's non-key values
    Update(c)        -> insert_row = insert_row | c (when there is one), update_values = update_values | c
  so an upsert followed by CSeq updates is one upsert carrying the newest CSeq, and a dialog written, updated and
  removed in one batch costs one DELETE. When the update values are exactly the insert row's non-key columns (the
  usual case) the effect is one `INSERT ... ON CONFLICT (keys) DO UPDATE SET c = excluded.c`; otherwise an UPDATE
  followed by `INSERT ... ON CONFLICT DO NOTHING`, which is the same effect in two statements.
- Statements are compiled once per dialect, table, kind and column set, and run on the DB-API cursor with
  SQLAlchemy's bind processors applied to the values: no per-execution compilation, cache-key walk or result
  bookkeeping, so the writer thread holds the GIL the event loop needs only for short moments. A statement that
  cannot be compiled that way (a column left out has a Python-side default, the keys are not a unique key) runs
  through SQLAlchemy instead, item by item.
- On SQLite a batch made only of row writes runs on the DB-API connection alone (`run_sqlite_batch`): BEGIN, the
  statements, COMMIT, or a lone statement in SQLite's own implicit transaction.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from callbridge.storage.schema import SQLITE_DATETIME_FORMAT, UtcDateTime, sqlite_utc_text

SQLITE_MAX_VARIABLES = 999  # the lowest SQLITE_MAX_VARIABLE_NUMBER of any build (3.32+ allow 32766)


class Insert(NamedTuple):
    table: Table
    values: dict[str, Any]


class Upsert(NamedTuple):
    """Insert the row, or update its non-key columns when a row with the same `keys` exists."""

    table: Table
    keys: Sequence[str]
    values: dict[str, Any]


class Update(NamedTuple):
    """Update the non-key columns of the row with these `keys` (in `values`); nothing when there is no such row."""

    table: Table
    keys: Sequence[str]
    values: dict[str, Any]


class Delete(NamedTuple):
    """Delete the row with these `keys` (`values` holds at least the key columns)."""

    table: Table
    keys: Sequence[str]
    values: dict[str, Any]


RowWrite = Insert | Upsert | Update | Delete
ROW_WRITES = (Insert, Upsert, Update, Delete)
_ROW_WRITE_TYPES = frozenset(ROW_WRITES)
_ONLY_INSERTS = frozenset({Insert})


# -- compiled statements ---------------------------------------------------------------------------------------
class Compiled(NamedTuple):
    sql: str
    names: tuple[str, ...]  # bind parameter names, in the statement's order
    columns: tuple[str, ...]  # the row column each parameter takes
    processors: tuple[Callable[[Any], Any] | None, ...]  # each column type's bind processor for the dialect
    positional: bool
    multi: tuple[str, str, str] | None  # SQLite INSERTs: head, "(?, ...)", tail, to put many rows in one statement


_NOT_COMPILED = object()
# Per dialect object (one per engine: bind processors follow its settings, such as its JSON serialiser).
_CACHE: weakref.WeakKeyDictionary[Dialect, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def compiled(dialect: Dialect, kind: str, table: Table, keys: tuple[str, ...], columns: frozenset[str]
             ) -> Compiled | None:
    """The statement of `kind` ("insert", "upsert", "insert_new", "update", "delete") for `columns`, compiled once
    per dialect, or None when SQLAlchemy must run it."""
    cache = _CACHE.setdefault(dialect, {})
    key = (kind, table, keys, columns)
    found = cache.get(key, _NOT_COMPILED)
    if found is _NOT_COMPILED:
        found = cache[key] = _compile(dialect, kind, table, keys, columns)
    return found  # type: ignore[no-any-return]


def _unique_key(table: Table, keys: tuple[str, ...]) -> bool:
    wanted = set(keys)
    if {c.key for c in table.primary_key.columns} == wanted:
        return True
    return any({c.key for c in getattr(constraint, "columns", ())} == wanted
               for constraint in table.constraints if type(constraint).__name__ == "UniqueConstraint")


def _compile(dialect: Dialect, kind: str, table: Table, keys: tuple[str, ...], columns: frozenset[str]
             ) -> Compiled | None:
    if columns - set(table.c.keys()) or not set(keys) <= columns:
        return None
    if kind in ("insert", "upsert", "insert_new"):
        if any(c.default is not None or c.onupdate is not None for c in table.c if c.key not in columns):
            return None  # a Python-side default: SQLAlchemy fills it in
        if kind == "insert":
            statement: Any = insert(table)
        else:
            if dialect.name not in ("sqlite", "postgresql") or not _unique_key(table, keys):
                return None
            module: Any = sqlite if dialect.name == "sqlite" else postgresql
            statement = module.insert(table)
            changed = sorted(columns - set(keys))
            index = [table.c[k] for k in keys]
            if kind == "upsert" and changed:
                statement = statement.on_conflict_do_update(
                    index_elements=index, set_={c: statement.excluded[c] for c in changed})
            else:
                statement = statement.on_conflict_do_nothing(index_elements=index)
        result = statement.compile(dialect=dialect, column_keys=sorted(columns))
        names = _names(dialect, result)
        if set(names) != columns or len(names) != len(columns):
            return None
        targets = names
    else:
        where = and_(*(table.c[k] == bindparam(f"k_{k}", type_=table.c[k].type) for k in keys))
        if kind == "update":
            changed = sorted(columns - set(keys))
            if not changed or any(c.onupdate is not None for c in table.c if c.key not in columns):
                return None
            statement = update(table).where(where).values(
                {c: bindparam(f"v_{c}", type_=table.c[c].type) for c in changed})
        else:
            statement = delete(table).where(where)
        result = statement.compile(dialect=dialect)
        names = _names(dialect, result)
        targets = tuple(name[2:] for name in names)
        if not all(name[:2] in ("k_", "v_") for name in names) or not set(targets) <= columns:
            return None
    processors = tuple(_bind_processor(table.c[c].type, dialect) for c in targets)
    return Compiled(result.string, names, targets, processors, dialect.positional,
                    _multi_row(dialect, kind, result.string, len(names)))


def _bind_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column type's bind processor for the dialect; for a `UtcDateTime` on SQLite with SQLAlchemy's default
    DATETIME format, `sqlite_utc_text`: the same text, about half the time (times are most of the writer's
    Python work per row)."""
    impl = column_type.dialect_impl(dialect)
    if (isinstance(column_type, UtcDateTime) and dialect.name == "sqlite"
            and getattr(impl.impl_instance, "_storage_format", None) == SQLITE_DATETIME_FORMAT):
        return sqlite_utc_text
    return impl.bind_processor(dialect)  # type: ignore[no-any-return]


def _names(dialect: Dialect, result: Any) -> tuple[str, ...]:
    return tuple(result.positiontup or ()) if dialect.positional else tuple(result.binds)


def _multi_row(dialect: Dialect, kind: str, sql: str, count: int) -> tuple[str, str, str] | None:
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark" or not kind.startswith(("insert", "upsert")):
        return None
    group = "(" + ", ".join(["?"] * count) + ")"
    at = sql.find(" VALUES " + group)
    if at < 0 or sql.count("?") != count:
        return None
    start = at + len(" VALUES ")
    return sql[:start], group, sql[start + len(group):]


def execute(cursor: Any, statement: Compiled, rows: Sequence[dict[str, Any]]) -> None:
    """Run `statement` for each of `rows` on a DB-API cursor (SQLite: many rows per INSERT statement)."""
    pairs = tuple(zip(statement.columns, statement.processors, strict=True))
    if statement.multi is not None and len(rows) > 1:
        head, group, tail = statement.multi
        per_statement = max(1, SQLITE_MAX_VARIABLES // len(pairs))
        for chunk in range(0, len(rows), per_statement):
            part = rows[chunk:chunk + per_statement]
            flat = [row[c] if p is None else p(row[c]) for row in part for c, p in pairs]
            cursor.execute(head + ", ".join([group] * len(part)) + tail, flat)
    elif statement.positional:
        params = [tuple(row[c] if p is None else p(row[c]) for c, p in pairs) for row in rows]
        if len(params) == 1:
            cursor.execute(statement.sql, params[0])
        else:
            cursor.executemany(statement.sql, params)
    else:
        names = statement.names
        cursor.executemany(statement.sql, [{n: row[c] if p is None else p(row[c])
                                            for n, (c, p) in zip(names, pairs, strict=True)} for row in rows])


# -- planning ------------------------------------------------------------------------------------------------
class Step(NamedTuple):
    statement: Compiled
    rows: list[dict[str, Any]]


class Fallback(NamedTuple):
    """Items SQLAlchemy runs one by one, in order."""

    items: list[RowWrite]


def plan(dialect: Dialect, run: Iterable[RowWrite]) -> list[Step | Fallback]:
    """The statements that apply `run`, table by table (see the module's rules)."""
    by_table: dict[Table, list[RowWrite]] = {}
    for item in run:
        items = by_table.get(item.table)
        if items is None:
            items = by_table[item.table] = []
        items.append(item)
    steps: list[Step | Fallback] = []
    for table, items in by_table.items():
        table_steps = _plan_table(dialect, table, items)
        steps.extend(table_steps if table_steps is not None else [Fallback(items)])
    return steps


def _plan_table(dialect: Dialect, table: Table, items: list[RowWrite]) -> list[Step | Fallback] | None:
    if _ONLY_INSERTS.issuperset(map(type, items)):  # `all(type(i) is Insert ...)`, at C speed (rows of the log)
        return _grouped(dialect, "insert", table, (), [item.values for item in items])
    first = items[0]
    if type(first) is Insert or any(type(item) is Insert or tuple(item.keys) != tuple(first.keys)  # type: ignore[union-attr]
                                    for item in items):
        return _sequential(dialect, items)
    keys = tuple(first.keys)  # type: ignore[union-attr]
    deletes, updates, inserts = _fold(keys, items)  # type: ignore[arg-type]
    steps: list[Step | Fallback] = []
    for kind, rows in (("delete", deletes), ("update", updates)):
        grouped = _grouped(dialect, kind, table, keys, rows)
        if grouped is None:
            return _sequential(dialect, items)
        steps += grouped
    for kind in ("upsert", "insert_new"):
        grouped = _grouped(dialect, kind, table, keys, [row for k, row in inserts if k == kind])
        if grouped is None:
            return _sequential(dialect, items)
        steps += grouped
    return steps


def _fold(keys: tuple[str, ...], items: list[Upsert | Update | Delete]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    effects: dict[tuple[Any, ...], list[Any]] = {}  # key -> [delete, insert_row, update_values]
    for item in items:
        values = item.values
        key = tuple(values[k] for k in keys)
        effect = effects.get(key)
        if effect is None:
            effect = effects[key] = [False, None, {}]
        if type(item) is Delete:
            effect[:] = [True, None, {}]
            continue
        changed = {c: v for c, v in values.items() if c not in keys}
        if type(item) is Upsert:
            effect[1] = {**effect[1], **values} if effect[1] is not None else dict(values)
        elif effect[1] is not None:
            effect[1] = {**effect[1], **changed}
        effect[2] = {**effect[2], **changed}
    deletes: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    inserts: list[tuple[str, dict[str, Any]]] = []
    for key, (deleted, row, changed) in effects.items():
        identity = dict(zip(keys, key, strict=True))
        if deleted:
            deletes.append(identity)
            changed = {c: v for c, v in row.items() if c not in keys} if row is not None else {}
        if row is not None and changed.keys() == row.keys() - set(keys):
            inserts.append(("upsert", row))
            continue
        if changed:
            updates.append({**identity, **changed})
        if row is not None:
            inserts.append(("insert_new", row))
    return deletes, updates, inserts


def _grouped(dialect: Dialect, kind: str, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]
             ) -> list[Step | Fallback] | None:
    """One step per run of rows with the same column set, in order; None when one cannot be compiled."""
    steps: list[Step | Fallback] = []
    run: list[dict[str, Any]] | None = None  # the rows of the last step, when it is a Step
    columns: Any = None  # their column set (a keys view)
    for row in rows:
        if run is not None and row.keys() == columns:
            run.append(row)
            continue
        statement = compiled(dialect, kind, table, keys, frozenset(row))
        if statement is None:
            if kind != "insert":
                return None
            steps.append(Fallback([Insert(table, row)]))
            run = None
            continue
        run, columns = [row], row.keys()
        steps.append(Step(statement, run))
    return steps


def _sequential(dialect: Dialect, items: list[RowWrite]) -> list[Step | Fallback]:
    """Each item as a statement of its own, in order (compiled where it can be)."""
    steps: list[Step | Fallback] = []
    kinds = {Insert: "insert", Upsert: "upsert", Update: "update", Delete: "delete"}
    for item in items:
        keys = tuple(getattr(item, "keys", ()))
        columns = frozenset(item.values) if type(item) is not Delete else frozenset(keys)
        row = item.values if type(item) is not Delete else {k: item.values[k] for k in keys}
        statement = compiled(dialect, kinds[type(item)], item.table, keys, columns)
        steps.append(Step(statement, [row]) if statement is not None else Fallback([item]))
    return steps


# -- applying ------------------------------------------------------------------------------------------------
def apply(conn: Connection, run: Sequence[RowWrite]) -> None:
    """Apply `run` inside the connection's open transaction."""
    if not run:
        return
    cursor: Any = None
    try:
        for step in plan(conn.dialect, run):
            if isinstance(step, Step):
                if cursor is None:
                    cursor = conn.connection.cursor()
                execute(cursor, step.statement, step.rows)
            else:
                for item in step.items:
                    _through_sqlalchemy(conn, item)
    finally:
        if cursor is not None:
            cursor.close()


def run_sqlite_batch(conn: Connection, work: Sequence[Any]) -> bool:
    """A batch of nothing but row writes on SQLite, on the DB-API connection itself; False (nothing done) for any
    other batch, or one with a statement SQLAlchemy must run."""
    if conn.dialect.name != "sqlite" or not _ROW_WRITE_TYPES.issuperset(map(type, work)):
        return False
    planned = plan(conn.dialect, work)
    steps = [step for step in planned if isinstance(step, Step)]
    if len(steps) != len(planned):
        return False
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        only = steps[0] if len(steps) == 1 else None
        if only is not None and (len(only.rows) == 1 or (
                only.statement.multi is not None
                and len(only.rows) * len(only.statement.names) <= SQLITE_MAX_VARIABLES)):
            # One statement: SQLite runs it as a transaction of its own (all rows or none), so BEGIN and COMMIT
            # would only add two more GIL hand-overs to the event loop.
            execute(cursor, only.statement, only.rows)
            return True
        cursor.execute("BEGIN")
        try:
            for step in steps:
                execute(cursor, step.statement, step.rows)
            cursor.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.rollback()
            raise
    finally:
        cursor.close()
    return True


def _through_sqlalchemy(conn: Connection, item: RowWrite) -> None:
    table, values = item.table, item.values
    if type(item) is Insert:
        conn.execute(insert(table).values(values))
        return
    keys = tuple(item.keys)  # type: ignore[union-attr]
    condition = and_(*(table.c[k] == values[k] for k in keys))
    if type(item) is Delete:
        conn.execute(delete(table).where(condition))
        return
    if type(item) is Update:
        changed = {k: v for k, v in values.items() if k not in keys}
        if changed:
            conn.execute(update(table).where(condition).values(changed))
        return
    upsert(conn, table, keys, values)


def upsert(conn: Connection, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
    """Update the row whose `keys` columns equal those in `values`, or insert it when there is none (through
    SQLAlchemy, in the caller's transaction)."""
    condition = and_(*(table.c[k] == values[k] for k in keys))
    changed = {k: v for k, v in values.items() if k not in keys}
    if changed:
        if conn.execute(update(table).where(condition).values(changed)).rowcount:
            return
    elif conn.execute(select(table.c[keys[0]]).where(condition)).first() is not None:
        return
    conn.execute(insert(table).values(values))
