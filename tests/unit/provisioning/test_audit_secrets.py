"""What the audit log and the rendered-config views hide: every secret, the phone's new ones too."""

from __future__ import annotations

from offhook.provisioning.audit import MASK, mask_secrets


def test_directory_password_and_admin_pin_are_masked_in_a_rendered_config() -> None:
    rendered = {
        "directory": {"url": "ldap://ldap", "bind_password": "s3cret"},
        "admin": {"pin": "2468"},
        "accounts": [{"user": "1001", "password": "pw"}],
    }
    masked = mask_secrets(rendered)
    assert masked["directory"] == {"url": "ldap://ldap", "bind_password": MASK}
    assert masked["admin"] == {"pin": MASK}
    assert masked["accounts"] == [{"user": "1001", "password": MASK}]


def test_dotted_setting_names_are_masked_by_their_last_part() -> None:
    settings = {"directory.bind_password": "s3cret", "admin.pin": "2468", "device.name": "desk"}
    assert mask_secrets({"set": settings}) == {
        "set": {"directory.bind_password": MASK, "admin.pin": MASK, "device.name": "desk"}
    }


def test_empty_secrets_stay_empty() -> None:
    assert mask_secrets({"admin": {"pin": ""}}) == {"admin": {"pin": ""}}
