"""OFFHOOK_PUBLIC_URL, the origin security keys are bound to: only scheme, host and port, and a
host name (browsers refuse an IP address as a WebAuthn relying party ID)."""

from __future__ import annotations

import pytest

from offhook.provisioning.settings import settings_from_env
from offhook.provisioning.webauthn_keys import RelyingParty, WebauthnError


def test_the_relying_party_is_the_public_urls_host_and_origin() -> None:
    settings = settings_from_env({"OFFHOOK_PUBLIC_URL": "https://prov.example.com:8443/"})
    assert settings.public_url == "https://prov.example.com:8443"
    assert RelyingParty.from_settings(settings) == RelyingParty(
        "prov.example.com", "https://prov.example.com:8443"
    )


def test_without_a_public_url_keys_are_refused_with_the_setting_named() -> None:
    with pytest.raises(WebauthnError, match="OFFHOOK_PUBLIC_URL"):
        RelyingParty.from_settings(settings_from_env({}))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://prov.example.com", "use http"),
        ("https://prov.example.com/admin", "no path"),
        ("http://127.0.0.1:8080", "not an IP address"),
        ("https://[::1]", "not an IP address"),
    ],
)
def test_a_bad_public_url_stops_the_start_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"OFFHOOK_PUBLIC_URL.*{message}"):
        settings_from_env({"OFFHOOK_PUBLIC_URL": value})
