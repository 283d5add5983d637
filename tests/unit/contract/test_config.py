import os
from pathlib import Path

import pytest

from offhook.contract.config import ConfigError, PhoneConfig, load_config, parse_toml, save_config

GOOD = """
[[accounts]]
user = "1001"
password = "s3cret"
domain = "pbx.example.com:5061"
transport = "tls"
display_name = "Reception"

[sip]
port = 5070

[audio]
capture = "mic"
playback = "speaker"
tone_plan = "uk"

[dialplan]
digit_map = "[2-9]xxx|999"

[control]
listen = "127.0.0.1:8088"
token = "abc"
"""


def test_good_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = parse_toml(GOOD)
    assert config.accounts[0].transport == "tls"
    assert config.audio.tone_plan == "uk"
    path = tmp_path / "phone.toml"
    save_config(config, path)
    assert load_config(path) == config
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"  # holds SIP passwords


def test_unknown_keys_and_bad_values_are_named() -> None:
    text = GOOD.replace('transport = "tls"', 'transport = "sctp"\ncolour = "red"').replace(
        "port = 5070", "port = 70000"
    )
    with pytest.raises(ConfigError) as err:
        parse_toml(text, "phone.toml")
    msg = str(err.value)
    assert msg.startswith("phone.toml: ")
    assert "accounts[0].transport" in msg
    assert "accounts[0].colour: unknown key" in msg
    assert "sip.port" in msg


def test_bad_digit_map_and_bad_toml_are_reported() -> None:
    with pytest.raises(ConfigError, match=r"dialplan.digit_map: .*unclosed"):
        parse_toml('[dialplan]\ndigit_map = "[2-9"')
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_toml("[sip\nport=1")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_domain_and_fingerprint() -> None:
    with pytest.raises(ConfigError, match=r"accounts\[0\].domain"):
        parse_toml('[[accounts]]\nuser="1"\ndomain="bad host"')
    with pytest.raises(ConfigError, match=r"provisioning\.ca_fingerprint"):
        parse_toml('[provisioning]\nca_fingerprint="abcd"')


def test_defaults_are_a_valid_config() -> None:
    assert PhoneConfig().sip.codecs == ["G722", "PCMU", "PCMA"]


def _keys(model: type, prefix: str = "") -> list[str]:
    import typing

    from pydantic import BaseModel

    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        inner = typing.get_args(ann)[0] if typing.get_origin(ann) is list else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out += _keys(inner, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_config_key_is_documented() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "config.md").read_text(encoding="utf-8")
    sections = {}
    for line in doc.splitlines():
        if line.startswith("### "):
            current = line.split("`")[1].strip("[]")
            sections[current] = ""
        elif sections:
            sections[current] += line + "\n"
    missing = []
    for key in _keys(PhoneConfig):
        section, name = key.split(".", 1) if "." in key else ("", key)
        if f"`{name}`" not in sections.get(section, ""):
            missing.append(key)
    assert not missing, f"docs/config.md does not document: {missing}"


def test_firmware_section_is_validated_and_names_each_key() -> None:
    good = parse_toml(
        '[firmware]\nversion = "0.2.0+b7"\nurl = "/api/v1/device/firmware/0.2.0.raucb"\n'
        f'sha256 = "{"AB" * 32}"\nmaintenance_window = "23:30-02:00"\nrollout = "r-17"\n'
    )
    assert good.firmware.sha256 == "ab" * 32  # normalised to lower case
    assert PhoneConfig().firmware.version == ""  # no update asked for by default
    bad = (
        ('version = "0.2.0"', "firmware.url is required"),
        ('version = "0 2"\nurl = "/x"', "firmware.version"),
        ('url = "ftp://host/b.raucb"', "firmware.url"),
        ('sha256 = "abc"', "firmware.sha256"),
        ('maintenance_window = "24:00-01:00"', "firmware.maintenance_window"),
        ('maintenance_window = "02:00-02:00"', "start equals end"),
        ('rollout = "r 1"', "firmware.rollout"),
        ("size = -1", "firmware.size"),
        ('channel = "beta"', "firmware.channel: unknown key"),
    )
    for body, message in bad:
        with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
            parse_toml(f"[firmware]\n{body}\n")


def test_start_tls_is_only_for_ldap_urls() -> None:
    base = {"base_dn": "dc=example", "start_tls": True}
    config = PhoneConfig.model_validate({"directory": {**base, "url": "ldap://ldap.example"}})
    assert config.directory.start_tls and config.directory.tls_verify  # verified by default
    with pytest.raises(ValueError, match=r"directory\.start_tls is for ldap:// urls"):
        PhoneConfig.model_validate({"directory": {**base, "url": "ldaps://ldap.example"}})
