"""The Phone's vocabulary: events in (from hardware, SIP engine, timers), commands out.

Adapters turn GPIO edges and pjsua2 callbacks into events and carry out commands. Everything here is
plain immutable data so the state machine can be tested without any I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: this module imports nothing of the firmware at run time
    from offhook.contract.config import PhoneConfig

# Key names are part of the shared contract (board profiles and the server use them too).
from offhook.contract.keys import DIGIT_KEYS, FUNCTION_KEYS  # noqa: F401 (re-exported)
from offhook.firmware.features.events import FeatureCommand, FeatureEvent

# --- shared enums --------------------------------------------------------------------------------


class CallState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing back yet
    INCOMING = "incoming"  # INVITE received, not answered
    EARLY = "early"  # 18x received (ringing at the far end)
    CONNECTING = "connecting"  # answered, waiting for ACK
    CONFIRMED = "confirmed"  # talking
    DISCONNECTED = "disconnected"


class Tone(enum.Enum):
    DIAL = "dial"
    STUTTER = "stutter"  # dial tone with message waiting
    RINGBACK = "ringback"
    BUSY = "busy"
    CONGESTION = "congestion"  # reorder / fast busy
    HOWLER = "howler"  # receiver off-hook too long
    CALL_WAITING = "call_waiting"
    RING = "ring"  # the ringer (local alerting), on the speaker/ringer device
    CONFIRM = "confirm"  # short beep after a feature code


# --- events (in) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookChanged:
    offhook: bool


@dataclass(frozen=True)
class KeyPressed:
    key: str  # one of DIGIT_KEYS or FUNCTION_KEYS


@dataclass(frozen=True)
class CallIncoming:
    call_id: int
    account: int
    remote_uri: str  # e.g. "sip:1002@example.com"
    remote_name: str  # display name from From, may be ""
    sip_call_id: str = ""  # the dialog's SIP Call-ID (both ends of a call share it)


@dataclass(frozen=True)
class CallStateChanged:
    call_id: int
    state: CallState
    status_code: int = 0  # last SIP status (e.g. 180, 200, 486, 404); 0 if none
    reason: str = ""
    remote_uri: str = ""
    remote_name: str = ""
    codec: str = ""  # negotiated codec once media is up, e.g. "G722"
    # Who started the call, from the engine's SIP role; "" when unknown.
    direction: str = ""  # "outgoing" | "incoming" | ""
    account: int = 0
    # A call pjsua started itself (following a REFER, or an INVITE with Replaces) names the call
    # it takes over; -1 for calls the Phone placed or was offered with CallIncoming.
    replaces: int = -1
    sip_call_id: str = ""  # the dialog's SIP Call-ID; "" when the engine has none yet


@dataclass(frozen=True)
class TransferStatus:
    """Progress of a REFER we sent for ``call_id`` (blind or attended transfer).

    ``status_code`` 100 "Accepted" (not final) when the far end took the REFER; then the sipfrag
    codes of its NOTIFYs; ``final`` with a non-2xx code when the REFER (after the engine's own
    491 retries) or the transfer failed.
    """

    call_id: int
    status_code: int
    reason: str = ""
    final: bool = False


@dataclass(frozen=True)
class CallMediaChanged:
    call_id: int
    held_locally: bool = False
    held_remotely: bool = False


@dataclass(frozen=True)
class CallQuality:
    """Periodic stream statistics from the SIP engine for a talking call."""

    call_id: int
    codec: str
    jitter_ms: float
    loss_pct: float
    rtt_ms: float
    mos: float


@dataclass(frozen=True)
class RegistrationChanged:
    account: int
    registered: bool
    status_code: int
    reason: str = ""


@dataclass(frozen=True)
class MessageWaiting:
    account: int
    waiting: bool
    new: int = 0
    old: int = 0


@dataclass(frozen=True)
class TimerFired:
    name: str


@dataclass(frozen=True)
class ClockTick:
    """Once a second: lets screens show the clock and call timers without the Phone reading time."""


@dataclass(frozen=True)
class ConfigApplied:
    config: PhoneConfig  # the Phone checks it at run time too (a TypeError for anything else)
    # Non-zero: the Phone reports how this apply turned out with ConfigOutcome(request, ...) once
    # every enabled line registered with the new settings, one was refused, or the engine failed.
    request: int = 0


@dataclass(frozen=True)
class SipEngineStatus:
    """The SIP engine's transports: bound once it listens, or the reason its loop ended."""

    running: bool
    ports: tuple[tuple[str, int], ...] = ()  # (transport, bound port) pairs
    failure: str = ""  # why it stopped ("" while running)


@dataclass(frozen=True)
class DeviceInfo:
    """Facts about the device the Phone shows in its status menu (the runtime gathers them)."""

    addresses: tuple[str, ...] = ()  # IP addresses of the network interfaces, loopback excluded
    firmware_version: str = ""
    sip_ports: tuple[tuple[str, int], ...] = ()  # (transport, bound port) pairs


@dataclass(frozen=True)
class WatchedDialog:
    """One dialog of a watched extension, from its dialog-info (RFC 4235 ``<dialog>``).

    The tags are the watched phone's: ``local_tag`` its own, ``remote_tag`` its peer's."""

    call_id: str
    state: str  # "trying" | "proceeding" | "early" | "confirmed" | "terminated"
    direction: str = ""  # "initiator" (the watched phone called) | "recipient" | ""
    local_tag: str = ""
    remote_tag: str = ""
    remote_uri: str = ""  # the other party's identity
    remote_name: str = ""
    remote_target: str = ""  # the other party's contact, when the server tells it


@dataclass(frozen=True)
class ExtensionState:
    """What a dialog-event subscription (BLF) says about a watched extension now. ``dialogs``
    is the whole current set (a full dialog-info document); ``subscribed`` is False while the
    subscription is refused or lost (the lamp's state is then unknown)."""

    extension: str
    dialogs: tuple[WatchedDialog, ...] = ()
    subscribed: bool = True


@dataclass(frozen=True)
class MessageReceived:
    """A SIP MESSAGE (RFC 3428) for one of our lines, already answered 200 by the engine."""

    account: int
    from_uri: str
    from_name: str
    body: str
    content_type: str = "text/plain"


@dataclass(frozen=True)
class MessageStatus:
    """The final answer to a SendMessage: 2xx delivered to the far end's server; else why not
    (``status_code`` 0 when the engine could not send it at all, ``reason`` says why)."""

    request: int
    status_code: int
    reason: str = ""


Event = (
    HookChanged
    | KeyPressed
    | CallIncoming
    | CallStateChanged
    | CallMediaChanged
    | CallQuality
    | TransferStatus
    | RegistrationChanged
    | MessageWaiting
    | TimerFired
    | ClockTick
    | ConfigApplied
    | SipEngineStatus
    | DeviceInfo
    | FeatureEvent  # the directory, the settings menu, server discovery
    | ExtensionState
    | MessageReceived
    | MessageStatus
)


# --- commands (out) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlayTone:
    tone: Tone


@dataclass(frozen=True)
class StopTone:
    pass


@dataclass(frozen=True)
class MakeCall:
    account: int
    target: str  # dialled digits or a full SIP URI; the engine builds the URI from the account
    # Directed pickup: the Replaces header value (RFC 3891, ``call-id;to-tag=..;from-tag=..``)
    # naming the ringing dialog at ``target``, which this call takes over; "" for a plain call.
    replaces: str = ""


@dataclass(frozen=True)
class Ringing:
    """Tell the caller of an incoming call that it rings here (180). Sent only once the Phone
    decided to alert: a call it rejects or forwards gets its final answer without a 180."""

    call_id: int


@dataclass(frozen=True)
class Answer:
    call_id: int


@dataclass(frozen=True)
class Reject:
    call_id: int
    status_code: int = 486  # 486 Busy Here, 603 Decline, 480 for DND


@dataclass(frozen=True)
class Redirect:
    call_id: int
    target: str  # 302 to this number/URI (call forwarding)


@dataclass(frozen=True)
class Hangup:
    call_id: int


@dataclass(frozen=True)
class Hold:
    call_id: int


@dataclass(frozen=True)
class Unhold:
    call_id: int


@dataclass(frozen=True)
class Transfer:
    """Blind transfer (REFER) of ``call_id`` to ``target``."""

    call_id: int
    target: str


@dataclass(frozen=True)
class AttendedTransfer:
    """Transfer ``call_id`` to the party of ``to_call_id`` (REFER with Replaces)."""

    call_id: int
    to_call_id: int


@dataclass(frozen=True)
class Conference:
    """Bridge the audio of the given calls together with the local handset."""

    call_ids: tuple[int, ...]


@dataclass(frozen=True)
class SendDtmf:
    call_id: int
    digits: str  # RFC 4733


@dataclass(frozen=True)
class SetMute:
    muted: bool


@dataclass(frozen=True)
class SetVolume:
    """Speaker (handset/loudspeaker) or ringer volume, 0-100; the runtime applies and keeps it."""

    target: str  # "speaker" | "ring"
    level: int


@dataclass(frozen=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class SetRinger:
    on: bool  # the ringer GPIO, where the board has one


@dataclass(frozen=True)
class SetLed:
    name: str  # "mwi", "line1", "dnd", "mute", ...
    state: str  # "off" | "on" | "blink" | "fast_blink"


@dataclass(frozen=True)
class Render:
    screen: Screen


@dataclass(frozen=True)
class ReconfigureEngine:
    """Give the SIP engine a new config: it re-creates only the accounts and transports that
    changed (and reports their registration again)."""

    config: PhoneConfig


@dataclass(frozen=True)
class SetTonePlan:
    plan: str  # a tone plan name of audio.tone_plan ("us", "eu", ...)


@dataclass(frozen=True)
class ConfigOutcome:
    """How the apply of ``ConfigApplied(config, request)`` turned out."""

    request: int
    error: str | None  # None: every enabled line registered and the engine listens as configured


@dataclass(frozen=True)
class WatchExtensions:
    """The dialog-event subscriptions (BLF) to keep: (account, extension) pairs; the watcher
    subscribes to new ones and ends the ones no longer listed."""

    watches: tuple[tuple[int, str], ...]
    config: PhoneConfig  # the accounts the watcher subscribes with


@dataclass(frozen=True)
class ActionUrl:
    """Fetch ``url`` (an action URL, already filled in) off the loop: a GET with ``timeout_s``
    per attempt and at most ``retries`` more attempts after a failure."""

    event: str  # "incoming" | "answered" | "ended" | "missed" | "registered"
    url: str
    timeout_s: float = 3.0
    retries: int = 2


@dataclass(frozen=True)
class RecordCall:
    """A finished call, for history and the CDR queue."""

    record: CallRecord


@dataclass(frozen=True)
class SendMessage:
    """Send a text message (SIP MESSAGE, RFC 3428, text/plain) on ``account`` to ``target`` (a
    number or URI, as MakeCall's); the engine answers with MessageStatus(request, ...)."""

    request: int
    account: int
    target: str
    body: str


Command = (
    PlayTone
    | StopTone
    | MakeCall
    | Ringing
    | Answer
    | Reject
    | Redirect
    | Hangup
    | Hold
    | Unhold
    | Transfer
    | AttendedTransfer
    | Conference
    | SendDtmf
    | SendMessage
    | SetMute
    | SetVolume
    | StartTimer
    | CancelTimer
    | SetRinger
    | SetLed
    | Render
    | ReconfigureEngine
    | SetTonePlan
    | ConfigOutcome
    | RecordCall
    | FeatureCommand
    | WatchExtensions
    | ActionUrl
)


# --- what the screen shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Screen:
    """What the OLED should show, as data. Renderers in firmware/screens turn it into pixels.

    ``lines`` is the text content (the control API returns it); ``kind`` lets a renderer pick a
    layout (icons, big digits). ``status`` carries small indicators (registration, DND, MWI, codec,
    quality bars) for the status bar.
    """

    kind: str  # "idle" | "dialing" | "calling" | "incoming" | "talking" | "ended" | "menu" | ...
    lines: tuple[str, ...]
    status: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    softkeys: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallRecord:
    id: str  # stable unique id (uuid4 hex): CDR upload is idempotent on it
    direction: str  # "outgoing" | "incoming"
    account: int
    local_uri: str
    remote_uri: str
    remote_name: str
    start: float  # epoch seconds
    answer: float | None
    end: float
    disposition: str  # "answered" | "no_answer" | "busy" | "failed" | "rejected" | "missed"
    status_code: int = 0
    call_id: int = -1  # the SIP engine's id of the call (-1: never got one); local use only
    reason: str = ""  # the SIP reason phrase of status_code ("Busy Here", "Request Terminated")
    count: int = 1  # missed calls from the same caller in a row, shown as one history entry
    # The SIP Call-ID: when two phones of one fleet call each other, both records carry it, so
    # the server can show the two legs as one call. "" when the call never got a dialog.
    sip_call_id: str = ""
