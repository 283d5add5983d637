"""What the update service needs from RAUC and from the bundle download: typed ports, so the
state machine's driver is tested against the real ``rauc`` and a real HTTP server, and the
agent alone against nothing at all."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from offhook.contract.errors import OffhookError


@dataclass(frozen=True)
class SlotState:
    name: str  # rootfs.0
    bootname: str  # A
    state: str  # booted | active | inactive
    boot_good: bool  # RAUC's boot_status "good"
    bundle_version: str  # the version RAUC installed there ("" for the factory slot)


@dataclass(frozen=True)
class RaucStatus:
    compatible: str
    booted: str  # bootname of the booted slot
    primary: str  # bootname the bootloader will boot next
    slots: tuple[SlotState, ...]

    def slot(self, bootname: str) -> SlotState | None:
        return next((s for s in self.slots if s.bootname == bootname), None)


@dataclass(frozen=True)
class BundleInfo:
    compatible: str
    version: str


class RaucError(OffhookError, RuntimeError):
    """RAUC refused or failed; ``refused`` when the bundle itself was not accepted (signature,
    compatible, damaged bundle) rather than the writing of the slot."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class RaucPort(Protocol):
    def status(self) -> RaucStatus: ...

    def info(self, bundle: Path) -> BundleInfo:
        """The bundle's manifest, verified against the system's keyring (RaucError if not)."""
        ...

    def install(self, bundle: Path) -> None: ...

    def mark_good(self) -> None:
        """The booted slot."""
        ...

    def mark_bad(self, which: str) -> None:
        """``booted`` or ``other``."""
        ...


class DownloadError(OffhookError, ConnectionError):
    def __init__(self, message: str, kept: int) -> None:
        super().__init__(message)
        self.kept = kept  # bytes on disk to resume from


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str


class BundleFetcher(Protocol):
    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        resume_from: int,
        max_size: int,
        progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> Downloaded: ...
