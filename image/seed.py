"""Per-device seed files: what one card needs to know on its first boot.

The seed is TOML, written as ``offhook-seed.toml`` into the FAT boot partition (with mtools and a
byte offset, so nothing is mounted). First boot turns it into the phone config on the data
partition and deletes it from the boot partition, because it holds secrets. Format::

    hostname = "phone-0042"

    [provisioning]
    url = "https://prov.example.net"
    ca_fingerprint = "<sha-256, 64 hex digits>"
    enrollment_token = "..."

    [wifi]                      # optional
    ssid = "office"
    psk = "secret"
    country = "DE"

    [ssh]                       # optional
    authorized_keys = ["ssh-ed25519 AAAA... admin@desk"]

    [sip]                       # optional: a fixed SIP account (tests, no provisioning server)
    user = "1001"
    password = "pw"
    domain = "10.0.2.2:5060"

    [control]                   # optional: local control API
    listen = "0.0.0.0:8080"
    token = "..."
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from offhook.contract.config import (
    Account,
    ControlSettings,
    DeviceSettings,
    PhoneConfig,
    ProvisioningSettings,
)
from offhook.contract.errors import OffhookError

SEED_NAME = "offhook-seed.toml"
HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class SeedError(OffhookError, ValueError):
    """A seed that cannot be used; the message names the key or the CSV row."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WifiSeed(_Strict):
    ssid: Annotated[str, Field(min_length=1, max_length=32)]
    psk: Annotated[str, Field(min_length=8, max_length=63)]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "US"

    @field_validator("ssid", "psk")
    @classmethod
    def _no_quotes(cls, value: str) -> str:
        if any(c in value for c in '"\n\r\\'):
            raise ValueError("must not contain quotes, backslashes or line breaks")
        return value


class SshSeed(_Strict):
    authorized_keys: list[str] = Field(default_factory=list)

    @field_validator("authorized_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if "\n" in key or not re.match(r"^(ssh-|ecdsa-|sk-)\S+ \S+", key):
                raise ValueError(f"not an OpenSSH public key line: {key[:40]!r}")
        return value


class Seed(_Strict):
    hostname: str
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    wifi: WifiSeed | None = None
    ssh: SshSeed = Field(default_factory=SshSeed)
    sip: Account | None = None
    control: ControlSettings = Field(default_factory=ControlSettings)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not HOSTNAME.match(value):
            raise ValueError("hostname must be 1-63 letters, digits or '-' (not at either end)")
        return value

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))

    def phone_config(self, base: PhoneConfig | None = None) -> PhoneConfig:
        """The phone config this seed gives: ``base`` (or defaults) with the seed's parts."""
        data = (base or PhoneConfig()).model_dump(mode="json")
        data["device"] = DeviceSettings(**(data["device"] | {"name": self.hostname})).model_dump()
        data["provisioning"] = self.provisioning.model_dump(mode="json")
        data["control"] = self.control.model_dump(mode="json")
        if self.sip is not None:
            data["accounts"] = [self.sip.model_dump(mode="json")]
        return PhoneConfig.model_validate(data)


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_seed(data: dict[str, Any], source: str = "seed") -> Seed:
    try:
        return Seed.model_validate(data)
    except ValidationError as exc:
        raise SeedError(f"{source}: {_problems(exc)}") from None


def parse_seed_toml(text: str, source: str = "seed") -> Seed:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SeedError(f"{source}: not valid TOML: {exc}") from None
    return parse_seed(data, source)


def load_seed(path: Path) -> Seed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"{path}: cannot read: {exc}") from None
    return parse_seed_toml(text, str(path))


# CSV column -> (section, key); "" section means top level.
CSV_COLUMNS: dict[str, tuple[str, str]] = {
    "hostname": ("", "hostname"),
    "provisioning_url": ("provisioning", "url"),
    "ca_fingerprint": ("provisioning", "ca_fingerprint"),
    "enrollment_token": ("provisioning", "enrollment_token"),
    "wifi_ssid": ("wifi", "ssid"),
    "wifi_psk": ("wifi", "psk"),
    "wifi_country": ("wifi", "country"),
    "ssh_authorized_key": ("ssh", "authorized_keys"),
    "sip_user": ("sip", "user"),
    "sip_password": ("sip", "password"),
    "sip_domain": ("sip", "domain"),
    "control_listen": ("control", "listen"),
    "control_token": ("control", "token"),
}


def load_batch(path: Path, base: Seed | None = None) -> list[Seed]:
    """One seed per CSV row (header names from CSV_COLUMNS), each merged over ``base``."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            unknown = [c for c in reader.fieldnames or [] if c not in CSV_COLUMNS]
            if unknown:
                raise SeedError(
                    f"{path}: unknown column(s) {unknown}; known: {', '.join(CSV_COLUMNS)}"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SeedError(f"{path}: cannot read CSV: {exc}") from None
    if not rows:
        raise SeedError(f"{path}: no device rows")
    seeds = []
    for line, row in enumerate(rows, start=2):
        data: dict[str, Any] = base.model_dump(mode="json", exclude_none=True) if base else {}
        for column, value in row.items():
            if value is None or value == "":
                continue
            section, key = CSV_COLUMNS[column]
            value = [value] if key == "authorized_keys" else value
            if section:
                data.setdefault(section, {})[key] = value
            else:
                data[key] = value
        seeds.append(parse_seed(data, f"{path} line {line}"))
    hostnames = [s.hostname for s in seeds]
    duplicates = sorted({h for h in hostnames if hostnames.count(h) > 1})
    if duplicates:
        raise SeedError(f"{path}: duplicate hostname(s) {duplicates}")
    return seeds


def _mtools(cmd: list[str], what: str) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SeedError(f"{what} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def write_seed(target: Path, boot_offset: int, seed: Seed) -> None:
    """Write the seed into the FAT boot partition that starts ``boot_offset`` bytes into target."""
    with tempfile.TemporaryDirectory(prefix="offhook-seed-") as tmp:
        staged = Path(tmp) / SEED_NAME
        staged.write_text(seed.to_toml(), encoding="utf-8")
        staged.chmod(0o600)
        _mtools(
            ["mcopy", "-o", "-i", f"{target}@@{boot_offset}", str(staged), f"::/{SEED_NAME}"],
            f"writing the seed to {target}",
        )


def read_seed(target: Path, boot_offset: int) -> Seed | None:
    """The seed on a card or image, or None when it has none."""
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{target}@@{boot_offset}", "::/"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )  # fmt: skip
    if listing.returncode != 0:
        raise SeedError(f"{target}: no FAT boot partition at byte {boot_offset}")
    if f"::/{SEED_NAME}" not in listing.stdout.split():
        return None
    text = _mtools(["mtype", "-i", f"{target}@@{boot_offset}", f"::/{SEED_NAME}"], "reading seed")
    return parse_seed_toml(text, f"{target}:{SEED_NAME}")
