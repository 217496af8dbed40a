"""The media side of `callbridge demo`: the relay it starts (`start_relay`), where each side's media points
(`media_between`), and, with a relay, the steps that measure what each party heard (`Hearing`).

With a relay every phone plays a tone of its own (`VOICES`, away from the hold music's notes, 400/600/800 Hz, and
the ringback's 425 Hz, `callbridge.media.audio`) and listens (`callbridge.phone`'s RTP endpoint: what it received,
cut into 100 ms windows, each with its dominant frequency). A hearing step checks what a party heard the way the
other steps check SIP and events: a party heard is its frequency in at least 80% of the windows listened to (one
second) and no other tone; the hold music is its notes and nothing of the agent's; the ringback while a transfer
target rang is at least `MIN_RINGBACK` seconds of 425 Hz. What was heard instead fails the step, with the tones
measured.

Phones ring `RING_SECONDS` before they answer (or refuse, for the busy number) when there is a relay, so that the
ringback can be heard; the ringing is measured after the transfer's step, from the windows the customer received
since the previous hearing step (the phone keeps the last 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from callbridge.cli.demo_world import BUSY_NUMBER, OUTSIDE_NUMBER, StepFailed, expect
from callbridge.media.audio import HOLD_MUSIC_NOTES, RINGBACK
from callbridge.media.local_relay import LocalRelay
from callbridge.phone import Call, CallState
from callbridge.phone.listen import Heard, Window

if TYPE_CHECKING:
    from callbridge.cli.demo_steps import Demo

# What each phone plays: the customer, the agents and the outside world behind the trunk's gateway.
VOICES: dict[str, float] = {"customer": 700.0, "1002": 1000.0, "1001": 1500.0, "1003": 1200.0, "gateway": 1300.0}
MUSIC_HZ = tuple(sorted({hz for hz, _ in HOLD_MUSIC_NOTES}))  # the built-in hold music: 400, 600, 800 Hz
RINGBACK_HZ = RINGBACK["etsi"][0][0]  # the default ringback (the demo operation keeps it): 425 Hz, 1 s on, 4 s off
RING_SECONDS = 1.2  # with a relay, how long phones ring: the ringback's first second is all tone
MIN_RINGBACK = 0.5  # seconds of ringback the customer must have heard while a target rang
SETTLE = 0.3  # what the relay sends changes within an ng round trip and a few 20 ms frames
LISTEN, LISTEN_MUSIC = 1.0, 1.2  # the music's notes last 0.5 s each: 1.2 s hears at least two
# A party is heard when its tone is the dominant one in this share of the windows expected, and no other tone is:
# a window short now and then (a loop late on a loaded machine drops a partial one) is not another sound.
HEARD_SHARE = 0.8
FIND = 3.0  # how long a party's tone may take to arrive after a change (then what was heard is judged anyway)

HEARING_TITLES = (
    "heard after the answer",
    "heard on hold",
    "heard off hold",
    "heard while the transfer rang, then the new agent",
    "heard while the busy number rang, then the agent again",
    "heard while the outside number rang, then the outside party",
)

Step = tuple[str, Callable[[], Awaitable[str]]]


async def start_relay(binary: str, workdir: Path, attempts: int = 3) -> LocalRelay:
    """rtpengine on loopback, waited for off the loop (it takes a fraction of a second to answer its first ping);
    a port taken between the probe and its bind makes it exit, and another block is tried."""
    for attempt in range(attempts):
        relay = LocalRelay.on_free_ports(binary, workdir / f"rtpengine-{attempt}")
        try:
            relay.spawn(die_with_parent=True)  # on the loop's thread: a demo killed outright takes it along
            return await asyncio.to_thread(relay.wait_ready)
        except (OSError, RuntimeError) as exc:
            relay.stop()
            failure = exc
        except asyncio.CancelledError:  # the demo was stopped meanwhile: the relay is not the demo's yet
            relay.stop()
            raise
    raise StepFailed(f"rtpengine did not start: {failure}")


# --- where the media points (SDP) -------------------------------------------------------------------------------
def anchored(demo: Demo) -> bool:
    """The demo's call goes through the media relay: each side's SDP names the relay."""
    return demo.node is not None and demo.node.switch.anchor.anchored(demo.conn_id)


def customer_media_port(demo: Demo) -> int | None:
    call = demo.customer_call
    sdp = call.remote_sdp if call is not None else None
    return sdp.media[0].port if sdp is not None and sdp.media else None


async def media_between(demo: Demo, agent: str) -> str:
    """The customer's SDP names the agent's media port and the agent's names the customer's (pass-through);
    through a relay, neither names the other (each names the relay)."""
    phone, call = demo.phones[agent], demo.agent_calls[agent]
    customer = demo.phones["customer"]
    await demo._until(lambda: call.state is CallState.ESTABLISHED, f"ACK at {agent}'s phone")
    if anchored(demo):
        remote = call.remote_sdp
        expect(customer_media_port(demo) != phone.rtp_port and remote is not None and bool(remote.media)
               and remote.media[0].port != customer.rtp_port, f"{agent}'s media is not through the relay")
        return f"customer and {agent} exchange media through the relay"
    await demo._until(lambda: customer_media_port(demo) == phone.rtp_port,
                      f"the customer's media pointed at {agent}")
    remote = call.remote_sdp
    expect(remote is not None and bool(remote.media) and remote.media[0].port == customer.rtp_port,
           f"{agent}'s media does not point at the customer")
    return f"customer and {agent} exchange SDP directly"


# --- what was heard ----------------------------------------------------------------------------------------------
def _tone(window: Window) -> int | None:
    """The window's dominant tone rounded to 25 Hz, None for silence or noise."""
    return None if window.hz is None or window.dbfs <= -50 else int(round(window.hz / 25.0) * 25)


def tones(heard: Heard) -> set[int]:
    return {hz for hz in map(_tone, heard.windows) if hz is not None}


def describe(windows: list[Window] | Heard, expected: int | None = None) -> str:
    """What was heard, tone by tone: "1000 Hz in 6 of 6 windows", or "no tone (...)"."""
    if isinstance(windows, Heard):
        expected = windows.expected
        windows = list(windows.windows)
    total = max(expected or 0, len(windows))
    counts = Counter(hz for hz in map(_tone, windows) if hz is not None)
    if not counts:
        return f"no tone ({len(windows)} windows received of {total} expected)"
    return ", ".join(f"{hz} Hz in {n} of {total} windows" for hz, n in counts.most_common())


class Hearing:
    """The demo's ears (see the module docstring). ``played`` overrides what a phone plays, not what it is expected
    to: a test makes one play a wrong tone to see the step fail."""

    def __init__(self, demo: Demo, *, relay_binary: str | None, played: dict[str, float] | None = None) -> None:
        self.demo = demo
        self.relay_binary = relay_binary  # start our own rtpengine (found on PATH)
        self.relay: LocalRelay | None = None
        self.played = {**VOICES, **(played or {})}
        self.mark = 0.0  # the end of the last measurement (the loop's clock, which every phone uses)
        self._playing: dict[Call, float] = {}

    @property
    def media(self) -> bool:
        """A relay is there (ours or `--rtpengine`): the phones send and measure audio."""
        return self.relay_binary is not None or bool(self.demo.rtpengine)

    @property
    def ring(self) -> float:
        return RING_SECONDS if self.media else 0.2

    async def start_relay(self, workdir: Path) -> tuple[str, ...]:
        if self.relay_binary is None:
            return self.demo.rtpengine
        self.relay = await start_relay(self.relay_binary, workdir)
        return (self.relay.ng_url,)

    def relay_note(self) -> str:
        if self.relay is None:
            return f", media anchored on {', '.join(self.demo.rtpengine)}" if self.demo.rtpengine else ""
        return (f", media anchored on {self.relay.ng_url} (rtpengine started by the demo: userspace, media ports "
                f"{self.relay.port_min}-{self.relay.port_max} on {self.relay.host})")

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()

    # --- the steps ---------------------------------------------------------------------------------------------
    def steps(self, first: str, second: str) -> dict[str, list[Step]]:
        """The hearing steps to run after each scenario step (by its title); none without a relay."""
        if not self.media:
            return {}
        titles = iter(HEARING_TITLES)
        return {
            "longest-idle agent answers": [(next(titles), lambda: self.talk(first))],
            "hold": [(next(titles), lambda: self.on_hold(first))],
            "unhold": [(next(titles), lambda: self.talk(first))],
            "transfer to another agent": [(next(titles), lambda: self.rang_then(second, first, second))],
            "transfer to a busy number comes back to the agent": [
                (next(titles), lambda: self.rang_then(BUSY_NUMBER, second, second))],
            "transfer to an outside number": [
                (next(titles), lambda: self.rang_then(OUTSIDE_NUMBER, second, "gateway"))],
        }

    async def talk(self, party: str, lead: str = "customer hears") -> str:
        """The customer hears ``party`` and ``party`` hears the customer."""
        customer, other = self._speak("customer"), self._speak(party)
        name = _name(party)
        await self._hear(("customer", customer, party), (name, other, "customer"))
        self.mark = self._now()
        return (f"{lead} {name}'s {VOICES[party]:.0f} Hz, {name} hears the customer's "
                f"{VOICES['customer']:.0f} Hz")

    async def on_hold(self, agent: str) -> str:
        customer, other = self._speak("customer"), self._speak(agent)
        rtp = customer.rtp
        assert rtp is not None and other.rtp is not None

        async def music_arrived() -> None:  # the relay starts it within an ng round trip of the hold
            while sum(rtp.heard(self._now() - 0.3, self._now()).share(hz, tolerance=3) for hz in MUSIC_HZ) < 0.5:
                await asyncio.sleep(0.05)

        with contextlib.suppress(TimeoutError):  # what was heard instead is judged below
            await asyncio.wait_for(music_arrived(), FIND)
        await asyncio.sleep(SETTLE)
        start = self._now()
        await asyncio.sleep(LISTEN_MUSIC)
        heard, agent_heard = rtp.heard(start, self._now()), other.rtp.heard(start, self._now())
        self.mark = self._now()
        music = sum(heard.share(hz, tolerance=3) for hz in MUSIC_HZ)
        notes = tones(heard)
        expect(music >= HEARD_SHARE and notes <= set(MUSIC_HZ) and len(notes) >= 2
               and heard.share(VOICES[agent], tolerance=20) == 0.0,
               f"the customer heard {describe(heard)}, not the hold music ({_hz(MUSIC_HZ)})")
        expect(agent_heard.share(VOICES["customer"], tolerance=20) == 0.0,
               f"{agent} heard {describe(agent_heard)}: the customer's phone should have stopped sending")
        return (f"customer hears the hold music (its notes {_hz(sorted(notes))} in {LISTEN_MUSIC:.1f} s), "
                f"none of {agent}'s {VOICES[agent]:.0f} Hz; {agent} hears none of the customer's (held, its phone "
                "stopped sending)")

    async def rang_then(self, target: str, agent: str, party: str) -> str:
        """While ``target`` rang the customer heard the ringback, instead of ``agent`` (who was still on the line,
        playing its tone); now it hears ``party`` (and is heard)."""
        customer = self._speak("customer")
        assert customer.rtp is not None
        windows = customer.rtp.windows(self.mark, self._now())
        ringing = [i for i, w in enumerate(windows) if _tone(w) == RINGBACK_HZ]
        rang = len(ringing) * customer.rtp.listener.window
        expect(rang >= MIN_RINGBACK, f"while {target} rang the customer heard {describe(windows)}, not "
                                     f"{MIN_RINGBACK:.1f} s of ringback ({RINGBACK_HZ:.0f} Hz)")
        during = windows[ringing[0]:ringing[-1] + 1]
        expect(all(_tone(w) != int(VOICES[agent]) for w in during),
               f"while {target} rang the customer heard {agent} too: {describe(during)}")
        return await self.talk(party, f"while {target} rang the customer heard ringback ({RINGBACK_HZ:.0f} Hz, "
                                      f"{rang:.1f} s), none of {agent}'s {VOICES[agent]:.0f} Hz; now it hears")

    # --- measuring ---------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _call(self, party: str) -> Call:
        demo = self.demo
        if party == "customer":
            call = demo.customer_call
        elif party == "gateway":
            assert demo.gateway is not None
            call = next((c for c in demo.gateway.phone.calls if c.state is CallState.ESTABLISHED), None)
        else:
            call = demo.agent_calls.get(party)
        if call is None or call.rtp is None:
            raise StepFailed(f"{party} has no call with media")
        return call

    def _speak(self, party: str) -> Call:
        """``party``'s call, playing its tone."""
        call = self._call(party)
        assert call.rtp is not None
        if self._playing.get(call) != self.played[party]:
            call.rtp.play_tone(self.played[party])  # from its answer until now it sent silence
            self._playing[call] = self.played[party]
        return call

    async def _hear(self, *who_call_party: tuple[str, Call, str]) -> None:
        """Each ``who`` (on its call) hears ``party``'s tone: it arrives within `FIND` s (the relay re-targets a
        party within an ng round trip), then fills what is heard for `LISTEN` s; all listen at once."""

        async def arrived(call: Call, hz: float) -> None:
            rtp = call.rtp
            assert rtp is not None
            while rtp.heard(self._now() - 0.3, self._now()).share(hz, tolerance=3) < 0.5:
                await asyncio.sleep(0.05)

        with contextlib.suppress(TimeoutError):  # what was heard instead is judged below
            await asyncio.wait_for(asyncio.gather(*(arrived(call, VOICES[party])
                                                    for _, call, party in who_call_party)), FIND)
        await asyncio.sleep(SETTLE)
        start = self._now()
        await asyncio.sleep(LISTEN)
        for who, call, party in who_call_party:
            assert call.rtp is not None
            heard, hz = call.rtp.heard(start, self._now()), VOICES[party]
            whose = "the customer's" if party == "customer" else f"{_name(party)}'s"
            expect(heard.share(hz, tolerance=3) >= HEARD_SHARE and tones(heard) == {int(hz)},
                   f"{who} heard {describe(heard)}, not {whose} {hz:.0f} Hz")


def _name(party: str) -> str:
    return "the outside party" if party == "gateway" else party


def _hz(values: tuple[float, ...] | list[int]) -> str:
    return ", ".join(f"{v:.0f}" for v in values) + " Hz"
