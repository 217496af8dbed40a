"""Dialog construction and in-dialog requests (RFC 3261 §12), without an endpoint."""

from __future__ import annotations

import pytest

from callbridge.sip.dialog import Dialog, DialogError, DialogInput, DialogState, DialogStatus
from callbridge.sip.headers import Headers
from callbridge.sip.message import Request, make_response


def invite() -> Request:
    return Request(
        "INVITE",
        "sip:bob@127.0.0.2",
        headers=Headers(
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"),
                ("From", '"Alice" <sip:alice@127.0.0.1>;tag=a1'),
                ("To", "<sip:bob@127.0.0.2>"),
                ("Call-ID", "c1"),
                ("CSeq", "10 INVITE"),
                ("Contact", "<sip:alice@127.0.0.1:5062>"),
                ("Record-Route", "<sip:127.0.0.10;lr>, <sip:127.0.0.11;lr>"),
            ]
        ),
    )


def answer(status: int = 200):  # type: ignore[no-untyped-def]
    request = invite()
    response = make_response(request, status, to_tag="b1")
    for value in request.headers.get_all("Record-Route"):
        response.headers.add("Record-Route", value)
    response.headers.add("Contact", "<sip:bob@127.0.0.2:5070>")
    return request, response


def test_uac_dialog_reverses_the_route_set_and_takes_the_contact() -> None:
    request, response = answer()
    dialog = Dialog.for_uac(request, response)
    assert dialog.id == ("c1", "a1", "b1")
    assert dialog.state is DialogStatus.CONFIRMED
    assert dialog.route_set == ["<sip:127.0.0.11;lr>", "<sip:127.0.0.10;lr>"]
    assert str(dialog.remote_target) == "sip:bob@127.0.0.2:5070"
    assert (dialog.local_seq, dialog.remote_seq) == (10, None)
    bye = dialog.build_request("BYE", dialog.next_cseq(), "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2", None)
    assert str(bye.uri) == "sip:bob@127.0.0.2:5070"  # loose routing: Request-URI = remote target
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.11;lr>", "<sip:127.0.0.10;lr>"]
    assert bye.from_.tag == "a1" and bye.to.tag == "b1" and bye.from_.display == "Alice"
    assert bye.cseq.number == 11 and bye.cseq.method == "BYE"


def test_uas_dialog_keeps_the_route_set_in_order() -> None:
    request, response = answer(180)
    dialog = Dialog.for_uas(request, response, "b1")
    assert dialog.id == ("c1", "b1", "a1")
    assert dialog.state is DialogStatus.EARLY
    assert dialog.route_set == ["<sip:127.0.0.10;lr>", "<sip:127.0.0.11;lr>"]
    assert str(dialog.remote_target) == "sip:alice@127.0.0.1:5062"
    assert dialog.remote_seq == 10


def test_strict_routing_puts_the_remote_target_last() -> None:
    request, response = answer()
    dialog = Dialog.for_uac(request, response)
    dialog.route_set = ["<sip:127.0.0.20>", "<sip:127.0.0.21;lr>"]  # first route without lr: a strict router
    uri, routes = dialog.target_and_routes()
    assert str(uri) == "sip:127.0.0.20"
    assert routes == ["<sip:127.0.0.21;lr>", "<sip:bob@127.0.0.2:5070>"]


def test_remote_cseq_order() -> None:
    request, response = answer()
    dialog = Dialog.for_uas(request, response, "b1")
    later = invite()
    later.headers.set("CSeq", "11 INFO")
    assert dialog.check_remote_cseq(later) and dialog.remote_seq == 11
    earlier = invite()
    earlier.headers.set("CSeq", "9 INFO")
    assert not dialog.check_remote_cseq(earlier) and dialog.remote_seq == 11


def test_table_rejects_inputs_after_termination() -> None:
    request, response = answer(183)
    dialog = Dialog.for_uac(request, response)
    dialog.handle(DialogInput.CONFIRM)
    dialog.handle(DialogInput.TERMINATE)
    with pytest.raises(DialogError):
        dialog.handle(DialogInput.CONFIRM)


def test_identity_round_trip() -> None:
    request, response = answer()
    dialog = Dialog.for_uac(request, response)
    state = dialog.export()
    assert state.to_dict() == {
        "call_id": "c1",
        "local_tag": "a1",
        "remote_tag": "b1",
        "local_seq": 10,
        "remote_seq": None,
        "local_uri": '"Alice" <sip:alice@127.0.0.1>',
        "remote_uri": "<sip:bob@127.0.0.2>",
        "remote_target": "sip:bob@127.0.0.2:5070",
        "route_set": ["<sip:127.0.0.11;lr>", "<sip:127.0.0.10;lr>"],
        "secure": False,
        "is_uac": True,
    }
    restored = Dialog.restore(DialogState.from_dict(state.to_dict()))
    assert restored.export() == state
    assert restored.state is DialogStatus.CONFIRMED
