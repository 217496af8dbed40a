"""A process killed (SIGKILL) in the middle of writing leaves a consistent SQLite file with every write it had
committed: WAL with synchronous=NORMAL is durable against a process crash (only an OS crash may lose the last
transactions), and group commit keeps each batch all-or-nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import select

from callbridge.storage import schema as s
from callbridge.storage.database import make_engine

WRITER = textwrap.dedent("""
    import sys
    from sqlalchemy import insert
    from callbridge.storage import schema as s
    from callbridge.storage.database import make_engine
    from callbridge.storage.migrate import upgrade
    from callbridge.storage.writer import Writer

    url = sys.argv[1]
    upgrade(url)
    writer = Writer(make_engine(url)).start()
    i = 0
    while True:
        for _ in range(100):
            writer.execute(insert(s.operations).values(id=f"op{i:07d}", sip_domain=f"op{i}.test", name="x" * 150))
            i += 1
        writer.flush()
        print(i, flush=True)  # every write up to i is committed
""")


def test_sigkill_mid_write_leaves_a_consistent_file_with_committed_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    child = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    committed = 0
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while committed < 3000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the writer process stopped early"
            committed = int(line)
        assert committed >= 3000
        os.kill(child.pid, signal.SIGKILL)  # while it is writing its next batches
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            ids = conn.execute(select(s.operations.c.id).order_by(s.operations.c.id)).scalars().all()
    finally:
        engine.dispose()
    assert len(ids) >= committed
    # batches commit whole and in order: what survived is exactly the first len(ids) writes
    assert ids == [f"op{i:07d}" for i in range(len(ids))]
