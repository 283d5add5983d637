"""First boot on the phone: seed -> data partition state, seed removed; bad seeds kept."""

from __future__ import annotations

from pathlib import Path

from firmware.config import load_config, parse_config, save_config
from image.firstboot import main

SEED = """hostname = "desk-9"

[provisioning]
url = "https://prov.example.net"
enrollment_token = "tok-9"

[wifi]
ssid = "office"
psk = "password123"
country = "DE"

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3Nza admin@desk"]

[control]
listen = "0.0.0.0:8080"
token = "ctl"
"""


def test_seed_becomes_state_and_is_deleted(tmp_path: Path) -> None:
    boot, data = tmp_path / "boot", tmp_path / "data"
    boot.mkdir()
    seed = boot / "offhook-seed.toml"
    seed.write_text(SEED)
    assert main(["--seed", str(seed), "--data", str(data)]) == 0
    config = load_config(data / "offhook/phone.toml")
    assert config.device.name == "desk-9"
    assert config.provisioning.enrollment_token == "tok-9"
    assert config.control.token == "ctl"
    system = data / "offhook/system"
    assert (system / "hostname").read_text() == "desk-9\n"
    wpa = (system / "wpa_supplicant-wlan0.conf").read_text()
    assert 'ssid="office"' in wpa and "country=DE" in wpa
    assert (system / "authorized_keys").read_text() == "ssh-ed25519 AAAAC3Nza admin@desk\n"
    assert (system / "authorized_keys").stat().st_mode & 0o077 == 0
    assert not seed.exists()


def test_reseed_keeps_settings_made_since(tmp_path: Path) -> None:
    data = tmp_path / "data"
    existing = parse_config({"audio": {"tone_plan": "uk"}, "device": {"name": "old"}})
    save_config(existing, data / "offhook/phone.toml")
    seed = tmp_path / "offhook-seed.toml"
    seed.write_text('hostname = "new-name"\n')
    assert main(["--seed", str(seed), "--data", str(data)]) == 0
    config = load_config(data / "offhook/phone.toml")
    assert (config.device.name, config.audio.tone_plan) == ("new-name", "uk")


def test_bad_seed_is_kept_and_nothing_written(tmp_path: Path) -> None:
    seed = tmp_path / "offhook-seed.toml"
    seed.write_text('hostname = "x"\nbogus = true\n')
    data = tmp_path / "data"
    assert main(["--seed", str(seed), "--data", str(data)]) == 1
    assert seed.exists()
    assert not (data / "offhook/phone.toml").exists()
