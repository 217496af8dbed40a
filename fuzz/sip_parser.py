"""Coverage-guided fuzzing (atheris) of the SIP parser: ``callbridge.sip.parse`` and ``StreamParser``.

Properties checked on every input (the input is the bytes of one datagram, or of a TCP stream):

1. ``parse`` raises ``ParseError`` and nothing else, and its status is one the parser may answer (400, 501, 505)
   or None (drop); the parser's last-resort guard (which turns any other exception into ``ParseError``) counts as a
   crash here, since it means the bytes reached code that raised what the parser did not plan for.
2. A message that parses serialises to bytes that parse to an equal message (round trip), and those bytes framed by
   ``StreamParser`` give the same message again. Every typed accessor raises ``SipError`` or nothing.
3. ``StreamParser`` fed the input in random chunk splits (seeded from the input, so a crash replays) yields the same
   messages and errors, in the same order, as when fed the input at once; each message round-trips as in 2.

Run (see fuzz/README.md):

    .venv/bin/python fuzz/sip_parser.py -atheris_runs=20000          bounded, as CI runs it
    .venv/bin/python fuzz/sip_parser.py -max_total_time=3600 -jobs=2  longer, by hand
    .venv/bin/python fuzz/sip_parser.py crash-<sha1>                  replay one input
"""

from __future__ import annotations

import random
import sys
import zlib

import atheris
from _harness import FUZZ_DIR, TORTURE_DIR, check_guard, libfuzzer_argv

with atheris.instrument_imports(include=["callbridge.sip"]):
    from sip_properties import check_status, round_trip

    from callbridge.sip import ParseError, StreamParser, parse

MAX_STREAM_STEPS = 64  # messages and errors taken from one stream; a 4 KiB input holds far fewer


def check_datagram(data: bytes) -> None:
    try:
        message = parse(data)
    except ParseError as error:
        check_guard(error)
        check_status(error)
        return
    round_trip(message)


Outcome = tuple[str, object]


def stream_outcomes(data: bytes, chunks: list[bytes]) -> list[Outcome]:
    """What a StreamParser yields when fed ``chunks`` in turn, taking messages after each one."""
    parser = StreamParser()
    outcomes: list[Outcome] = []
    for chunk in chunks:
        parser.feed(chunk)
        while len(outcomes) < MAX_STREAM_STEPS:
            try:
                message = parser.next_message()
            except ParseError as error:
                check_guard(error)
                outcomes.append(("error", (str(error), error.status, parser.broken is not None)))
                if parser.broken is not None:
                    return outcomes
                continue
            if message is None:
                break
            outcomes.append(("message", bytes(message)))
            round_trip(message)
    return outcomes


def split(data: bytes) -> list[bytes]:
    rng = random.Random(zlib.crc32(data))
    chunks, at = [], 0
    while at < len(data):
        size = rng.choice((1, 1, 2, 3, 7, 16, 64, rng.randint(1, max(1, len(data)))))
        chunks.append(data[at:at + size])
        at += size
    return chunks


def check_stream(data: bytes) -> None:
    whole = stream_outcomes(data, [data])
    pieces = stream_outcomes(data, split(data))
    if whole != pieces:
        raise AssertionError(f"chunking changed what the stream yields:\n{whole!r}\n!=\n{pieces!r}")


def TestOneInput(data: bytes) -> None:
    check_datagram(data)
    check_stream(data)


def main() -> None:
    seeds = [FUZZ_DIR / "corpus" / "sip", TORTURE_DIR]
    argv = libfuzzer_argv("sip", sys.argv, seeds, FUZZ_DIR / "sip.dict")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
