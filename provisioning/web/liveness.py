"""When a phone counts as "not seen": tied to how often it polls, not a fixed time.

Phones poll every ``provisioning.poll_interval_s`` (a setting local to each phone, so it is not
in the rendered config) with up to +20 % jitter, and report their status, including that
interval, on every poll; the server stores it on the device. A phone is "not seen" once it has
missed two of its own polls even at the longest jitter. For phones that have not reported an
interval (older firmware), the fleet's interval applies: ``offhook server --poll-interval``
(``OFFHOOK_POLL_INTERVAL_S``, default: the phone schema's default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from offhook.contract.config import ProvisioningSettings
from offhook.provisioning import settings as server_settings
from offhook.provisioning.liveness import (
    MISSED_POLLS,
    POLL_JITTER,
    device_not_seen_after,
    not_seen_after,
)
from offhook.provisioning.settings import (
    MAX_POLL_INTERVAL_S,
    MIN_POLL_INTERVAL_S,
    POLL_INTERVAL_ENV,
)

__all__ = [
    "MAX_POLL_INTERVAL_S",
    "MIN_POLL_INTERVAL_S",
    "MISSED_POLLS",
    "POLL_INTERVAL_ENV",
    "POLL_JITTER",
    "device_not_seen_after",
    "not_seen_after",
]

_FIELD = ProvisioningSettings.model_fields["poll_interval_s"]
DEFAULT_POLL_INTERVAL_S: int = _FIELD.default
assert DEFAULT_POLL_INTERVAL_S == server_settings.DEFAULT_POLL_INTERVAL_S


def poll_interval_from_env(env: Mapping[str, str] | None = None) -> int:
    return server_settings.poll_interval_from_env(dict(os.environ if env is None else env))


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
