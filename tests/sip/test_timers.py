"""RFC 3261 Table 4 / RFC 6026 timers derived from TimerConfig, and the UDP retransmission schedules."""

from __future__ import annotations

import dataclasses

import pytest

from callbridge.sip.timers import TimerConfig, next_interval, retransmit_schedule


def test_defaults_are_the_rfc_values() -> None:
    cfg = TimerConfig()
    assert (cfg.t1, cfg.t2, cfg.t4) == (0.5, 4.0, 5.0)
    assert cfg.a == 0.5
    assert cfg.b == 32.0
    assert cfg.d == 32.0
    assert cfg.e == 0.5
    assert cfg.f == 32.0
    assert cfg.g == 0.5
    assert cfg.h == 32.0
    assert cfg.i == 5.0
    assert cfg.j == 32.0
    assert cfg.k == 5.0
    assert cfg.l == 32.0
    assert cfg.m == 32.0


def test_transport_aware_timers_are_zero_over_reliable_transports() -> None:
    cfg = TimerConfig()
    assert [cfg.timer_d(False), cfg.timer_i(False), cfg.timer_j(False), cfg.timer_k(False)] == [32.0, 5.0, 32.0, 5.0]
    assert [cfg.timer_d(True), cfg.timer_i(True), cfg.timer_j(True), cfg.timer_k(True)] == [0.0, 0.0, 0.0, 0.0]


def test_custom_config_scales_every_derived_timer() -> None:
    cfg = TimerConfig(t1=1.0, t2=8.0, t4=10.0)
    assert (cfg.a, cfg.b, cfg.e, cfg.f, cfg.g, cfg.h) == (1.0, 64.0, 1.0, 64.0, 1.0, 64.0)
    assert (cfg.i, cfg.j, cfg.k, cfg.l, cfg.m) == (10.0, 64.0, 10.0, 64.0, 64.0)
    # Timer D is 64*T1 here, above the 32 s floor
    assert cfg.d == 64.0
    assert cfg.timer_d(True) == 0.0


def test_timer_d_never_drops_below_32_seconds_over_udp() -> None:
    fast = TimerConfig(t1=0.01, t2=0.04, t4=0.05)
    assert fast.b == pytest.approx(0.64)
    assert fast.d == 32.0
    assert fast.timer_d(True) == 0.0


def test_config_is_frozen() -> None:
    cfg = TimerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.t1 = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("t1", "t2", "t4"),
    [(0.0, 4.0, 5.0), (-0.5, 4.0, 5.0), (0.5, 0.4, 5.0), (0.5, 4.0, 0.0), (0.5, 4.0, -1.0), (float("nan"), 4.0, 5.0)],
)
def test_invalid_configs_are_refused(t1: float, t2: float, t4: float) -> None:
    with pytest.raises(ValueError):
        TimerConfig(t1=t1, t2=t2, t4=t4)


def test_t2_equal_to_t1_is_allowed() -> None:
    cfg = TimerConfig(t1=1.0, t2=1.0)
    assert cfg.non_invite_schedule()[:3] == [1.0, 1.0, 1.0]


def test_next_interval_doubles_and_caps() -> None:
    assert next_interval(0.5) == 1.0
    assert next_interval(32.0) == 64.0
    assert next_interval(2.0, cap=4.0) == 4.0
    assert next_interval(4.0, cap=4.0) == 4.0
    cfg = TimerConfig()
    assert [cfg.next_a(16.0), cfg.next_e(4.0), cfg.next_g(1.0)] == [32.0, 4.0, 2.0]


def test_invite_schedule_timer_a_doubles_until_timer_b() -> None:
    # RFC 3261 §17.1.1.2: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B fires at 32 s
    assert TimerConfig().invite_schedule() == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_invite_schedule_a_sequence_unbounded_by_t2() -> None:
    # Timer A alone, doubling with no T2 cap, as long as there is time left under a longer give-up
    assert retransmit_schedule(0.5, 64.0) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_non_invite_schedule_timer_e_caps_at_t2_until_timer_f() -> None:
    # sends at 0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5 s; Timer F fires at 32 s
    assert TimerConfig().non_invite_schedule() == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_response_schedule_timer_g_caps_at_t2_until_timer_h() -> None:
    assert TimerConfig().response_schedule() == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_schedule_with_custom_config() -> None:
    cfg = TimerConfig(t1=0.1, t2=0.3, t4=1.0)
    assert cfg.non_invite_schedule() == pytest.approx([0.1, 0.2] + [0.3] * 20)
    assert cfg.invite_schedule() == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])


def test_schedule_rejects_non_positive_start() -> None:
    with pytest.raises(ValueError):
        retransmit_schedule(0.0, 32.0)
