"""The SIP transaction timers of RFC 3261 §17 (Table 4, Appendix A) and RFC 6026, from one `TimerConfig`.

Rules:
- Every timer is derived from three base values: T1 (round-trip estimate, 500 ms), T2 (the longest interval a
  non-INVITE request or INVITE response is retransmitted after, 4 s) and T4 (how long a message stays in the
  network, 5 s). Changing T1 scales every give-up timer with it, as RFC 3261 §17.1.1.1 intends.
- Timers that only exist to absorb UDP retransmissions (D, I, J, K) are zero over a reliable transport
  (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
- Retransmission intervals double: Timer A without bound (§17.1.1.2), Timers E and G up to T2 (§17.1.2.2, §17.2.1).

Names follow the RFC: `a` is Timer A, and so on. The properties `d`, `i`, `j` and `k` give the value over an
unreliable transport (the figure in Table 4); `timer_d(reliable)` etc. give the value for a given transport.
No clock is read here: the transaction layer adds these durations to the `now` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimerConfig", "next_interval", "retransmit_schedule"]

# RFC 3261 §17.1.1.2: "Timer D ... MUST be set ... to a value of at least 32 seconds for unreliable transports".
TIMER_D_MIN_UNRELIABLE = 32.0


def next_interval(previous: float, cap: float | None = None) -> float:
    """The retransmission interval after `previous`: doubled, and capped at `cap` when given (T2 for E and G)."""
    doubled = previous * 2
    return doubled if cap is None else min(doubled, cap)


def retransmit_schedule(first: float, deadline: float, cap: float | None = None) -> list[float]:
    """The intervals between successive sends of a message retransmitted from `first`, doubling up to `cap`,
    for as long as the next retransmission falls strictly before `deadline` (the give-up timer, e.g. B or F),
    both measured from the first send.
    """
    if first <= 0:
        raise ValueError("first interval must be positive")
    intervals: list[float] = []
    elapsed = 0.0
    interval = first
    while elapsed + interval < deadline:
        intervals.append(interval)
        elapsed += interval
        interval = next_interval(interval, cap)
    return intervals


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2 and T4 of RFC 3261 §17 (seconds), and every timer derived from them."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"T1 must be positive, got {self.t1!r}")
        if not self.t2 >= self.t1:
            raise ValueError(f"T2 must be at least T1, got T1={self.t1!r} T2={self.t2!r}")
        if not self.t4 > 0:
            raise ValueError(f"T4 must be positive, got {self.t4!r}")

    # --- INVITE client transaction (§17.1.1) ---
    @property
    def a(self) -> float:
        """Timer A: the initial INVITE retransmission interval over UDP; doubles without bound."""
        return self.t1

    @property
    def b(self) -> float:
        """Timer B: INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def d(self) -> float:
        """Timer D over UDP: wait time for response retransmissions after a non-2xx final response."""
        return max(TIMER_D_MIN_UNRELIABLE, 64 * self.t1)

    def timer_d(self, reliable: bool) -> float:
        return 0.0 if reliable else self.d

    # --- non-INVITE client transaction (§17.1.2) ---
    @property
    def e(self) -> float:
        """Timer E: the initial non-INVITE retransmission interval over UDP; doubles up to T2."""
        return self.t1

    @property
    def f(self) -> float:
        """Timer F: non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def k(self) -> float:
        """Timer K over UDP: wait time for response retransmissions in Completed."""
        return self.t4

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.k

    # --- INVITE server transaction (§17.2.1) ---
    @property
    def g(self) -> float:
        """Timer G: the initial interval for retransmitting a final non-2xx INVITE response; doubles up to T2."""
        return self.t1

    @property
    def h(self) -> float:
        """Timer H: wait time for the ACK of a non-2xx final response."""
        return 64 * self.t1

    @property
    def i(self) -> float:
        """Timer I over UDP: wait time for ACK retransmissions in Confirmed."""
        return self.t4

    def timer_i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.i

    # --- non-INVITE server transaction (§17.2.2) ---
    @property
    def j(self) -> float:
        """Timer J over UDP: wait time for request retransmissions in Completed."""
        return 64 * self.t1

    def timer_j(self, reliable: bool) -> float:
        return 0.0 if reliable else self.j

    # --- RFC 6026 Accepted state ---
    @property
    def l(self) -> float:  # noqa: E743 - the RFC names it Timer L
        """Timer L (RFC 6026 §8.7): INVITE server transaction's wait in Accepted for retransmitted INVITEs."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Timer M (RFC 6026 §8.4): INVITE client transaction's wait in Accepted for retransmitted 2xx."""
        return 64 * self.t1

    # --- retransmission schedules ---
    def next_a(self, previous: float) -> float:
        return next_interval(previous)

    def next_e(self, previous: float) -> float:
        return next_interval(previous, self.t2)

    def next_g(self, previous: float) -> float:
        return next_interval(previous, self.t2)

    def invite_schedule(self) -> list[float]:
        """Intervals between INVITE sends over UDP until Timer B fires (Timer A doubling)."""
        return retransmit_schedule(self.a, self.b)

    def non_invite_schedule(self) -> list[float]:
        """Intervals between non-INVITE request sends over UDP until Timer F fires (Timer E, capped at T2)."""
        return retransmit_schedule(self.e, self.f, self.t2)

    def response_schedule(self) -> list[float]:
        """Intervals between sends of a non-2xx INVITE response over UDP until Timer H fires (G, capped at T2)."""
        return retransmit_schedule(self.g, self.h, self.t2)
