"""How a running node answers what it does not handle (RFC 3261 §8.2.1, §8.2.2): a method it does not know is
501, one it knows but does not allow here 405, both with Allow; a Request-URI scheme other than sip, sips and tel
is 416; a Require naming an option tag other than timer and norefersub is 420 with Unsupported."""

from __future__ import annotations

from pathlib import Path

import pytest
from callnode import start_node
from rawsip import RawSip

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


async def test_methods_schemes_and_option_tags(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    raw = RawSip("127.0.0.7", node.sip_address)
    try:
        for method, status in (("NEWMETHOD", 501), ("MESSAGE", 405), ("SUBSCRIBE", 405)):
            answer = await raw.ask(method)
            assert answer is not None and answer.status == status, (method, answer)
            allowed = set(answer.headers.get_all("Allow"))
            assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "REFER"} <= allowed, allowed

        answer = await raw.ask("OPTIONS", extra="Require: nothingSupportsThis, timer\r\nProxy-Require: x")
        assert answer is not None and answer.status == 420
        assert answer.headers.get_all("Unsupported") == ["nothingSupportsThis"]
        answer = await raw.ask("OPTIONS", extra="Require: norefersub, timer")
        assert answer is not None and answer.status == 200

        host, port = node.sip_address
        for uri, status in (("tel:+15551234567", 200), ("soap.beep://127.0.0.1:3002", 416),
                            ("nobodyKnowsThisScheme:totallyopaquecontent", 416)):
            data, call_id = raw.message("OPTIONS")
            raw.sock.sendto(data.replace(f"OPTIONS sip:probe@{host}:{port} ".encode(), f"OPTIONS {uri} ".encode(),
                                         1), node.sip_address)
            answer = await raw.response(call_id, 1.0)
            assert answer is not None and answer.status == status, (uri, answer)
    finally:
        raw.close()
        await node.close()
