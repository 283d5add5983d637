"""The features' part of the Phone's state: small frozen records, replaced whole on change.

PhoneState (firmware/phone_state.py) holds one of each; nothing here imports the Phone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from offhook.firmware.features.events import (
    DirectoryEntry,
    NetworkStatus,
    ProvisioningStatus,
    ServerDiscovered,
)
from offhook.firmware.features.t9 import letters_of


@dataclass(frozen=True, slots=True)
class DirectorySearch:
    """The keypad search of the remote directory: letters typed by multi-tap (2 = a b c 2...),
    the last answer, and the cursor once the user moved into the results."""

    text: str = ""  # committed letters
    tap_key: str = ""  # the key of the letter still being chosen ("" none)
    tap_index: int = 0  # which of that key's letters
    request: int = 0  # the newest SearchDirectory sent (0: none yet)
    searched: str = ""  # the text of that request
    waiting: bool = False  # no answer to it yet
    entries: tuple[DirectoryEntry, ...] = ()
    error: str = ""
    index: int = -1  # the selected result; -1 while typing
    back: str = "idle"  # Mode value to return to

    @property
    def pending_letter(self) -> str:
        return letters_of(self.tap_key)[self.tap_index] if self.tap_key else ""

    @property
    def typed(self) -> str:
        return self.text + self.pending_letter


class SettingsPage(enum.Enum):
    PIN = "pin"  # asking for the admin PIN
    LOCKED = "locked"  # too many wrong PINs: wait
    MAIN = "main"  # the list of settings
    NETWORK = "network"
    NETWORK_EDIT = "network_edit"  # typing a static address
    VLAN_EDIT = "vlan_edit"  # typing a VLAN ID
    PROVISIONING = "provisioning"
    ACCOUNTS = "accounts"
    RESET_CONFIRM = "reset_confirm"
    RESETTING = "resetting"


NETWORK_FIELDS = ("address", "gateway", "dns")


@dataclass(frozen=True, slots=True)
class SettingsMenu:
    page: SettingsPage = SettingsPage.PIN
    entry: str = ""  # digits typed (PIN, or the field being edited)
    index: int = 0  # cursor on a list page / the field being edited
    fields: tuple[str, ...] = ("", "", "")  # static address (CIDR), gateway, dns being typed
    message: str = ""  # what the last action said ("Wrong PIN", "Saved", an error)
    back: str = "idle"


@dataclass(frozen=True, slots=True)
class AdminLock:
    """Wrong PINs in a row and until when the PIN prompt is locked (kept across menu visits)."""

    failures: int = 0
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceSetup:
    """What the phone process reports about the device: network and provisioning."""

    network: NetworkStatus = field(default_factory=NetworkStatus)
    provisioning: ProvisioningStatus = field(default_factory=lambda: ProvisioningStatus("none"))
    network_error: str = ""
    reset_error: str = ""


@dataclass(frozen=True, slots=True)
class TrustPrompt:
    """A discovered server waiting for the admin's trust (firmware/features/trust.py)."""

    server: ServerDiscovered
    page: int = 0  # which part of the fingerprint shows
    entry: str = ""  # the admin PIN being typed
    asking_pin: bool = False
    message: str = ""
