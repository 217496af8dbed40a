"""The real-peer harness works: SIPp against SIPp, Kamailio answering, baresip answering a SIPp call.

These tests need the peers installed by ``scripts/setup --test``; a missing binary fails them (PeerMissing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from peers.baresip import Baresip
from peers.kamailio import Kamailio
from peers.sipp import Sipp

pytestmark = pytest.mark.peers


def test_sipp_uac_against_sipp_uas_completes_ten_calls(tmp_path: Path) -> None:
    uas = Sipp("uas", calls=10, timeout=30, workdir=tmp_path / "uas").start()
    try:
        uac = Sipp("uac", remote=("127.0.0.1", uas.port), calls=10, rate=20, timeout=30,
                   workdir=tmp_path / "uac").run()
    finally:
        server = uas.wait()
    assert uac.returncode == 0, uac.summary()
    assert (uac.created, uac.successful, uac.failed) == (10, 10, 0), uac.summary()
    assert (server.successful, server.failed) == (10, 0), server.summary()


def test_sipp_over_tcp(tmp_path: Path) -> None:
    uas = Sipp("uas", transport="t1", calls=5, timeout=30, workdir=tmp_path / "uas").start()
    try:
        uac = Sipp("uac", transport="t1", remote=("127.0.0.1", uas.port), calls=5, rate=10, timeout=30,
                   workdir=tmp_path / "uac").run()
    finally:
        server = uas.wait()
    assert (uac.successful, uac.failed) == (5, 0), uac.summary()
    # The uac closes its connection as soon as its last call ends; the uas still counts that call "current"
    # (about 4 s after BYE) and books it as FailedTcpClosed. Every call reached it and none failed otherwise.
    assert server.created == 5, server.summary()
    assert server.successful + int(server.stats["FailedTcpClosed(C)"]) == 5, server.summary()


def test_kamailio_answers_options_and_stops(tmp_path: Path) -> None:
    kam = Kamailio(workdir=tmp_path)
    with kam:
        assert kam.running
        response = kam.options_ping()
        assert response is not None and response.startswith(b"SIP/2.0 200 "), kam.log()[-2000:]
    assert not kam.running
    assert kam.options_ping(timeout=0.3) is None


def test_kamailio_proxies_sipp_calls(tmp_path: Path) -> None:
    uas = Sipp("uas", calls=20, timeout=30, workdir=tmp_path / "uas").start()
    try:
        with Kamailio(default_route=("127.0.0.1", uas.port), workdir=tmp_path / "kam") as kam:
            uac = Sipp("uac", remote=kam.address, calls=20, rate=50, timeout=30, workdir=tmp_path / "uac").run()
    finally:
        server = uas.wait()
    assert (uac.successful, uac.failed) == (20, 0), uac.summary()
    assert server.successful == 20, server.summary()


async def test_baresip_answers_a_sipp_call(tmp_path: Path) -> None:
    async with Baresip(answermode="auto", workdir=tmp_path / "phone") as phone:
        uac = Sipp("uac", remote=("127.0.0.1", phone.port), service=phone.user, calls=1, timeout=20,
                   workdir=tmp_path / "uac")
        result = await uac.run_async()
        established = await phone.wait_event("CALL_ESTABLISHED")
        closed = await phone.wait_event("CALL_CLOSED")
        assert (result.successful, result.failed) == (1, 0), result.summary() + phone.log()[-2000:]
        assert established["class"] == "call"
        assert closed["param"], closed  # the reason the call closed
        listed = await phone.command("listcalls")
        assert listed["ok"] is True
