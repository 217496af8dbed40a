"""The garbage collector's settings for a process that serves SIP (`callbridge serve`, `callbridge.phone`).

Why: CPython's cyclic collector runs a young-generation pass every 700 net allocations of container objects, and
a full pass whenever what survived grew by a quarter. A SIP endpoint allocates a few dozen containers per message
(parsed headers, URIs, transactions): at thousands of messages per second the default makes hundreds of passes a
second, each one promoting the objects of the calls then in progress to the older generations, which full passes
rescan whole. Those passes stall the event loop; past T1 (500 ms, RFC 3261 §17) peers retransmit, which adds load.

- ``gc.freeze()`` once start-up is done moves what start-up made (modules, classes, settings: tens of thousands of
  objects that live as long as the process) out of every later pass;
- the young threshold goes from 700 to `YOUNG_THRESHOLD`: a pass every 10,000 allocations costs a few ms, and by
  then most of a message's objects were freed by reference counting (the SIP core keeps no cycles, and a
  transaction waiting out its timer is a compact record, `callbridge.sip.absorbing`), so
  far fewer survive into the generations that full passes scan.

Applied once per process; later calls do nothing.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_collector"]

YOUNG_THRESHOLD = 10_000
_tuned = False


def tune_collector() -> None:
    """Freeze what exists now and raise the young-generation threshold (module docstring); once per process."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)
