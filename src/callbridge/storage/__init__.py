"""callbridge's storage adapter: SQLAlchemy Core over SQLite (default) or PostgreSQL, Alembic migrations, a
group-committing writer thread, and the repositories that implement the domain's ports. See `store.Storage`."""

from callbridge.storage.database import DEFAULT_DATABASE_URL, DatabaseUrlError, make_engine, normalise_url
from callbridge.storage.directory import Directory
from callbridge.storage.migrate import upgrade
from callbridge.storage.reconcile import Leftovers
from callbridge.storage.records import CallRecords, RecallRecords, StateRecords
from callbridge.storage.sip_state import DialogRecord, DialogRecords, RegistrationRecord, RegistrationRecords
from callbridge.storage.store import Storage
from callbridge.storage.writer import Writer

__all__ = [
    "DEFAULT_DATABASE_URL",
    "CallRecords",
    "DatabaseUrlError",
    "DialogRecord",
    "DialogRecords",
    "Directory",
    "Leftovers",
    "RecallRecords",
    "RegistrationRecord",
    "RegistrationRecords",
    "StateRecords",
    "Storage",
    "Writer",
    "make_engine",
    "normalise_url",
    "upgrade",
]
