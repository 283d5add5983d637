"""Runs the update agent: one thread feeds it events and carries out its commands through the
RAUC and download ports, persists its record on /data and queues its reports in the outbox.

Downloads and installs run on a worker thread of their own, so ticks (idleness, the health
check, the maintenance window) keep coming while a bundle is fetched or a slot written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from offhook.contract.atomic import atomic_write_text
from offhook.contract.config import FirmwareSettings
from offhook.contract.logs import kv
from offhook.firmware.update import agent as ag
from offhook.firmware.update.ports import (
    BundleFetcher,
    DownloadError,
    RaucError,
    RaucPort,
)

log = logging.getLogger(__name__)

TICK_S = 5.0
MAX_DETAIL_CHARS = 4000
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# Beside the record: the boot id of the boot whose slot this service marked good. The slot
# watchdog (image/overlay/ab) reads it: under U-Boot, RAUC calls a slot "good" while it has
# attempts left, which a trial boot still has, so RAUC's status cannot say "marked this boot".
MARKED_GOOD_FILE = "marked-good-boot-id"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordStore:
    """The agent's record as JSON on /data, written atomically (old or new after a power cut)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> ag.UpdateRecord:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ag.UpdateRecord()
        except (OSError, ValueError) as exc:
            log.error("update record unreadable, starting idle", extra=kv(error=exc))
            return ag.UpdateRecord()
        target = data.pop("target", None)
        fields = {f.name for f in dataclasses.fields(ag.UpdateRecord)}
        record = ag.UpdateRecord(**{k: v for k, v in data.items() if k in fields})
        if target:
            record = dataclasses.replace(record, target=ag.Target(**target))
        return record

    def save(self, record: ag.UpdateRecord) -> None:
        atomic_write_text(self.path, json.dumps(dataclasses.asdict(record), sort_keys=True))


def event_record(report: ag.Report) -> dict[str, Any]:
    """A report as the events record of docs/updates.md."""
    return {
        "time": now_rfc3339(),
        "type": report.type,
        "config_revision": None,
        "detail": report.detail[:MAX_DETAIL_CHARS],
        "firmware_version": report.version,
        "from_version": report.from_version,
        "rollout": report.rollout,
        "slot": report.slot,
        "reason": report.reason,
    }


class UpdateService:
    def __init__(
        self,
        state_dir: Path,
        rauc: RaucPort,
        fetcher: BundleFetcher,
        *,
        enqueue: Callable[[str, dict], None],
        idle: Callable[[], bool],
        health: Callable[[], tuple[bool, bool]],
        reboot: Callable[[], None],
        running_version: str,
        timezone: str = "UTC",
        tick_s: float = TICK_S,
        boot_id_file: Path = BOOT_ID,
    ) -> None:
        self.directory = state_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bundle = self.directory / "bundle.raucb"
        self.store = RecordStore(self.directory / "state.json")
        self.agent = ag.UpdateAgent(record=self.store.load())
        self.rauc, self.fetcher = rauc, fetcher
        self.enqueue, self.idle, self.health, self.reboot = enqueue, idle, health, reboot
        self.running_version = running_version
        self.timezone = timezone
        self.tick_s = tick_s
        self.boot_id_file = boot_id_file
        self.events: queue.Queue[ag.Event] = queue.Queue()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports: list[ag.Report] = []  # this process's, for tests and the control API
        self.booted_slot = ""
        self.compatible = ""  # RAUC's board string: the server targets rollouts by it

    # --- outside world -> agent ----------------------------------------------------------------

    def start(self) -> None:
        try:
            status = self.rauc.status()
            self.booted_slot = status.booted
            self.compatible = status.compatible
        except RaucError as exc:
            # no RAUC here (a simulator, a card without slots): updates stay off
            log.warning("rauc status failed, firmware updates off", extra=kv(error=exc))
            return
        self.events.put(ag.Started(time.monotonic(), status.booted, self.running_version))
        self._thread = threading.Thread(target=self._run, name="update", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wanted(self, settings: FirmwareSettings) -> None:
        """From the config apply: the server's ``[firmware]``."""
        self.events.put(ag.Wanted(time.monotonic(), settings))

    def status(self) -> dict[str, Any]:
        record = self.agent.record
        target = record.target
        pct = 0
        if target and target.size and record.phase == "downloading":
            pct = min(100, record.downloaded * 100 // target.size)
        return {
            "state": record.phase,
            "target": target.version if target and record.phase != "idle" else "",
            "rollout": target.rollout if target else "",
            "slot": self.booted_slot,
            "compatible": self.compatible,
            "progress_pct": pct,
        }

    # --- the loop ------------------------------------------------------------------------------

    def _local_time(self):
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return datetime.now(zone).time()

    def _run(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            try:
                event = self.events.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                now = time.monotonic()
                next_tick = now + self.tick_s
                self._feed(ag.Tick(now, self._safe(self.idle, False), self._local_time()))
                registered, control_ok = self._safe(self.health, (False, False))
                self._feed(ag.Health(time.monotonic(), registered, control_ok))
                continue
            self._feed(event)

    @staticmethod
    def _safe(func, default):
        try:
            return func()
        except Exception:
            log.exception("update probe raised")
            return default

    def _feed(self, event: ag.Event) -> None:
        try:
            commands = self.agent.handle(event)
        except Exception:
            log.exception("update agent failed on an event", extra=kv(event=type(event).__name__))
            return
        for command in commands:
            try:
                self._execute(command)
            except Exception:
                log.exception("update command failed", extra=kv(command=type(command).__name__))

    def _execute(self, command: ag.Command) -> None:
        handler = self._command_handlers.get(type(command))
        if handler is None:
            raise TypeError(f"unknown update command {command!r}")
        handler(self, command)

    # --- one handler per command type (the table is at the end of the class) --------------------

    def _persist(self, command: ag.Persist) -> None:
        self.store.save(command.record)

    def _report(self, command: ag.Report) -> None:
        self.reports.append(command)
        log.info(
            "firmware update step",
            extra=kv(type=command.type, version=command.version, reason=command.reason),
        )
        self.enqueue("events", event_record(command))

    def _start_download(self, command: ag.StartDownload) -> None:
        self._cancel.clear()
        self._worker(self._download, command)

    def _cancel_download(self, command: ag.CancelDownload) -> None:
        self._cancel.set()

    def _discard_bundle(self, command: ag.DiscardBundle) -> None:
        for path in (self.bundle, self.bundle.with_name(self.bundle.name + ".etag")):
            path.unlink(missing_ok=True)

    def _start_install(self, command: ag.Install) -> None:
        self._worker(self._install)

    def _mark_good(self, command: ag.MarkGood) -> None:
        def mark() -> None:
            self.rauc.mark_good()
            try:
                boot_id = self.boot_id_file.read_text(encoding="ascii").strip()
            except OSError as exc:
                log.error("boot id unreadable, good mark not recorded", extra=kv(error=exc))
                return
            atomic_write_text(self.directory / MARKED_GOOD_FILE, boot_id + "\n")

        self._mark(mark)

    def _mark_bad(self, command: ag.MarkBad) -> None:
        self._mark(lambda: self.rauc.mark_bad(command.slot))

    def _reboot(self, command: ag.Reboot) -> None:
        log.warning("rebooting for a firmware update")
        self.reboot()

    def _mark(self, action: Callable[[], None]) -> None:
        try:
            action()
            self.events.put(ag.SlotMarked(time.monotonic(), True))
        except RaucError as exc:
            log.error("rauc mark failed", extra=kv(error=exc))
            self.events.put(ag.SlotMarked(time.monotonic(), False, str(exc)))

    def _worker(self, func, *args) -> None:
        threading.Thread(target=func, args=args, name="update-worker", daemon=True).start()

    def _download(self, command: ag.StartDownload) -> None:
        def progress(done: int) -> None:
            self.events.put(ag.DownloadProgress(time.monotonic(), done))

        try:
            result = self.fetcher.fetch(
                command.url, self.bundle, resume_from=command.resume_from,
                max_size=command.max_size, progress=progress, cancel=self._cancel,
            )  # fmt: skip
        except DownloadError as exc:
            self.events.put(ag.DownloadFailed(time.monotonic(), str(exc), exc.kept))
            return
        self.events.put(ag.DownloadFinished(time.monotonic(), result.size, result.sha256))

    def _install(self) -> None:
        try:
            info = self.rauc.info(self.bundle)
            self.rauc.install(self.bundle)
        except RaucError as exc:
            self.events.put(
                ag.InstallFinished(time.monotonic(), False, str(exc), refused=exc.refused)
            )
            return
        self.events.put(ag.InstallFinished(time.monotonic(), True, version=info.version))

    # One handler per agent command type, as the runtime's _command_handlers (each takes its own
    # command type, hence Any here).
    _command_handlers: dict[type[Any], Callable[[UpdateService, Any], None]] = {
        ag.Persist: _persist,
        ag.Report: _report,
        ag.StartDownload: _start_download,
        ag.CancelDownload: _cancel_download,
        ag.DiscardBundle: _discard_bundle,
        ag.Install: _start_install,
        ag.MarkGood: _mark_good,
        ag.MarkBad: _mark_bad,
        ag.Reboot: _reboot,
    }
