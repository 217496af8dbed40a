"""The supervisor listens to a call in the board's page (docs/operations.md, "The supervisor's board"), in a real
Chromium (headless, driven by Playwright) against a live node whose calls are anchored on a real userspace rtpengine
10.5: a customer (`callbridge.phone`, 700 Hz) talks to agent 1001 (`callbridge.phone`, 1200 Hz); the board's "Listen
here" gets the relay's WebRTC subscription of both parties (DTLS-SRTP over ICE), answers it and plays one stream per
party.

Measured in the page with WebAudio (an AnalyserNode on each stream the page plays): one hears the customer's 700 Hz,
the other the agent's 1200 Hz. The supervisor's computer has a microphone playing 1800 Hz, which the board never asks
for: measured at the phones, the customer hears the agent alone and the agent the customer alone, while the page
listens and after it stops. Stop listening ends the page's streams and the call goes on; so do closing the page and
signing out while it listens. A second test takes the page's answer apart over HTTP. Everything on loopback, every
wait bounded.

`CALLBRIDGE_DESK_SCREENSHOTS=DIR` also saves the board, listening in the page, there (scripts/desk-screenshots).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deskaudio import CHROMIUM, launch, tone_wav
from deskworld import OP, OTHER_OP, OTHER_SUPERVISOR, SUPERVISOR, DeskWorld

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: run scripts/setup --test (it installs Debian's chromium)",
                allow_module_level=True)

from callnode import agent_phone, customer_phone, did_uri, until
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from websockets.sync.client import connect

from callbridge.phone import Established, IncomingCall, Phone
from callbridge.phone.listen import Heard
from peers.rtpengine import Rtpengine

CUSTOMER_HZ, AGENT_HZ, SUPERVISOR_MIC_HZ = 700.0, 1200.0, 1800.0
WAIT_MS = 8000
LIVE_MS = 2000  # what the board must show within, once the server has done it
SHOTS = os.environ.get("CALLBRIDGE_DESK_SCREENSHOTS")
PAGE = "0123456789abcdef0123456789abcdef"  # a board page's id (its live socket's ?page=)

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]
expect.set_options(timeout=WAIT_MS)

# The page's ear: for each stream the board plays (one <audio> per party), the dominant frequency every 100 ms for
# `ms` (after a full FFT window) and its level (dB), all streams read at the same moments.
ANALYSE_EACH = """async (ms) => {
  const audios = [...document.querySelectorAll("[data-testid=hearing-audio]")];
  const ctx = window.testAudio || (window.testAudio = new AudioContext());
  await ctx.resume();
  const ears = audios.map((audio) => {
    const source = ctx.createMediaStreamSource(audio.srcObject);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    return { source, analyser, data: new Float32Array(analyser.frequencyBinCount), peaks: [] };
  });
  await new Promise((resolve) => setTimeout(resolve, 250));
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const ear of ears) {
      ear.analyser.getFloatFrequencyData(ear.data);
      let best = 1;
      for (let i = 2; i < ear.data.length; i++) if (ear.data[i] > ear.data[best]) best = i;
      ear.peaks.push([best * ctx.sampleRate / ear.analyser.fftSize, ear.data[best]]);
    }
  }
  ears.forEach((ear) => ear.source.disconnect());
  return ears.map((ear) => ear.peaks);
}"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskWorld]:
    with Rtpengine(workdir=tmp_path_factory.mktemp("rtpengine")) as relay:
        world = DeskWorld.start(tmp_path_factory.mktemp("desk"), rtpengine=(f"udp:{relay.host}:{relay.ng_port}",))
        try:
            media = world.node.switch.anchor.media
            world.run(until(lambda: media is not None and media.available(), what="the relay up"))
            yield world
        finally:
            world.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """The supervisor's computer: its microphone plays 1800 Hz (the board must never send it anywhere)."""
    with sync_playwright() as playwright:
        browser = launch(playwright, tone_wav(tmp_path_factory.mktemp("tone") / "mic-1800hz.wav", SUPERVISOR_MIC_HZ))
        try:
            yield browser
        finally:
            browser.close()


def tone(hz: float | None) -> int:
    return int(round((hz or 0.0) / 25.0) * 25)


def tones(heard: Heard) -> set[int]:
    return {tone(w.hz) for w in heard.windows if w.hz is not None and w.dbfs > -50}


def only(heard: Heard, hz: float) -> None:
    """`hz` and nothing else (a window may be lost at an end of the range under load: 0.85, not 0.9)."""
    assert heard.share(hz, tolerance=3) >= 0.85 and tones(heard) == {int(hz)}, str(heard)


def page_hears_each(page: Page, seconds: float) -> list[list[tuple[float, float]]]:
    """What each of the page's listening streams carries (see ANALYSE_EACH)."""
    return [[(hz, db) for hz, db in peaks] for peaks in page.evaluate(ANALYSE_EACH, int(seconds * 1000))]


def steady(peaks: list[tuple[float, float]]) -> float | None:
    """The one frequency every reading's loudest bin is at (bins of 48000/8192 = 5.9 Hz), well above the noise."""
    if len(peaks) < 5 or not all(db > -50 for _, db in peaks):
        return None
    first = peaks[0][0]
    return first if all(abs(hz - first) <= 6 for hz, _ in peaks) else None


def signed_in_board(context: BrowserContext, world: DeskWorld) -> Page:
    board = context.new_page()
    board.set_default_timeout(WAIT_MS)
    board.goto(f"{world.url}/supervisor")
    board.fill("#f-operation", OP)
    board.fill("#f-username", SUPERVISOR[0])
    board.fill("#f-password", SUPERVISOR[1])
    board.click("#signin button[type=submit]")
    expect(board.get_by_test_id("connection")).to_have_text("Connected")
    return board


def test_the_board_listens_in_the_page_hears_both_parties_who_do_not_hear_it_and_stops(browser: Browser,
                                                                                      world: DeskWorld) -> None:
    async def parties() -> tuple[Phone, Phone]:
        agent = await agent_phone(world.node, "1001", answer="auto", media=True)
        customer = await customer_phone(media=True)
        return agent, customer

    agent, customer = world.run(parties())
    context = browser.new_context(viewport={"width": 1400, "height": 800})
    try:
        board = signed_in_board(context, world)

        async def talk() -> tuple[object, object]:
            call = await customer.call(did_uri(world.node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)
            assert call.rtp is not None and agent_call.rtp is not None
            call.rtp.play_tone(CUSTOMER_HZ)
            agent_call.rtp.play_tone(AGENT_HZ)
            return call, agent_call

        call, agent_call = world.run(talk())
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1001").conn_id)
        assert conn_id is not None
        listener = board.get_by_test_id(f"listener-{conn_id}")
        expect(listener).to_have_text("", timeout=LIVE_MS)  # the call is on the board, nobody listens

        board.get_by_test_id(f"listen-here-{conn_id}").click()
        expect(board.get_by_test_id("result")).to_have_text("Listening in this page.")
        expect(listener).to_have_text("this page (listening)", timeout=LIVE_MS)  # call.monitor_started, live
        expect(board.get_by_test_id("hearing-audio")).to_have_count(2)  # one stream per party: the relay does not mix
        monitor = world.on_loop(lambda: world.node.service.monitor_state(OP, conn_id))
        assert (monitor.on, monitor.supervisor, monitor.state) == ("page", "maria", "listening")
        if SHOTS:
            board.screenshot(path=str(Path(SHOTS) / "supervisor-board.png"))

        # the page hears both parties, each on its own stream (DTLS and ICE take a moment: wait for both, bounded)
        heard: list[float | None] = []
        for _ in range(10):
            heard = [steady(peaks) for peaks in page_hears_each(board, 0.8)]
            if len(heard) == 2 and None not in heard:
                break
        assert len(heard) == 2 and None not in heard, heard
        assert sorted(tone(hz) for hz in heard) == [int(CUSTOMER_HZ), int(AGENT_HZ)], heard
        for peaks in page_hears_each(board, 1.0):  # and steadily so
            hz = steady(peaks)
            assert hz is not None and tone(hz) in (int(CUSTOMER_HZ), int(AGENT_HZ)), peaks

        async def parties_hear(seconds: float) -> tuple[Heard, Heard]:
            await asyncio.sleep(0.3)
            c0, a0 = customer.now(), agent.now()
            await asyncio.sleep(seconds)
            return (call.rtp.heard(c0, customer.now()),  # type: ignore[attr-defined]
                    agent_call.rtp.heard(a0, agent.now()))  # type: ignore[attr-defined]

        # while the page listens: each party hears the other alone, none of the supervisor's microphone
        to_customer, to_agent = world.run(parties_hear(1.2))
        only(to_customer, AGENT_HZ)
        only(to_agent, CUSTOMER_HZ)
        assert to_customer.share(SUPERVISOR_MIC_HZ, tolerance=20) == 0.0, str(to_customer)
        assert to_agent.share(SUPERVISOR_MIC_HZ, tolerance=20) == 0.0, str(to_agent)

        board.get_by_test_id(f"stop-listening-{conn_id}").click()
        expect(board.get_by_test_id("result")).to_have_text("maria's page stopped listening.")
        expect(board.get_by_test_id("hearing-audio")).to_have_count(0)
        expect(listener).to_have_text("", timeout=LIVE_MS)
        expect(board.get_by_test_id(f"listen-here-{conn_id}")).to_be_visible(timeout=LIVE_MS)

        to_customer, to_agent = world.run(parties_hear(0.8))  # the call goes on
        only(to_customer, AGENT_HZ)
        only(to_agent, CUSTOMER_HZ)
        wire = world.on_loop(lambda: [(e.type, e.data["supervisor"], e.data.get("reason"))
                                      for e in world.node.events.since(OP, 0) if e.type.startswith("call.monitor")])
        assert wire == [("call.monitor_started", "maria", None), ("call.monitor_ended", "maria", "stopped")]
        assert world.node.switch.anchor.listeners.pages == {}

        # the page goes away while it listens: the listening ends with it (and the call goes on)
        board.get_by_test_id(f"listen-here-{conn_id}").click()
        expect(listener).to_have_text("this page (listening)", timeout=LIVE_MS)
        board.close(run_before_unload=True)
        world.run(until(lambda: world.node.switch.anchor.listeners.pages == {}, what="the page's listening ended"))
        # and so does signing out while it listens
        board = signed_in_board(context, world)
        expect(board.get_by_test_id(f"listen-here-{conn_id}")).to_be_visible()
        board.get_by_test_id(f"listen-here-{conn_id}").click()
        expect(board.get_by_test_id(f"listener-{conn_id}")).to_have_text("this page (listening)", timeout=LIVE_MS)
        board.click("#signout")
        expect(board.locator("#signin")).to_be_visible()
        world.run(until(lambda: world.node.switch.anchor.listeners.pages == {}, what="the page's listening ended"))
        ends = world.on_loop(lambda: [e.data["reason"] for e in world.node.events.since(OP, 0)
                                      if e.type == "call.monitor_ended"])
        assert ends == ["stopped", "stopped", "stopped"]
        assert world.on_loop(lambda: world.node.service.get_call(OP, conn_id).state) == "connected"
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        context.close()
        for phone in (customer, agent):
            world.run(phone.close())


def test_the_pages_answer_is_taken_from_the_supervisor_who_listens_once_and_a_refused_one_ends_it(
        world: DeskWorld) -> None:
    """Over HTTP (no browser), a real call on the real relay: Listen here's offer is WebRTC (DTLS, ICE, no a=ssrc);
    the answer is refused when not signed in, from another operation, for another listening, without an SDP, or
    twice; an answer the relay cannot read ends that listening (MEDIA_FAILED) and the call goes on."""
    async def setup() -> tuple[Phone, Phone, object]:
        agent = await agent_phone(world.node, "1002", answer="auto", media=True)
        customer = await customer_phone(media=True)
        call = await customer.call(did_uri(world.node), timeout=5)
        await agent.wait_for(Established, timeout=5)
        return agent, customer, call

    agent, customer, call = world.run(setup())
    clients: list[httpx.Client] = []

    def signed_in(operation: str, who: tuple[str, str]) -> httpx.Client:
        c = httpx.Client(base_url=world.url, timeout=10)
        clients.append(c)
        assert c.post("/supervisor/signin", json={"operation": operation, "username": who[0],
                                                  "password": who[1]}).status_code == 200
        return c

    try:
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1002").conn_id)
        listen = f"/supervisor/api/calls/{conn_id}/listen"
        maria, otto = signed_in(OP, SUPERVISOR), signed_in(OTHER_OP, OTHER_SUPERVISOR)
        started = maria.post(listen, json={"on": "page", "page": PAGE}).json()
        assert started["ok"] and started["monitor_id"].startswith("m"), started
        offer = started["offer"]
        assert offer.count("m=audio") == 2 and offer.count("UDP/TLS/RTP/SAVPF") == 2, offer
        assert "a=fingerprint:sha-256" in offer and "a=ice-ufrag:" in offer and "a=candidate:" in offer, offer
        assert "a=ssrc" not in offer and "a=setup:actpass" in offer and "\r\na=ice-lite\r\n" in offer, offer

        monitor_id = started["monitor_id"]
        answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        nobody = httpx.Client(base_url=world.url, timeout=10)
        clients.append(nobody)
        refusals = [(r.status_code, r.json()["error_id"]) for r in (
            nobody.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": answer}),
            otto.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": answer}),
            maria.post(f"{listen}/answer", json={"monitor_id": "m-other", "sdp": answer}),
            maria.post(f"{listen}/answer", json={"monitor_id": monitor_id}),
            maria.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": "hello"}),
            maria.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": answer},
                       headers={"origin": "http://elsewhere.test"}),
            maria.post(listen, json={"on": "page", "page": PAGE}),
            maria.post(listen, json={"on": "radio"}),
            maria.post(listen, json={"on": "page"}),
            maria.post(listen, json={"on": "page", "page": "../x"}))]
        assert refusals == [(401, "NOT_SIGNED_IN"), (404, "CALL_NOT_FOUND"), (409, "NOT_YOUR_LISTENING"),
                            (400, "MISSING_PARAMETERS"), (400, "INVALID_PARAMETER"), (403, "BAD_REQUEST"),
                            (409, "MONITOR_IN_PROGRESS"), (400, "INVALID_PARAMETER"), (400, "INVALID_PARAMETER"),
                            (400, "INVALID_PARAMETER")]
        state = world.on_loop(lambda: world.node.service.monitor_state(OP, conn_id))
        assert (state.monitor_id, state.state, state.on) == (monitor_id, "ringing", "page")  # nothing changed

        # one media section for two offered: refused here, nothing changed
        short = maria.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": answer + "m=audio 9 x\r\n"})
        assert (short.status_code, short.json()["error_id"]) == (400, "INVALID_PARAMETER"), short.text
        assert world.on_loop(lambda: world.node.service.monitor_state(OP, conn_id).state) == "ringing"
        # two media sections the relay cannot read: it refuses them, the listening ends, the call goes on
        garbled = answer + "m=audio abc\r\n" * 2
        refused = maria.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": garbled})
        assert (refused.status_code, refused.json()["error_id"]) == (503, "MEDIA_FAILED"), refused.text
        again = maria.post(f"{listen}/answer", json={"monitor_id": monitor_id, "sdp": garbled})
        assert (again.status_code, again.json()["error_id"]) == (409, "MONITOR_NOT_STARTED")
        wire = world.on_loop(lambda: [(e.type, e.data["monitor_id"], e.data.get("reason"))
                                      for e in world.node.events.since(OP, 0)
                                      if e.type.startswith("call.monitor") and e.data["monitor_id"] == monitor_id])
        assert wire == [("call.monitor_ended", monitor_id, "no_answer")]  # never answered (the relay refused it)
        assert world.node.switch.anchor.listeners.pages == {}
        assert world.on_loop(lambda: world.node.service.get_call(OP, conn_id).state) == "connected"

        # the page's live socket closes (a crashed browser, a lost network): its listening ends with it
        url = world.url.replace("http://", "ws://") + f"/supervisor/api/live?page={PAGE}"
        cookie = f"callbridge_desk={maria.cookies['callbridge_desk']}"
        with connect(url, origin=world.url, additional_headers={"cookie": cookie}, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
            again = maria.post(listen, json={"on": "page", "page": PAGE}).json()
            assert again["ok"], again
            other = maria.post(listen, json={"on": "page", "page": "f" * 32})  # another page: in progress
            assert other.json()["error_id"] == "MONITOR_IN_PROGRESS"

        def ended() -> list[tuple[str, str]]:
            return [(e.data["monitor_id"], e.data["reason"]) for e in world.node.events.since(OP, 0)
                    if e.type == "call.monitor_ended"]

        world.run(until(lambda: ended()[-1][0] == again["monitor_id"], what="the page's listening ended"))
        assert ended()[-1] == (again["monitor_id"], "stopped") and world.node.switch.anchor.listeners.pages == {}
        assert world.on_loop(lambda: world.node.service.get_call(OP, conn_id).state) == "connected"
    finally:
        for c in clients:
            c.close()
        world.run(call.hangup())  # type: ignore[attr-defined]
        for phone in (customer, agent):
            world.run(phone.close())
