"""The phone's state files: the call history (JSON lines), the user's volume levels (JSON) and
the admin PIN's lock (JSON). All are written atomically (contract/atomic.py), off the Runtime's
loop thread."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

from offhook.contract.atomic import atomic_write_text
from offhook.contract.logs import kv
from offhook.firmware import events as ev
from offhook.firmware.calls import merge_repeat, same_missed_caller
from offhook.firmware.features.settings import LOCK_MAX_S, lock_seconds
from offhook.firmware.features.state import AdminLock

log = logging.getLogger("offhook.runtime")

HISTORY_KEEP = 200  # call records kept in the history file


class CallHistoryFile:
    """Finished calls as JSON lines, newest last, trimmed to the last HISTORY_KEEP records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: ev.CallRecord) -> None:
        lines = self.read_lines()
        last = self._parse(lines[-1]) if lines else None
        if last is not None and same_missed_caller(last, record):
            # A caller refused again and again (an INVITE flood while busy): one line, counted,
            # so the flood cannot push the rest of the history out of the file. Each call is
            # still a CDR of its own in the outbox.
            lines[-1] = json.dumps(asdict(merge_repeat(last, record)), sort_keys=True)
        else:
            lines = lines[-(HISTORY_KEEP - 1) :]
            lines.append(json.dumps(asdict(record), sort_keys=True))
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    @staticmethod
    def _parse(line: str) -> ev.CallRecord | None:
        known = {f.name for f in fields(ev.CallRecord)}
        try:
            data = json.loads(line)
            return ev.CallRecord(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError, AttributeError):
            return None

    def read_lines(self) -> list[str]:
        try:
            return [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def records(self) -> list[dict]:
        out = []
        for line in self.read_lines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def call_records(self) -> list[ev.CallRecord]:
        """The kept calls as CallRecords, oldest first; lines that do not fit are skipped, so a
        damaged or older-format file costs those entries, never the phone's start."""
        known = {f.name for f in fields(ev.CallRecord)}
        out = []
        for data in self.records():
            if not isinstance(data, dict):
                continue
            with contextlib.suppress(TypeError):
                out.append(ev.CallRecord(**{k: v for k, v in data.items() if k in known}))
        return out


class VolumeFile:
    """The user's speaker and ring volume levels, kept across restarts (JSON, atomic writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._levels = self._read()

    def levels(self) -> dict[str, int]:
        return dict(self._levels)

    def save(self, target: str, level: int) -> None:
        if target not in ("speaker", "ring"):
            raise ValueError(f"volume target must be 'speaker' or 'ring', not {target!r}")
        if self._levels.get(target) == level:
            return
        self._levels[target] = level
        atomic_write_text(self.path, json.dumps(self._levels, sort_keys=True) + "\n")

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("volume file unreadable; using the config", extra=kv(error=exc))
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v
            for k, v in data.items()
            if k in ("speaker", "ring") and isinstance(v, int) and 0 <= v <= 100
        }


# A damaged lock file counts as this many wrong PINs: locked for the longest time now, and the
# next wrong PIN as long again. Damaging the file must not be a way to reset the lock.
DAMAGED_LOCK_FAILURES = next(n for n in range(1, 64) if lock_seconds(n) >= LOCK_MAX_S)


class AdminLockFile:
    """Wrong admin PINs in a row and until when the prompt is locked, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, now: float) -> AdminLock:
        """The kept lock; none without a file; a damaged file locks for LOCK_MAX_S (logged)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            failures, until = data["failures"], data["locked_until"]
            if (
                isinstance(failures, bool)
                or not isinstance(failures, int)
                or not isinstance(until, int | float)
                or failures < 0
            ):
                raise ValueError("failures must be a count, locked_until epoch seconds")
            return AdminLock(failures, float(until))
        except FileNotFoundError:
            return AdminLock()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning(
                "admin lock file damaged; locked",
                extra=kv(path=self.path, error=exc, lock_s=LOCK_MAX_S),
            )
            return AdminLock(DAMAGED_LOCK_FAILURES, now + LOCK_MAX_S)

    def save(self, failures: int, locked_until: float) -> None:
        data = {"failures": failures, "locked_until": locked_until}
        atomic_write_text(self.path, json.dumps(data, sort_keys=True) + "\n")
