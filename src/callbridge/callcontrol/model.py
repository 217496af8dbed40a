"""The domain's nouns, gathered in one place to import them from: `callcontrol.model.X` names every one of them.

Two kinds of objects, each in its own module:

- **Directory and records** are frozen dataclasses. The storage adapter reads the directory (operations, agents,
  queues, trunks, auxiliary states, activity codes, DIDs, tokens: `directory`) and writes the records (agent state
  changes, call and leg records, CDRs, transfer records, dispositions, recalls: `records`). Records are snapshots:
  the storage writer thread may hold them while the domain moves on, so they never change after they are made.
- **Live state** (`Call`, `Leg`: `calls`) is mutable and belongs to the call-control service alone; the outside
  world sees it through `CallRecord`/`LegRecord` snapshots and the read-only views of `callbridge.callcontrol.commands`.

Times are wall-clock seconds since the epoch (floats), as the `Clock` port gives them. Phone numbers, extensions
and codes are strings: leading zeros and a leading `+` or `9` matter (agentbox contract, "Request shape").
"""

from __future__ import annotations

from callbridge.callcontrol.calls import Call, CallHistoryEntry, Leg
from callbridge.callcontrol.directory import (
    ActivityCode,
    AfterTransferState,
    Agent,
    AuxState,
    CallerIdPolicy,
    DialPlan,
    Did,
    Operation,
    Queue,
    Token,
    Transport,
    Trunk,
    TrunkCredentials,
)
from callbridge.callcontrol.records import (
    ACW,
    AUX_PREFIX,
    LOGOUT,
    ON_CALL,
    READY,
    RINGING,
    AgentStateChange,
    CallDirection,
    CallRecord,
    CallState,
    Cdr,
    DisplayChange,
    Disposition,
    EndReason,
    HangupBy,
    LegRecord,
    LegRole,
    LegState,
    Recall,
    RecallState,
    RecallType,
    TargetKind,
    TransferKind,
    TransferOutcome,
    TransferRecord,
    TransferState,
    aux_state,
)

__all__ = [
    "ACW", "AUX_PREFIX", "LOGOUT", "ON_CALL", "READY", "RINGING", "ActivityCode", "AfterTransferState", "Agent",
    "AgentStateChange", "AuxState", "Call", "CallDirection", "CallHistoryEntry", "CallRecord", "CallState",
    "CallerIdPolicy", "Cdr", "DialPlan", "Did", "DisplayChange", "Disposition", "EndReason", "HangupBy", "Leg",
    "LegRecord", "LegRole", "LegState", "Operation", "Queue", "Recall", "RecallState", "RecallType", "TargetKind",
    "Token", "TransferKind", "TransferOutcome", "TransferRecord", "TransferState", "Transport", "Trunk",
    "TrunkCredentials",
    "aux_state",
]
