"""A real rtpengine per test that asks for one (`rtpengine` fixture); skipped only when the binary is missing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from peers.rtpengine import Rtpengine


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[Rtpengine]:
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        yield relay
