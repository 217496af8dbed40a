"""Call transfer by REFER (RFC 3515) with Replaces for attended transfer (RFC 3891), as a phone does it.

Rules
- Transferor: REFER in the call's dialog with ``Refer-To: <target>`` (blind) or
  ``Refer-To: <target?Replaces=call-id%3Bto-tag%3D..%3Bfrom-tag%3D..>`` (attended: our consult call with the
  target; to-tag is the target's tag, from-tag ours, so that the target finds its dialog, RFC 3891 §3). The
  NOTIFYs that follow (Event: refer, message/sipfrag) carry the status line of the transferee's new call: each
  is a `TransferProgress`, the final one (or a terminated subscription) a `TransferDone`.
- Transferee (following, on by default): answer the REFER 202, NOTIFY ``SIP/2.0 100 Trying`` at once, call the
  Refer-To target (with its Replaces header when given), and NOTIFY the final status of that call with
  ``Subscription-State: terminated;reason=noresource`` (RFC 3515 §2.4.5, RFC 6665 §4.1.3). The transferee keeps
  the original call; the transferor is the one that hangs it up.
- Target of an attended transfer: an INVITE with Replaces naming a live call of ours is answered at once and the
  replaced call ends with BYE (reason "replaced"); one naming no call gets 481 (RFC 3891 §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.sip import Request
from callbridge.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from callbridge.phone.call import Call

__all__ = ["SIPFRAG", "notify_headers", "parse_sipfrag_status", "refer_to_value", "split_refer_to"]

SIPFRAG = "message/sipfrag;version=2.0"


def refer_to_value(target: str | URI, replaces: Call | None) -> str:
    uri = parse_uri(target) if isinstance(target, str) else target.copy()
    if replaces is not None:
        dialog = replaces.dialog
        if dialog is None:
            raise ValueError("the call to replace has no dialog yet")
        uri.headers["Replaces"] = f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
    return f"<{uri}>"


def split_refer_to(request: Request) -> tuple[URI, str | None]:
    """The URI to call and the Replaces value it carries (URI headers are not sent as the Request-URI)."""
    refer_to = request.refer_to
    if refer_to is None:
        raise ValueError("REFER without Refer-To")
    uri = refer_to.uri.copy()
    replaces = None
    for name in list(uri.headers):
        if name.lower() == "replaces":
            replaces = uri.headers.pop(name)
    uri.headers = {}
    return uri, replaces


def parse_sipfrag_status(body: bytes) -> int | None:
    """The status code of a message/sipfrag body's first line (``SIP/2.0 200 OK``), or None."""
    first = body.split(b"\n", 1)[0].strip()
    parts = first.split(None, 2)
    if len(parts) >= 2 and parts[0].upper().startswith(b"SIP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def notify_headers(final: bool) -> tuple[tuple[str, str], ...]:
    state = "terminated;reason=noresource" if final else "active;expires=60"
    return (("Event", "refer"), ("Subscription-State", state))


def sipfrag(status: int, reason: str) -> bytes:
    return f"SIP/2.0 {status} {reason}\r\n".encode()
