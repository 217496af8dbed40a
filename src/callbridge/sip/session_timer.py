"""Session timers (RFC 4028): negotiation of the interval and the refresher, and when to refresh or give up.

Rules
- The UAC may offer ``Session-Expires: N[;refresher=uac|uas]`` with ``Supported: timer`` (§7.1). A UAS that finds
  N below its ``Min-SE`` answers 422 with its ``Min-SE`` (§8.1). Otherwise its 2xx carries the interval and the
  refresher, chosen by the UAC's ``refresher`` when given, else the UAC when it supports ``timer``, else itself
  (§9); ``Require: timer`` is added when the UAC supports it.
- "uac" and "uas" name the roles in the transaction that negotiated the interval, not in the dialog: the side that
  sent the last successful INVITE/UPDATE is "uac" (§7.4, §9).
- The refresher refreshes at half the interval (§10); both sides give up at ``interval - min(32, interval/3)``
  after the last refresh (§10) by sending BYE, so a dialog whose peer vanished ends by itself.
- Every session-timer header callbridge sends (the endpoint's and the B2BUA's INVITEs, refreshes, 2xx and 422,
  the phone's calls) is built by `timer_headers`, in one order: ``Supported: timer``, ``Session-Expires``,
  ``Min-SE``, ``Require: timer``.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sip.message import Message

__all__ = ["SessionTimer", "expiry_delay", "refresh_delay", "supports_timer", "timer_headers"]

MIN_SE_FLOOR = 90  # RFC 4028 §4: Min-SE is never below 90 seconds


def refresh_delay(interval: int) -> float:
    return interval / 2


def expiry_delay(interval: int) -> float:
    return interval - min(32.0, interval / 3)


def timer_headers(*, session_expires: int | None = None, refresher: str | None = None, min_se: int | None = None,
                  supported: bool = False, require: bool = False) -> list[tuple[str, str]]:
    """The RFC 4028 headers of a message we send: ``Supported: timer`` (§7.1: we do session timers),
    ``Session-Expires: N[;refresher=uac|uas]`` (§4), ``Min-SE: N`` (§5: an initial INVITE's, or a 422's),
    ``Require: timer`` (§9: a 2xx to a UAC that supports them)."""
    headers: list[tuple[str, str]] = [("Supported", "timer")] if supported else []
    if session_expires is not None:
        value = str(session_expires) if refresher is None else f"{session_expires};refresher={refresher}"
        headers.append(("Session-Expires", value))
    if min_se is not None:
        headers.append(("Min-SE", str(min_se)))
    if require:
        headers.append(("Require", "timer"))
    return headers


def supports_timer(message: Message) -> bool:
    for name in ("Supported", "Require"):
        for value in message.headers.get_all(name):
            if value.strip().lower() == "timer":
                return True
    return False


@dataclass(slots=True)
class SessionTimer:
    """The negotiated state of one dialog: the interval and whether this side refreshes."""

    interval: int
    we_refresh: bool

    @classmethod
    def from_2xx(cls, response: Message, we_sent_request: bool) -> SessionTimer | None:
        """The session timer a 2xx to an INVITE/UPDATE sets up (None when it carries no Session-Expires)."""
        se = response.session_expires
        if se is None:
            return None
        refresher = se.refresher or "uas"
        # The request's sender is "uac" of this transaction.
        we_refresh = (refresher == "uac") == we_sent_request
        return cls(se.delta, we_refresh)

    def refresher(self, we_send: bool) -> str:
        """The refresher a request (we_send=True) or response we send names: "uac" is that message's sender."""
        return "uac" if self.we_refresh == we_send else "uas"
