"""The agent's page and the supervisor's board in a real Chromium (Debian's /usr/bin/chromium, driven headless by
Playwright), against a live node on loopback: the page signs in, registers its SIP.js phone over WebSocket (RFC
7118), changes the agent's state, follows agentbox changes live, survives the HTTP server going away, and the board
follows and changes agents live. One browser for the module; every wait is bounded.

`CALLBRIDGE_DESK_SCREENSHOTS=DIR` also saves the pages' screenshots there (scripts/desk-screenshots: docs/).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deskworld import OP, SUPERVISOR, DeskWorld

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: run scripts/setup --test (it installs Debian's chromium)",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright  # noqa: E402

ARGS = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection"]
LIVE_MS = 1000  # what the page must show within, once the server has done it
WAIT_MS = 8000
SHOTS = os.environ.get("CALLBRIDGE_DESK_SCREENSHOTS")

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskWorld]:
    world = DeskWorld.start(tmp_path_factory.mktemp("desk"))
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()


def agent_page(browser: Browser, world: DeskWorld, extension: str, password: str | None = None) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{world.url}/agent")
    page.fill("#f-operation", OP)
    page.fill("#f-extension", extension)
    page.fill("#f-password", password or f"secret-{extension}")
    page.click("#signin button[type=submit]")
    return page


def registered(page: Page) -> None:
    expect(page.get_by_test_id("phone")).to_have_text("Phone: registered", timeout=WAIT_MS)


def test_sign_in_wrong_and_unknown_look_the_same_and_the_right_one_opens_the_desk(
        browser: Browser, world: DeskWorld) -> None:
    wrong = agent_page(browser, world, "1003", "not-the-password")
    expect(wrong.locator("#signin-error")).to_have_text("Wrong operation, extension or password.")
    unknown = agent_page(browser, world, "9999", "not-the-password")
    expect(unknown.locator("#signin-error")).to_have_text("Wrong operation, extension or password.")
    assert wrong.locator("#desk").is_hidden() and unknown.locator("#desk").is_hidden()
    assert wrong.context.cookies() == [] and unknown.context.cookies() == []

    page = agent_page(browser, world, "1003")
    expect(page.locator("#desk")).to_be_visible()
    [cookie] = page.context.cookies()
    assert cookie["name"] == "callbridge_desk" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script reads the session
    for context in (wrong.context, unknown.context, page.context):
        context.close()


def test_the_page_registers_over_websocket_and_its_state_buttons_change_the_agent(
        browser: Browser, world: DeskWorld) -> None:
    page = agent_page(browser, world, "1001")
    registered(page)
    node = world.node
    [binding] = world.on_loop(lambda: node.switch.registrar.location.contacts_for(OP, "1001", node.switch.wall()))
    assert binding.transport == "ws" and re.search(r"@[a-z0-9]+\.invalid;transport=ws", binding.contact_uri)
    assert world.native_agent("1001")["registered"] is True

    page.get_by_test_id("state-ready").click()
    expect(page.get_by_test_id("agent-state")).to_have_text("ready", timeout=LIVE_MS)
    assert world.native_agent("1001")["state"] == "ready"
    page.get_by_test_id("state-7").click()
    expect(page.get_by_test_id("agent-state")).to_have_text("Lunch", timeout=LIVE_MS)
    agent = world.native_agent("1001")
    assert (agent["state"], agent["aux_state"]) == ("aux", "7")
    page.keyboard.press("r")  # the keyboard shortcut for ready
    expect(page.get_by_test_id("agent-state")).to_have_text("ready", timeout=LIVE_MS)
    assert world.native_agent("1001")["state"] == "ready"

    # the agentbox's agent_display reaches the page within a second: button=dial hides the controls that dial
    assert world.box("agent_display", agent_id="1001", display="hide", button="dial").status_code == 200
    expect(page.get_by_test_id("transfer-card")).to_be_hidden(timeout=LIVE_MS)
    expect(page.get_by_test_id("dial-form")).to_be_hidden(timeout=LIVE_MS)
    assert world.box("agent_display", agent_id="1001", display="show", button="dial").status_code == 200
    expect(page.get_by_test_id("transfer-card")).to_be_visible(timeout=LIVE_MS)
    expect(page.get_by_test_id("dial-form")).to_be_visible(timeout=LIVE_MS)
    # a CRM's change of state shows at once too
    assert world.box("change_status", agent_id="1001", status="7").status_code == 200
    expect(page.get_by_test_id("agent-state")).to_have_text("Lunch", timeout=LIVE_MS)

    # the page closes: its WebSocket goes, and the registration with it
    page.context.close()
    world.run(_until(lambda: not world.node.service.get_agent(OP, "1001").registered))


def test_the_board_follows_an_agent_live_and_changes_its_state(browser: Browser, world: DeskWorld) -> None:
    agent = agent_page(browser, world, "1002")
    registered(agent)
    board = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    board.set_default_timeout(WAIT_MS)
    board.goto(f"{world.url}/supervisor")
    board.fill("#f-operation", OP)
    board.fill("#f-username", SUPERVISOR[0])
    board.fill("#f-password", SUPERVISOR[1])
    board.click("#signin button[type=submit]")
    cell = board.get_by_test_id("agent-state-1002")
    expect(cell).to_have_text("logout")
    assert board.locator("[data-agent]").count() == 3  # 0042's agents only: 0077's are not on this board

    agent.get_by_test_id("state-ready").click()  # the agent acts on its page: the board follows
    expect(cell).to_have_text("ready", timeout=LIVE_MS)
    board.get_by_test_id("set-state-1002").select_option("7")  # the supervisor acts: the agent's page follows
    expect(board.get_by_test_id("result")).to_have_text("Agent status has been changed to 7")
    expect(agent.get_by_test_id("agent-state")).to_have_text("Lunch", timeout=LIVE_MS)
    expect(cell).to_have_text("Lunch", timeout=LIVE_MS)
    assert world.native_agent("1002")["aux_state"] == "7"
    board.context.close()
    agent.context.close()


def test_a_second_sign_in_of_the_same_agent_wins_and_the_older_page_is_told(
        browser: Browser, world: DeskWorld) -> None:
    first = agent_page(browser, world, "1003")
    expect(first.get_by_test_id("connection")).to_have_text("Connected")
    second = agent_page(browser, world, "1003")
    expect(second.get_by_test_id("connection")).to_have_text("Connected")
    expect(first.locator("#notices")).to_contain_text("You signed in on another page or device", timeout=LIVE_MS)
    expect(first.locator("#signin")).to_be_visible()
    assert first.evaluate("fetch('/agent/api/session').then(r => r.status)") == 401
    assert second.evaluate("fetch('/agent/api/session').then(r => r.status)") == 200
    first.context.close()
    second.context.close()


def test_the_page_says_when_the_connection_drops_and_reconnects(browser: Browser, world: DeskWorld) -> None:
    page = agent_page(browser, world, "1002")
    connection = page.get_by_test_id("connection")
    expect(connection).to_have_text("Connected")
    world.stop_http()
    try:
        expect(connection).to_have_text("Connection lost: reconnecting…")
        expect(page.locator("#notices")).to_contain_text("The connection to callbridge dropped")
    finally:
        world.start_http()
    expect(connection).to_have_text("Connected")
    expect(page.locator("#notices")).not_to_contain_text("dropped")
    registered(page)  # the SIP WebSocket is callbridge's own listener: it stayed up
    # live again: a CRM's change shows at once
    assert world.box("change_status", agent_id="1002", status="7").status_code == 200
    expect(page.get_by_test_id("agent-state")).to_have_text("Lunch", timeout=LIVE_MS)
    page.context.close()


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    from callnode import until

    await until(predicate, timeout=timeout, what="condition")


def test_a_crms_hold_on_the_agents_call_shows_on_the_page_at_once(browser: Browser, world: DeskWorld) -> None:
    from callnode import agent_phone, customer_phone, did_uri, until

    from callbridge.phone import Held, IncomingCall

    page = agent_page(browser, world, "1003")
    registered(page)

    async def talking() -> tuple[Any, Any, Any]:
        # the agent's desk phone (UDP, answers at once) beside the page: the page shows the call it takes
        desk_phone = await agent_phone(world.node, "1003", ready=True, answer="auto")
        customer = await customer_phone()
        call = await customer.call(did_uri(world.node), timeout=5)
        await desk_phone.wait_for(IncomingCall, timeout=5)
        await until(lambda: world.node.service.get_agent(OP, "1003").state == "on_call", what="1003 on call")
        return desk_phone, customer, call

    desk_phone, customer, call = world.run(talking())
    try:
        conn_id = world.on_loop(lambda: world.node.service.get_agent(OP, "1003").conn_id)
        expect(page.get_by_test_id("call-conn")).to_have_text(conn_id, timeout=LIVE_MS)
        expect(page.get_by_test_id("call-number")).to_have_text(customer.user)
        expect(page.get_by_test_id("hold")).to_have_text("Hold")
        assert world.box("hold", agent_id="1003").json()["msg"] == "Call has been put on hold"
        assert world.run(customer.wait_for(Held, call=call, timeout=2)).direction == "sendonly"
        expect(page.get_by_test_id("hold")).to_have_text("Take off hold", timeout=LIVE_MS)
        expect(page.locator("#call-state")).to_have_text("held", timeout=LIVE_MS)
        if SHOTS:
            page.fill("#transfer-target", "3105550199")
            page.wait_for_timeout(1100)  # a duration that is not 00:00 on the picture
            page.screenshot(path=str(Path(SHOTS) / "agent-page.png"))
        page.get_by_test_id("hold").click()  # the page's button: through /agent/api/hold
        expect(page.get_by_test_id("result")).to_have_text("Call has been taken off hold")
        expect(page.get_by_test_id("hold")).to_have_text("Hold", timeout=LIVE_MS)
        assert world.box("hang", agent_id="1003").status_code == 200
        expect(page.locator("#no-call")).to_be_visible(timeout=LIVE_MS)
    finally:
        world.run(desk_phone.unregister(timeout=5))
        world.run(desk_phone.close())
        world.run(customer.close())
        page.context.close()


def test_the_page_says_plainly_when_the_microphone_is_refused(playwright: Playwright, world: DeskWorld) -> None:
    # A browser without the fake permission prompt: headless, nobody can allow the microphone, so it is refused.
    refusing = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
    try:
        page = agent_page(refusing, world, "1001")
        expect(page.locator("#notices")).to_contain_text("The microphone was refused")
        registered(page)  # signalling goes on without it
    finally:
        refusing.close()


def test_without_a_relay_the_page_rings_but_says_plainly_that_audio_needs_it(browser: Browser,
                                                                               world: DeskWorld) -> None:
    from callnode import customer_phone, did_uri

    from callbridge.phone import CallState

    page = agent_page(browser, world, "1002")
    registered(page)
    page.get_by_test_id("state-ready").click()
    expect(page.get_by_test_id("agent-state")).to_have_text("ready", timeout=LIVE_MS)
    customer = world.run(customer_phone())
    try:
        call = world.run(customer.call(did_uri(world.node), wait_answer=False))
        expect(page.get_by_test_id("answer")).to_be_enabled()  # this world has no relay: the call's media is direct
        page.get_by_test_id("answer").click()
        expect(page.get_by_test_id("result")).to_have_text(
            "The call could not be answered in the browser: its audio needs callbridge's media relay (rtpengine, "
            "an operation whose media is anchored). Take it on a desk phone.")
        expect(page.get_by_test_id("answer")).to_be_enabled()  # still ringing: nothing was answered
        assert call.state in (CallState.CALLING, CallState.ALERTING)
    finally:
        world.run(customer.close())
        page.context.close()
