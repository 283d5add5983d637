"""The phone's provisioned-config store: candidate, current and last known good, all on disk.

- ``candidate.json``: a config just downloaded, before validation.
- ``current.json``: the config last handed to the runtime, with ``applied`` false while the apply
  is in progress. Finding it unapplied at start-up means the phone died while applying it; after
  ``MAX_APPLY_ATTEMPTS`` such deaths the config is rejected so a config that crashes the firmware
  cannot keep a phone in a reboot loop.
- ``lkg.json``: the last config the runtime applied without error; used at start-up and offline.
- ``rejected.json``: the ETag of the newest config refused, sent as If-None-Match so the server
  answers 304 instead of re-sending (and the phone re-reporting) the same bad config every poll.

Every write goes through firmware.atomic (temp file, fsync, rename, fsync dir).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offhook.contract.atomic import atomic_write_text
from offhook.contract.config import ConfigError, PhoneConfig, parse_config
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

MAX_APPLY_ATTEMPTS = 2


@dataclass(frozen=True)
class StoredConfig:
    etag: str
    revision: int
    config: PhoneConfig
    attempts: int = 0


def _record(etag: str, revision: int, data: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"etag": etag, "revision": revision, "config": data, **extra}, indent=1)


class ConfigStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.candidate_path = self.directory / "candidate.json"
        self.current_path = self.directory / "current.json"
        self.lkg_path = self.directory / "lkg.json"
        self.rejected_path = self.directory / "rejected.json"
        for stale in self.directory.glob(".*.tmp"):  # left by a write cut short by power loss
            stale.unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------------

    def _load(self, path: Path) -> tuple[dict[str, Any], PhoneConfig] | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return raw, parse_config(raw["config"], source=str(path))
        except FileNotFoundError:
            return None
        except (ConfigError, ValueError, KeyError, TypeError) as exc:
            # cannot happen with atomic writes unless the schema changed under a firmware update
            log.error("stored config unusable", extra=kv(path=str(path), error=exc))
            return None

    def last_known_good(self) -> StoredConfig | None:
        loaded = self._load(self.lkg_path)
        if loaded is None:
            return None
        raw, config = loaded
        return StoredConfig(raw["etag"], int(raw["revision"]), config)

    def interrupted_apply(self) -> StoredConfig | None:
        """The config whose apply never finished (the phone died meanwhile), if any."""
        loaded = self._load(self.current_path)
        if loaded is None or loaded[0].get("applied", True):
            return None
        raw, config = loaded
        return StoredConfig(raw["etag"], int(raw["revision"]), config, int(raw.get("attempts", 1)))

    def rejected_etag(self) -> str | None:
        try:
            return json.loads(self.rejected_path.read_text(encoding="utf-8"))["etag"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def if_none_match(self, retry_rejected: bool = False) -> str | None:
        """The ETag to send: the refused config's (unless retrying it), else the one we run."""
        rejected = None if retry_rejected else self.rejected_etag()
        if rejected:
            return rejected
        lkg = self.last_known_good()
        return lkg.etag if lkg else None

    # --- the apply transaction -----------------------------------------------------------------

    def write_candidate(self, etag: str, revision: int, data: dict[str, Any]) -> None:
        atomic_write_text(self.candidate_path, _record(etag, revision, data))

    def validate_candidate(self) -> StoredConfig:
        """Parse the candidate; raise ConfigError naming every bad key."""
        raw = json.loads(self.candidate_path.read_text(encoding="utf-8"))
        config = parse_config(raw["config"], source=f"config revision {raw['revision']}")
        return StoredConfig(raw["etag"], int(raw["revision"]), config)

    def begin_apply(self, stored: StoredConfig) -> int:
        """Record that ``stored`` is being applied; return how many times it has been tried."""
        previous = self.interrupted_apply()
        attempts = previous.attempts + 1 if previous and previous.etag == stored.etag else 1
        data = stored.config.model_dump(mode="json")
        atomic_write_text(
            self.current_path,
            _record(stored.etag, stored.revision, data, applied=False, attempts=attempts),
        )
        self.candidate_path.unlink(missing_ok=True)
        return attempts

    def finish_apply(self, stored: StoredConfig) -> None:
        text = _record(stored.etag, stored.revision, stored.config.model_dump(mode="json"))
        atomic_write_text(self.lkg_path, text)
        atomic_write_text(self.current_path, _record_applied(text))
        self.rejected_path.unlink(missing_ok=True)

    def reject(self, etag: str) -> None:
        """Give up on config ``etag``: forget candidate and in-progress apply, remember the ETag."""
        atomic_write_text(self.rejected_path, json.dumps({"etag": etag}))
        self.candidate_path.unlink(missing_ok=True)
        self.current_path.unlink(missing_ok=True)


def _record_applied(text: str) -> str:
    raw = json.loads(text)
    raw["applied"] = True
    return json.dumps(raw, indent=1)
