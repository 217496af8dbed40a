"""Compact records of transactions that only wait out a timer (the `ABSORBING` states of `transaction.py`).

Why: over UDP a transaction lingers after its final response only to absorb retransmissions, for Timer L, J or D
(64*T1 = 32 s) or I, K (T4 = 5 s). Kept whole it holds its parsed request and response, its dialog and whatever
the TU hung on it (``user_data``): at 2,000 calls/s that is ~130,000 transactions and millions of objects that the
garbage collector scans again and again (full collections of seconds, the event loop stalled, peers
retransmitting). So the endpoint keeps, under the transaction's key, a `Record` instead: a tuple of strings, bytes
and a weak reference to the transaction, which the collector leaves alone. A record does what the RFC leaves the
state to do, and nothing else:

    state (its timer)       a request / response retransmission            an ACK
    IST Accepted (L)        INVITE absorbed (RFC 6026 §8.7)                 to the dialog, as the ACK of a 2xx
    IST Confirmed (I)       absorbed (§17.2.1)                              absorbed
    NIST Completed (J)      the last response re-sent (§17.2.2)             -
    NICT Completed (K)      responses absorbed (§17.1.2.2)                  -
    ICT Completed (D)       3xx-6xx: the ACK re-sent; 1xx/2xx absorbed      -

When its timer comes due the record leaves the table and the transaction, if the TU still holds it, takes the
timer as its table says (so it reads Terminated as it always did). Heap entries for records name the key, not the
transaction, so that nothing but the TU keeps the transaction alive.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

from callbridge.sip.transaction import Transaction, TxKind, TxState

__all__ = ["CLIENT_RECORD", "SERVER_RECORD", "Record", "record_of"]

Addr = tuple[str, int]

# Timer names of the heap entries ``(deadline, seq, key, name)`` of records, by table.
SERVER_RECORD = "server-record"
CLIENT_RECORD = "client-record"


class Record(NamedTuple):
    """An absorbing transaction reduced to what its state still does (module docstring)."""

    kind: TxKind
    state: TxState
    deadline: float  # when its timer fires; the heap entry is live while this matches
    resend: bytes | None  # the last response (NIST) or the ACK (ICT) to send again
    dest: Addr
    transport: str
    tx: weakref.ReferenceType[Transaction]


def record_of(tx: Transaction, deadline: float) -> Record:
    return Record(tx.kind, tx.state, deadline, tx.last_sent, tx.dest, tx.transport, weakref.ref(tx))
