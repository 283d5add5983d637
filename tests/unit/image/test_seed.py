"""Seed files: validation, the phone config they produce, CSV batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from offhook.contract.config import parse_toml
from offhook.image.seed import SeedError, load_batch, parse_seed_toml

FINGERPRINT = ":".join(["AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"] * 2)
FULL = f"""hostname = "desk-1"

[provisioning]
url = "https://prov.example.net"
ca_fingerprint = "{FINGERPRINT}"
enrollment_token = "tok"

[wifi]
ssid = "office"
psk = "correct horse"
country = "DE"

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm admin@desk"]

[sip]
user = "1001"
password = "pw"
domain = "10.0.2.2:5060"

[control]
listen = "0.0.0.0:8080"
token = "ctl"
"""


def test_full_seed_gives_phone_config() -> None:
    seed = parse_seed_toml(FULL)
    config = seed.phone_config()
    assert config.device.name == "desk-1"
    assert config.provisioning.url == "https://prov.example.net"
    assert config.provisioning.ca_fingerprint == "aabbccddeeff00112233445566778899" * 2
    assert [(a.user, a.domain) for a in config.accounts] == [("1001", "10.0.2.2:5060")]
    assert config.control.listen == "0.0.0.0:8080"
    assert parse_toml(config.to_toml()) == config  # what first boot writes reads back
    assert parse_seed_toml(seed.to_toml()) == seed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hostname = "-bad"', "hostname"),
        ('hostname = "ok"\nfoo = 1', "foo: unknown key"),
        ('hostname = "ok"\n[provisioning]\nurl = "ftp://x"', "provisioning.url"),
        ('hostname = "ok"\n[wifi]\nssid = "x"\npsk = "short"', "wifi.psk"),
        ('hostname = "ok"\n[ssh]\nauthorized_keys = ["hello"]', "OpenSSH public key"),
        ('hostname = "ok"\n[sip]\nuser = "a b"\ndomain = "x"', "sip.user"),
        ("hostname = ", "not valid TOML"),
        ("", "hostname: Field required"),
    ],
)
def test_bad_seeds_name_the_key(text: str, message: str) -> None:
    with pytest.raises(SeedError, match=message):
        parse_seed_toml(text)


def test_batch_rows_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("hostname,wifi_ssid,wifi_psk,ssh_authorized_key\n"
                    "a1,net,password1,ssh-ed25519 AAAA k\nb2,,,\n")  # fmt: skip
    seeds = load_batch(good)
    assert seeds[0].wifi is not None and seeds[0].wifi.ssid == "net"
    assert seeds[0].ssh.authorized_keys == ["ssh-ed25519 AAAA k"]
    assert seeds[1].wifi is None
    bad_column = tmp_path / "bad.csv"
    bad_column.write_text("hostname,colour\na,red\n")
    with pytest.raises(SeedError, match="unknown column"):
        load_batch(bad_column)
    dup = tmp_path / "dup.csv"
    dup.write_text("hostname\na\na\n")
    with pytest.raises(SeedError, match="duplicate hostname"):
        load_batch(dup)
    bad_row = tmp_path / "row.csv"
    bad_row.write_text("hostname\nok\nnot ok\n")
    with pytest.raises(SeedError, match="line 3"):
        load_batch(bad_row)
