"""When a phone counts as "not seen": after two of its own polls missed at the longest jitter.

Phones poll every ``provisioning.poll_interval_s`` (phone-local) with up to +20 % jitter and
report that interval with their status; the server stores it on the device. Phones that report
none (older firmware) are judged by the fleet's interval (``OFFHOOK_POLL_INTERVAL_S``). The web
UI's "not seen" badge (``provisioning.web.liveness``) and the ``not_seen`` alert
(``provisioning.alert_engine``) both use this rule.
"""

from __future__ import annotations

from datetime import timedelta

from offhook.provisioning.settings import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S

POLL_JITTER = 0.2  # the provisioning client's spread around the interval
MISSED_POLLS = 2


def not_seen_after(poll_interval_s: int) -> timedelta:
    return timedelta(seconds=MISSED_POLLS * poll_interval_s * (1 + POLL_JITTER))


def device_not_seen_after(reported_poll_interval_s: int | None, fleet: timedelta) -> timedelta:
    """The phone's own threshold from the interval it reported; ``fleet`` when it reported none
    (or a value outside the schema's bounds, which a real phone cannot have)."""
    if (
        reported_poll_interval_s is None
        or not MIN_POLL_INTERVAL_S <= reported_poll_interval_s <= MAX_POLL_INTERVAL_S
    ):
        return fleet
    return not_seen_after(reported_poll_interval_s)
