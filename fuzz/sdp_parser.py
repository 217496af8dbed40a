"""Coverage-guided fuzzing (atheris) of the SDP parser: ``callbridge.sip.sdp.SessionDescription.parse``.

Properties checked on every input (the input is the bytes of one SDP body):

1. ``parse`` raises ``SdpError`` and nothing else.
2. A description that parses serialises to bytes that parse to an equal description, and serialising that gives
   the same bytes again (serialisation is a fixed point after one pass: LF-only input comes out as CRLF).
3. Reading it as a B2BUA does (origin, timing, per-media connection and direction, ports, formats) and rewriting
   it as a B2BUA does (hold, resume, version bump) raises ``SdpError`` or nothing, and a rewritten description
   round-trips as in 2.

Run (see fuzz/README.md):

    .venv/bin/python fuzz/sdp_parser.py -atheris_runs=20000          bounded, as CI runs it
    .venv/bin/python fuzz/sdp_parser.py -max_total_time=3600 -jobs=2  longer, by hand
    .venv/bin/python fuzz/sdp_parser.py crash-<sha1>                  replay one input
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import atheris
from _harness import FUZZ_DIR, libfuzzer_argv

with atheris.instrument_imports(include=["callbridge.sip.sdp"]):
    from callbridge.sip.sdp import SdpError, SessionDescription


def round_trip(sd: SessionDescription) -> None:
    wire = sd.to_bytes()
    again = SessionDescription.parse(wire)
    if again != sd:
        raise AssertionError(f"round trip changed the description:\n{wire!r}\n->\n{again.to_bytes()!r}")
    if again.to_bytes() != wire:
        raise AssertionError(f"serialising twice differs:\n{wire!r}\n->\n{again.to_bytes()!r}")


SESSION_READS = ("version", "origin", "session_name", "timing", "connection", "attributes")
MEDIA_READS = ("media", "port", "port_count", "proto", "formats", "rejected", "connection", "attributes",
               "own_direction")


def _quietly(read: Callable[[], object]) -> None:
    try:
        read()
    except SdpError:
        pass


def read_like_a_b2bua(sd: SessionDescription) -> None:
    for name in SESSION_READS:
        _quietly(partial(getattr, sd, name))
    _quietly(sd.direction)
    for index, media in enumerate(sd.media):
        for name in MEDIA_READS:
            _quietly(partial(getattr, media, name))
        _quietly(partial(sd.connection_for, index))
        _quietly(partial(sd.direction, index))


def rewrite_like_a_b2bua(sd: SessionDescription) -> None:
    for rewrite in (SessionDescription.with_hold, SessionDescription.with_resume):
        try:
            round_trip(rewrite(sd))
        except SdpError:
            pass
    copy = sd.copy()
    try:
        copy.bump_version()
    except SdpError:
        return
    round_trip(copy)


def TestOneInput(data: bytes) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError:
        return
    round_trip(sd)
    read_like_a_b2bua(sd)
    rewrite_like_a_b2bua(sd)


def main() -> None:
    argv = libfuzzer_argv("sdp", sys.argv, [FUZZ_DIR / "corpus" / "sdp"], FUZZ_DIR / "sdp.dict")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
