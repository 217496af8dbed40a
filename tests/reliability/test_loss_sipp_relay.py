"""SIPp calls SIPp through the lossy relay at 10 % loss each way: SIPp's own retransmissions recover the calls.

This proves the relay before it goes in front of callbridge: it loses what it should (about 10 % of the datagrams
in each direction, seeded), delivers the rest to the right side, and a pair of RFC 3261 user agents that
retransmit (Timer A/E on the caller, the 2xx retransmission on the callee) complete at least 99.9 % of the calls.

The peers are ``scenarios/uac_loss_tolerant.xml`` and ``scenarios/uas_loss_tolerant.xml``, not SIPp's built-in
uac and uas, which do not survive loss (measured here: with them 0.5-1.3 % of the calls fail at this loss, each
failure a bug of the built-in scenario, explained in the comments of the two files).

Longer form (10,000 calls, about 2 minutes):
    RELIABILITY_LOSS_CALLS=10000 .venv/bin/python -m pytest tests/reliability/test_loss_sipp_relay.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from lossy_relay import LossyRelay

from peers.sipp import Sipp

# serial: the calls' retransmission timers race the relay's measured loss; a busy core adds loss of its own.
pytestmark = [pytest.mark.peers, pytest.mark.serial]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLS = int(os.environ.get("RELIABILITY_LOSS_CALLS", "1000"))
RATE = 100.0       # calls per second: moderate, far below the ceilings in docs/peers.md
LOSS = 0.10
SEED = 42
# Each side's transactions finish within 32 s (64*T1) of their last message; the callee holds each call 16 s. The
# last call, started at CALLS / RATE, may spend up to 32 s getting its INVITE through, then 16 s, then up to 32 s
# getting its BYE through: the bound leaves room for that (at + 60 a run ended with 2 calls still in their BYE).
SIPP_TIMEOUT = CALLS / RATE + 90


async def test_sipp_calls_survive_ten_percent_loss_each_way(tmp_path: Path) -> None:
    uas = Sipp(SCENARIOS / "uas_loss_tolerant.xml", calls=CALLS, timeout=SIPP_TIMEOUT, workdir=tmp_path / "uas")
    uas.start()
    try:
        async with LossyRelay(("127.0.0.1", 0), ("127.0.0.1", uas.port), loss_to_server=LOSS,
                              loss_to_client=LOSS, seed=SEED, duration=SIPP_TIMEOUT + 30) as relay:
            uac = await Sipp(SCENARIOS / "uac_loss_tolerant.xml", service="service", remote=relay.address,
                             calls=CALLS, rate=RATE, timeout=SIPP_TIMEOUT, workdir=tmp_path / "uac").run_async()
            callee = await uas.wait_async()
    finally:
        callee = uas.stop()
    need = CALLS - CALLS // 1000       # >= 99.9 %
    print(f"{uac.successful}/{CALLS} calls completed (callee {callee.successful}), SIPp retransmissions "
          f"{uac.retransmissions} + {callee.retransmissions}, {uac.elapsed:.1f} s; relay {relay.counts}")
    assert uac.created == CALLS, uac.summary()
    assert uac.successful >= need, uac.summary()
    assert callee.successful >= need, callee.summary()
    # The loss really happened, at the rate asked, and the peers recovered by retransmitting.
    counts = relay.counts
    for direction in (counts.to_server, counts.to_client):
        total = direction.forwarded + direction.dropped
        assert 0.08 <= direction.dropped / total <= 0.12, counts
    assert uac.retransmissions > 0 and callee.retransmissions > 0, (uac.summary(), callee.summary())
    assert counts.clients == 1 and counts.refused_clients == counts.refused_not_loopback == 0
