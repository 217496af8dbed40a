"""Defences: failure and flood bans with a fake clock, exemptions, bounded memory, the scanner filter."""

from __future__ import annotations

import pytest

from callbridge.b2bua.defence import Defence, DefenceConfig, counts_as_failure

ATTACKER = "203.0.113.66"
NEIGHBOUR = "203.0.113.67"
T0 = 5_000.0


def fail(defence: Defence, ip: str, times: int, now: float) -> list[bool]:
    return [defence.record_failure(ip, now) for _ in range(times)]


def test_ban_after_the_failure_threshold() -> None:
    defence = Defence(DefenceConfig(failure_limit=30, failure_window=10.0, ban_seconds=300.0))
    assert all(fail(defence, ATTACKER, 30, T0))
    assert defence.allow(ATTACKER, T0)
    assert defence.record_failure(ATTACKER, T0 + 1) is False  # the 31st within the window
    assert not defence.allow(ATTACKER, T0 + 1)
    assert defence.metrics(T0 + 1) == {"dropped_scanner": 0, "dropped_banned": 1, "bans_total": 1,
                                       "banned_now": 1}


def test_failures_spread_out_never_ban() -> None:
    defence = Defence(DefenceConfig(failure_limit=30, failure_window=10.0))
    # 2 a second for ten minutes: 20 per window, under the limit of 30
    for step in range(1200):
        assert defence.record_failure(ATTACKER, T0 + step * 0.5)
    assert defence.allow(ATTACKER, T0 + 600)
    assert defence.bans_total == 0


def test_failures_across_a_window_boundary_still_count() -> None:
    defence = Defence(DefenceConfig(failure_limit=30, failure_window=10.0))
    assert all(fail(defence, ATTACKER, 20, T0 + 9.0))  # late in one fixed window
    assert all(fail(defence, ATTACKER, 10, T0 + 10.5))  # early in the next: 20 * 0.95 + 10 = 29
    assert defence.record_failure(ATTACKER, T0 + 10.5) is False  # 30 in the sliding window, 20*0.95+11 > 30


def test_the_ban_ends() -> None:
    defence = Defence(DefenceConfig(failure_limit=3, ban_seconds=300.0))
    fail(defence, ATTACKER, 4, T0)
    assert not defence.allow(ATTACKER, T0 + 299.9)
    assert defence.banned_now(T0 + 299.9) == 1
    assert defence.allow(ATTACKER, T0 + 300.0)
    assert defence.banned_now(T0 + 300.0) == 0
    # it starts again from zero: three more failures are tolerated, the fourth bans again
    assert all(fail(defence, ATTACKER, 3, T0 + 301))
    assert defence.record_failure(ATTACKER, T0 + 301) is False
    assert defence.bans_total == 2


def test_a_second_source_is_unaffected() -> None:
    defence = Defence(DefenceConfig(failure_limit=3))
    fail(defence, ATTACKER, 10, T0)
    assert not defence.allow(ATTACKER, T0)
    assert defence.allow(NEIGHBOUR, T0)
    assert defence.record_failure(NEIGHBOUR, T0)
    assert defence.record_request(NEIGHBOUR, T0)


def test_flood_of_requests_bans() -> None:
    defence = Defence(DefenceConfig(request_limit=500, request_window=1.0, ban_seconds=60.0))
    results = [defence.record_request(ATTACKER, T0 + i / 1000) for i in range(501)]
    assert results[:500] == [True] * 500
    assert results[500] is False
    assert not defence.allow(ATTACKER, T0 + 0.6)
    assert defence.allow(ATTACKER, T0 + 60.5)


def test_a_steady_rate_under_the_limit_passes() -> None:
    defence = Defence(DefenceConfig(request_limit=500, request_window=1.0))
    assert all(defence.record_request(ATTACKER, T0 + i / 400) for i in range(4000))  # 400/s for 10 s


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.0.2.10", "::ffff:10.9.9.9", "2001:db8::5"])
def test_exempt_networks_and_trunks_are_never_banned(ip: str) -> None:
    defence = Defence(DefenceConfig(failure_limit=1, request_limit=1, exempt_networks=("10.0.0.0/8", "2001:db8::/32")),
                      trunk_addresses=("192.0.2.10",))
    assert defence.is_exempt(ip)
    assert all(fail(defence, ip, 100, T0))
    assert all(defence.record_request(ip, T0) for _ in range(100))
    assert defence.allow(ip, T0)
    assert defence.bans_total == 0


def test_trunk_addresses_can_change() -> None:
    defence = Defence(DefenceConfig(failure_limit=1))
    fail(defence, ATTACKER, 2, T0)
    assert not defence.allow(ATTACKER, T0)
    defence.set_trunk_addresses([ATTACKER])
    assert defence.allow(ATTACKER, T0)  # a new trunk's address is unbanned at once
    assert all(fail(defence, ATTACKER, 5, T0))
    defence.set_trunk_addresses([])
    assert not defence.is_exempt(ATTACKER)
    assert fail(defence, ATTACKER, 2, T0) == [True, False]


def test_memory_is_bounded_under_many_sources() -> None:
    defence = Defence(DefenceConfig(failure_limit=1, max_sources=1000, ban_seconds=300.0))
    for n in range(20_000):
        ip = f"198.18.{n // 256}.{n % 256}"
        defence.record_request(ip, T0 + n / 1000)
        defence.record_failure(ip, T0 + n / 1000)
        defence.record_failure(ip, T0 + n / 1000)  # each source is banned
    assert defence.tracked_sources <= 1000
    assert defence.banned_now(T0 + 20) == 1000
    assert defence.bans_total == 20_000
    # the newest bans are the ones kept
    assert not defence.allow("198.18.78.31", T0 + 20)  # n = 19999
    assert defence.allow("198.18.0.0", T0 + 20)  # n = 0, evicted


def test_bans_that_ended_do_not_accumulate() -> None:
    defence = Defence(DefenceConfig(failure_limit=1, ban_seconds=10.0))
    for n in range(5000):
        fail(defence, f"198.19.{n // 256}.{n % 256}", 2, T0 + n)
    assert defence.banned_now(T0 + 5000) == 9  # only the last ten seconds' bans, minus the one just ended
    assert defence.tracked_sources <= 5000


def test_scanner_user_agents_are_dropped_case_insensitively() -> None:
    defence = Defence()
    for ua in ("friendly-scanner", "Friendly-Scanner 1.0", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "pplsip",
               "SIPVicious", "sundayddr"):
        assert defence.drop_scanner(ua), ua
    assert defence.dropped_scanner == 7


@pytest.mark.parametrize("ua", ["baresip v3.10.0 (x86_64/linux)", "Linphone/5.2", "Yealink SIP-T46S", "sipp",
                                "sipsak 0.9.8", None, ""])
def test_normal_user_agents_pass(ua: str | None) -> None:
    defence = Defence()
    assert not defence.drop_scanner(ua)
    assert defence.dropped_scanner == 0


def test_with_the_filter_off_the_scanner_passes() -> None:
    defence = Defence(DefenceConfig(scanner_filter=False))
    assert not defence.drop_scanner("friendly-scanner")
    defence.scanner_filter = True
    assert defence.drop_scanner("friendly-scanner")


@pytest.mark.parametrize("status, credentials, counted", [
    (None, False, True), (400, False, True), (403, False, True), (404, False, True),
    (401, False, False), (407, False, False), (401, True, True), (407, True, True),
    (200, True, False), (423, False, False), (486, False, False),
])
def test_which_outcomes_count_as_failures(status: int | None, credentials: bool, counted: bool) -> None:
    assert counts_as_failure(status, carried_credentials=credentials) is counted


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DefenceConfig(failure_limit=0)
    with pytest.raises(ValueError):
        DefenceConfig(ban_seconds=0)
