"""The sequences that left calls behind when SIPp's uac loaded an auto-answering phone, replayed in memory.

A peer shaped like SIPp's built-in uac (its branches, tags and message order) talks raw bytes to one endpoint on
the fake clock of `wire.Wire`; the peer's address is not on the wire, so what the endpoint sends it is only logged.
Under load the phone's UDP receive buffer overflowed (kernel RcvbufErrors) and SIPp's ACK and BYE were lost. SIPp
matches a 200 to any method it has sent so far, so a retransmitted 200 to the INVITE was taken as the 200 to its
BYE: SIPp counted the call successful and stopped retransmitting the BYE. What the endpoint must then do:
- ACK and BYE lost: 2xx retransmitted until 64*T1, then the session ends with our BYE (RFC 3261 §13.3.1.4);
  every table is empty once that BYE's transaction ends.
- BYE before the ACK: the BYE ends the dialog (§15), 2xx retransmission stops, the late ACK is absorbed.
- ACK received, BYE lost for good: nothing in RFC 3261 ends that dialog; a session timer does (RFC 4028 §10).
- BYE for an early dialog (§15): 487 for the INVITE (§15.1.2), which was left in Proceeding before this fix.
"""

from __future__ import annotations

from wire import Wire

from callbridge.sip.dialog import DialogStatus
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import AckReceived, DialogTerminated, RequestReceived, SessionExpired
from callbridge.sip.transaction import ServerTransaction, TxState

PEER = ("127.0.0.9", 5061)
CALL_ID = "14455-6333@127.0.0.9"
FROM_TAG = "6333SIPpTag0014455"


def sipp_request(method: str, branch_index: int, *, cseq: int, to_tag: str | None = None) -> bytes:
    """A request as SIPp's uac sends it (branch z9hG4bK-<pid>-<call>-<message index>)."""
    to = "<sip:service@127.0.0.2:5060>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:service@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.9:5061;branch=z9hG4bK-6333-14455-{branch_index}\r\n"
        f"From: sipp <sip:sipp@127.0.0.9:5061>;tag={FROM_TAG}\r\n"
        f"To: service {to}\r\nCall-ID: {CALL_ID}\r\nCSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@127.0.0.9:5061\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def phone(**options: object) -> tuple[Wire, Endpoint]:
    wire = Wire()
    return wire, wire.add("127.0.0.2", 5060, **options)  # type: ignore[arg-type]


def deliver(wire: Wire, endpoint: Endpoint, data: bytes) -> None:
    endpoint.receive_datagram(data, PEER, wire.now)
    wire.flush()


def to_peer(wire: Wire) -> list[tuple[float, str]]:
    """(time after the start, first line + CSeq method) of everything the endpoint sent the peer."""
    out = []
    for sent in wire.log:
        if sent.dst == PEER:
            cseq = sent.data.split(b"\r\nCSeq: ", 1)[1].split(b"\r\n", 1)[0].decode()
            out.append((round(sent.time - 1000.0, 3), f"{sent.first_line} / {cseq}"))
    return out


def answered_call(wire: Wire, endpoint: Endpoint) -> tuple[ServerTransaction, str]:
    """The INVITE arrives and is answered at once (the phone's answer="auto"); its 200 is lost."""
    wire.drop_next(b"SIP/2.0 200", 1)
    deliver(wire, endpoint, sipp_request("INVITE", 0, cseq=1))
    [incoming] = wire.take(endpoint, RequestReceived)
    endpoint.respond(incoming.transaction, 200, wire.now, body=b"v=0\r\n", content_type="application/sdp")
    wire.flush()
    tag = incoming.transaction.local_tag
    assert tag is not None
    return incoming.transaction, tag


def test_ack_and_bye_lost_after_an_invite_retransmission_end_with_our_bye_after_64_t1() -> None:
    wire, endpoint = phone()
    invite_tx, _tag = answered_call(wire, endpoint)
    wire.advance(0.5)  # SIPp's Timer A: the INVITE again; the Accepted transaction absorbs it (RFC 6026 §7.1)
    deliver(wire, endpoint, sipp_request("INVITE", 0, cseq=1))
    assert wire.take(endpoint, RequestReceived) == []  # no second call
    assert invite_tx.state is TxState.ACCEPTED
    # SIPp gets the retransmitted 200, ACKs and BYEs; both are lost in the phone's full receive buffer, and
    # SIPp takes the next 2xx retransmission as the 200 to its BYE: it sends nothing more.
    wire.advance(64 * 0.5)
    [ended] = wire.take(endpoint, DialogTerminated)
    assert ended.reason == "ack-timeout"
    assert endpoint.dialog_count == 0
    sent = to_peer(wire)
    assert sent[:2] == [(0.0, "SIP/2.0 100 Trying / 1 INVITE"), (0.0, "SIP/2.0 200 OK / 1 INVITE")]
    retransmissions = [t for t, line in sent[2:] if line == "SIP/2.0 200 OK / 1 INVITE"]
    assert retransmissions == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    byes = [t for t, line in sent if line == "BYE sip:sipp@127.0.0.9:5061 SIP/2.0 / 1 BYE"]
    assert byes[:2] == [32.0, 32.5]  # at 64*T1, then Timer E
    wire.advance(64 * 0.5)  # the BYE times out (Timer F): SIPp has finished
    assert endpoint.transaction_count == 0
    assert endpoint.get_timer() is None


def test_bye_before_the_ack_ends_the_dialog_and_the_late_ack_is_absorbed() -> None:
    wire, endpoint = phone()
    invite_tx, tag = answered_call(wire, endpoint)
    wire.advance(0.6)  # the 200 is retransmitted at T1; SIPp's ACK for it is lost, its BYE arrives
    deliver(wire, endpoint, sipp_request("BYE", 7, cseq=2, to_tag=tag))
    [ended] = wire.take(endpoint, DialogTerminated)
    assert ended.reason == "bye"
    assert endpoint.dialog_count == 0
    assert to_peer(wire)[-1] == (0.6, "SIP/2.0 200 OK / 2 BYE")
    deliver(wire, endpoint, sipp_request("ACK", 5, cseq=1, to_tag=tag))  # the ACK, late
    assert wire.take(endpoint, AckReceived) == []
    assert endpoint.stats["unmatched_acks"] == 1
    before = len(to_peer(wire))
    wire.advance(64 * 0.5)
    assert len(to_peer(wire)) == before  # no 2xx retransmission after the BYE
    assert invite_tx.state is TxState.TERMINATED  # Timer L
    assert (endpoint.dialog_count, endpoint.transaction_count) == (0, 0)
    assert endpoint.get_timer() is None


def test_a_bye_lost_for_good_after_the_ack_is_ended_only_by_a_session_timer() -> None:
    wire, endpoint = phone()
    _, tag = answered_call(wire, endpoint)
    wire.advance(0.6)
    deliver(wire, endpoint, sipp_request("ACK", 5, cseq=1, to_tag=tag))
    [ack] = wire.take(endpoint, AckReceived)
    wire.advance(3600)  # the BYE was lost and SIPp never retransmitted it
    assert ack.dialog.state is DialogStatus.CONFIRMED
    assert (endpoint.dialog_count, endpoint.transaction_count) == (1, 0)
    assert endpoint.get_timer() is None  # RFC 3261 has nothing that would end it

    wire, endpoint = phone(session_expires=90)
    _, tag = answered_call(wire, endpoint)
    wire.advance(0.6)
    deliver(wire, endpoint, sipp_request("ACK", 5, cseq=1, to_tag=tag))
    wire.advance(200)
    assert endpoint.dialog_count == 0
    assert [type(e) for e in wire.take(endpoint) if isinstance(e, (DialogTerminated, SessionExpired))]
    wire.advance(64 * 0.5)
    assert endpoint.transaction_count == 0


def test_bye_for_an_early_dialog_answers_its_invite_487_and_the_tables_drain() -> None:
    wire, endpoint = phone()
    deliver(wire, endpoint, sipp_request("INVITE", 0, cseq=1))
    [incoming] = wire.take(endpoint, RequestReceived)
    invite_tx = incoming.transaction
    endpoint.respond(invite_tx, 180, wire.now)
    wire.flush()
    assert invite_tx.local_tag is not None
    deliver(wire, endpoint, sipp_request("BYE", 3, cseq=2, to_tag=invite_tx.local_tag))
    [ended] = wire.take(endpoint, DialogTerminated)
    assert ended.reason == "bye"
    assert to_peer(wire)[-2:] == [(0.0, "SIP/2.0 200 OK / 2 BYE"), (0.0, "SIP/2.0 487 Request Terminated / 1 INVITE")]
    assert invite_tx.state is TxState.COMPLETED
    deliver(wire, endpoint, sipp_request("ACK", 0, cseq=1, to_tag=invite_tx.local_tag))  # ACK for the 487
    assert invite_tx.state is TxState.CONFIRMED
    wire.advance(64 * 0.5)
    assert (endpoint.dialog_count, endpoint.transaction_count) == (0, 0)
    assert endpoint.get_timer() is None
