"""`WireEvent.line` is built around `data`'s JSON alone (the durable log serialises every event on the loop): its
bytes are exactly `json.dumps(event.to_json())` with the wire's separators, and its time is `rfc3339` to the
millisecond, rounding included."""

from __future__ import annotations

import json
import random

import pytest

from callbridge.http.events import WireEvent, _stamp
from callbridge.http.resources import rfc3339


@pytest.mark.parametrize("operation", ["0042", 'o"p\\ñ'])
def test_line_is_the_json_of_the_event(operation: str) -> None:
    data = {"agent_id": "1001", "state": "aux", "registered": True, "note": 'ñ"\\\n\u2028', "n": None, "f": 1.5,
            "buttons": [{"button": "b", "display": "show"}]}
    event = WireEvent(7, "agent.state_changed", 1764947800.1234567, operation, data, None)
    assert event.line == json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert json.loads(event.line)["at"] == "2025-12-05T15:16:40.123Z"


def test_the_time_is_rfc3339_to_the_millisecond_at_every_edge() -> None:
    rng = random.Random(7)
    times = [rng.uniform(0, 4e9) for _ in range(50_000)]
    times += [10.9999996, 10.9999995, 10.0000004, 1.0, 1e9 + 0.0005, 1e9 + 0.9995, 1764947800.9999999, 0.0]
    times += [int(rng.uniform(1e9, 2e9)) + k / 1e6 + 5e-7 for k in range(0, 1_000_000, 997)]
    assert [t for t in times if _stamp(t) != rfc3339(t)] == []


def test_text_is_the_line_decoded_whichever_is_read_first() -> None:
    data = {"agent_id": "1001", "note": "ñ\u2028", "f": 2.25, "nested": {"k": [1, None, True]}}
    first_text = WireEvent(3, "call.offered", 1764947800.5, "0042", data, "c-1")
    first_line = WireEvent(3, "call.offered", 1764947800.5, "0042", data, "c-1")
    expected = json.dumps(first_text.to_json(), separators=(",", ":"), ensure_ascii=False)
    assert first_text.text == expected and first_text.line == expected.encode("utf-8")
    assert first_line.line == expected.encode("utf-8") and first_line.text == expected
    stored = WireEvent(3, "call.offered", 1764947800.5, "0042", data, "c-1", expected.encode("utf-8"))
    assert stored.text == expected  # an event read back from the database carries its stored bytes


def test_data_that_cannot_be_serialised_fails_and_leaves_the_next_event_unharmed() -> None:
    inner: dict[str, object] = {"a": 1, "bad": {object()}}
    data = {"inner": inner}
    with pytest.raises(TypeError):
        _ = WireEvent(1, "call.offered", 1.0, "0042", data, None).line
    del inner["bad"]  # the same containers again: no trace of the failed call is left (no "circular reference")
    assert json.loads(WireEvent(2, "call.offered", 1.0, "0042", data, None).line)["data"] == {"inner": {"a": 1}}
