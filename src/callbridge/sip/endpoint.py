"""The SIP endpoint: the sans-I/O facade that the transport drives and the TU (phone, B2BUA) uses.

Shape (as aioquic): bytes and the current time go in (`receive_datagram`, `handle_timer`), events
(`next_event`), datagrams (`datagrams_to_send`) and the next deadline (`get_timer`) come out. No clock, no socket,
no DNS; all randomness (branches, tags, Call-IDs, the §14.1 glare delay) comes from the `random.Random` given.

Theory of operation
- Requests in (§8.2, §17.2.3): the top Via is stamped (received/rport, `routing.stamp_via`), the request matched
  to a server transaction (a retransmission is absorbed by it) or a new one is made. CANCEL is answered here (200,
  and 487 for the INVITE it cancels, §9.2); ACK goes to its INVITE server transaction (non-2xx) or to its dialog
  (2xx). A request with a To tag must match a dialog (else 481, §12.2.2) and be in order (else 500); an INVITE
  while one is in progress in the other direction gets 491, in the same direction 500 (§14.2); a Session-Expires
  below our Min-SE gets 422 (RFC 4028). BYE is answered 200 here. Everything else is a `RequestReceived`.
- Responses in: matched to a client transaction by branch + CSeq method (§17.1.3). Responses to INVITE create
  early and confirmed dialogs (§12.1.2); a 2xx is ACKed (§13.2.2.4) and the ACK re-sent for each retransmitted
  2xx; a 491 to a re-INVITE schedules its retry after the §14.1 random delay; 408/481 in a dialog end it.
- The TU's responses (`respond`): To tag, Contact and Record-Route for dialog-creating responses (§12.1.1), the
  session timer for 2xx to INVITE/UPDATE; a 2xx to INVITE is retransmitted from T1 doubling to T2 until its ACK,
  and after 64*T1 without ACK the session ends with BYE (§13.3.1.4).
- Timers of transactions and dialogs live in one heap of ``(deadline, seq, owner, name)`` entries with lazy
  deletion: an entry is live only while ``owner.timers[name] == deadline``, so cancelling or re-arming is a dict
  write and every operation stays O(log n). A dialog's entries name its id (looked up in the dialog table) and a
  transaction's refer to it weakly, so an ended dialog or transaction is freed at once, not when its last entry
  comes due (Timer C's, 3 min after an INVITE's last provisional response).
- A dialog keeps the INVITE transaction that created it only while it is early (CANCEL for ours, 487 for theirs
  on BYE); once confirmed it keeps no parsed message: Call-ID, tags, URIs, CSeqs, route set and remote target
  (§12), the bytes of an unacknowledged 2xx or of the last ACK, and the last SDP offer for a refresh.
- A transaction that only waits out a timer (Timer L, J, D, K, I) is replaced in its table by a compact `Record`
  (`callbridge.sip.absorbing`): under load, whole transactions kept 32 s are what the garbage collector would scan.
- Finished transactions and dialogs leave their tables at once (`transaction_count`, `dialog_count`; a record
  counts as a transaction until its timer fires).
"""

from __future__ import annotations

import heapq
import weakref

from callbridge.sip.absorbing import CLIENT_RECORD, SERVER_RECORD
from callbridge.sip.core import CONTACT_METHODS, REPLACED_ON_RETRY, HeaderList
from callbridge.sip.dialog import Dialog, DialogError, DialogState, DialogStatus
from callbridge.sip.errors import ParseError
from callbridge.sip.events import SessionExpired
from callbridge.sip.headers import Headers, header_key
from callbridge.sip.message import Request
from callbridge.sip.parser import parse
from callbridge.sip.routing import Addr, error_response_for_unparsable
from callbridge.sip.session_timer import timer_headers
from callbridge.sip.transaction import ClientTransaction, TransactionStateError, TxInput
from callbridge.sip.uac import UacCore
from callbridge.sip.uas import UasCore
from callbridge.sip.uri import URI, parse_uri

__all__ = ["Endpoint"]


class Endpoint(UasCore, UacCore):
    """One SIP user agent core with its transaction and dialog layers; see the module docstring."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float, transport: str = "udp") -> None:
        try:
            message = parse(data)
            if isinstance(message, Request):
                self._on_request(message, addr, now, transport)
            else:
                self._on_response(message, now)
        except (TransactionStateError, DialogError):
            # A message no state allows (a peer's protocol error that slipped past matching): drop it rather
            # than let one peer stop the transport's loop; counted so that it shows.
            self.stats["protocol_errors"] += 1
        except ParseError as error:
            self.stats["parse_errors"] += 1
            if error.status is not None:
                formed = error_response_for_unparsable(data, error.status, addr, transport)
                if formed is not None:
                    self.stats["responses_sent_stateless"] += 1
                    self._out.append((formed[0], formed[1], transport))

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, owner, name = heapq.heappop(heap)
            if isinstance(owner, weakref.ReferenceType):
                tx = owner()
                if tx is not None:  # else nothing held it any more: it ended, and its timers with it
                    assert isinstance(name, TxInput)
                    tx.fire(name, deadline, now)
                continue
            assert isinstance(name, str)
            if name in (SERVER_RECORD, CLIENT_RECORD):
                self._record_expired(owner, name, deadline, now)
                continue
            dialog = self._dialogs.get(owner)  # type: ignore[arg-type]
            if dialog is not None and dialog.timers.get(name) == deadline:
                del dialog.timers[name]
                self._dialog_timer(dialog, name, now)

    def create_request(
        self,
        method: str,
        uri: URI | str,
        *,
        from_uri: URI | str,
        to_uri: URI | str | None = None,
        from_display: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
    ) -> Request:
        """An out-of-dialog request (§8.1.1) ready for `send_request`: From with a new tag, Call-ID, CSeq."""
        target = parse_uri(uri) if isinstance(uri, str) else uri
        display = f'"{from_display}" ' if from_display else ""
        fields: list[tuple[str, str]] = [
            ("Max-Forwards", "70"),
            ("From", f"{display}<{from_uri}>;tag={self._token(48)}"),
            ("To", f"<{to_uri if to_uri is not None else target}>"),
            ("Call-ID", call_id if call_id is not None else f"{self._token(96)}@{self.host}"),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in CONTACT_METHODS:
            fields.append(("Contact", self.contact(target.transport or "udp")))
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        fields.extend(headers)
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method, target, headers=Headers(fields), body=body)

    def invite(
        self,
        uri: URI | str,
        now: float,
        *,
        from_uri: URI | str,
        to_uri: URI | str | None = None,
        from_display: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
        dest: Addr | None = None,
        transport: str | None = None,
        session_expires: int | None = None,
    ) -> ClientTransaction:
        """Start a call: an INVITE offering a session timer when configured (RFC 4028 §7.1)."""
        interval = session_expires if session_expires is not None else self.session_expires
        extra = [*headers, *timer_headers(session_expires=interval, min_se=None if interval is None else self.min_se,
                                          supported=True)]
        request = self.create_request(
            "INVITE", uri, from_uri=from_uri, to_uri=to_uri, from_display=from_display, body=body,
            content_type=content_type, headers=extra,
        )
        return self.send_request(request, now, dest=dest, transport=transport)

    def retry_request(self, tx: ClientTransaction, now: float, *, headers: HeaderList = ()) -> ClientTransaction:
        """Re-send `tx`'s request with CSeq + 1 and a new branch (after 401/407 with credentials, or 422),
        replacing the headers named in `headers` (§8.1.3.5, §22.2)."""
        old = tx.request
        replaced = {header_key(name) for name, _ in headers} | REPLACED_ON_RETRY
        dialog = tx.dialog
        cseq = dialog.next_cseq() if dialog is not None else old.cseq.number + 1
        fields = [(name, value) for key, name, value in old.headers.fields() if key not in replaced]
        fields.insert(0, ("CSeq", f"{cseq} {old.method}"))
        fields.extend(headers)
        request = Request(old.method, old.uri_text, headers=Headers(fields), body=old.body)
        new = self.send_request(request, now, dest=tx.dest, transport=tx.transport)
        new.dialog = dialog
        if dialog is not None and old.method == "INVITE":
            dialog.outgoing_invite = new
        return new

    def bye(self, dialog: Dialog, now: float) -> ClientTransaction | None:
        """Hang up: BYE a confirmed dialog, CANCEL the INVITE of an early one we started."""
        if dialog.state is DialogStatus.EARLY:
            creating = dialog.creating_tx
            if isinstance(creating, ClientTransaction):
                self.cancel(creating, now)
                return None
            raise DialogError("an early dialog of ours is ended by a final response (respond), not BYE")
        return self.send_in_dialog(dialog, "BYE", now)

    def dialog_state(self, dialog: Dialog) -> DialogState:
        return dialog.export()

    def restore_dialog(self, state: DialogState) -> Dialog:
        """Rebuild a confirmed dialog from storage (after a restart) so that the TU can `bye` it."""
        dialog = Dialog.restore(state)
        self._dialogs[dialog.id] = dialog
        return dialog

    def _dialog_timer(self, dialog: Dialog, name: str, now: float) -> None:
        if dialog.terminated:
            return
        if name == "2xx":
            pending = dialog.pending_2xx
            if pending is None:
                return
            cseq, data, dest, transport, interval = pending
            self._out.append((data, dest, transport))
            interval = min(interval * 2, self.timers.t2)
            dialog.pending_2xx = (cseq, data, dest, transport, interval)
            self._arm_dialog(dialog, "2xx", now + interval)
        elif name == "2xx_giveup":
            dialog.pending_2xx = None
            dialog.timers.pop("2xx", None)
            self._end_dialog(dialog, now, "ack-timeout", send_bye=True)
        elif name == "glare":
            retry = dialog.glare_retry
            if retry is None:
                return
            if dialog.outgoing_invite is not None or dialog.incoming_invite is not None:
                self._arm_dialog(dialog, "glare", now + self._glare_delay(dialog))  # the peer's INVITE won
                return
            method, body, content_type, headers = retry
            self.send_in_dialog(dialog, method, now, body=body, content_type=content_type, headers=headers)
        elif name == "st_refresh":
            if dialog.outgoing_invite is None and dialog.incoming_invite is None:
                if dialog.refresh_by_invite:
                    self._refresh_with_invite(dialog, now)
                else:
                    self.send_in_dialog(dialog, "UPDATE", now)
        elif name == "st_expire":
            self._events.append(SessionExpired(dialog))
            self._end_dialog(dialog, now, "session-expired", send_bye=True)
