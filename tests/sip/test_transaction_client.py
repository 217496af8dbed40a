"""The client transaction tables (RFC 3261 §17.1, RFC 6026 §8.4) walked with a fake clock."""

from __future__ import annotations

import pytest
from txhelpers import Recorder, request, response

from callbridge.sip.message import Request
from callbridge.sip.parser import parse
from callbridge.sip.timers import TimerConfig
from callbridge.sip.transaction import ClientTransaction, TransactionStateError, TxInput, TxState

CFG = TimerConfig()  # T1 = 0.5 s, T2 = 4 s, T4 = 5 s


def client(method: str, transport: str = "udp") -> tuple[ClientTransaction, Recorder]:
    rec = Recorder()
    tx = ClientTransaction(request(method), rec, CFG, ("127.0.0.3", 5060), transport)
    tx.start(0.0)
    return tx, rec


def test_non_invite_udp_retransmission_schedule_then_timer_f() -> None:
    tx, rec = client("OPTIONS")
    rec.run_until(40.0)
    # Timer E: 0.5, 1, 2, 4, 4, 4 ... (doubling, capped at T2 = 4 s) until Timer F = 64*T1 = 32 s.
    assert rec.send_times(b"OPTIONS") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert rec.timeouts == [tx]
    assert tx.state is TxState.TERMINATED
    assert rec.terminated == [tx]


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    tx, rec = client("OPTIONS")
    rec.run_until(0.6)  # one retransmission at 0.5; next due at 1.5
    tx.receive_response(response(tx.request, 180), 0.6)
    assert tx.state is TxState.PROCEEDING
    rec.run_until(12.0)
    # E keeps its doubled schedule (next at 1.5), then resets to T2 each time it fires in Proceeding.
    assert rec.send_times(b"OPTIONS") == [0.0, 0.5, 1.5, 5.5, 9.5]


def test_non_invite_final_response_then_timer_k() -> None:
    tx, rec = client("BYE")
    tx.receive_response(response(tx.request, 200), 0.1)
    assert tx.state is TxState.COMPLETED
    assert [m.status for m in rec.to_tu] == [200]  # type: ignore[union-attr]
    tx.receive_response(response(tx.request, 200), 0.2)  # retransmission absorbed
    assert len(rec.to_tu) == 1
    rec.run_until(5.0)
    assert tx.state is TxState.COMPLETED
    rec.run_until(5.1)  # Timer K = T4 = 5 s after 0.1
    assert tx.state is TxState.TERMINATED
    assert rec.send_times(b"BYE") == [0.0]  # no retransmission after the response
    assert rec.timeouts == []


def test_non_invite_over_tcp_has_no_retransmission_and_no_timer_k() -> None:
    tx, rec = client("OPTIONS", "tcp")
    rec.run_until(10.0)
    assert rec.send_times(b"OPTIONS") == [0.0]
    tx.receive_response(response(tx.request, 200), 10.0)
    assert tx.state is TxState.TERMINATED  # Timer K is zero over TCP


def test_non_invite_timer_f_over_tcp() -> None:
    tx, rec = client("OPTIONS", "tcp")
    rec.run_until(31.9)
    assert rec.timeouts == []
    rec.run_until(32.0)
    assert rec.timeouts == [tx]
    assert rec.send_times(b"OPTIONS") == [0.0]


def test_invite_timer_a_doubles_until_timer_b() -> None:
    tx, rec = client("INVITE")
    rec.run_until(40.0)
    # Timer A: 0.5, 1, 2, 4, 8, 16 (no cap) until Timer B = 32 s.
    assert rec.send_times(b"INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert rec.timeouts == [tx]
    assert tx.state is TxState.TERMINATED


def test_invite_provisional_stops_retransmission_and_timer_b() -> None:
    tx, rec = client("INVITE")
    tx.receive_response(response(tx.request, 100), 0.2)
    assert tx.state is TxState.PROCEEDING
    rec.run_until(100.0)
    assert rec.send_times(b"INVITE") == [0.0]
    assert rec.timeouts == []
    assert tx.state is TxState.PROCEEDING


def test_invite_non_2xx_acked_inside_transaction_then_timer_d() -> None:
    tx, rec = client("INVITE")
    tx.receive_response(response(tx.request, 180), 0.1)
    tx.receive_response(response(tx.request, 486), 1.0)
    assert tx.state is TxState.COMPLETED
    acks = [parse(d) for t, d in rec.sent if d.startswith(b"ACK")]
    assert len(acks) == 1
    ack = acks[0]
    assert isinstance(ack, Request)
    # §17.1.1.3: same branch and Request-URI, To with the response's tag, Route from the request, CSeq ACK.
    assert ack.via.branch == tx.request.via.branch
    assert str(ack.uri) == str(tx.request.uri)
    assert ack.to.tag == "b2"
    assert ack.headers.get_all("Route") == ["<sip:127.0.0.3;lr>"]
    assert ack.cseq.number == 1 and ack.cseq.method == "ACK"
    tx.receive_response(response(tx.request, 486), 2.0)  # retransmitted final: ACK again, TU not told again
    assert len(rec.send_times(b"ACK")) == 2
    assert [m.status for m in rec.to_tu] == [180, 486]  # type: ignore[union-attr]
    rec.run_until(32.9)
    assert tx.state is TxState.COMPLETED
    rec.run_until(33.0)  # Timer D = 32 s over UDP
    assert tx.state is TxState.TERMINATED


def test_invite_non_2xx_over_tcp_terminates_at_once() -> None:
    tx, rec = client("INVITE", "tcp")
    tx.receive_response(response(tx.request, 603), 1.0)
    assert tx.state is TxState.TERMINATED
    assert len(rec.send_times(b"ACK")) == 1


def test_invite_2xx_accepted_passes_retransmissions_then_timer_m() -> None:
    tx, rec = client("INVITE")
    tx.receive_response(response(tx.request, 200), 0.3)
    assert tx.state is TxState.ACCEPTED
    tx.receive_response(response(tx.request, 200), 0.8)  # RFC 6026: to the TU, which re-sends its ACK
    assert [m.status for m in rec.to_tu] == [200, 200]  # type: ignore[union-attr]
    assert rec.send_times(b"ACK") == []  # the ACK for 2xx is the TU core's, not the transaction's
    rec.run_until(32.2)
    assert tx.state is TxState.ACCEPTED
    rec.run_until(32.3)  # Timer M = 64*T1
    assert tx.state is TxState.TERMINATED
    assert rec.send_times(b"INVITE") == [0.0]


def test_transport_error_terminates() -> None:
    tx, rec = client("INVITE")
    tx.transport_error(0.1)
    assert rec.transport_errors == [tx]
    assert tx.state is TxState.TERMINATED


def test_input_missing_from_table_raises() -> None:
    tx, _ = client("OPTIONS")
    with pytest.raises(TransactionStateError):
        tx.handle(TxInput.TU_2XX, 0.1)
    with pytest.raises(TransactionStateError):
        tx.handle(TxInput.TIMER_A, 0.1)


def test_stale_timer_entry_is_ignored() -> None:
    tx, rec = client("OPTIONS")
    tx.receive_response(response(tx.request, 200), 0.1)  # stops E and F; their heap entries stay (lazy deletion)
    rec.run_until(1.0)
    assert rec.send_times(b"OPTIONS") == [0.0]
    assert rec.timeouts == []
