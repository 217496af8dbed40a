"""The directory: operations (tenants) and what they are made of, as the storage adapter reads it.

Agents, queues, trunks with their dial plans and DIDs, auxiliary states, activity codes and API tokens: frozen
dataclasses, read by the domain through `ports.DirectoryRepository` (served from memory) and never changed by it.
Phone numbers, extensions and codes are strings: leading zeros and a leading `+` or `9` matter (agentbox contract,
"Request shape").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

AfterTransferState = Literal["acw", "ready"]
# docs/design.md, "Media": "anchored" sends every offer and answer of the operation's calls through the media relay
# (when one is configured; without one every call is direct), "direct" lets media flow between the parties.
MediaMode = Literal["anchored", "direct"]
# What an anchored call does when no relay answers at its start: go on with direct media, or refuse it (503).
RelayDownPolicy = Literal["direct", "refuse"]
# What a customer hears while a transfer target rings (docs/operations.md, "Audio: what each party hears"): a ringback
# tone or the operation's hold music. Ringback tones after ITU-T E.180: "etsi" (425 Hz) or "us" (440+480 Hz).
TransferAudio = Literal["ringback", "music"]
RingbackTone = Literal["etsi", "us"]
DtmfMode = Literal["rfc4733", "info"]
# always: every call is recorded; never: none; on_demand: only between a start and a stop through the API
RecordingPolicy = Literal["always", "never", "on_demand"]
Transport = Literal["udp", "tcp"]
CallerIdPolicy = Literal["customer", "agent", "fixed"]
"""Caller ID toward a transfer target or an outside number: the customer's number (the default, with
Diversion/History-Info naming the agent), the agent's extension, or the trunk's fixed number."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A tenant (the Wolkvox `wolkvox_server`, e.g. "0042") and its call-control settings."""

    id: str
    sip_domain: str
    realm: str = ""  # digest realm; empty means the SIP domain
    name: str = ""
    time_zone: str = "UTC"  # IANA name; recall dates and quota resets are read in it
    acw_seconds: float = 0.0  # after-call work length; 0 = straight back to ready
    after_transfer_state: AfterTransferState = "acw"  # where an agent goes when its call is transferred away
    default_queue: str | None = None
    ring_timeout: float = 20.0  # how long a queue call rings one agent before the next is tried
    transfer_timeout: float = 30.0  # how long a transfer target rings
    dial_timeout: float = 45.0  # dial/aux_call/recall: how long the customer's phone rings
    max_transfers: int = 5  # hop limit: transfers per call
    recent_call_window: float = 600.0  # aux_call: the last call ended at most this long ago
    action_timeout: float = 5.0  # hang/hold/mute/dtmf: the SIP final response must come within this
    token_concurrency_limit: int = 2  # default for new tokens
    daily_quota: int | None = None  # default for new tokens; None = no quota
    media_mode: MediaMode = "anchored"
    media_relay_down: RelayDownPolicy = "direct"
    # The operation's hold music as converted WAV (8 kHz mono 16-bit, loaded once by `callbridge admin`); None: the
    # built-in music. `hold_music_name` is the file it came from, for people.
    hold_music: bytes | None = field(default=None, repr=False)
    hold_music_name: str = ""
    transfer_audio: TransferAudio = "ringback"
    ringback_tone: RingbackTone = "etsi"
    # Whether calls are recorded (a queue may say otherwise) and how many days a recording is kept (None: forever)
    recording: RecordingPolicy = "never"
    recording_retention_days: int | None = None
    # Digest algorithms offered to this operation's phones ("SHA-256", "MD5"), SHA-256 first (RFC 8760 §2.3);
    # () = the node's `--digest-algorithms`.
    digest_algorithms: tuple[str, ...] = ()

    @property
    def digest_realm(self) -> str:
        return self.realm or self.sip_domain


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent of an operation; registers as sip:<extension>@<operation domain>."""

    operation_id: str
    extension: str
    name: str = ""
    ha1_md5: str = ""  # hex MD5(extension:realm:password) (RFC 7616 §3.4.2)
    ha1_sha256: str = ""  # hex SHA-256 of the same
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuxState:
    """An auxiliary ("not ready") state of an operation, e.g. id "2" named "Break"."""

    operation_id: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ActivityCode:
    """A disposition code; `type` takes one of group 1 (`cod_act`) and one of group 2 (`cod_act_2`)."""

    operation_id: str
    group: Literal[1, 2]
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Queue:
    operation_id: str
    name: str
    max_wait_seconds: float = 60.0  # nobody available this long: the caller gets 480 with Retry-After
    ring_timeout: float | None = None  # None = the operation's
    retry_after: int = 60  # seconds, for the 480
    recording: RecordingPolicy | None = None  # None = the operation's
    # What a customer waiting in the queue hears (docs/operations.md, "Audio: what each party hears"): the queue's
    # music (converted WAV; None: the operation's hold music, else the built-in one), and, when `announcement` is
    # set, that announcement every `announcement_interval` seconds, the music going on after each one.
    music: bytes | None = field(default=None, repr=False)
    music_name: str = ""
    announcement: bytes | None = field(default=None, repr=False)
    announcement_name: str = ""
    announcement_interval: float = 30.0


def recording_policy(operation: Operation, queue: Queue | None) -> RecordingPolicy:
    """What records a call: its queue's policy when the queue has one, else its operation's (a call without a
    queue, e.g. one an agent dialled, follows the operation)."""
    if queue is not None and queue.recording is not None:
        return queue.recording
    return operation.recording


@dataclass(frozen=True, slots=True)
class DialPlan:
    """What a trunk may dial, and how the dialled string becomes the number sent.

    A number is first checked against `allowed_patterns` (full-match regular expressions over the digits as the
    agent gave them; empty = any number of digits with an optional leading '+'), then `strip` leading characters
    are removed and `prefix` is prepended, and the result's length must be within [min_length, max_length].
    """

    allowed_patterns: tuple[str, ...] = ()
    strip: int = 0
    prefix: str = ""
    min_length: int = 3
    max_length: int = 20

    def apply(self, number: str) -> str | None:
        """The number to send, or None when the dial plan refuses `number`."""
        if not re.fullmatch(r"\+?[0-9]+", number):
            return None
        if self.allowed_patterns and not any(re.fullmatch(p, number) for p in self.allowed_patterns):
            return None
        result = self.prefix + number[self.strip :]
        if not self.min_length <= len(result) <= self.max_length:
            return None
        return result


@dataclass(frozen=True, slots=True)
class TrunkCredentials:
    """Digest credentials toward the provider (401/407), and for the optional registration."""

    username: str
    password: str
    realm: str | None = None  # None = whatever realm the provider challenges with


@dataclass(frozen=True, slots=True)
class Did:
    """A number delivered by a trunk, routed to a queue of the operation."""

    operation_id: str
    number: str
    queue: str
    trunk: str = ""


@dataclass(frozen=True, slots=True)
class Trunk:
    operation_id: str
    name: str
    host: str  # outbound gateway (an address, never resolved by callbridge's tests)
    port: int = 5060
    transport: Transport = "udp"
    dial_plan: DialPlan = field(default_factory=DialPlan)
    caller_id_policy: CallerIdPolicy = "customer"
    caller_id_number: str = ""  # for the "fixed" policy, and outbound calls
    register: bool = False
    credentials: TrunkCredentials | None = None
    inbound_networks: tuple[str, ...] = ()  # CIDR networks allowed to send calls in
    dids: tuple[Did, ...] = ()
    # How api=dtmf reaches a customer who came or was called through this trunk: RFC 4733 events in the media
    # (through the relay of an anchored call), or SIP INFO application/dtmf-relay (docs/operations.md, "DTMF").
    dtmf_mode: DtmfMode = "rfc4733"


@dataclass(frozen=True, slots=True)
class Token:
    """An API token of an operation; only its hash is stored."""

    id: str
    operation_id: str
    hash: str
    concurrency_limit: int = 2
    daily_quota: int | None = None
    label: str = ""
    revoked: bool = False
