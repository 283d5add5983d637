"""Who this phone is: MAC, serial, model and firmware version, as sent at enrollment.

On a Raspberry Pi the serial comes from /proc/cpuinfo (or the device tree) and the MAC from the
first wired interface; the simulator and tests pass an identity explicitly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from offhook.contract.errors import OffhookError

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
SERIAL_RE = re.compile(r"^[0-9A-Za-z]{4,64}$")


def firmware_version() -> str:
    try:
        return metadata.version("offhook")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class IdentityError(OffhookError, ValueError):
    """The device identity cannot be determined or is malformed."""


def normalise_mac(mac: str) -> str:
    """``B8-27-EB-12-34-56`` / ``b827eb123456`` -> ``b8:27:eb:12:34:56``."""
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12 or len(re.sub(r"[0-9a-fA-F:.\-]", "", mac)) != 0:
        raise IdentityError(f"MAC address {mac!r} is not 6 hex octets")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True)
class DeviceIdentity:
    mac: str
    serial: str
    model: str = "offhook-pi"
    firmware_version: str = field(default_factory=firmware_version)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalise_mac(self.mac))
        if not SERIAL_RE.match(self.serial):
            raise IdentityError(f"serial {self.serial!r} must be 4-64 letters or digits")

    @classmethod
    def from_pi(cls, root: Path = Path("/")) -> DeviceIdentity:
        """Read the identity of the Raspberry Pi we run on (``root`` lets tests use a fake tree)."""
        serial = _read_serial(root)
        return cls(mac=_read_mac(root), serial=serial, model=_read_model(root))


def _read_serial(root: Path) -> str:
    cpuinfo = root / "proc/cpuinfo"
    if cpuinfo.exists():
        match = re.search(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).lower()
    dt_serial = root / "proc/device-tree/serial-number"
    if dt_serial.exists():
        return dt_serial.read_bytes().rstrip(b"\x00").decode("ascii").strip()
    raise IdentityError("no serial number in /proc/cpuinfo or the device tree")


def _read_mac(root: Path) -> str:
    net = root / "sys/class/net"
    names = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
    # The wired port first: it is the one printed on the label and pre-registered on the server.
    for name in [n for n in names if n.startswith(("eth", "end", "en"))] + names:
        if name == "lo":
            continue
        address = (net / name / "address").read_text().strip()
        if address and address != "00:00:00:00:00:00":
            return normalise_mac(address)
    raise IdentityError("no network interface with a MAC address")


def _read_model(root: Path) -> str:
    model_file = root / "proc/device-tree/model"
    if not model_file.exists():
        return "offhook-pi"
    model = model_file.read_bytes().rstrip(b"\x00").decode("ascii", "replace").lower()
    match = re.search(r"raspberry pi (\d+|zero 2 w|zero)", model)
    return "offhook-pi" + (match.group(1).replace(" ", "") if match else "")


def sim_identity(config_path: Path) -> DeviceIdentity:
    """A stable made-up MAC and serial for a simulated phone (derived from its config path)."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()
    mac = "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))  # locally administered
    return DeviceIdentity(mac=mac, serial=digest[:16], model="offhook-sim")
