"""`callbridge demo`: callbridge moving a real call on this machine, in well under a minute, with nothing to set up.

What it does
- Starts a node in-process (`callbridge.bootstrap`) on SQLite in a temporary directory, SIP (UDP and TCP) and HTTP
  (uvicorn) on free loopback ports, the destination policy allowing loopback only.
- Loads a demo operation (`DEMO_OPERATION`): three agents with phones (and 1004, left for the agent's page), a
  queue, a trunk whose customers come from 127.0.0.2 and whose gateway is 127.0.0.3, a DID, a token and a supervisor.
- Starts `callbridge.phone` phones, real SIP over real sockets: the customer (127.0.0.2), the agents 1001-1003
  (127.0.0.1, registering with digest) and the outside world behind the trunk's gateway (127.0.0.3), which answers
  every number but `BUSY_NUMBER`, for which it answers 486 Busy Here.
- Plays the scenario through the public API only (the Python client over HTTP: agentbox verbs, native resources,
  the event stream): agents made ready, the customer calls in, the longest-idle agent answers, hold and unhold,
  transfer to another agent, a transfer to a busy number that comes back to the agent, a transfer to an outside
  number, hang up; then the CDR.

Every step is checked, not announced: what the phones saw (SIP), what the event stream said and what the API
reports must agree with what the step should have done, within `STEP_TIMEOUT` seconds. One line per step, with a
check mark and its time; the first step that does not happen as expected is named and the command exits 1.

The media relay: when the `rtpengine` binary is on PATH and no `--rtpengine` is given, the demo starts its own
(userspace, loopback only, in the temporary directory; `callbridge.media.local_relay`) and stops it at the end;
`--no-relay` skips it; without the binary it says so (and how to install it) and checks the signalling only. With a
relay, calls are anchored on it, every phone plays a tone of its own, and steps are added that measure what each
party heard (`callbridge.cli.demo_media`): each other, the hold music, the ringback while a transfer rings.

`callbridge demo --keep` then puts a new call up and leaves everything running, printing `curl` commands (real
token, real ports) to act on it by hand, and the addresses and sign-ins of the agent's page and the supervisor's
board, until Ctrl-C. With a relay the customer's phone plays a 440 Hz tone on the kept call, and a person signed in
on the agent's page takes it with audio (a printed command transfers it to the page's agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Annotated

import typer
from rich.console import Console

from callbridge.cli.demo_media import HEARING_TITLES, VOICES, anchored
from callbridge.cli.demo_report import curl_commands, event_line
from callbridge.cli.demo_steps import STEP_TITLES, Demo, DemoFailed
from callbridge.cli.demo_world import (
    BUSY_NUMBER,
    CUSTOMER_NUMBER,
    DEMO_OPERATION,
    OPERATION,
    READY_ORDER,
    SUPERVISOR,
    WEB_AGENT,
    agent_password,
)
from callbridge.media.local_relay import INSTALL_HINT, find_binary

CUSTOMER_TONE_HZ = 440.0  # what a person taking the kept call on the page hears of the customer

__all__ = ["BUSY_NUMBER", "DEMO_OPERATION", "HEARING_TITLES", "STEP_TITLES", "VOICES", "Demo", "DemoFailed",
           "demo_command", "play"]


# --- --keep: a call up, curl commands, until Ctrl-C --------------------------------------------------------------


async def _keep(demo: Demo, console: Console) -> None:
    _, _, watch = demo.api()
    await demo.customer_calls()
    agent = READY_ORDER[1]  # idle longest now: the other two took calls since
    await demo.longest_idle_answers(agent)
    console.print(f"\n[bold]Still running.[/bold] A new call is up: customer {CUSTOMER_NUMBER} with agent {agent} "
                  f"(conn_id {demo.conn_id}). Try the API by hand:\n", soft_wrap=True, highlight=False)
    for what, command in curl_commands(demo.base_url, demo.token, agent, page_agent=WEB_AGENT):
        console.print(f"[dim]# {what}[/dim]", highlight=False)
        console.print(command, soft_wrap=True, highlight=False, markup=False)
    console.print(f"\n[bold]In a browser[/bold]: the agent's page {demo.base_url}/agent (operation {OPERATION}, "
                  f"extension {WEB_AGENT}, password {agent_password(WEB_AGENT)}; the other agents are the demo's "
                  f"phones) and the supervisor's board {demo.base_url}/supervisor (operation {OPERATION}, "
                  f"username {SUPERVISOR[0]}, password {SUPERVISOR[1]}).", soft_wrap=True, highlight=False,
                  markup=False)
    if anchored(demo) and demo.customer_call is not None and demo.customer_call.rtp is not None:
        demo.customer_call.rtp.play_tone(CUSTOMER_TONE_HZ)
        console.print(f"Take the call on the page: sign in, press Ready, run the \"transfer to the agent's page\" "
                      f"command above, answer. The customer's phone plays a {CUSTOMER_TONE_HZ:.0f} Hz tone; the "
                      "page's microphone goes to the customer through the relay (the browser asks for it; "
                      "http://127.0.0.1 counts as a secure page).", soft_wrap=True, highlight=False, markup=False)
    else:
        console.print("No media relay: the page rings and shows the call, but its audio needs one. Install "
                      f"rtpengine ({INSTALL_HINT}) and run the demo without --no-relay, or give it --rtpengine "
                      "udp:HOST:PORT (a running one's ng port), to take the call with audio in the browser.",
                      soft_wrap=True, highlight=False, markup=False)
    console.print("\nEvents are printed below as they happen. Ctrl-C stops everything.\n", highlight=False)
    watch.on_event = lambda e: console.print(event_line(e), soft_wrap=True, highlight=False, markup=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print("stopping: phones hang up, the server closes", highlight=False)


# --- the command ----------------------------------------------------------------------------------------------


def _relay_intro(console: Console, *, own_relay: bool, rtpengine: tuple[str, ...]) -> str | None:
    """Say which media relay the demo uses (and how to get one when there is none); the rtpengine binary to start,
    if any."""
    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)

    binary = find_binary() if own_relay and not rtpengine else None
    if binary is not None or rtpengine:
        whose = "started by the demo on loopback" if binary else f"at {', '.join(rtpengine)}"
        say(f"Media relay: rtpengine {whose}. Every phone plays a tone of its own (the customer "
            f"{VOICES['customer']:.0f} Hz, agents 1002 {VOICES['1002']:.0f} Hz and 1001 {VOICES['1001']:.0f} Hz, "
            f"the outside line {VOICES['gateway']:.0f} Hz) and the demo measures what each party hears.\n")
    elif own_relay:
        say(f"No media relay: rtpengine is not installed ({INSTALL_HINT}); the demo checks the signalling only. "
            "With it installed, the demo starts it and measures what each party hears.\n")
    else:
        say("No media relay (--no-relay): the demo checks the signalling only.\n")
    return binary


async def play(console: Console, *, keep: bool = False, busy_status: int = 486, rtpengine: tuple[str, ...] = (),
               own_relay: bool = False, played: dict[str, float] | None = None) -> int:
    """Run the demo; 0 when every step happened as expected, 1 otherwise (the failed step is printed).
    ``own_relay``: start rtpengine when it is installed and no ``rtpengine`` is given; ``played`` overrides the
    tone a phone plays (`demo_media.VOICES`), for a test of a wrong one."""
    console.print("[bold]callbridge demo[/bold]: a customer, three agents and an outside line, all on this "
                  "machine, driven through the API\n", highlight=False, soft_wrap=True)
    binary = _relay_intro(console, own_relay=own_relay, rtpengine=rtpengine)
    demo = Demo(console, busy_status=busy_status, rtpengine=rtpengine, relay_binary=binary, played=played)
    started = time.perf_counter()
    stopped_by = _stop_on_signals()  # SIGINT, SIGTERM, SIGHUP: stop cleanly (the relay too), not die mid-way
    try:
        await demo.play()
        console.print(f"\n[green]✓[/green] all {demo.step_number} steps happened as expected in "
                      f"{time.perf_counter() - started:.1f} s", highlight=False)
        if keep:
            await _keep(demo, console)
        return 0
    except DemoFailed as failure:
        console.print(f"[red]✗[/red] {failure.number:>2} {failure.title}: {failure.reason}", soft_wrap=True,
                      highlight=False)
        console.print(f"\n[red]demo failed at step {failure.number} ({failure.title})[/red]", highlight=False)
        return 1
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        console.print(f"\nstopped by {stopped_by[0].name}: phones hang up, the server closes", highlight=False)
        return 128 + stopped_by[0]
    finally:
        await demo.close()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _stop_on_signals() -> list[signal.Signals]:
    """Cancel the running task on SIGINT, SIGTERM or SIGHUP (`--keep` later takes SIGINT and SIGTERM for its own
    stop); the list names the signal that came."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    came: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not came and task is not None:
            came.append(sig)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop, sig)
    return came


def demo_command(
    keep: bool = typer.Option(False, "--keep", help="Leave the server and phones running with a call up and print "
                                                    "curl commands to try the API by hand, until Ctrl-C."),
    rtpengine: Annotated[list[str] | None, typer.Option(
        "--rtpengine", help="A running rtpengine's ng address, udp:HOST:PORT (repeatable): calls are anchored on "
                            "it, and the agent's page takes the kept call with audio.")] = None,
    no_relay: bool = typer.Option(False, "--no-relay", help="Do not start rtpengine even when it is installed: "
                                                            "signalling only, no audio measured."),
) -> None:
    """Run callbridge with phones on this machine and play a call through the API (transfers included); with
    rtpengine installed, start it and measure what each party hears."""
    if no_relay and rtpengine:
        raise typer.BadParameter("--no-relay and --rtpengine contradict each other: give one of them",
                                 param_hint="--no-relay")
    code = asyncio.run(play(Console(), keep=keep, rtpengine=tuple(rtpengine or ()), own_relay=not no_relay))
    raise typer.Exit(code)
