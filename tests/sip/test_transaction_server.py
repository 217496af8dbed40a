"""The server transaction tables (RFC 3261 §17.2, RFC 6026 §8.7) walked with a fake clock, and matching."""

from __future__ import annotations

from txhelpers import Recorder, request, response

from callbridge.sip.headers import Headers
from callbridge.sip.message import Request
from callbridge.sip.timers import TimerConfig
from callbridge.sip.transaction import ServerTransaction, TxInput, TxState, client_key, server_key

CFG = TimerConfig()


def server(method: str, transport: str = "udp") -> tuple[ServerTransaction, Recorder]:
    rec = Recorder()
    req = request(method)
    tx = ServerTransaction(req, server_key(req), rec, CFG, ("127.0.0.1", 5060), transport, ("127.0.0.1", 5060))
    return tx, rec


def test_invite_server_non_2xx_timer_g_doubles_to_t2_until_timer_h() -> None:
    tx, rec = server("INVITE")
    assert tx.state is TxState.PROCEEDING
    tx.send_response(response(tx.request, 486), 0.0)
    assert tx.state is TxState.COMPLETED
    rec.run_until(40.0)
    # Timer G: 0.5, 1, 2, 4, 4, ... (cap T2) until Timer H = 64*T1 = 32 s.
    assert rec.send_times(b"SIP/2.0 486") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert rec.timeouts == [tx]
    assert tx.state is TxState.TERMINATED


def test_invite_server_ack_confirms_then_timer_i() -> None:
    tx, rec = server("INVITE")
    tx.send_response(response(tx.request, 180), 0.0)
    rec.run_until(0.2)
    tx.handle(TxInput.RECV_REQUEST, 0.2)  # INVITE retransmission: the last response again
    assert rec.send_times(b"SIP/2.0 180") == [0.0, 0.2]
    rec.run_until(1.0)
    tx.send_response(response(tx.request, 404), 1.0)
    rec.run_until(1.2)
    tx.handle(TxInput.RECV_ACK, 1.2)
    assert tx.state is TxState.CONFIRMED
    rec.run_until(6.1)
    assert rec.send_times(b"SIP/2.0 404") == [1.0]  # G stopped by the ACK
    assert tx.state is TxState.CONFIRMED
    rec.run_until(6.2)  # Timer I = T4
    assert tx.state is TxState.TERMINATED
    assert rec.timeouts == []


def test_invite_server_over_tcp_no_retransmission_and_no_timer_i() -> None:
    tx, rec = server("INVITE", "tcp")
    tx.send_response(response(tx.request, 486), 0.0)
    rec.run_until(10.0)
    assert rec.send_times(b"SIP/2.0 486") == [0.0]
    tx.handle(TxInput.RECV_ACK, 10.0)
    assert tx.state is TxState.TERMINATED


def test_invite_server_2xx_accepted_then_timer_l() -> None:
    tx, rec = server("INVITE")
    tx.send_response(response(tx.request, 200), 0.0)
    assert tx.state is TxState.ACCEPTED
    rec.run_until(0.5)
    tx.handle(TxInput.RECV_REQUEST, 0.5)  # absorbed: the core retransmits the 2xx itself
    tx.send_response(response(tx.request, 200), 0.5)  # the core's retransmission goes through
    assert rec.send_times(b"SIP/2.0 200") == [0.0, 0.5]
    rec.run_until(31.9)
    assert tx.state is TxState.ACCEPTED
    rec.run_until(32.0)
    assert tx.state is TxState.TERMINATED


def test_non_invite_server_absorbs_then_timer_j() -> None:
    tx, rec = server("OPTIONS")
    assert tx.state is TxState.TRYING
    tx.handle(TxInput.RECV_REQUEST, 0.1)  # nothing to resend yet
    assert rec.sent == []
    rec.run_until(0.2)
    tx.send_response(response(tx.request, 200), 0.2)
    rec.run_until(0.3)
    tx.handle(TxInput.RECV_REQUEST, 0.3)
    assert rec.send_times(b"SIP/2.0 200") == [0.2, 0.3]
    rec.run_until(32.1)
    assert tx.state is TxState.COMPLETED
    rec.run_until(32.2)  # Timer J = 64*T1 over UDP
    assert tx.state is TxState.TERMINATED


def test_non_invite_server_over_tcp_ends_with_final_response() -> None:
    tx, rec = server("OPTIONS", "tcp")
    tx.send_response(response(tx.request, 100), 0.0)
    assert tx.state is TxState.PROCEEDING
    tx.send_response(response(tx.request, 200), 0.1)
    assert tx.state is TxState.TERMINATED
    assert rec.terminated == [tx]


def test_matching_by_branch_sent_by_and_method() -> None:
    invite = request("INVITE", "z9hG4bK1")
    ack = request("ACK", "z9hG4bK1", to_tag="b2")
    cancel = request("CANCEL", "z9hG4bK1")
    other_branch = request("INVITE", "z9hG4bK2")
    assert server_key(ack) == server_key(invite)  # ACK matches the INVITE (§17.2.3)
    assert server_key(cancel) != server_key(invite)  # CANCEL is its own transaction ...
    assert server_key(cancel, "INVITE") == server_key(invite)  # ... paired with the INVITE it cancels
    assert server_key(other_branch) != server_key(invite)
    moved = request("INVITE", "z9hG4bK1")
    moved.headers.set("Via", "SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK1")
    assert server_key(moved) != server_key(invite)  # same branch from another sent-by
    assert client_key(response(invite, 200)) == ("z9hG4bK1", "INVITE")
    assert client_key(response(cancel, 200)) == ("z9hG4bK1", "CANCEL")


def _rfc2543(method: str, to_tag: str | None = None, via: str = "SIP/2.0/UDP 127.0.0.1:5060") -> Request:
    to = "<sip:bob@127.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@127.0.0.2",
        headers=Headers(
            [
                ("Via", via),
                ("From", "<sip:a@127.0.0.1>;tag=x"),
                ("To", to),
                ("Call-ID", "old@1"),
                ("CSeq", f"7 {method}"),
            ]
        ),
    )


def test_rfc2543_fallback_matching() -> None:
    invite = _rfc2543("INVITE")
    assert server_key(_rfc2543("INVITE")) == server_key(invite)  # retransmission
    assert server_key(_rfc2543("ACK", to_tag="t9")) == server_key(invite)  # its ACK (To tag of our response)
    assert server_key(_rfc2543("INVITE", via="SIP/2.0/UDP 127.0.0.5:5060")) != server_key(invite)
    assert server_key(_rfc2543("BYE")) != server_key(invite)
