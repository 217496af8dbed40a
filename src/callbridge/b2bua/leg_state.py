"""A leg's life cycle: one table ``(state, input) -> next state``, in the style of the transaction tables
(`callbridge.sip.transaction`).

Rules
- A leg (`legs.SipLeg`) is always in one `LegState`; it moves only through `step` (or `LegTable.end`, the one
  place a leg ends: the step to `ENDED` and its removal from the table are one act). An input the table does not
  list for the current state is a programming error and raises `LegStateError`: the switch checks the state
  before feeding an input that may come late (a provisional or a 2xx on a leg already answered or ended is handled
  before any step, RFC 3261 §13.2.2.4), and inputs that may be fed again are listed with no change.
- The states say what the domain is told: a leg in `INCOMING`, `CALLING`, `EARLY` or `UP` is the domain's, and its
  end is reported once (`on_leg_ended`/`on_leg_failed`); a leg the domain let go of (`release`, `reject`) or whose
  end was reported is in `RELEASING` or `ENDED`, and nothing more is reported on it.
- What the table does not hold is the offer/answer state of a leg (`ack_pending`, `defer_ack`, `parked`, the SDP
  it was sent): that is RFC 3264's, orthogonal to the life cycle, and kept on the leg (`bridge`).
- The table is a dict of dicts (no tuple is built per input) keyed by `StrEnum` members (a `str` hash).

Theory of operation (RFC 3261)
- An incoming leg starts `INCOMING`: we received its INVITE and hold the server transaction (§13.3.1; §17.2.1
  Proceeding). Our 2xx (`ANSWERED`, §13.3.1.4) makes it `UP`; a final error makes it `ENDED`, whether the domain
  refused it (`REFUSED`: 403/404/486/..., §13.3.1.3), let go of it (`RELEASE`) or the caller cancelled it
  (`CANCELLED`, §9.2: the endpoint answered 487).
- An outgoing leg starts `CALLING`: its INVITE went to every contact of the target (forks, §16.7-style forking done
  by a UAC, §13.2.1). The first provisional other than 100 (`PROVISIONAL`, §13.2.2.1) makes it `EARLY` and is
  reported as ringing; the first 2xx (`ANSWERED`, §13.2.2.4) makes it `UP` and the other forks are cancelled; when
  every fork has failed (`FAILED`: its best final status, §16.7 step 6) it is `ENDED`. The domain releasing it
  while it rings (`RELEASE`) CANCELs the forks (§9.1) and ends it at once: a 2xx that crosses the CANCEL is ACKed
  and hung up, and the forks' 487s arrive on an `ENDED` leg (`FAILED` is absorbed there).
- An `UP` leg ends with its dialog (`DIALOG_ENDED`: a BYE either way §15.1, a session that expired (RFC 4028
  §10), a request timed out or answered 481 §12.2.1.2). The domain releasing it (`RELEASE`) sends our BYE and
  leaves it `RELEASING` until the dialog is gone; it still carries in-dialog requests until then (the NOTIFY of a
  REFER, the ACK of a 2xx that awaited its answer).
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["TABLE", "LegInput", "LegState", "LegStateError", "Stateful", "step"]


class LegStateError(Exception):
    """An input the leg table does not list for the leg's current state."""


class LegState(enum.StrEnum):
    INCOMING = "incoming"  # an INVITE we received, not answered yet
    CALLING = "calling"  # our INVITE (its forks) sent, no ringing yet
    EARLY = "early"  # our INVITE rang (a provisional other than 100 was taken)
    UP = "up"  # answered: the dialog is confirmed, the domain holds the leg
    RELEASING = "releasing"  # answered, and the domain let go of it: our BYE went, the dialog is ending
    ENDED = "ended"  # over, and out of the leg table


class LegInput(enum.StrEnum):
    PROVISIONAL = "provisional"  # outgoing: a 1xx other than 100
    ANSWERED = "answered"  # a 2xx: sent (incoming) or taken (outgoing)
    FAILED = "failed"  # outgoing: every fork got a final error or none could be sent
    CANCELLED = "cancelled"  # incoming: the caller's CANCEL
    REFUSED = "refused"  # incoming: a final error of ours (the domain's refusal)
    RELEASE = "release"  # the domain lets go of the leg
    DIALOG_ENDED = "dialog_ended"  # the leg's dialog terminated


St, In = LegState, LegInput
_ROWS: tuple[tuple[LegState, LegInput, LegState], ...] = (
    (St.INCOMING, In.ANSWERED, St.UP),
    (St.INCOMING, In.CANCELLED, St.ENDED),
    (St.INCOMING, In.REFUSED, St.ENDED),
    (St.INCOMING, In.RELEASE, St.ENDED),
    (St.CALLING, In.PROVISIONAL, St.EARLY),
    (St.CALLING, In.ANSWERED, St.UP),
    (St.CALLING, In.FAILED, St.ENDED),
    (St.CALLING, In.RELEASE, St.ENDED),
    (St.EARLY, In.PROVISIONAL, St.EARLY),
    (St.EARLY, In.ANSWERED, St.UP),
    (St.EARLY, In.FAILED, St.ENDED),
    (St.EARLY, In.RELEASE, St.ENDED),
    (St.UP, In.RELEASE, St.RELEASING),
    (St.UP, In.DIALOG_ENDED, St.ENDED),
    (St.RELEASING, In.DIALOG_ENDED, St.ENDED),
    (St.ENDED, In.FAILED, St.ENDED),  # the forks of a leg released while ringing finish (487, Timer B)
    (St.ENDED, In.DIALOG_ENDED, St.ENDED),
)
del St, In
TABLE: dict[LegState, dict[LegInput, LegState]] = {state: {} for state in LegState}
for _state, _input, _next in _ROWS:
    TABLE[_state][_input] = _next


class Stateful(Protocol):
    """A leg as the table sees it (`legs.SipLeg`)."""

    leg_id: str
    state: LegState


# The members as plain module constants: on Python 3.11 `LegState.UP` is a descriptor call on the class, and the
# leg's properties (`SipLeg.up`, `forking`, ...) run on every message; a global is a dict lookup.
INCOMING, CALLING, EARLY, UP, RELEASING, ENDED = (LegState.INCOMING, LegState.CALLING, LegState.EARLY, LegState.UP,
                                                  LegState.RELEASING, LegState.ENDED)
PROVISIONAL, ANSWERED, FAILED, CANCELLED, REFUSED, RELEASE, DIALOG_ENDED = (
    LegInput.PROVISIONAL, LegInput.ANSWERED, LegInput.FAILED, LegInput.CANCELLED, LegInput.REFUSED, LegInput.RELEASE,
    LegInput.DIALOG_ENDED)


def step(leg: Stateful, event: LegInput) -> LegState:
    """Move `leg` by `event`; the state it was in (what the domain was told depends on it)."""
    was = leg.state
    try:
        leg.state = TABLE[was][event]
    except KeyError:
        raise LegStateError(f"leg {leg.leg_id}: {event} in {was}") from None
    return was
