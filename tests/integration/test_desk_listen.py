"""The supervisor's board listens to a call (docs/operations.md, "The supervisor's board" and "A supervisor listens"),
in a real Chromium (headless, driven by Playwright) against a live node whose calls are anchored on a real
userspace rtpengine 10.5: a customer (`callbridge.phone`, 700 Hz) talks to agent 1001 (`callbridge.phone`, 1200
Hz); the board's Listen with extension 1003 rings the supervisor's phone (`callbridge.phone` registered as 1003,
answered by the test once the board shows it ringing), which then hears the customer and the agent as two RTP
sources on its one port (10.5 has no mixer), each measured alone by tone frequency (`heard_from`, as
test_calls_monitor.py does). The board shows who listens, live; Stop listening hangs 1003 up and the parties still
hear each other. Everything on loopback, every wait bounded.

(The board's picture in docs/ is test_desk_listen_page.py's: listening in the page.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from deskaudio import CHROMIUM
from deskworld import OP, SUPERVISOR, DeskWorld

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: run scripts/setup --test (it installs Debian's chromium)",
                allow_module_level=True)

from callnode import agent_phone, customer_phone, did_uri, until
from playwright.sync_api import Browser, expect, sync_playwright

from callbridge.phone import CallEnded, Established, IncomingCall, Phone
from callbridge.phone.listen import Heard
from peers.rtpengine import Rtpengine

CUSTOMER_HZ, AGENT_HZ = 700.0, 1200.0
WAIT_MS = 8000
LIVE_MS = 2000  # what the board must show within, once the server has done it
ARGS = ["--no-sandbox"]

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]
expect.set_options(timeout=WAIT_MS)


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
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
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


def test_the_board_listens_to_a_call_on_extension_1003_shows_it_and_stops(browser: Browser,
                                                                           world: DeskWorld) -> None:
    async def parties() -> tuple[Phone, Phone, Phone]:
        agent = await agent_phone(world.node, "1001", answer="auto", media=True)
        supervisor = await agent_phone(world.node, "1003", ready=False, answer="manual", media=True)
        customer = await customer_phone(media=True)
        return agent, supervisor, customer

    agent, supervisor, customer = world.run(parties())
    context = browser.new_context(viewport={"width": 1400, "height": 800})
    try:
        board = context.new_page()
        board.set_default_timeout(WAIT_MS)
        board.goto(f"{world.url}/supervisor")
        board.fill("#f-operation", OP)
        board.fill("#f-username", SUPERVISOR[0])
        board.fill("#f-password", SUPERVISOR[1])
        board.click("#signin button[type=submit]")
        expect(board.get_by_test_id("connection")).to_have_text("Connected")

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

        expect(board.locator("#f-listen")).to_have_value("1003")  # maria's account's extension, the default
        board.get_by_test_id(f"listen-{conn_id}").click()
        expect(board.get_by_test_id("result")).to_have_text("Ringing extension 1003: answer it to listen.")
        listen = world.run(supervisor.wait_for(IncomingCall, timeout=5)).call
        expect(listener).to_have_text("1003 (ringing)", timeout=LIVE_MS)  # no event for it: the board is woken
        world.run(listen.answer())
        world.run(supervisor.wait_for(Established, call=listen, timeout=5))
        expect(listener).to_have_text("1003 (listening)", timeout=LIVE_MS)  # from call.monitor_started, live
        assert board.evaluate("localStorage.getItem('callbridge.board.listen-extension')") == "1003"

        async def hear(seconds: float) -> list[Heard]:
            await asyncio.sleep(0.5)  # past the subscription's first packets
            start = supervisor.now()
            await asyncio.sleep(seconds)
            end = supervisor.now()
            assert listen.rtp is not None
            return [h for h in (listen.rtp.heard_from(ssrc, start, end) for ssrc in listen.rtp.sources) if h.windows]

        heard = world.run(hear(1.2))
        # two sources on the one port, the customer's tone and the agent's, each alone
        assert sorted(tone(h.dominant_hz) for h in heard) == [int(CUSTOMER_HZ), int(AGENT_HZ)], [str(h) for h in heard]
        for h in heard:
            only(h, float(tone(h.dominant_hz)))

        board.get_by_test_id(f"stop-listening-{conn_id}").click()
        expect(board.get_by_test_id("result")).to_have_text("Extension 1003 stopped listening.")
        world.run(supervisor.wait_for(CallEnded, call=listen, timeout=5))
        expect(listener).to_have_text("", timeout=LIVE_MS)
        expect(board.get_by_test_id(f"listen-{conn_id}")).to_be_visible(timeout=LIVE_MS)

        async def parties_hear() -> tuple[Heard, Heard]:
            await asyncio.sleep(0.5)
            return (call.rtp.heard(customer.now() - 0.4, customer.now()),  # type: ignore[attr-defined]
                    agent_call.rtp.heard(agent.now() - 0.4, agent.now()))  # type: ignore[attr-defined]

        to_customer, to_agent = world.run(parties_hear())
        only(to_customer, AGENT_HZ)
        only(to_agent, CUSTOMER_HZ)
        wire = world.on_loop(lambda: [(e.type, e.data["supervisor"], e.data.get("reason"))
                                      for e in world.node.events.since(OP, 0) if e.type.startswith("call.monitor")])
        assert wire == [("call.monitor_started", "1003", None), ("call.monitor_ended", "1003", "stopped")]

        board.fill("#f-listen", "1002")  # typed: remembered in this browser, before any sign-in
        board.locator("#f-listen").dispatch_event("change")
        again = context.new_page()
        again.goto(f"{world.url}/supervisor")
        expect(again.locator("#f-listen")).to_have_value("1002")
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        context.close()
        for phone in (customer, agent, supervisor):
            world.run(phone.close())
