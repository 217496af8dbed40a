"""The in-memory Media fake (tests/b2bua/media_fake.py) and rtpengine behind the port keep the same promises, so
that unit tests on the fake say something about the real relay: SDP names the relay, each party has its own relay
port, the customer's side does not move when a new party takes the call, and a call not started is refused."""

from __future__ import annotations

import asyncio
import random
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "b2bua"))
from media_fake import RELAY, FakeMedia

from callbridge.b2bua.ports import Media, MediaRefused, MediaUnavailable
from callbridge.media.relays import RelaySet
from callbridge.media.rtpengine import RtpengineMedia
from callbridge.media.shell import NgShell
from peers.rtpengine import Rtpengine

pytestmark = pytest.mark.timeout(60)


def sdp(port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()


def media_line(body: bytes) -> tuple[str, int]:
    text = body.decode()
    return (re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1), int(re.search(r"^m=audio (\d+)", text, re.M).group(1)))


@pytest.fixture(params=["fake", "rtpengine"])
async def media(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Media, str]]:
    if request.param == "fake":
        yield FakeMedia(), RELAY
        return
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        shell = NgShell(RelaySet([relay.ng_address], random.Random()))
        await shell.start()
        try:
            while not shell.relays.relays[relay.ng_address].up:
                await asyncio.sleep(0.01)
            yield RtpengineMedia(shell), relay.host
        finally:
            shell.close()


async def test_the_same_promises(media: tuple[Media, str]) -> None:
    port, relay_host = media
    assert port.available()
    to_agent = await port.offer("k1", "cust", None, sdp(40000))
    to_customer = await port.answer("k1", "cust", "agent", sdp(41000))
    to_customer_again = await port.offer("k1", "target", "cust", sdp(42000))
    to_target = await port.answer("k1", "target", "cust", sdp(40000))
    seen = [media_line(b) for b in (to_agent, to_customer, to_customer_again, to_target)]
    assert {host for host, _ in seen} == {relay_host}
    assert seen[2] == seen[1]  # the customer's side stays
    assert len({seen[0][1], seen[1][1], seen[3][1]}) == 3  # one relay port per party
    await port.drop_leg("k1", "agent")
    await port.block("k1", "cust")
    await port.unblock("k1", "cust")
    await port.delete("k1")
    with pytest.raises(MediaUnavailable, match=r"^call k2 has no media relay$"):
        await port.block("k2", "cust")
    with pytest.raises(MediaRefused):
        await port.offer("k3", "cust", None, b"v=0\r\n")
