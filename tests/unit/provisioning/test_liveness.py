"""Per-device "not seen": each phone by the poll interval it reports, else the fleet's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from offhook.provisioning.models import Device, utcnow
from offhook.provisioning.settings import POLL_INTERVAL_ENV, settings_from_env
from offhook.provisioning.web.liveness import device_not_seen_after, not_seen_after
from offhook.provisioning.web.queries import is_online

FLEET = not_seen_after(3600)  # 2 h 24 min


def _seen_ago(seconds: float, poll_interval_s: int | None) -> Device:
    return Device(
        mac="02:00:00:00:00:01",
        last_seen=utcnow() - timedelta(seconds=seconds),
        poll_interval_s=poll_interval_s,
    )


def test_a_phone_is_judged_by_its_own_reported_interval() -> None:
    # polls every 60 s: two missed polls at +20 % jitter = 144 s
    assert is_online(_seen_ago(100, 60), stale_after=FLEET)
    assert not is_online(_seen_ago(200, 60), stale_after=FLEET)
    # polls daily: not "not seen" after 3 h although the fleet default would say so
    assert is_online(_seen_ago(3 * 3600, 86400), stale_after=FLEET)
    assert not is_online(_seen_ago(3 * 3600, None), stale_after=FLEET)


def test_without_a_reported_interval_the_fleet_threshold_applies() -> None:
    assert device_not_seen_after(None, FLEET) == FLEET
    assert device_not_seen_after(5, FLEET) == FLEET  # out of the schema's bounds: ignored
    assert device_not_seen_after(600, FLEET) == timedelta(seconds=1440)
    assert not is_online(Device(mac="02:00:00:00:00:02", poll_interval_s=60), stale_after=FLEET)


def test_server_setting_reads_and_checks_the_fleet_interval() -> None:
    assert settings_from_env({}).poll_interval_s == 3600
    assert settings_from_env({POLL_INTERVAL_ENV: "300"}).poll_interval_s == 300
    for bad in ("9", "604801", "ten", "-5"):
        with pytest.raises(ValueError, match=POLL_INTERVAL_ENV):
            settings_from_env({POLL_INTERVAL_ENV: bad})
