"""RTP through a port-rewriting NAT (`nat_relay.py`): a phone whose SDP names an address nobody can reach (behind
NAT) is heard, and hears, because the far end answers to where its packets come from (symmetric RTP, RFC 4961);
without symmetric RTP the far end's packets go nowhere (refused by the destination policy) and nothing is heard.
With seeded loss on the way, the receiver's loss count is exactly what the relay dropped."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from lossy_relay import TO_SERVER, direction_seed
from nat_relay import NatRelay

from callbridge.phone import Call, IncomingCall, Phone

pytestmark = pytest.mark.timeout(30)

PRIVATE = "192.0.2.55"  # a documentation address (RFC 5737): what a phone behind NAT would write in its SDP


@pytest.fixture
async def phones() -> AsyncIterator[tuple[Phone, Phone, Phone]]:
    alice = await Phone.start(host="127.0.0.1", user="1001", media=True, media_address=PRIVATE)
    bob = await Phone.start(host="127.0.0.1", user="2002", media=True, symmetric_rtp=True, answer="auto")
    carol = await Phone.start(host="127.0.0.1", user="3003", media=True, answer="auto")  # no symmetric RTP
    yield alice, bob, carol
    for phone in (alice, bob, carol):
        await phone.close()


async def connect(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    call = await caller.call(callee.uri, timeout=5)
    incoming = await callee.wait_for(IncomingCall, where=lambda e: e.call.call_id == call.call_id, timeout=5)
    await incoming.call.wait_answered(5)
    assert call.rtp is not None and incoming.call.rtp is not None
    return call, incoming.call


async def test_audio_crosses_the_nat_with_symmetric_rtp(phones: tuple[Phone, Phone, Phone]) -> None:
    alice, bob, _ = phones
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    assert callee.remote_sdp is not None and callee.remote_sdp.connection is not None
    assert callee.remote_sdp.connection.address == PRIVATE
    async with NatRelay(callee.rtp.local_address) as nat:
        call.rtp.next_hop = nat.inside
        call.rtp.play_tone(1000)
        callee.rtp.play_tone(700)
        start = alice.now()
        await asyncio.sleep(1.0)
        since, until = start + 0.3, alice.now()  # bob answers once alice's first packet taught him where
        public = nat.public_address(call.rtp.local_address)
        assert public is not None and public[0] == "127.0.0.5" and public != call.rtp.local_address
        assert callee.rtp.destination == public  # learned from the packets, not the SDP's 192.0.2.55
        assert callee.rtp.heard(since, until).share(1000, tolerance=3) >= 0.85
        assert call.rtp.heard(since, until).share(700, tolerance=3) >= 0.85
        assert callee.rtp.refused <= 3  # at most the ticks before alice's first packet arrived
        assert nat.counts.to_client.forwarded == call.rtp.packets_received


async def test_without_symmetric_rtp_nothing_comes_back(phones: tuple[Phone, Phone, Phone]) -> None:
    alice, _, carol = phones
    call, callee = await connect(alice, carol)
    assert call.rtp is not None and callee.rtp is not None
    async with NatRelay(callee.rtp.local_address) as nat:
        call.rtp.next_hop = nat.inside
        call.rtp.play_tone(1000)
        callee.rtp.play_tone(700)
        start = alice.now()
        await asyncio.sleep(0.6)
        since, until = start + 0.2, alice.now()
        assert callee.rtp.heard(since, until).share(1000, tolerance=3) >= 0.8  # alice -> carol works
        assert call.rtp.packets_received == 0  # carol sends to the SDP's private address: refused, never sent
        assert callee.rtp.packets_sent == 0 and callee.rtp.refused >= 25
        assert callee.rtp.destination == (PRIVATE, call.media.rtp_port)


async def test_loss_on_the_way_is_counted_exactly(phones: tuple[Phone, Phone, Phone]) -> None:
    alice, bob, _ = phones
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    seed, loss = 42, 0.1
    async with NatRelay(callee.rtp.local_address, loss_to_destination=loss, seed=seed) as nat:
        call.rtp.next_hop = nat.inside
        call.rtp.play_tone(1000)
        start = alice.now()
        await asyncio.sleep(1.5)
        call.rtp.stop()
        await asyncio.sleep(0.1)
        until = alice.now()
        counts = nat.counts.to_server
        stats = callee.rtp.stats
        assert stats is not None
        assert counts.dropped > 0 and stats.received == counts.forwarded
        # the relay's draws, replayed: drops before the first and after the last delivered packet are invisible
        rng = random.Random(direction_seed(seed, TO_SERVER))
        draws = [rng.random() < loss for _ in range(counts.forwarded + counts.dropped)]
        leading = next(i for i, dropped in enumerate(draws) if not dropped)
        trailing = next(i for i, dropped in enumerate(reversed(draws)) if not dropped)
        assert stats.lost == counts.dropped - leading - trailing
        assert stats.expected == stats.received + stats.lost
        # 10 % loss leaves the tone recognisable in most windows
        assert callee.rtp.heard(start + 0.2, until - 0.1).share(1000, tolerance=5) >= 0.6
