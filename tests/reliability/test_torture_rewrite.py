"""The one change the wire torture test makes to a corpus message: its top Via's sent-by, and nothing else."""

from __future__ import annotations

import pytest
from torture_wire import CORPUS, Case, load_cases, rewrite_top_via, top_via_span

CASES = load_cases()


def test_the_corpus_is_all_there() -> None:
    assert len(CASES) == 50 and len(list((CORPUS / "rfc4475").glob("*.dat"))) == 50


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_only_the_top_via_sent_by_changes(case: Case) -> None:
    data = case.data
    span = top_via_span(data)
    if case.name == "test":
        assert span is None and rewrite_top_via(data, "127.0.1.1", 5999) == data  # it has no Via at all
        return
    assert span is not None
    out = rewrite_top_via(data, "127.0.1.1", 5999)
    start, end = span
    assert out[:start] == data[:start] and out[start + len(b"127.0.1.1:5999"):] == data[end:]
    assert out[start:start + len(b"127.0.1.1:5999")] == b"127.0.1.1:5999"
    assert data.count(b"127.0.1.1:5999") == 0 and out.count(b"127.0.1.1:5999") == 1


@pytest.mark.parametrize(("name", "sent_by"), [
    ("wsinv", b"192.0.2.2"),            # "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=..." (folded)
    ("longreq", b"sip33.example.com"),  # the first of many Via headers, compact forms after it
    ("mpart01", b"127.0.0.1:5070"),     # with rport
    ("quotbal", b"192.0.2.59:5050"),    # with a port
    ("badinv01", b"192.0.2.15"),        # followed by ";;,;,,"
    ("dblreq", b"192.0.2.125"),         # the REGISTER's, not the trailing INVITE's
    ("transports", b"t1.example.com"),  # the top one of four Vias
])
def test_the_sent_by_found(name: str, sent_by: bytes) -> None:
    case = next(c for c in CASES if c.name == name)
    span = top_via_span(case.data)
    assert span is not None and case.data[span[0]:span[1]] == sent_by
