"""Which policy records a call: the queue's when it has one, else the operation's (issue #13)."""

from __future__ import annotations

import pytest

from callbridge.callcontrol.directory import Operation, Queue, RecordingPolicy, recording_policy


@pytest.mark.parametrize(("operation_policy", "queue_policy", "expected"), [
    ("never", None, "never"),
    ("always", None, "always"),
    ("on_demand", None, "on_demand"),
    ("never", "always", "always"),
    ("always", "never", "never"),
    ("always", "on_demand", "on_demand"),
])
def test_the_queue_overrides_the_operation(operation_policy: RecordingPolicy, queue_policy: RecordingPolicy | None,
                                           expected: str) -> None:
    operation = Operation(id="0042", sip_domain="a.test", recording=operation_policy)
    queue = Queue(operation_id="0042", name="sales", recording=queue_policy)
    assert recording_policy(operation, queue) == expected


def test_a_call_without_a_queue_follows_the_operation() -> None:
    assert recording_policy(Operation(id="0042", sip_domain="a.test", recording="on_demand"), None) == "on_demand"
