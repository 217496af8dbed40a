"""callbridge.phone: a programmable SIP phone on the sans-I/O core, for tests, benchmarks and the demo.

    phone = await Phone.start(host="127.0.0.1", port=0, transport="udp", user="1001", password="secret",
                              answer="manual")                     # or answer="auto" (auto_answer_status, ring_delay)
    await phone.register(("127.0.0.1", 5060), expires=300)       # digest 401/407 answered; refreshed; unregister()
    call = await phone.call("sip:2002@127.0.0.1:5070")            # established (CallError with .status if not)
    incoming = (await other.wait_for(IncomingCall)).call          # events: phone.wait_for(...), phone.events()
    await incoming.ring(); await incoming.answer()                # or reject(486) / reject(603)
    await call.hold(); await call.resume()                        # re-INVITE a=sendonly / a=sendrecv, o= version+1
    await call.send_dtmf("12#")                                   # INFO application/dtmf-relay, one per digit
    await call.refer("sip:3003@127.0.0.1:5080")                   # blind; replaces=consult_call for attended
    await call.hangup()                                           # BYE, CANCEL before an answer, 603 if unanswered
    await phone.close()

Media (``Phone.start(media=True)``; see `rtp_endpoint.py`): each call gets its own RTP socket and ``call.rtp``,
which sends G.711 (``codecs=("PCMU", "PCMA")``) every 20 ms where the far end's SDP says, follows re-INVITEs and
hold, and measures what it receives:

    call.rtp.play_tone(1000, dbfs=-12); call.rtp.play_silence(); call.rtp.play(audio); call.rtp.stop()
    heard = call.rtp.heard(t0, phone.now())                       # heard.share(1000), .dominant_hz, .level_dbfs
    await call.rtp.send_digits("12#"); await other.rtp.wait_digits(3)   # RFC 4733 telephone-events
    call.rtp.stats                                                # received, lost, duplicates, jitter_ms

Behaviour (see `phone.py` for the theory of operation): the phone answers re-INVITEs and UPDATEs with a correct
SDP answer (sendonly offer -> recvonly answer, RFC 3264 §6.1), offers in its 2xx to an offer-less INVITE (RFC 3725
flow I) and takes the answer from the ACK, answers INFO, OPTIONS and NOTIFY with 200, follows REFER (202, NOTIFY
100 then the final status, a call to the Refer-To target with its Replaces) unless ``follow_refer=False``, and
accepts an INVITE with Replaces for a live call by answering it and ending the replaced call.

Every call ends with exactly one `CallEnded`; ``phone.calls`` holds the live ones only. Events are kept in a
bounded history (``history=1000`` by default, ``0`` for none) that ``wait_for`` searches before waiting.
"""

from callbridge.phone.call import Call, CallError
from callbridge.phone.events import (
    Answered,
    CallEnded,
    CallFailed,
    DtmfReceived,
    Established,
    Held,
    IncomingCall,
    InfoReceived,
    PhoneEvent,
    ReferReceived,
    Registered,
    RegistrationFailed,
    ReInviteReceived,
    Resumed,
    Ringing,
    TransferDone,
    TransferProgress,
    Unregistered,
)
from callbridge.phone.phone import EventStream, Phone
from callbridge.phone.registration import Registration, RegistrationError
from callbridge.phone.states import CallState, CallStateError

__all__ = [
    "Answered",
    "Call",
    "CallEnded",
    "CallError",
    "CallFailed",
    "CallState",
    "CallStateError",
    "DtmfReceived",
    "Established",
    "EventStream",
    "Held",
    "IncomingCall",
    "InfoReceived",
    "Phone",
    "PhoneEvent",
    "ReInviteReceived",
    "ReferReceived",
    "Registered",
    "Registration",
    "RegistrationError",
    "RegistrationFailed",
    "Resumed",
    "Ringing",
    "TransferDone",
    "TransferProgress",
    "Unregistered",
]
