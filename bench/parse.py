"""Parse benchmark: callbridge's SIP parser against aiosipua's and sippy's, in the same run.

Each parser gets the same ~600-byte INVITE with an SDP body as bytes off the wire, and each time reads what a
B2BUA reads on every message: the method, the top Via's branch, CSeq number and method, Call-ID, From tag and To
tag. The reads are checked against the expected values once before timing, so every parser is measured doing the
same, correct work. Prints messages/s for each (best of several repeats) and callbridge's ratio to the faster peer.

Run: .venv/bin/python bench/parse.py [--seconds 2] [--repeats 5]
(the peers are bench-only dependencies: .venv/bin/pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from callbridge.sip import parse

SDP = (
    b"v=0\r\n"
    b"o=- 3917461234 3917461234 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-524287-1---7d9f3a2b1c;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:1001@127.0.0.1:5070>\r\n"
    b'To: "Agent 1002" <sip:1002@127.0.0.1>\r\n'
    b'From: "Customer" <sip:1001@127.0.0.1>;tag=4a7b2c91\r\n'
    b"Call-ID: 9f8e7d6c5b4a39281706f5e4d3c2b1a0@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, REFER, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
EXPECTED = (
    "INVITE",
    "z9hG4bK-524287-1---7d9f3a2b1c",
    1,
    "INVITE",
    "9f8e7d6c5b4a39281706f5e4d3c2b1a0@127.0.0.1",
    "4a7b2c91",
    None,
)

Reader = Callable[[bytes], tuple[object, ...]]


def read_callbridge(data: bytes) -> tuple[object, ...]:
    msg = parse(data)
    cseq = msg.cseq
    return (msg.method, msg.via.branch, cseq.number, cseq.method, msg.call_id, msg.from_.tag, msg.to.tag)


def make_aiosipua() -> Reader | None:
    try:
        from aiosipua.message import SipMessage
    except ImportError:
        return None

    def read(data: bytes) -> tuple[object, ...]:
        msg = SipMessage.parse(data)
        cseq = msg.cseq
        return (
            msg.method,
            msg.via[0].branch,
            cseq.seq,
            cseq.method,
            msg.call_id,
            msg.from_addr.tag,
            msg.to_addr.tag,
        )

    return read


def make_sippy() -> Reader | None:
    try:
        from sippy.SipRequest import SipRequest
    except ImportError:
        return None

    def read(data: bytes) -> tuple[object, ...]:
        msg = SipRequest(data.decode())  # sippy's transaction manager decodes the datagram the same way
        number, method = msg.getHFBody("cseq").getCSeq()
        return (
            msg.getMethod(),
            msg.getHFBody("via").getBranch(),
            number,
            method,
            str(msg.getHFBody("call-id")),
            msg.getHFBody("from").getTag(),
            msg.getHFBody("to").getTag(),
        )

    return read


def run_once(reader: Reader, seconds: float) -> float:
    """Messages/s over one run of about ``seconds``."""
    batch = 1000
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            reader(INVITE)
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    readers: dict[str, Reader | None] = {
        "callbridge": read_callbridge,
        "aiosipua": make_aiosipua(),
        "sippy": make_sippy(),
    }
    print(f"message: {len(INVITE)} bytes; each parse reads method, top Via branch, CSeq, Call-ID, From/To tags")
    installed: dict[str, Reader] = {}
    for name, reader in readers.items():
        if reader is None:
            print(f"{name:>10}: not installed (pip install -e '.[bench]')")
            continue
        got = reader(INVITE)
        if got != EXPECTED:
            print(f"{name:>10}: wrong reads {got!r}")
            return 1
        installed[name] = reader
    # Repeats are interleaved (callbridge, peer, peer, callbridge, ...) so that a change in machine load affects
    # every parser alike; each keeps its best run.
    results = dict.fromkeys(installed, 0.0)
    for _ in range(args.repeats):
        for name, reader in installed.items():
            results[name] = max(results[name], run_once(reader, args.seconds))
    for name, value in results.items():
        print(f"{name:>10}: {value:>10,.0f} msg/s")
    peers = {name: value for name, value in results.items() if name != "callbridge"}
    if peers:
        peer = max(peers, key=lambda name: peers[name])
        ratio = results["callbridge"] / peers[peer]
        print(f"ratio to the faster peer ({peer}): {ratio:.2f}x (target >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
