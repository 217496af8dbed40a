"""A running node follows `callbridge admin`'s changes: `bootstrap` starts the directory poll
(`directory_poll_seconds`), and after a reload what is derived from the directory is rebuilt (the trunks' inbound
networks the switch matches sources against); `directory_poll_seconds=0` leaves the start-up directory in place;
`Node.close` stops the poll."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callbridge.bootstrap import bootstrap
from callbridge.config import Settings
from callbridge.storage import administration as admin
from callbridge.storage.database import make_engine
from callbridge.storage.migrate import upgrade

OP = "0042"


def administer(url: str, *, with_trunk: bool) -> None:
    """What `callbridge admin` does from another process: its own engine, one transaction."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if not with_trunk:
                admin.create_operation(conn, id=OP, sip_domain="op.test")
            else:
                admin.create_trunk(conn, OP, "carrier", "127.0.0.3", inbound_networks=["127.0.0.9/32"])
    finally:
        engine.dispose()


async def test_a_trunk_created_while_the_node_runs_is_matched_by_its_network(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(administer, url, with_trunk=False)
    node = await bootstrap(Settings(sip_port=0, http_port=0, database_url=url, directory_poll_seconds=0.05))
    try:
        assert node.directory_watch is not None and not node.directory_watch.done()
        assert node.switch.trunk_for_source("127.0.0.9") is None
        await asyncio.to_thread(administer, url, with_trunk=True)
        async with asyncio.timeout(5):
            while node.switch.trunk_for_source("127.0.0.9") is None:
                await asyncio.sleep(0.02)
        trunk = node.switch.trunk_for_source("127.0.0.9")
        assert trunk is not None and (trunk.operation_id, trunk.name) == (OP, "carrier")
        assert node.storage.directory.version == 2
    finally:
        await node.close()
    assert node.directory_watch.cancelled()


async def test_a_poll_of_zero_keeps_the_start_up_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(administer, url, with_trunk=False)
    node = await bootstrap(Settings(sip_port=0, http_port=0, database_url=url, directory_poll_seconds=0))
    try:
        assert node.directory_watch is None
        await asyncio.to_thread(administer, url, with_trunk=True)
        await asyncio.sleep(0.3)
        assert node.switch.trunk_for_source("127.0.0.9") is None
        assert node.storage.directory.reloads == 1
    finally:
        await node.close()
