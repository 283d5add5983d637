"""When a phone counts as "not seen": tied to how often phones poll, not a fixed time.

Phones poll every ``provisioning.poll_interval_s`` (a setting local to each phone, so it is not
in the rendered config) with up to +20 % jitter, and report their status on every poll. The
server is told the fleet's interval with ``OFFHOOK_POLL_INTERVAL_S`` (default: the phone schema's
default); a phone is "not seen" once it has missed two polls even at the longest jitter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from firmware.config import ProvisioningSettings

POLL_INTERVAL_ENV = "OFFHOOK_POLL_INTERVAL_S"
POLL_JITTER = 0.2  # the provisioning client's spread around the interval
MISSED_POLLS = 2

_FIELD = ProvisioningSettings.model_fields["poll_interval_s"]
DEFAULT_POLL_INTERVAL_S: int = _FIELD.default
# The same bounds the phone's schema puts on the setting.
MIN_POLL_INTERVAL_S = 10
MAX_POLL_INTERVAL_S = 7 * 86400


def poll_interval_from_env(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_POLL_INTERVAL_S
    if not raw.isdigit() or not MIN_POLL_INTERVAL_S <= int(raw) <= MAX_POLL_INTERVAL_S:
        raise ValueError(
            f"{POLL_INTERVAL_ENV}={raw!r}: seconds between phone polls, "
            f"{MIN_POLL_INTERVAL_S}-{MAX_POLL_INTERVAL_S}"
        )
    return int(raw)


def not_seen_after(poll_interval_s: int) -> timedelta:
    return timedelta(seconds=MISSED_POLLS * poll_interval_s * (1 + POLL_JITTER))


def describe(delta: timedelta) -> str:
    """``2 h 24 min`` / ``2 min 24 s`` for the dashboard's wording."""
    seconds = round(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
