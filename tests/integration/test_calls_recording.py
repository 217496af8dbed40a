"""Recordings that follow the call (docs/operations.md, "Recordings"), measured in the WAV callbridge stores: a real
userspace rtpengine records (pcap), real SIP between phones and callbridge on loopback, real RTP tones.

A call of an operation whose policy is `always` is recorded from its answer on; it is transferred twice (agent 1001,
then 1002, then 1003, each phone playing its own tone, the customer its own) and paused once in between (the API's
PATCH, or the service's verb). The WAV's left channel holds the customer's tone, the right channel the three
agents' tones in order, the paused span is digital silence on both, and the row lists the segments (one per start
on the relay) and the pause at the offset the WAV has it. A node killed while the relay records finishes that
recording into its WAV when it starts again."""

from __future__ import annotations

import asyncio
import io
import sys
import wave
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from agentbox_world import LiveHttp, other_doc  # noqa: E402
from callnode import OP, agent_phone, customer_phone, did_uri, load, operation_doc, until  # noqa: E402

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import Call, CallEnded, Established, IncomingCall, Phone  # noqa: E402
from callbridge.phone.spectrum import analyse, level_dbfs  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

CUSTOMER_HZ = 700.0
AGENT_HZ = {"1001": 1000.0, "1002": 1500.0, "1003": 1200.0}
WINDOW = 0.1  # seconds per measured window
TALK = 1.2  # seconds each agent talks with the customer
PAUSE = 1.0  # seconds the recording is paused


@dataclass
class World:
    node: Node
    relay: Rtpengine
    customer: Phone
    recordings: Path
    http: httpx.AsyncClient
    token: str
    other_token: str
    phones: dict[str, Phone] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    call: Call | None = None


@asynccontextmanager
async def world(tmp_path: Path, **operation: Any) -> AsyncIterator[World]:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc()
    doc["operation"].update({"recording": "always", "transfer_timeout": 5, **operation})
    doc["tokens"] = [{"label": "crm"}]
    (token,) = await asyncio.to_thread(load, url, doc)
    (other_token,) = await asyncio.to_thread(load, url, other_doc())
    recordings = tmp_path / "kept"
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=(f"udp:{relay.host}:{relay.ng_port}",),
                                        rtpengine_recording_dir=str(relay.recording_dir),
                                        recordings_dir=str(recordings)))
        phones: list[Phone] = []
        live = LiveHttp(node.app)
        await live.start()
        client = httpx.AsyncClient(base_url=live.url, timeout=10)
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            w = World(node, relay, await customer_phone(media=True), recordings, client, token, other_token)
            phones.append(w.customer)
            for extension in AGENT_HZ:
                phone = await agent_phone(node, extension, ready=extension == "1001",
                                          answer="auto" if extension == "1001" else "manual", media=True)
                phones.append(phone)
                w.phones[extension] = phone
            yield w
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            for phone in phones:
                await phone.close()
            await client.aclose()
            await live.stop()
            await node.close()


async def answered_by(w: World, extension: str) -> None:
    phone = w.phones[extension]
    call = (await phone.wait_for(IncomingCall, timeout=5)).call
    if extension != "1001":
        await call.answer()
    await phone.wait_for(Established, call=call, timeout=5)
    assert call.rtp is not None
    call.rtp.play_tone(AGENT_HZ[extension])
    w.calls[extension] = call


async def transfer(w: World, source: str, target: str) -> None:
    w.node.service.change_status(OP, target, "ready")
    w.node.service.transfer(OP, source, target)
    await answered_by(w, target)
    await w.phones[source].wait_for(CallEnded, call=w.calls[source], timeout=5)


def channels(path: Path) -> tuple[array[int], array[int]]:
    with wave.open(io.BytesIO(path.read_bytes()), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = array("h", wav.readframes(wav.getnframes()))
    return samples[0::2], samples[1::2]


def tones(channel: array[int]) -> list[int | None]:
    """The dominant frequency of each window, rounded to 25 Hz; None: silence (below -50 dBFS)."""
    n = int(WINDOW * 8000)
    out: list[int | None] = []
    for start in range(0, len(channel) - n + 1, n):
        window = channel[start:start + n]
        hz = analyse(window).dominant_hz if level_dbfs(window) > -50 else None
        out.append(None if hz is None else int(round(hz / 25.0) * 25))
    return out


def runs(values: list[int | None], *, at_least: int = 3) -> list[int]:
    """The tones in order, each run of at least `at_least` windows once (short overlaps at a hand-over dropped)."""
    out: list[int] = []
    count, last = 0, None
    for value in [*values, None]:
        if value == last:
            count += 1
            continue
        if last is not None and count >= at_least and (not out or out[-1] != last):
            out.append(last)
        last, count = value, 1
    return out


async def recording_row(w: World, conn_id: str) -> dict[str, Any]:
    await until(lambda: not w.node.switch.anchor.calls, what="the relay's call gone")
    await w.node.switch.anchor.settle()
    assert w.node.recordings is not None
    await w.node.recordings.settle()
    await w.node.storage.writer.aflush()
    with w.node.storage.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(s.recordings)).mappings()]
    assert [r["conn_id"] for r in rows] == [conn_id]
    return rows[0]


async def pause_with_service(w: World, conn_id: str, paused: bool) -> None:
    assert w.node.service.pause_recording(OP, conn_id, paused).state == ("paused" if paused else "recording")


async def api(w: World, method: str, path: str, *, token: str | None = None, **options: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token or w.token}", **options.pop("headers", {})}
    return await w.http.request(method, path, headers=headers, **options)


async def pause_with_the_api(w: World, conn_id: str, paused: bool) -> None:
    answer = await api(w, "PATCH", f"/v2/calls/{conn_id}/recording", json={"paused": paused})
    assert (answer.status_code, answer.json()) == (200, {"conn_id": conn_id, "policy": "on_demand",
                                                         "state": "paused" if paused else "recording"})


async def start_with_the_api(w: World, conn_id: str) -> None:
    answer = await api(w, "POST", f"/v2/calls/{conn_id}/recording")
    assert (answer.status_code, answer.json()) == (200, {"conn_id": conn_id, "policy": "on_demand",
                                                         "state": "recording"})


async def run_the_call(w: World, pause: Any, start: Any = None) -> str:
    w.call = await w.customer.call(did_uri(w.node), timeout=5)
    await answered_by(w, "1001")
    assert w.call.rtp is not None
    w.call.rtp.play_tone(CUSTOMER_HZ)
    conn_id = w.node.service.get_agent(OP, "1001").conn_id
    assert conn_id is not None and w.node.switch.anchor.anchored(conn_id)
    if start is not None:
        await start(w, conn_id)
    await until(lambda: w.node.switch.anchor.recorder.recording(conn_id), what="recording on the relay")
    await asyncio.sleep(TALK)
    await transfer(w, "1001", "1002")
    await asyncio.sleep(TALK / 2)
    await pause(w, conn_id, True)
    await asyncio.sleep(PAUSE)
    await pause(w, conn_id, False)
    await asyncio.sleep(TALK / 2)
    await transfer(w, "1002", "1003")
    await asyncio.sleep(TALK)
    await w.call.hangup()
    return conn_id


def assert_the_recording(w: World, conn_id: str, row: dict[str, Any]) -> None:
    path = Path(row["path"])
    assert path == w.recordings / OP / f"{conn_id}.wav" and path.is_file()
    assert row["operation_id"] == OP
    left, right = channels(path)
    assert row["duration"] == pytest.approx(len(left) / 8000, abs=0.002)
    # the segments: one per start on the relay (the answer, and the resume after the pause), in time order
    assert [seg["start"] for seg in row["segments"]] == sorted(seg["start"] for seg in row["segments"])
    assert len(row["segments"]) == 2 and all(seg["packets"] > 0 for seg in row["segments"])
    assert all(seg["file"].startswith(f"{conn_id}-") and seg["file"].endswith(".pcap") for seg in row["segments"])
    (pause,) = row["pauses"]
    assert pause["duration"] == pytest.approx(PAUSE, abs=0.25), row["pauses"]
    first, second = row["segments"]
    assert pause["offset"] == pytest.approx(first["start"] + first["duration"], abs=0.1)
    assert second["start"] == pytest.approx(pause["offset"] + pause["duration"], abs=0.1)
    # the paused span is digital silence on both channels
    begin, end = int((pause["offset"] + 0.05) * 8000), int((pause["offset"] + pause["duration"] - 0.05) * 8000)
    assert set(left[begin:end]) == {0} and set(right[begin:end]) == {0}
    # the right channel: the three agents in order; the left: the customer's tone and nothing else
    heard_right = tones(right)
    assert runs(heard_right) == [int(hz) for hz in AGENT_HZ.values()], heard_right
    heard_left = tones(left)
    assert {hz for hz in heard_left if hz is not None} == {int(CUSTOMER_HZ)}, heard_left
    customer_windows = sum(hz == CUSTOMER_HZ for hz in heard_left)
    assert customer_windows * WINDOW >= 3 * TALK * 0.8, heard_left  # throughout each agent's talk
    # the relay's segments were removed once joined
    assert list((w.relay.recording_dir / "pcaps").glob(f"{conn_id}-*.pcap")) == []


async def test_an_always_recorded_call_transferred_twice_and_paused_is_one_wav(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        conn_id = await run_the_call(w, pause_with_service)
        row = await recording_row(w, conn_id)
        assert_the_recording(w, conn_id, row)


async def test_an_on_demand_recording_started_and_paused_through_the_api_is_served_by_it(tmp_path: Path) -> None:
    async with world(tmp_path, recording="on_demand") as w:
        conn_id = await run_the_call(w, pause_with_the_api, start_with_the_api)
        row = await recording_row(w, conn_id)
        assert_the_recording(w, conn_id, row)
        wav = Path(row["path"]).read_bytes()
        path = f"/v2/calls/{conn_id}/recording"

        whole = await api(w, "GET", path)
        assert (whole.status_code, whole.headers["content-type"], whole.headers["accept-ranges"]) == (
            200, "audio/wav", "bytes")
        assert whole.content == wav
        part = await api(w, "GET", path, headers={"range": "bytes=44-1043"})
        assert (part.status_code, part.headers["content-range"], part.content) == (
            206, f"bytes 44-1043/{len(wav)}", wav[44:1044])
        tail = await api(w, "GET", path, headers={"range": "bytes=-100"})
        assert (tail.status_code, tail.headers["content-range"], tail.content) == (
            206, f"bytes {len(wav) - 100}-{len(wav) - 1}/{len(wav)}", wav[-100:])
        for bad in (f"bytes={len(wav)}-", "bytes=9-3", "pages=0-1", "bytes=0-1,5-9"):
            refused = await api(w, "GET", path, headers={"range": bad})
            assert (refused.status_code, refused.headers["content-range"], refused.json()["error"]) == (
                416, f"bytes */{len(wav)}", "RANGE_NOT_SATISFIABLE"), bad

        other = await api(w, "GET", path, token=w.other_token)  # another operation's call: as unknown
        assert (other.status_code, other.json()["error"]) == (404, "CALL_NOT_FOUND")
        unknown = await api(w, "GET", "/v2/calls/nosuchcall/recording")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "CALL_NOT_FOUND")
        ended = await api(w, "POST", path)
        assert (ended.status_code, ended.json()["error"]) == (409, "CALL_ENDED")
        other_ended = await api(w, "PATCH", path, token=w.other_token, json={"paused": True})
        assert (other_ended.status_code, other_ended.json()["error"]) == (404, "CALL_NOT_FOUND")

        listed = (await api(w, "GET", "/v2/recordings", params={"from": "2000-01-01T00:00:00Z"})).json()
        (item,) = listed["items"]
        assert listed["next_cursor"] is None
        assert (item["conn_id"], item["url"], item["duration"], item["segments"], item["pauses"]) == (
            conn_id, path, row["duration"], row["segments"], row["pauses"])
        assert (await api(w, "GET", "/v2/recordings", token=w.other_token)).json() == {
            "items": [], "next_cursor": None}
        (cdr,) = (await api(w, "GET", "/v2/cdrs")).json()["items"]
        assert (cdr["conn_id"], cdr["recording"]) == (conn_id, path)


async def test_a_node_deletes_recordings_past_their_operations_retention_at_start_up(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc()
    doc["operation"].update({"recording": "always", "recording_retention_days": 2})
    await asyncio.to_thread(load, url, doc)
    kept = tmp_path / "kept" / OP
    kept.mkdir(parents=True)
    now = datetime.now(UTC)
    from callbridge.storage.database import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for conn_id, age in (("old", timedelta(days=2, minutes=1)), ("recent", timedelta(days=1, hours=23))):
                (kept / f"{conn_id}.wav").write_bytes(b"RIFF")
                conn.execute(s.recordings.insert().values(
                    conn_id=conn_id, operation_id=OP, path=str(kept / f"{conn_id}.wav"), started_at=now - age,
                    duration=1.0, segments=[], pauses=[], created_at=now - age))
    finally:
        engine.dispose()
    node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                    recordings_dir=str(tmp_path / "kept")))
    try:
        assert node.recordings is not None
        await until(lambda: node.recordings is not None and node.recordings.stats["pruned"] == 1,
                    what="the old recording pruned")
        with node.storage.engine.connect() as conn:
            assert conn.execute(select(s.recordings.c.conn_id)).scalars().all() == ["recent"]
        assert sorted(p.name for p in kept.iterdir()) == ["recent.wav"]
    finally:
        await node.close()


async def test_a_recorded_call_ended_by_the_shutdown_drain_is_stored_before_the_node_closes(tmp_path: Path) -> None:
    from callbridge.cli.serve import drain
    from callbridge.storage.database import make_engine

    async with world(tmp_path) as w:
        w.call = await w.customer.call(did_uri(w.node), timeout=5)
        await answered_by(w, "1001")
        assert w.call.rtp is not None
        w.call.rtp.play_tone(CUSTOMER_HZ)
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None
        await until(lambda: w.node.switch.anchor.recorder.recording(conn_id), what="recording on the relay")
        await asyncio.sleep(1.0)
        await drain(w.node, 0.0)  # SIGTERM's drain with no time left: the call is ended by the node
        await w.node.close()  # what `serve` does next; the world's own close is then a no-op
        engine = make_engine(f"sqlite:///{tmp_path / 'callbridge.db'}")
        try:
            with engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(select(s.recordings)).mappings()]
        finally:
            engine.dispose()
        assert [r["conn_id"] for r in rows] == [conn_id]
        left, right = channels(Path(rows[0]["path"]))
        assert runs(tones(right)) == [int(AGENT_HZ["1001"])] and runs(tones(left)) == [int(CUSTOMER_HZ)]
        assert rows[0]["duration"] == pytest.approx(1.0, abs=0.3) and rows[0]["pauses"] == []


@pytest.mark.parametrize("row_without_port", [False, True])
async def test_a_recorded_call_killed_with_its_node_is_joined_into_its_wav_when_the_node_starts_again(
        tmp_path: Path, row_without_port: bool) -> None:
    """kill -9 while the relay records: the node that starts again finds the recording in progress in the records
    (`call_recordings`), stops it on the relay, deletes the relay's call and stores the WAV of what was recorded,
    both voices in it; nothing is left in progress. `row_without_port`: the row lost the relay's port facing the
    customer (the node died between a start taken before the customer's SDP and the row's next write): the port is
    read from the SDP the customer's dialog was last sent, and each voice is still on its own channel."""
    import os
    import signal

    from sqlalchemy import func
    from test_calls_recovery import _serve, _stop, _wait_http

    from callbridge.client import AsyncAgentboxClient
    from callbridge.storage.database import make_engine
    from peers.ports import free_port

    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc()
    doc["operation"].update({"recording": "always"})
    doc["tokens"] = [{"label": "crm"}]
    (token,) = await asyncio.to_thread(load, url, doc)
    engine = make_engine(url)

    def rows(table: Any) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table)).mappings()]

    def recording_in_progress() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(s.call_recordings)
                                .where(s.call_recordings.c.on_relay.is_(True))).scalar_one() == 1

    sip_port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    kept = tmp_path / "kept"
    phones: list[Phone] = []
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        env = {"CALLBRIDGE_RTPENGINE": f"udp:{relay.host}:{relay.ng_port}",
               "CALLBRIDGE_RTPENGINE_RECORDING_DIR": str(relay.recording_dir), "CALLBRIDGE_RECORDINGS_DIR": str(kept)}
        proc = _serve(url, sip_port, http_port, log, **env)
        try:
            await _wait_http(http_port, proc, log)
            agent = await Phone.start(host="127.0.0.1", user="1001", domain="0042.callbridge.test",
                                      password="secret-1001", name="agent-1001", answer="auto", media=True)
            phones.append(agent)
            await agent.register(("127.0.0.1", sip_port), expires=300)
            async with AsyncAgentboxClient(f"http://127.0.0.1:{http_port}", token=token, server=OP) as client:
                await client.change_status("1001", "ready")
            customer = await customer_phone(media=True)
            phones.append(customer)
            call = await customer.call(f"sip:6000@127.0.0.1:{sip_port}", timeout=10)
            offered = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=offered, timeout=5)
            assert call.rtp is not None and offered.rtp is not None
            call.rtp.play_tone(CUSTOMER_HZ)
            offered.rtp.play_tone(AGENT_HZ["1001"])
            await until(recording_in_progress, timeout=10, what="the recording written through")
            await asyncio.sleep(1.5)
            if row_without_port:
                with engine.begin() as conn:
                    conn.execute(s.call_recordings.update().values(customer_port=None))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            assert rows(s.recordings) == []  # nothing stored by the node that died
            proc = _serve(url, sip_port, http_port, log, **env)  # the same node comes back
            await customer.wait_for(CallEnded, call=call, timeout=15)
            await until(lambda: len(rows(s.recordings)) == 1, timeout=20, what="the recording stored")
            (row,) = rows(s.recordings)
            left, right = channels(Path(row["path"]))
            assert runs(tones(left)) == [int(CUSTOMER_HZ)] and runs(tones(right)) == [int(AGENT_HZ["1001"])]
            assert 1.3 <= row["duration"] <= 5.0, row  # from the answer to the stop after the restart
            assert len(row["segments"]) == 1 and row["pauses"] == []
            await until(lambda: rows(s.call_recordings) == [], timeout=5, what="nothing left in progress")
            assert list((relay.recording_dir / "pcaps").glob("*.pcap")) == []  # the relay's segment joined, removed
        finally:
            _stop(proc)
            for phone in phones:
                await phone.close()
            engine.dispose()
