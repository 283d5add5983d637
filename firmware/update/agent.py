"""The firmware update agent's decisions: a pure state machine (no I/O, no clock, no threads).

Events in (the wanted firmware from the config poll, what RAUC says about the slots after boot,
download and install results, ticks with the phone's idleness and the time, health checks),
commands out (download, install, reboot, mark a slot good or bad, report, persist). The
adapters in ``service.py`` carry the commands out; ``docs/updates.md`` is the protocol.

The record (``UpdateRecord``) is persisted after every change, so each step survives a power
cut: a download resumes, an interrupted install is tried again from the kept bundle, and after
a reboot the agent knows whether it is on its trial boot of the new slot or back on the old one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time as clock_time
from typing import Any, ClassVar, Literal

from offhook.contract.config import FirmwareSettings

Phase = Literal[
    "idle",  # nothing under way (the last update, if any, is in ``last``)
    "downloading",
    "downloaded",  # the bundle is complete and checked; install when idle
    "installing",
    "installed",  # the other slot holds the new version and is first in the boot order
    "rebooting",  # about to boot (or booting) the new slot on trial
    "verifying",  # running the new slot on trial: health check before mark-good
    "marked_bad",  # the new slot failed its health check; rebooting back to the old one
    "failed",  # this target failed; not retried until the server asks for another one
]
Reason = Literal[
    "",
    "download_failed",
    "checksum_mismatch",
    "bundle_refused",
    "install_failed",
    "version_mismatch",
    "health_check_failed",
    "boot_failed",
    "cancelled",
]
MAX_DOWNLOAD_ATTEMPTS = 5
MAX_INSTALL_ATTEMPTS = 3
DOWNLOAD_RETRY_S = (10.0, 30.0, 60.0, 300.0)
HEALTH_TIMEOUT_S = 300.0  # a trial boot must pass the health check within this (after start)


@dataclass(frozen=True)
class Target:
    version: str
    url: str
    sha256: str = ""
    size: int = 0
    rollout: str = ""
    maintenance_window: str = ""

    @classmethod
    def from_settings(cls, settings: FirmwareSettings) -> Target:
        return cls(settings.version, settings.url, settings.sha256, settings.size,
                   settings.rollout, settings.maintenance_window)  # fmt: skip


@dataclass(frozen=True)
class UpdateRecord:
    """What the agent keeps on /data across reboots."""

    phase: Phase = "idle"
    target: Target | None = None
    from_version: str = ""
    from_slot: str = ""
    to_slot: str = ""
    downloaded: int = 0  # bytes of the bundle on disk (resume point)
    download_attempts: int = 0
    install_attempts: int = 0
    reason: Reason = ""
    detail: str = ""
    failed_version: str = ""  # a target that failed is not retried until it changes


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """RAUC's view after boot: the booted slot and the version running there."""

    now: float
    booted_slot: str  # A | B
    running_version: str


@dataclass(frozen=True)
class Wanted:
    """The config poll's ``[firmware]`` (an empty version: nothing wanted)."""

    now: float
    settings: FirmwareSettings


@dataclass(frozen=True)
class Tick:
    now: float
    idle: bool  # no call, handset down
    local_time: clock_time  # in device.timezone, for the maintenance window


@dataclass(frozen=True)
class DownloadProgress:
    now: float
    downloaded: int


@dataclass(frozen=True)
class DownloadFinished:
    now: float
    size: int
    sha256: str


@dataclass(frozen=True)
class DownloadFailed:
    now: float
    detail: str
    downloaded: int  # what is kept for the next attempt (0 after a restart from scratch)


@dataclass(frozen=True)
class InstallFinished:
    now: float
    ok: bool
    detail: str = ""
    refused: bool = False  # RAUC refused the bundle itself (signature, compatible, damage)
    version: str = ""  # the installed bundle's version (RAUC's slot status)


@dataclass(frozen=True)
class Health:
    now: float
    registered: bool  # every enabled account registered
    control_ok: bool  # the local control API answered


@dataclass(frozen=True)
class SlotMarked:
    now: float
    ok: bool
    detail: str = ""


Event = (
    Started | Wanted | Tick | DownloadProgress | DownloadFinished | DownloadFailed
    | InstallFinished | Health | SlotMarked
)  # fmt: skip


# --- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartDownload:
    url: str
    resume_from: int
    max_size: int  # 0: unknown


@dataclass(frozen=True)
class CancelDownload:
    pass


@dataclass(frozen=True)
class DiscardBundle:
    pass


@dataclass(frozen=True)
class Install:
    pass


@dataclass(frozen=True)
class Reboot:
    pass


@dataclass(frozen=True)
class MarkGood:
    pass  # the booted slot


@dataclass(frozen=True)
class MarkBad:
    slot: Literal["booted", "other"]


@dataclass(frozen=True)
class Report:
    type: str  # firmware_downloading | ..._installed | ..._rebooting | ..._running | ...
    version: str
    from_version: str
    rollout: str
    slot: str
    reason: Reason = ""
    detail: str = ""


@dataclass(frozen=True)
class Persist:
    record: UpdateRecord


Command = (
    StartDownload | CancelDownload | DiscardBundle | Install | Reboot | MarkGood | MarkBad
    | Report | Persist
)  # fmt: skip


def other_slot(slot: str) -> str:
    return {"A": "B", "B": "A"}.get(slot, "")


def in_window(window: str, now: clock_time) -> bool:
    """``HH:MM-HH:MM`` (may wrap midnight; start inclusive, end exclusive); "" is always."""
    if not window:
        return True
    start = clock_time(int(window[0:2]), int(window[3:5]))
    end = clock_time(int(window[6:8]), int(window[9:11]))
    moment = now.replace(second=0, microsecond=0, tzinfo=None)
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


@dataclass
class UpdateAgent:
    record: UpdateRecord = field(default_factory=UpdateRecord)
    booted_slot: str = ""
    running_version: str = ""
    started_at: float | None = None  # when Started arrived (the health check's clock)
    marked_good: bool = False  # this boot's slot marked good already
    retry_at: float = 0.0  # next download attempt after a failure
    health_timeout_s: float = HEALTH_TIMEOUT_S
    _busy: bool = False  # a download or install command is out

    # --- helpers -------------------------------------------------------------------------------

    def _set(self, **changes: object) -> list[Command]:
        self.record = dataclasses.replace(self.record, **changes)  # type: ignore[arg-type]
        return [Persist(self.record)]

    def _report(self, kind: str, reason: Reason = "", detail: str = "") -> Report:
        target = self.record.target
        slot = self.booted_slot if kind in ("running", "rolled_back") else self.record.to_slot
        return Report(
            type=f"firmware_{kind}",
            version=target.version if target else "",
            from_version=self.record.from_version,
            rollout=target.rollout if target else "",
            slot=slot,
            reason=reason,
            detail=detail,
        )

    def _fail(self, reason: Reason, detail: str) -> list[Command]:
        report = self._report("failed", reason, detail)
        target = self.record.target
        self._busy = False
        return [
            DiscardBundle(),
            report,
            *self._set(
                phase="failed",
                reason=reason,
                detail=detail,
                downloaded=0,
                failed_version=target.version if target else "",
            ),
        ]

    # --- events --------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        handler = self._event_handlers.get(type(event))
        if handler is None:
            raise TypeError(f"unknown update event {event!r}")
        return handler(self, event)

    def _download_progress(self, event: DownloadProgress) -> list[Command]:
        if self.record.phase != "downloading":
            return []
        return self._set(downloaded=event.downloaded)

    def _slot_marked(self, event: SlotMarked) -> list[Command]:
        if not event.ok:
            self.marked_good = False
        return []

    def _started(self, event: Started) -> list[Command]:
        self.booted_slot = event.booted_slot
        self.running_version = event.running_version
        self.started_at = event.now
        self.marked_good = False
        self._busy = False
        record = self.record
        on_new = record.to_slot != "" and event.booted_slot == record.to_slot
        if record.phase in ("installed", "rebooting") and on_new:
            # The trial boot of the new slot (also after a power cut between install and reboot:
            # RAUC had already made it the first of the boot order).
            return self._set(phase="verifying")
        if record.phase in ("rebooting", "verifying", "marked_bad") and not on_new:
            # Back on the old slot: the new one failed its health check (it marked itself bad)
            # or never got as far (did not boot, hung, power cut during its trial boot).
            reason: Reason = record.reason if record.phase == "marked_bad" else "boot_failed"
            detail = record.detail or (
                f"slot {record.to_slot} did not mark itself good; the bootloader booted "
                f"slot {event.booted_slot} again"
            )
            report = self._report("rolled_back", reason, detail)
            target = record.target
            return [
                DiscardBundle(),
                report,
                *self._set(
                    phase="failed",
                    reason=reason,
                    detail=detail,
                    downloaded=0,
                    failed_version=target.version if target else "",
                ),
            ]
        if record.phase == "verifying" and on_new:
            return []  # a restart of the phone during the trial boot: keep checking
        if record.phase == "installing":
            # Power cut or crash during the install: RAUC left the target slot not bootable.
            # Try again from the kept bundle (counted).
            return self._set(phase="downloaded")
        return []

    def _wanted(self, event: Wanted) -> list[Command]:
        settings = event.settings
        record = self.record
        current = record.target
        if record.phase in ("rebooting", "verifying", "marked_bad"):
            return []  # a boot in progress finishes first
        wanted = settings.version and settings.version != self.running_version
        if not wanted:
            if record.phase in ("idle", "failed"):
                return self._set(failed_version="") if record.failed_version else []
            return self._cancel("the server no longer asks for this version")
        target = Target.from_settings(settings)
        if current is not None and current.version == target.version:
            if current != target and record.phase not in ("idle", "failed"):
                # same version, new window or rollout id: take them, keep the progress
                return self._set(target=target)
            if record.phase == "failed" and record.failed_version == target.version:
                if target.rollout != current.rollout:
                    return self._begin(target)  # a new rollout asks again
                return []
            if record.phase != "idle" and record.phase != "failed":
                return []
        if record.phase not in ("idle", "failed"):
            # another version than the one under way: drop it and start the new one
            return [*self._cancel("the server asks for another version"), *self._begin(target)]
        return self._begin(target)

    def _begin(self, target: Target) -> list[Command]:
        self.retry_at = 0.0
        self._busy = True
        commands = self._set(
            phase="downloading", target=target, from_version=self.running_version,
            from_slot=self.booted_slot, to_slot=other_slot(self.booted_slot), downloaded=0,
            download_attempts=0, install_attempts=0, reason="", detail="", failed_version="",
        )  # fmt: skip
        return [
            DiscardBundle(),
            *commands,
            self._report("downloading"),
            StartDownload(target.url, 0, target.size),
        ]

    def _cancel(self, detail: str) -> list[Command]:
        commands: list[Command] = []
        if self.record.phase == "downloading":
            commands.append(CancelDownload())
        if self.record.phase == "installed":
            commands.append(MarkBad("other"))  # written but never to be booted
        report = self._report("failed", "cancelled", detail)
        self._busy = False
        return [
            *commands,
            DiscardBundle(),
            report,
            *self._set(phase="idle", target=None, reason="cancelled", detail=detail, downloaded=0),
        ]

    def _tick(self, event: Tick) -> list[Command]:
        record = self.record
        commands: list[Command] = []
        # Every boot GRUB marks the slot it boots as tried; a slot already in service is marked
        # good once the phone is up (the trial boot of a new slot waits for the full check).
        if record.phase == "downloading" and not self._busy and event.now >= self.retry_at:
            assert record.target is not None
            self._busy = True
            return [StartDownload(record.target.url, record.downloaded, record.target.size)]
        if record.phase == "downloaded" and event.idle and not self._busy:
            if record.install_attempts >= MAX_INSTALL_ATTEMPTS:
                return self._fail(
                    "install_failed", f"install interrupted {record.install_attempts} times"
                )
            self._busy = True
            commands += self._set(phase="installing", install_attempts=record.install_attempts + 1)
            commands.append(Install())
            return commands
        if record.phase == "installed" and event.idle:
            window = record.target.maintenance_window if record.target else ""
            if in_window(window, event.local_time):
                commands.append(self._report("rebooting"))
                commands += self._set(phase="rebooting")
                commands.append(Reboot())
                return commands
        started = self.started_at
        if (
            record.phase == "verifying"
            and started is not None
            and (event.now - started > self.health_timeout_s)
        ):
            detail = (
                f"not registered within {self.health_timeout_s:.0f} s of starting on slot "
                f"{self.booted_slot}; marked it bad, rebooting to slot {record.from_slot}"
            )
            commands += self._set(phase="marked_bad", reason="health_check_failed", detail=detail)
            commands += [MarkBad("booted"), Reboot()]
        return commands

    def _health(self, event: Health) -> list[Command]:
        record = self.record
        if record.phase == "verifying":
            if not (event.registered and event.control_ok):
                return []
            self.marked_good = True
            report = self._report("running")
            target = record.target
            # The record before the report: once the server hears "running" the record on /data
            # says so too (a power cut in between boots B again, checks again and re-reports).
            return [
                MarkGood(),
                *self._set(
                    phase="idle",
                    reason="",
                    detail="",
                    downloaded=0,
                    failed_version="",
                    target=target,
                ),
                report,
                DiscardBundle(),
            ]
        if record.phase == "marked_bad" or self.marked_good or not event.control_ok:
            return []
        self.marked_good = True
        return [MarkGood()]

    def _download_finished(self, event: DownloadFinished) -> list[Command]:
        if self.record.phase != "downloading":
            return []
        self._busy = False
        target = self.record.target
        assert target is not None
        if target.size and event.size != target.size:
            return self._fail(
                "checksum_mismatch", f"bundle is {event.size} bytes, expected {target.size}"
            )
        if target.sha256 and event.sha256 != target.sha256:
            return self._fail(
                "checksum_mismatch", f"bundle SHA-256 {event.sha256}, expected {target.sha256}"
            )
        return self._set(phase="downloaded", downloaded=event.size, detail="")

    def _download_failed(self, event: DownloadFailed) -> list[Command]:
        if self.record.phase != "downloading":
            return []
        self._busy = False
        attempts = self.record.download_attempts + 1
        if attempts >= MAX_DOWNLOAD_ATTEMPTS:
            return self._fail(
                "download_failed", f"{attempts} attempts failed; last: {event.detail}"
            )
        delay = DOWNLOAD_RETRY_S[min(attempts - 1, len(DOWNLOAD_RETRY_S) - 1)]
        self.retry_at = event.now + delay
        return self._set(download_attempts=attempts, downloaded=event.downloaded,
                         detail=event.detail)  # fmt: skip

    def _install_finished(self, event: InstallFinished) -> list[Command]:
        if self.record.phase != "installing":
            return []
        self._busy = False
        target = self.record.target
        assert target is not None
        if not event.ok:
            return self._fail("bundle_refused" if event.refused else "install_failed", event.detail)
        if event.version and event.version != target.version:
            return [
                MarkBad("other"),
                *self._fail(
                    "version_mismatch",
                    f"the bundle holds version {event.version}, not {target.version}",
                ),
            ]
        return [
            *self._set(phase="installed"),
            self._report("installed"),
            DiscardBundle(),
        ]

    # One handler per event type, as the Phone's _handlers (each takes its own event type, hence
    # Any here); a class variable, not a dataclass field.
    _event_handlers: ClassVar[dict[type[Any], Callable[[UpdateAgent, Any], list[Command]]]] = {
        Started: _started,
        Wanted: _wanted,
        Tick: _tick,
        DownloadProgress: _download_progress,
        DownloadFinished: _download_finished,
        DownloadFailed: _download_failed,
        InstallFinished: _install_finished,
        Health: _health,
        SlotMarked: _slot_marked,
    }
