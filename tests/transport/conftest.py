"""Fixtures of the transport tests: a recording core and a runtime on it, limited to loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from recording_core import RecordingCore

from callbridge.transport import DestinationPolicy, Runtime


@pytest.fixture
def core() -> RecordingCore:
    return RecordingCore()


@pytest.fixture
async def runtime(core: RecordingCore) -> AsyncIterator[Runtime]:
    rt = Runtime(core, policy=DestinationPolicy(["127.0.0.0/8", "::1/128"]), on_event=lambda event: None)
    yield rt
    await rt.close()
