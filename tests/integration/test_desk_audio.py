"""The agent's page is the phone: a real Chromium (headless, its fake microphone playing a tone file) answers a
customer's call on the page, and the audio goes both ways through a real rtpengine: DTLS-SRTP and ICE toward the
browser, plain RTP toward the customer (`callbridge.phone` with real RTP). Measured on both ends: the customer's
phone hears the page's tone (its `heard` API), the page hears the customer's (WebAudio's AnalyserNode on the remote
track). Hold from the page plays the hold music to the customer; off hold, the page's tone again; mute silences the
page toward the customer only. A blind transfer from the page to a second page (another browser, another tone)
moves the customer to the second agent; an attended one (consult first) lets the two agents hear each other while
the customer hears the music, then joins the customer to the second agent.

Tones: the page 1000 Hz (the WAV Chromium plays as its microphone), the second page 1500 Hz, the customer 440 Hz;
all away from the music's notes (400/600/800 Hz). Everything on loopback; one browser per agent, one relay, one
node for the module.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from deskaudio import CHROMIUM, assert_page_hears, launch, page_hears, tone_wav, until_page_hears
from deskworld import OP, DeskWorld

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: run scripts/setup --test (it installs Debian's chromium)",
                allow_module_level=True)

from callnode import GATEWAY_HOST, agent_phone, customer_phone, did_uri, until
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from callbridge.media.audio import HOLD_MUSIC_NOTES
from callbridge.phone import Held, IncomingCall, Phone, Resumed
from callbridge.phone.listen import Heard
from peers.ports import free_port
from peers.rtpengine import Rtpengine

PAGE_HZ, CUSTOMER_HZ, SECOND_PAGE_HZ = 1000.0, 440.0, 1500.0
NUMBER = "3105550199"  # dialled from the page: through the trunk to its gateway
MUSIC_HZ = sorted({hz for hz, _ in HOLD_MUSIC_NOTES})  # 400, 600, 800
WAIT_MS = 8000
LIVE_MS = 1000
SETTLE = 0.5  # what the relay plays changes within an ng round trip and a few frames; skip past it

# serial: each check wants 90 % of a second's 80 ms windows on the right tone; two Chromiums beside another
# worker's tests left one window of nine late (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(120), pytest.mark.serial]
expect.set_options(timeout=WAIT_MS)

@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    with Rtpengine(workdir=tmp_path_factory.mktemp("rtpengine")) as rtpe:
        yield rtpe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, relay: Rtpengine) -> Iterator[DeskWorld]:
    world = DeskWorld.start(tmp_path_factory.mktemp("desk"), rtpengine=(f"udp:{relay.host}:{relay.ng_port}",),
                            gateway_port=free_port(GATEWAY_HOST))
    try:
        media = world.node.switch.anchor.media
        world.run(until(lambda: media is not None and media.available(), what="the relay up"))
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Its microphone plays 1000 Hz."""
    browser = launch(playwright, tone_wav(tmp_path_factory.mktemp("tone") / "page-1000hz.wav", PAGE_HZ))
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def second_browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Another agent's computer: its microphone plays 1500 Hz."""
    browser = launch(playwright, tone_wav(tmp_path_factory.mktemp("tone") / "page-1500hz.wav", SECOND_PAGE_HZ))
    try:
        yield browser
    finally:
        browser.close()


def ready_page(browser: Browser, world: DeskWorld, extension: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{world.url}/agent")
    page.fill("#f-operation", OP)
    page.fill("#f-extension", extension)
    page.fill("#f-password", f"secret-{extension}")
    page.click("#signin button[type=submit]")
    expect(page.get_by_test_id("phone")).to_have_text("Phone: registered")
    page.get_by_test_id("state-ready").click()
    expect(page.get_by_test_id("agent-state")).to_have_text("ready", timeout=LIVE_MS)
    return page


def customer_hears(world: DeskWorld, customer: Phone, call: Any, seconds: float) -> Heard:
    async def listen() -> Heard:
        await asyncio.sleep(SETTLE)
        start = customer.now()
        await asyncio.sleep(seconds)
        heard: Heard = call.rtp.heard(start, customer.now())
        return heard

    return world.run(listen(), timeout=seconds + 5)


def tones(heard: Heard) -> set[int]:
    return {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50}


def assert_voice(heard: Heard, hz: float) -> None:
    assert heard.share(hz, tolerance=3) >= 0.9, str(heard)
    assert tones(heard) == {int(hz)}, str(heard)


def assert_music(heard: Heard) -> None:
    assert sum(heard.share(hz, tolerance=3) for hz in MUSIC_HZ) >= 0.9, str(heard)
    assert tones(heard) <= set(MUSIC_HZ) and len(tones(heard)) >= 2, str(heard)
    assert heard.share(PAGE_HZ, tolerance=20) == 0.0, str(heard)


def test_the_page_answers_with_audio_both_ways_hold_plays_the_music_and_mute_silences_the_page(browser: Browser,
                                                                          world: DeskWorld) -> None:
    page = ready_page(browser, world, "1001")
    customer = world.run(customer_phone(media=True))
    try:
        call = world.run(customer.call(did_uri(world.node), wait_answer=False))
        expect(page.get_by_test_id("answer")).to_be_enabled()  # the page rings
        page.get_by_test_id("answer").click()
        world.run(call.wait_answered(10), timeout=12)
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1001").conn_id)
        assert conn_id is not None and world.on_loop(lambda: world.node.switch.anchor.anchored(conn_id))
        expect(page.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)

        assert_voice(customer_hears(world, customer, call, 1.0), PAGE_HZ)  # the customer hears the page
        assert_page_hears(page_hears(page, 1.0), CUSTOMER_HZ)  # and the page hears the customer

        page.get_by_test_id("hold").click()  # hold from the page: the customer hears the music, not the page
        assert world.run(customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        expect(page.get_by_test_id("hold")).to_have_text("Take off hold", timeout=LIVE_MS)
        assert_music(customer_hears(world, customer, call, 1.6))

        page.get_by_test_id("hold").click()  # off hold: the page again
        world.run(customer.wait_for(Resumed, call=call, timeout=5))
        expect(page.get_by_test_id("hold")).to_have_text("Hold", timeout=LIVE_MS)
        assert_voice(customer_hears(world, customer, call, 1.0), PAGE_HZ)
        assert_page_hears(page_hears(page, 0.8), CUSTOMER_HZ)

        page.get_by_test_id("mute").click()  # mute: a sendonly re-INVITE of the page, which stops sending
        expect(page.get_by_test_id("mute")).to_have_text("Unmute", timeout=LIVE_MS)
        muted = customer_hears(world, customer, call, 1.0)
        assert muted.share(PAGE_HZ, tolerance=20) == 0.0, str(muted)
        assert_page_hears(page_hears(page, 0.8), CUSTOMER_HZ)  # the agent still hears the customer
        page.get_by_test_id("mute").click()
        expect(page.get_by_test_id("mute")).to_have_text("Mute", timeout=LIVE_MS)
        page.wait_for_timeout(500)  # the page's re-answer (sendrecv) and its sender starting again
        assert_voice(customer_hears(world, customer, call, 1.0), PAGE_HZ)

        page.get_by_test_id("hang").click()
        expect(page.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(customer.close())
        page.context.close()



def test_a_transfer_from_the_page_to_a_second_page_moves_the_customer_to_the_second_agents_audio(
        browser: Browser, second_browser: Browser, world: DeskWorld) -> None:
    first = ready_page(browser, world, "1002")
    second = ready_page(second_browser, world, "1003")
    customer = world.run(customer_phone(media=True))
    try:
        call = world.run(customer.call(did_uri(world.node), wait_answer=False))
        expect(first.get_by_test_id("answer")).to_be_enabled()
        first.get_by_test_id("answer").click()
        world.run(call.wait_answered(10), timeout=12)
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert_voice(customer_hears(world, customer, call, 0.6), PAGE_HZ)

        first.fill("#transfer-target", "1003")  # a blind transfer from the page to the second agent's page
        first.get_by_test_id("transfer").click()
        expect(second.get_by_test_id("answer")).to_be_enabled()  # the second page rings (offer-less INVITE)
        expect(first.locator("#call-transfer")).to_contain_text("transfer to 1003", timeout=LIVE_MS)
        second.get_by_test_id("answer").click()
        expect(first.locator("#no-call")).to_be_visible()  # the first agent is released
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1003").conn_id)
        assert conn_id is not None
        expect(second.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)

        assert_voice(customer_hears(world, customer, call, 1.0), SECOND_PAGE_HZ)  # the second agent's voice
        assert_page_hears(page_hears(second, 1.0), CUSTOMER_HZ)  # who hears the customer

        second.get_by_test_id("hang").click()
        expect(second.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(customer.close())
        first.context.close()
        second.context.close()


def test_an_agent_on_its_page_and_a_desk_phone_is_rung_on_the_page_only_on_an_anchored_call(
        browser: Browser, world: DeskWorld) -> None:
    page = ready_page(browser, world, "1003")
    desk_phone = world.run(agent_phone(world.node, "1003", ready=False, answer="auto"))  # UDP, answers at once
    customer = world.run(customer_phone(media=True))
    try:
        bindings = world.on_loop(lambda: world.node.switch.registrar.location.contacts_for(
            OP, "1003", world.node.switch.wall()))
        assert sorted(b.transport for b in bindings) == ["udp", "ws"]
        call = world.run(customer.call(did_uri(world.node), wait_answer=False))
        expect(page.get_by_test_id("answer")).to_be_enabled()  # the page rings...
        with pytest.raises(TimeoutError):  # ...and the desk phone, which would answer at once, is not rung
            world.run(desk_phone.wait_for(IncomingCall, timeout=1.0))
        page.get_by_test_id("answer").click()
        world.run(call.wait_answered(10), timeout=12)
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert_voice(customer_hears(world, customer, call, 0.6), PAGE_HZ)
        page.get_by_test_id("hang").click()
        expect(page.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
    finally:
        world.run(desk_phone.close())
        world.run(customer.close())
        page.context.close()


def test_an_attended_transfer_from_the_page_consults_the_second_page_then_joins_the_customer_to_it(
        browser: Browser, second_browser: Browser, world: DeskWorld) -> None:
    first = ready_page(browser, world, "1002")
    second = ready_page(second_browser, world, "1001")
    customer = world.run(customer_phone(media=True))
    try:
        call = world.run(customer.call(did_uri(world.node), wait_answer=False))
        expect(first.get_by_test_id("answer")).to_be_enabled()
        first.get_by_test_id("answer").click()
        world.run(call.wait_answered(10), timeout=12)
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert_voice(customer_hears(world, customer, call, 0.6), PAGE_HZ)

        first.fill("#transfer-target", "1001")  # consult first: the customer waits with the music
        first.get_by_test_id("consult").click()
        expect(second.get_by_test_id("answer")).to_be_enabled()
        second.get_by_test_id("answer").click()
        expect(first.locator("#complete")).to_be_enabled(timeout=WAIT_MS)  # consulting
        assert_music(customer_hears(world, customer, call, 1.6))
        until_page_hears(second, PAGE_HZ)
        assert_page_hears(page_hears(second, 0.8), PAGE_HZ)  # the two agents hear each other
        assert_page_hears(page_hears(first, 0.8), SECOND_PAGE_HZ)

        first.locator("#complete").click()  # the customer joins the second agent; the first leaves
        expect(first.locator("#no-call")).to_be_visible(timeout=WAIT_MS)
        assert_voice(customer_hears(world, customer, call, 1.0), SECOND_PAGE_HZ)
        until_page_hears(second, CUSTOMER_HZ)
        assert_page_hears(page_hears(second, 0.8), CUSTOMER_HZ)
        second.get_by_test_id("hang").click()
        expect(second.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(customer.close())
        first.context.close()
        second.context.close()


def test_a_call_placed_from_the_page_to_a_number_goes_through_the_relay_with_audio_both_ways(
        browser: Browser, world: DeskWorld, relay: Rtpengine) -> None:
    """The page's own INVITE (a WebRTC offer) is anchored: the carrier gets plain RTP from the relay, the page
    WebRTC, and the party called is the call's persistent one (the page's hold plays it the music)."""
    page = ready_page(browser, world, "1001")
    gateway = world.run(Phone.start(host=GATEWAY_HOST, port=world.gateway_port, user="gateway", domain=GATEWAY_HOST,
                                    name="gateway", media=True))
    try:
        expect(page.get_by_test_id("dial")).to_be_enabled()
        page.fill("#dial-number", NUMBER)
        page.get_by_test_id("dial").click()
        incoming = world.run(gateway.wait_for(IncomingCall, timeout=WAIT_MS / 1000))
        assert incoming.request.uri.user == NUMBER
        offer = incoming.request.body.decode()
        [(port, profile)] = re.findall(r"^m=audio (\d+) (\S+) ", offer, re.M)
        assert set(re.findall(r"^c=IN IP4 (\S+?)\r?$", offer, re.M)) == {relay.host}, offer
        assert profile == "RTP/AVP" and relay.port_min <= int(port) <= relay.port_max, offer
        for webrtc in ("a=fingerprint", "a=ice-", "a=candidate", "a=setup", "a=rtcp-mux"):
            assert webrtc not in offer, offer
        call = incoming.call
        world.run(call.answer())
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1001").conn_id)
        assert conn_id is not None and world.on_loop(lambda: world.node.switch.anchor.anchored(conn_id))
        expect(page.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)
        expect(page.get_by_test_id("dial")).to_be_disabled()

        assert_voice(customer_hears(world, gateway, call, 1.0), PAGE_HZ)  # the party called hears the page
        assert_page_hears(page_hears(page, 1.0), CUSTOMER_HZ)  # and the page hears it

        page.get_by_test_id("hold").click()  # hold: the party called hears the music
        assert world.run(gateway.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        assert_music(customer_hears(world, gateway, call, 1.6))
        page.get_by_test_id("hold").click()
        world.run(gateway.wait_for(Resumed, call=call, timeout=5))
        assert_voice(customer_hears(world, gateway, call, 1.0), PAGE_HZ)

        page.get_by_test_id("hang").click()
        expect(page.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        world.run(until(lambda: call.ended, what="the gateway's call ended"))
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(gateway.close())
        page.context.close()


def test_a_call_placed_from_the_page_to_another_agents_page_has_audio_both_ways(
        browser: Browser, second_browser: Browser, world: DeskWorld) -> None:
    first = ready_page(browser, world, "1002")
    second = ready_page(second_browser, world, "1003")
    try:
        first.fill("#dial-number", "1003")
        first.get_by_test_id("dial").click()
        expect(second.get_by_test_id("answer")).to_be_enabled()  # the second page rings
        second.get_by_test_id("answer").click()
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1002").conn_id)
        assert conn_id is not None and world.on_loop(lambda: world.node.switch.anchor.anchored(conn_id))
        expect(first.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)
        expect(second.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)

        assert_page_hears(page_hears(second, 1.0), PAGE_HZ)  # the agent called hears the first page
        assert_page_hears(page_hears(first, 1.0), SECOND_PAGE_HZ)  # and the other way

        first.get_by_test_id("hang").click()
        expect(first.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        expect(second.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        first.context.close()
        second.context.close()


def test_the_party_a_page_called_is_transferred_to_a_second_page_with_its_audio(
        browser: Browser, second_browser: Browser, world: DeskWorld) -> None:
    """The party called from a page is the call's persistent one: a blind transfer moves it to another agent."""
    first = ready_page(browser, world, "1001")
    second = ready_page(second_browser, world, "1003")
    gateway = world.run(Phone.start(host=GATEWAY_HOST, port=world.gateway_port, user="gateway", domain=GATEWAY_HOST,
                                    name="gateway", media=True))
    try:
        first.fill("#dial-number", NUMBER)
        first.get_by_test_id("dial").click()
        incoming = world.run(gateway.wait_for(IncomingCall, timeout=WAIT_MS / 1000))
        call = incoming.call
        world.run(call.answer())
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert_voice(customer_hears(world, gateway, call, 0.6), PAGE_HZ)

        first.fill("#transfer-target", "1003")
        first.get_by_test_id("transfer").click()
        expect(second.get_by_test_id("answer")).to_be_enabled()
        second.get_by_test_id("answer").click()
        expect(first.locator("#no-call")).to_be_visible()  # the first agent is released
        assert_voice(customer_hears(world, gateway, call, 1.0), SECOND_PAGE_HZ)  # the second agent's voice
        assert_page_hears(page_hears(second, 1.0), CUSTOMER_HZ)  # who hears the party called

        second.get_by_test_id("hang").click()
        expect(second.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
        world.run(until(lambda: call.ended, what="the gateway's call ended"))
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(gateway.close())
        first.context.close()
        second.context.close()


def test_a_dial_through_the_api_rings_the_page_first_and_has_audio_both_ways_through_the_relay(
        browser: Browser, world: DeskWorld, relay: Rtpengine) -> None:
    """api=dial for an agent on its page: the page is rung without an offer and offers WebRTC in its answer, is
    parked on the relay, the customer is called at the trunk's gateway with plain RTP, and once it answers the page
    is re-INVITEd with the relay's SDP: each hears the other (docs/design.md, "Media")."""
    page = ready_page(browser, world, "1001")
    gateway = world.run(Phone.start(host=GATEWAY_HOST, port=world.gateway_port, user="gateway", domain=GATEWAY_HOST,
                                    name="gateway", media=True, answer="auto"))
    try:
        conn_id = world.on_loop(lambda: world.node.service.dial(OP, "1001", NUMBER))
        expect(page.get_by_test_id("answer")).to_be_enabled(timeout=WAIT_MS)  # the page rings first
        page.get_by_test_id("answer").click()
        incoming = world.run(gateway.wait_for(IncomingCall, timeout=WAIT_MS / 1000))
        offer = incoming.request.body.decode()
        assert set(re.findall(r"^c=IN IP4 (\S+?)\r?$", offer, re.M)) == {relay.host}, offer
        assert "a=fingerprint" not in offer and " RTP/AVP " in offer, offer
        call = incoming.call
        world.run(until(lambda: call.rtp is not None and call.remote_sdp is not None, what="the gateway answered"))
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert world.on_loop(lambda: world.node.switch.anchor.anchored(conn_id))
        expect(page.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS * 5)
        rtp = call.rtp
        # the page's media reaches the relay once its re-INVITE is answered and its DTLS is up: wait for it
        world.run(until(lambda: rtp.heard(gateway.now() - 0.2, gateway.now()).share(PAGE_HZ) >= 0.5,
                        timeout=WAIT_MS / 1000, what="the customer hears the page"))

        assert_voice(customer_hears(world, gateway, call, 1.0), PAGE_HZ)  # the customer hears the page
        assert_page_hears(page_hears(page, 1.0), CUSTOMER_HZ)  # and the page hears the customer

        page.get_by_test_id("hang").click()
        expect(page.locator("#no-call")).to_be_visible(timeout=LIVE_MS * 5)
        world.run(until(lambda: call.ended, what="the gateway's call ended"))
        assert world.node.switch.anchor.stats["media_failures"] == 0
    finally:
        world.run(gateway.close())
        page.context.close()
