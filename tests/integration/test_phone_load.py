"""Load: SIPp's uac at 1,000 calls/s for 5,000 calls against one auto-answering phone (UDP, loopback only).

Every call must succeed in SIPp's statistics, and once SIPp has finished the phone must have no live call and its
endpoint's tables must drain: dialogs at once, transactions when Timers L and J (64*T1 = 32 s with the default
T1) have absorbed the last retransmissions.

The scenario is SIPp's built-in uac with one change: each response is matched to its own transaction
(``start_txn``/``response_txn``/``ack_txn``). The built-in one matches a 200 to any method it has sent so far, so
when the phone's receive buffer overflows and the BYE is lost, a retransmitted 200 to the INVITE is counted as
the 200 to the BYE: SIPp reports the call successful, stops retransmitting its BYE, and the phone's call is left
confirmed (tests/sip/test_load_regressions.py replays that sequence). With transaction matching, "successful"
means the phone really answered the BYE, so a call the phone fails to end is a failure here.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from callbridge.phone import CallEnded, Phone
from peers.sipp import Sipp

# serial: 1,000 calls/s against one phone; on a shared core its receive buffer overflows (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(180), pytest.mark.serial]

CALLS = 5000
RATE = 1000
DRAIN_SECONDS = 40.0  # Timer L / Timer J (32 s) after the last call, with margin

UAC_WITH_TRANSACTIONS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac with transaction-matched responses">
  <send retrans="500" start_txn="invite">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  <recv response="200" rtd="true" response_txn="invite"/>
  <send ack_txn="invite">
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
    ]]>
  </send>
  <pause/>
  <send retrans="500" start_txn="bye">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true" response_txn="bye"/>
</scenario>
"""


async def wait_until(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate()`` held (polled every 0.1 s); raises TimeoutError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_sipp_uac_load_against_an_auto_answering_phone_leaves_nothing_behind(tmp_path: Path) -> None:
    scenario = tmp_path / "uac_transactions.xml"
    scenario.write_text(UAC_WITH_TRANSACTIONS)
    phone = await Phone.start(user="1001", answer="auto", history=0)
    endpoint = phone.endpoint
    ended: dict[tuple[str, str], int] = {}
    stream = phone.events(maxsize=CALLS * 8)

    async def collect() -> None:
        async for event in stream:
            if isinstance(event, CallEnded):
                key = (event.reason, event.by)
                ended[key] = ended.get(key, 0) + 1

    collector = asyncio.create_task(collect())
    try:
        uac = Sipp(scenario, remote=phone.address, calls=CALLS, rate=RATE, timeout=60, outer_timeout=90,
                   buff_size=4 * 1024 * 1024, workdir=tmp_path / "uac")
        result = await uac.run_async()
        assert result.returncode == 0, result.summary()
        assert (result.created, result.successful, result.failed) == (CALLS, CALLS, 0), result.summary()
        # SIPp has its 200 to every BYE: the phone ended every call.
        await wait_until(lambda: not phone.calls and endpoint.dialog_count == 0, 5.0)
        await wait_until(lambda: sum(ended.values()) == CALLS, 5.0)
        assert ended == {("bye", "remote"): CALLS}
        drained = await wait_until(lambda: endpoint.transaction_count == 0, DRAIN_SECONDS)
        print(f"{result.summary().splitlines()[0]}; transactions drained {drained:.1f} s after SIPp; "
              f"endpoint stats {endpoint.stats}")
        assert endpoint.dialog_count == 0 and phone.calls == []
        assert endpoint.stats["protocol_errors"] == 0 and endpoint.stats["parse_errors"] == 0
    finally:
        collector.cancel()
        stream.close()
        await phone.close()
