"""What the agentbox verbs answer on success, typed.

Every result keeps the envelope's ``code`` (an int, whether the server sent ``"200"`` or ``200``), ``msg`` and
``data`` (an empty mapping when the server sent none, or null). The typed fields are read leniently: a field the
server left out is None rather than an error, since the Wolkvox cloud documents ``data`` loosely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Toggle messages of hold and mute (ours, docs/agentbox-contract.md): message -> the state after the toggle.
_TOGGLES: Mapping[str, bool] = {
    "call has been put on hold": True,
    "call has been taken off hold": False,
    "microphone has been muted": True,
    "microphone has been unmuted": False,
}


@dataclass(frozen=True, kw_only=True)
class AgentboxResult:
    code: int
    msg: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TransferResult(AgentboxResult):
    """``conn_id`` identifies the customer's call, which keeps it across transfers."""

    conn_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DialResult(AgentboxResult):
    conn_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuxCallResult(DialResult):
    pass


@dataclass(frozen=True, kw_only=True)
class DtmfResult(AgentboxResult):
    tones: str | None = None


@dataclass(frozen=True, kw_only=True)
class ToggleResult(AgentboxResult):
    """hold and mute: ``active`` is True when the call is now held (the microphone muted), False when the toggle
    took it off, None when the message is not one this client knows."""

    active: bool | None = None


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def build(verb: str, code: int, msg: str, data: Mapping[str, Any]) -> AgentboxResult:
    """The result of ``verb`` from a successful envelope's parts."""
    if verb == "transfer":
        return TransferResult(code=code, msg=msg, data=data, conn_id=_text(data, "conn_id"))
    if verb == "dial":
        return DialResult(code=code, msg=msg, data=data, conn_id=_text(data, "conn_id"))
    if verb == "aux_call":
        return AuxCallResult(code=code, msg=msg, data=data, conn_id=_text(data, "conn_id"))
    if verb == "dtmf":
        return DtmfResult(code=code, msg=msg, data=data, tones=_text(data, "tones"))
    if verb in ("hold", "mute"):
        return ToggleResult(code=code, msg=msg, data=data, active=_TOGGLES.get(" ".join(msg.split()).lower()))
    return AgentboxResult(code=code, msg=msg, data=data)
