"""The Phone's state, as one typed structure: the Phone changes it, the views render it directly.

Sub-states are small frozen records (a line's registration, a mailbox, the browse and menu cursors)
replaced whole when they change; the modes and lists are enums. Nothing here does I/O or reads a
clock: ``now`` is the time the Phone was given with the last event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import tzinfo

from offhook.contract.config import PhoneConfig
from offhook.firmware.calls import Call
from offhook.firmware.events import CallRecord, DeviceInfo, Screen, SipEngineStatus
from offhook.firmware.features.blf import Watched
from offhook.firmware.features.messages import MessageCursor, TextDraft, TextMessage
from offhook.firmware.features.state import (
    AdminLock,
    DeviceSetup,
    DirectorySearch,
    SettingsMenu,
    TrustPrompt,
)


class Mode(enum.Enum):
    """What the handset and keys are doing; picks the key handler and the screen."""

    IDLE = "idle"
    DIALING = "dialing"
    ENDED = "ended"  # a call or a number failed: why, and the tone that says so
    HOWLER = "howler"  # the handset was left off the cradle
    CALLS = "calls"  # placing, ringing, talking, holding
    TRANSFER = "transfer"  # entering a blind transfer's target
    BROWSE = "browse"  # history or contacts
    MENU = "menu"  # the status menu
    DIRECTORY = "directory"  # searching the remote directory (firmware/features/directory.py)
    SETTINGS = "settings"  # the admin settings menu (firmware/features/settings.py)
    TRUST = "trust"  # a discovered server waits for the admin's trust (firmware/features/trust.py)
    MESSAGES = "messages"  # the text messages list (firmware/features/messages.py)
    COMPOSE = "compose"  # typing a text message (firmware/features/compose.py)


class BrowseList(enum.Enum):
    HISTORY = "history"
    PHONEBOOK = "phonebook"


class VolumeTarget(enum.StrEnum):
    """Which level a volume key changes (a ``str``, as ``SetVolume.target`` carries it)."""

    SPEAKER = "speaker"  # handset or loudspeaker
    RING = "ring"


@dataclass(frozen=True, slots=True)
class LineRegistration:
    registered: bool = False
    status_code: int = 0  # the last REGISTER's status (0: none yet)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Message-waiting state of one line (RFC 3842)."""

    waiting: bool = False
    new: int = 0
    old: int = 0


@dataclass(frozen=True, slots=True)
class Notice:
    """The end screen's title and detail, or a transfer in progress ("Transferring", target)."""

    title: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Browse:
    which: BrowseList = BrowseList.HISTORY
    index: int = 0
    back: Mode = Mode.IDLE  # the mode to return to


@dataclass(frozen=True, slots=True)
class Menu:
    index: int = 0
    opened: bool = False  # the selected row shows its full text
    back: Mode = Mode.IDLE


NO_REGISTRATION = LineRegistration()
NO_NOTICE = Notice()


@dataclass(slots=True)
class PhoneState:
    """Everything the Phone knows. Only the Phone changes it; views read it after every event."""

    config: PhoneConfig
    tz: tzinfo
    volume: dict[VolumeTarget, int]
    history: list[CallRecord]  # newest first
    registration: dict[int, LineRegistration]
    dnd: bool
    now: float = 0.0
    hook_off: bool = False  # the audio path is in use: handset lifted or hands-free
    handset_up: bool = False
    handsfree: bool = False  # the loudspeaker and microphone instead of the handset
    mode: Mode = Mode.IDLE
    digits: str = ""
    notice: Notice = NO_NOTICE
    calls: dict[int, Call] = field(default_factory=dict)
    # Calls we ended (Hangup, Reject, Redirect): already recorded, kept until the engine's
    # DISCONNECTED so its last reports for them are expected, not "unknown".
    ending: dict[int, Call] = field(default_factory=dict)
    pending: Call | None = None  # placed, id not yet known
    orphans: list[Call] = field(default_factory=list)  # abandoned before their id was known
    active: int | None = None  # the call the handset talks to (not held)
    alerting: int | None = None  # unanswered incoming call (ringing or waiting)
    conference: set[int] = field(default_factory=set)
    transfer_target: int | None = None
    timers: set[str] = field(default_factory=set)
    muted: bool = False
    mwi: dict[int, Mailbox] = field(default_factory=dict)
    unseen_missed: int = 0
    last_dialled: str = ""
    line: int | None = None  # account picked with line1/line2 for the next call
    browse: Browse = Browse()
    menu: Menu = Menu()
    device: DeviceInfo = field(default_factory=DeviceInfo)
    volume_bar: VolumeTarget | None = None  # while the volume bar shows
    screen: Screen = field(default_factory=lambda: Screen("idle", ()))  # the last rendered
    leds: dict[str, str] = field(default_factory=dict)  # the last states sent
    engine: SipEngineStatus | None = None  # the engine's last report (None: no engine reports)
    apply_request: int = 0  # a ConfigApplied whose outcome is still to be reported (0: none)
    # the remote directory, the settings menu and server trust (firmware/features/)
    directory: DirectorySearch = field(default_factory=DirectorySearch)
    settings: SettingsMenu = field(default_factory=SettingsMenu)
    admin_lock: AdminLock = field(default_factory=AdminLock)
    setup: DeviceSetup = field(default_factory=DeviceSetup)
    trust: TrustPrompt | None = None
    requests: int = 0  # the last SearchDirectory request number
    # BLF keys, text messages (firmware/features/)
    watched: dict[str, Watched] = field(default_factory=dict)  # by extension
    messages: list[TextMessage] = field(default_factory=list)  # newest first
    message_cursor: MessageCursor = field(default_factory=MessageCursor)
    messages_back: Mode = Mode.IDLE
    draft: TextDraft | None = None  # the text being typed or sent (Mode.COMPOSE)
    text_requests: int = 0  # the last SendMessage request number

    @property
    def held_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.held]

    @property
    def message_waiting(self) -> bool:
        return any(m.waiting for m in self.mwi.values())

    @property
    def new_messages(self) -> int:
        return sum(m.new for m in self.mwi.values())

    @property
    def next_line(self) -> int:
        """The line for the next call: the one picked with a line key, else the first enabled."""
        accounts = self.config.accounts
        if self.line is not None and self.line < len(accounts) and accounts[self.line].enabled:
            return self.line
        for i, acc in enumerate(accounts):
            if acc.enabled:
                return i
        return 0

    def registration_of(self, line: int) -> LineRegistration:
        return self.registration.get(line, NO_REGISTRATION)

    def call(self, call_id: int | None) -> Call | None:
        return self.calls.get(call_id) if call_id is not None else None
