"""Events and commands of the directory, the settings menu and server discovery.

Plain immutable data, like firmware/events.py (which adds them to its Event and Command unions);
this module imports nothing of the firmware so both can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- the remote directory (LDAP) -------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryEntry:
    name: str
    number: str


@dataclass(frozen=True)
class SearchDirectory:
    """Command: find people whose name starts with ``text``; answered by DirectoryResults."""

    request: int
    text: str


# How a DirectoryResults error starts when the directory's TLS certificate was refused
CERTIFICATE_REFUSED = "TLS certificate refused"


@dataclass(frozen=True)
class DirectoryResults:
    request: int
    entries: tuple[DirectoryEntry, ...] = ()
    error: str = ""  # the directory could not be asked ("" when it answered, even with nothing)


@dataclass(frozen=True)
class LookupCaller:
    """Command: the directory's name for an incoming call's number (CallerNameFound, if any)."""

    call_id: int
    number: str


@dataclass(frozen=True)
class CallerNameFound:
    call_id: int
    number: str
    name: str


# --- network, provisioning, factory reset (the settings menu) ----------------------------------


@dataclass(frozen=True)
class NetworkStatus:
    """How the device's interface is set up now, and whether the phone may change it."""

    interface: str = ""
    mode: str = ""  # "dhcp" | "static" | "" (unknown)
    address: str = ""  # CIDR, e.g. 192.0.2.10/24
    gateway: str = ""
    dns: str = ""
    writable: bool = False  # the OS lets the phone write the interface's config
    mac: str = ""
    vlan: int = 0  # the VLAN the phone's addressing is on (0: none, the untagged interface)


@dataclass(frozen=True)
class ApplyNetwork:
    """Command: make the interface DHCP (``mode`` "dhcp") or static with the given values."""

    mode: str
    address: str = ""  # CIDR
    gateway: str = ""
    dns: str = ""
    vlan: int = 0  # 802.1Q VLAN ID 1-4094 carrying the addressing; 0 none


@dataclass(frozen=True)
class NetworkApplied:
    error: str = ""  # "" once written


@dataclass(frozen=True)
class ProvisioningStatus:
    """What the provisioning client is doing: "none" (no server), "discovering", "trust"
    (waiting for the admin to trust a server), "pending" (enrolled, awaiting approval),
    "enrolled", "refused", "error"."""

    state: str
    url: str = ""
    mac: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ServerDiscovered:
    """A provisioning server found by DHCP or DNS whose CA is not pinned: the phone shows the
    fingerprint and waits for the admin (trust on first use), never trusting it by itself."""

    url: str
    fingerprint: str  # SHA-256 of the CA certificate the server presented, 64 hex digits
    source: str  # "dhcp option 160", "dns srv _offhook._tcp.example.com", ...


@dataclass(frozen=True)
class TrustServer:
    """Command: the admin's answer to ServerDiscovered."""

    url: str
    fingerprint: str
    accepted: bool


@dataclass(frozen=True)
class SaveAdminLock:
    """Command: keep the wrong-PIN count and the lock's end on disk, so pulling the power does
    not give a guesser a fresh set of tries."""

    failures: int
    locked_until: float  # epoch seconds


@dataclass(frozen=True)
class FactoryReset:
    """Command: erase the data partition's config, credentials, history and outbox, then restart."""


@dataclass(frozen=True)
class FactoryResetDone:
    error: str = ""


FeatureEvent = (
    DirectoryResults
    | CallerNameFound
    | NetworkStatus
    | NetworkApplied
    | ProvisioningStatus
    | ServerDiscovered
    | FactoryResetDone
)
FeatureCommand = (
    SearchDirectory | LookupCaller | ApplyNetwork | TrustServer | FactoryReset | SaveAdminLock
)
