"""Durable queue of records for the server: status, CDRs, quality and events.

One file per record (``<kind>/<enqueue-ns>-<id>.json``), written atomically, so a kill -9 or power
loss leaves each record either fully queued or absent. A record is deleted only after the server
has listed its id in ``accepted``; the server is idempotent on ids, so a record sent twice (the
phone died after the server stored it but before the delete) is still stored once.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from offhook.contract.atomic import atomic_write_text
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

KINDS = ("status", "cdrs", "quality", "events")
RECORD_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
DEFAULT_MAX_PER_KIND = 20_000  # ~20 MB of CDRs: weeks of offline use on a busy desk


def _record_id(path: Path) -> str:
    return path.stem.split("-", 1)[1]  # after the all-digit enqueue time


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0


class OutboxError(OffhookError, ValueError):
    """A record that cannot be queued (unknown kind, bad id, not JSON)."""


class Outbox:
    def __init__(self, directory: Path, max_per_kind: int = DEFAULT_MAX_PER_KIND) -> None:
        self.directory = Path(directory)
        self.max_per_kind = max_per_kind
        self._lock = threading.Lock()
        self._counts: dict[str, int | None] = dict.fromkeys(KINDS)  # None = unknown, list again
        self._paths: dict[str, dict[str, Path]] = {kind: {} for kind in KINDS}  # id -> file
        for kind in KINDS:
            (self.directory / kind).mkdir(parents=True, exist_ok=True)
            for stale in (self.directory / kind).glob(".*.tmp"):  # write cut short by power loss
                stale.unlink(missing_ok=True)

    def _kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise OutboxError(f"unknown outbox kind {kind!r}; expected one of {', '.join(KINDS)}")
        return self.directory / kind

    def _files(self, kind: str) -> list[Path]:
        # names start with a zero-padded enqueue time: lexical order is queue order
        return sorted(p for p in self._kind_dir(kind).iterdir() if p.name.endswith(".json"))

    def put(self, kind: str, record: dict[str, Any]) -> str:
        """Queue ``record`` durably; add an ``id`` (uuid4 hex) if it has none. Return the id."""
        directory = self._kind_dir(kind)
        if not isinstance(record, dict):
            raise OutboxError(f"{kind} record must be a JSON object, got {type(record).__name__}")
        record = dict(record)
        record_id = str(record.setdefault("id", uuid.uuid4().hex))
        if not RECORD_ID.match(record_id):
            raise OutboxError(f"{kind} record id {record_id!r} must be 1-64 of [0-9A-Za-z_-]")
        try:
            text = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"{kind} record {record_id} is not JSON: {exc}") from None
        with self._lock:
            atomic_write_text(directory / f"{time.time_ns():020d}-{record_id}.json", text)
            self._enforce_cap(kind)
        return record_id

    def _enforce_cap(self, kind: str) -> None:
        # counting without listing the directory on every put: a full queue has 20 000 files
        count = self._counts[kind]
        if count is not None and count < self.max_per_kind:
            self._counts[kind] = count + 1
            return
        files = self._files(kind)
        excess = files[: max(0, len(files) - self.max_per_kind)]
        for path in excess:
            log.warning("outbox full, dropping oldest", extra=kv(kind=kind, file=path.name))
            path.unlink(missing_ok=True)
        self._counts[kind] = len(files) - len(excess)

    def pending(self, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` records of ``kind``, in queue order."""
        records: list[dict[str, Any]] = []
        with self._lock:
            for path in self._files(kind):
                if len(records) >= limit:
                    break
                try:
                    records.append(json.loads(path.read_text(encoding="utf-8")))
                    self._paths[kind][_record_id(path)] = path
                except (OSError, ValueError) as exc:
                    # never let one unreadable file block the queue forever
                    log.error(
                        "outbox record unreadable, set aside", extra=kv(file=str(path), error=exc)
                    )
                    path.rename(path.with_suffix(".bad"))
                    self._counts[kind] = None
        return records

    def count(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(KINDS)
        return sum(len(self._files(k)) for k in kinds)

    def delete(self, kind: str, ids: Iterable[str]) -> int:
        """Remove the records whose ids the server accepted; return how many were removed."""
        wanted = set(ids)
        removed = 0
        with self._lock:
            known = self._paths[kind]
            # ids just read by pending() are deleted without listing the directory again
            for record_id in [i for i in wanted if i in known]:
                wanted.discard(record_id)
                removed += _unlink(known.pop(record_id))
            if wanted:
                for path in self._files(kind):
                    if _record_id(path) in wanted:
                        removed += _unlink(path)
            self._counts[kind] = None
        # No directory fsync: a delete undone by power loss only resends a record the server
        # already holds, which it ignores by id. It halves the time to drain a queue.
        return removed

    def set_aside(self, kind: str, record_id: str) -> None:
        """Keep a record the server refuses (422) out of the queue, on disk for inspection."""
        with self._lock:
            for path in self._files(kind):
                if _record_id(path) == record_id:
                    path.rename(path.with_suffix(".refused"))
            self._counts[kind] = None

    def drop_all(self, kind: str) -> None:
        """Forget every queued record of ``kind`` (status snapshots superseded by a newer one)."""
        with self._lock:
            for path in self._files(kind):
                path.unlink(missing_ok=True)
            self._counts[kind] = 0
            self._paths[kind].clear()
