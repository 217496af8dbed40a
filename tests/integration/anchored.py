"""Anchored calls for the call-flow tests (callnode.py's node with real userspace rtpengine relays): the node, its
relays and the phones of a test, and a customer talking to an agent through a relay, each tone playing.

    async with anchored_node(tmp_path, operation_doc(), relays=2, rtpengine_ping_seconds=0.5) as a:
        talk = await talking(a)                      # customer 700 Hz <-> agent 1001 1000 Hz, answered
        ...                                          # a.node, a.relays, talk.call, talk.agent_call

Shared by test_calls_dtmf.py, test_calls_relay_loss.py and test_calls_queue_audio.py (each built the same node,
relays and phones). A relay starts in ~0.2 s: each test keeps its own (they are killed, and their arguments and
the node's settings differ from test to test), so no state crosses tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callnode import agent_phone, customer_phone, did_uri, load, until

from callbridge.bootstrap import Node, bootstrap
from callbridge.config import Settings
from callbridge.phone import Call, Established, IncomingCall, Phone
from migrated import migrated_sqlite
from peers.rtpengine import Rtpengine

AGENT_HZ, CUSTOMER_HZ = 1000.0, 700.0


@dataclass
class Anchored:
    node: Node
    relays: list[Rtpengine]
    phones: list[Phone] = field(default_factory=list)  # closed when the node is

    async def agent(self, extension: str = "1001", *, ready: bool = True) -> Phone:
        """An agent's phone with media that answers at once, registered (and ready unless `ready=False`)."""
        phone = await agent_phone(self.node, extension, ready=ready, answer="auto", media=True)
        self.phones.append(phone)
        return phone

    async def customer(self) -> Phone:
        """A customer's phone with media, behind the trunk."""
        phone = await customer_phone(media=True)
        self.phones.append(phone)
        return phone


@asynccontextmanager
async def anchored_node(tmp_path: Path, doc: dict[str, Any], *, relays: int = 1, relay_args: tuple[str, ...] = (),
                        **settings: Any) -> AsyncIterator[Anchored]:
    """`doc` loaded into a fresh database, `relays` rtpengine processes (with `relay_args`) and a node using them
    (with `settings`), every relay up; the phones, the node and the relays are closed afterwards, in that order."""
    url = migrated_sqlite(tmp_path / "callbridge.db")
    await asyncio.to_thread(load, url, doc)
    started: list[Rtpengine] = []
    node: Node | None = None
    made: Anchored | None = None
    try:
        for i in range(relays):
            relay = Rtpengine(workdir=tmp_path / f"rtpengine{i}", extra_args=relay_args)
            started.append(relay)  # before it starts: stopped and its ports given back whatever happens
            relay.start()
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=tuple(f"udp:{r.host}:{r.ng_port}" for r in started), **settings))
        shell, anchor = node.media_shell, node.switch.anchor
        assert shell is not None
        await until(lambda: all(r.up for r in shell.relays.relays.values()) and anchor.media is not None
                    and anchor.media.available(), what="every relay up")
        made = Anchored(node, started)
        yield made
    finally:
        for phone in made.phones if made is not None else []:
            await phone.close()
        if node is not None:
            await node.close()
        for relay in started:
            relay.__exit__(None, None, None)


@dataclass
class Talk:
    customer: Phone
    agent: Phone
    call: Call  # the customer's
    agent_call: Call


async def talking(a: Anchored, *, agent_hz: float = AGENT_HZ, customer_hz: float = CUSTOMER_HZ) -> Talk:
    """Agent 1001 (ready, answering at once) and a customer who calls the DID: the call answered and established
    on both phones, the agent's phone playing `agent_hz` and the customer's `customer_hz`."""
    agent = await a.agent()
    customer = await a.customer()
    call = await customer.call(did_uri(a.node), timeout=5)
    agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
    await agent.wait_for(Established, call=agent_call, timeout=5)
    assert call.rtp is not None and agent_call.rtp is not None
    agent_call.rtp.play_tone(agent_hz)
    call.rtp.play_tone(customer_hz)
    return Talk(customer, agent, call, agent_call)
