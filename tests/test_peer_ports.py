"""tests/peers/ports.py under pytest-xdist: each worker draws singles and blocks from slices of its own, so two
workers never hand out the same port (a relay's block stays unbound until its calls use it: the bind probe alone
cannot keep two workers apart), and each worker's slice still holds a benchmark's block of 1000."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `tests/` itself: the harness package is `peers`

from peers import ports


def _parts_of(monkeypatch: pytest.MonkeyPatch, worker: str | None, count: str | None):  # type: ignore[no-untyped-def]
    for name, value in (("PYTEST_XDIST_WORKER", worker), ("PYTEST_XDIST_WORKER_COUNT", count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return ports._parts()


def test_two_workers_get_disjoint_slices_of_both_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    (whole_singles, whole_blocks) = _parts_of(monkeypatch, None, None)
    first = _parts_of(monkeypatch, "gw0", "2")
    second = _parts_of(monkeypatch, "gw1", "2")
    for part in (0, 1):
        (low0, high0), (low1, high1) = first[part], second[part]
        whole_low, whole_high = (whole_singles, whole_blocks)[part]
        assert whole_low == low0 <= high0 < low1 <= high1 <= whole_high
    for low, high in (first[1], second[1]):
        assert high - low + 1 >= 1000  # a benchmark's or a loaded cluster's relay block fits in each


def test_outside_xdist_or_with_odd_values_the_whole_range_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _parts_of(monkeypatch, None, None)
    assert _parts_of(monkeypatch, "gw0", "1") == whole
    assert _parts_of(monkeypatch, "gw3", "2") == whole  # not one of the workers counted
    assert _parts_of(monkeypatch, "master", "2") == whole
