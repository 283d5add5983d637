"""The server refuses the settings that stay on the phone (its own addresses, devices and files):
a clear 422 on the admin API for every way of storing settings, and none of them in a rendered
config even when an older server stored one."""
# ruff: noqa: F811  (pytest fixtures imported by name are redefined as parameters)

from __future__ import annotations

import pytest

from offhook.contract.config import PHONE_LOCAL_KEYS
from tests.fixtures.provisioning_server import (  # noqa: F401 (fixture)
    ProvisioningServer,
    sqlite_provisioning_server,
)

pytestmark = pytest.mark.integration

HOSTILE = {
    ("board", "serial_console"): "socket://203.0.113.7:4444",  # the phone would dial out
    ("sip", "tls_key_file"): "/data/offhook/provisioning/credential.json",
    ("sip", "tls_cert_file"): "/etc/shadow",
    ("sip", "tls_ca_file"): "/dev/zero",
    ("directory", "tls_ca_file"): "/dev/zero",  # read as the directory's CA: a hang
    ("sip", "bind_address"): "0.0.0.0",
    ("audio", "playback"): "file:'/data/offhook/phone.toml'",  # ALSA would overwrite it
    ("audio", "capture"): "file:'/dev/urandom'",
    ("board", "profile"): "/tmp/evil.toml",
}


def test_every_phone_local_key_has_a_hostile_case() -> None:
    assert set(HOSTILE) == set(PHONE_LOCAL_KEYS)


@pytest.mark.parametrize(("section", "key"), sorted(HOSTILE))
def test_admin_api_refuses_phone_local_settings_with_422(
    sqlite_provisioning_server: ProvisioningServer, section: str, key: str
) -> None:
    server = sqlite_provisioning_server
    api = server.admin
    mac = "b8:27:eb:20:00:01"
    server.add_device(mac, name="desk")
    value = HOSTILE[(section, key)]
    attempts = {
        "device settings (set)": api.patch(
            f"/devices/{mac}/settings", json={"set": {f"{section}.{key}": value}}
        ),
        "device settings (replace)": api.patch(
            f"/devices/{mac}/settings", json={"replace": {section: {key: value}}}
        ),
        "fleet settings": api.patch("/settings/fleet", json={"set": {f"{section}.{key}": value}}),
        "template": api.post(
            "/templates", json={"name": f"t-{section}-{key}", "settings": {section: {key: value}}}
        ),
        "group": api.post(
            "/groups", json={"name": f"g-{section}-{key}", "settings": {section: {key: value}}}
        ),
    }
    for where, reply in attempts.items():
        assert reply.status_code == 422, (where, reply.status_code, reply.text)
        detail = reply.json()["detail"]
        assert f"{section}.{key}" in str(detail) and "stays on the phone" in str(detail), where
    config = api.get(f"/devices/{mac}/config").json()
    assert config[section][key] != value
