"""What the fuzz targets share: the command line handed to libFuzzer (seed corpora, a writable work directory, a
dictionary) and the check that the parsers' last-resort guard did not hide an exception.

libFuzzer writes the inputs it finds to the first corpus directory on its command line, so that one is a work
directory (``fuzz/work/<target>/``, ignored by git, or the first directory given), never a seed directory; the seeds
(``fuzz/corpus/<target>/`` and, for SIP, the RFC 4475 messages in ``tests/sip/torture/rfc4475/``) follow it and are only
read. Crash inputs go to the work directory too unless ``-artifact_prefix=`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
# The RFC 4475 torture messages are in the repository; CALLBRIDGE_SIP_TORTURE points elsewhere.
TORTURE_DIR = Path(os.environ.get("CALLBRIDGE_SIP_TORTURE", REPO / "tests" / "sip" / "torture" / "rfc4475"))

# The messages ParseError carries when the parsers' last-resort guard turned some other exception into it
# (callbridge.sip.parser): the bytes reached code that raised what the parser did not plan for.
GUARD_MESSAGES = ("unparseable message (", "unparseable stream (")


class GuardTripped(AssertionError):
    """The parser's last-resort guard caught an exception: a crash the guard only hides."""


def check_guard(error: BaseException) -> None:
    if str(error).startswith(GUARD_MESSAGES):
        hidden = error.__context__
        raise GuardTripped(f"{error} <- {type(hidden).__name__}: {hidden}") from hidden


def libfuzzer_argv(target: str, argv: Sequence[str], seeds: Sequence[Path], dictionary: Path | None) -> list[str]:
    """``argv`` with the work directory first when none is given, the seed directories last, the dictionary and
    the artifact prefix when not given."""
    flags = [a for a in argv[1:] if a.startswith("-")]
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if dirs and all(Path(d).is_file() for d in dirs):
        return list(argv)  # replaying inputs (a crash file): libFuzzer runs each once, no corpus
    if not dirs:
        work = FUZZ_DIR / "work" / target
        work.mkdir(parents=True, exist_ok=True)
        dirs = [str(work)]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={Path(dirs[0]).resolve()}{os.sep}")
    if dictionary is not None and not any(f.startswith("-dict=") for f in flags):
        flags.append(f"-dict={dictionary}")
    existing = []
    for seed in seeds:
        if seed.is_dir():
            existing.append(str(seed))
        else:
            print(f"fuzz: seed directory {seed} not found, going on without it", file=sys.stderr)
    return [argv[0], *flags, *dirs, *existing]
