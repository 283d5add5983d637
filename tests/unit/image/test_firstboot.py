"""First boot on the phone: seed -> data partition state, seed removed; bad seeds kept."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig, load_config, parse_config, save_config
from offhook.image import uboot
from offhook.image.boottest import networkd_duid, siphash24
from offhook.image.firstboot import main

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


# The first-boot script's machine-id step, run for real (sh) against a temporary root.

FIRSTBOOT = Path(__file__).parents[3] / "image/overlay/common/usr/local/sbin/offhook-firstboot"
CMDLINE = "console=ttyS0 root=PARTUUID=4f66686b-02 rootfstype=ext4 ro panic=-1"
FIRST_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"


class Card:
    """A temporary root: /etc/machine-id as systemd set it up, the FAT boot partition, /data."""

    def __init__(self, root: Path, machine_id: str, cmdline: str | None = CMDLINE + "\n") -> None:
        self.root = root
        self.machine_id = root / "etc/machine-id"
        self.boot = root / "boot/firmware"
        self.data = root / "data"
        for folder in (self.machine_id.parent, self.boot, self.data):
            folder.mkdir(parents=True)
        self.machine_id.write_text(machine_id + "\n")
        if cmdline is not None:
            self.cmdline.write_text(cmdline)

    @property
    def cmdline(self) -> Path:
        return self.boot / "cmdline.txt"

    @property
    def fw_env_config(self) -> Path:
        """/etc/fw_env.config: only a U-Boot card (the Pi's A/B slots) has one."""
        return self.root / "etc/fw_env.config"

    @property
    def kept(self) -> Path:
        return self.data / "offhook/system/machine-id"

    def boot_with(self, machine_id: str) -> None:
        """Reboot: systemd gives this boot the id (the kernel command line's, else a new one)."""
        self.machine_id.write_text(machine_id + "\n")

    def firstboot(self, *steps: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ["PATH"],
            "OFFHOOK_FIRSTBOOT_DATA": str(self.data),
            "OFFHOOK_FIRSTBOOT_BOOT": str(self.boot),
            "OFFHOOK_FIRSTBOOT_MACHINE_ID": str(self.machine_id),
            "OFFHOOK_FIRSTBOOT_FW_ENV": str(self.fw_env_config),
        }
        return subprocess.run(
            ["sh", str(FIRSTBOOT), *(steps or ("keep_machine_id",))],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip

    def files(self) -> dict[str, tuple[str, int]]:
        """Content and inode of every file: a rewrite (temp file + rename) changes the inode."""
        return {
            str(path.relative_to(self.root)): (path.read_text(), path.stat().st_ino)
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


def machine_id_options(cmdline: str) -> list[str]:
    return [word for word in cmdline.split() if word.startswith("systemd.machine_id=")]


@pytest.fixture
def card(tmp_path: Path) -> Card:
    return Card(tmp_path / "card", FIRST_ID)


def test_first_boot_keeps_the_id_and_pins_it_once(card: Card) -> None:
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.kept.read_text() == FIRST_ID + "\n"
    assert card.cmdline.read_text() == f"{CMDLINE} systemd.machine_id={FIRST_ID}\n"
    assert f"running={FIRST_ID} kept={FIRST_ID}" in run.stdout
    assert not list(card.root.rglob("*.offhook-new"))


def test_second_boot_changes_nothing(card: Card) -> None:
    assert card.firstboot().returncode == 0
    before = card.files()
    card.boot_with(FIRST_ID)  # the pinned id, as systemd.machine_id= gives it
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.files() == before
    assert "kept:" not in run.stdout and "pinned" not in run.stdout


def test_later_boot_with_another_id_keeps_the_first(card: Card) -> None:
    """The option was removed by hand: this boot ran with a new id; the kept one wins again."""
    assert card.firstboot().returncode == 0
    card.cmdline.write_text(CMDLINE + "\n")
    card.boot_with(OTHER_ID)
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.kept.read_text() == FIRST_ID + "\n"
    assert machine_id_options(card.cmdline.read_text()) == [f"systemd.machine_id={FIRST_ID}"]
    assert "differs from the kept one" in run.stdout


def test_option_with_another_id_is_replaced_by_the_kept_one(card: Card) -> None:
    card.kept.parent.mkdir(parents=True)
    card.kept.write_text(FIRST_ID + "\n")
    card.cmdline.write_text(
        f"systemd.machine_id={OTHER_ID} {CMDLINE} systemd.machine_id={OTHER_ID} quiet\n"
    )
    card.boot_with(OTHER_ID)
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.cmdline.read_text() == f"{CMDLINE} quiet systemd.machine_id={FIRST_ID}\n"
    assert card.kept.read_text() == FIRST_ID + "\n"


def test_cmdline_on_several_lines_becomes_one(tmp_path: Path) -> None:
    card = Card(tmp_path / "card", FIRST_ID, cmdline="console=ttyS0\r\nroot=/dev/vda2  ro\n\n")
    assert card.firstboot().returncode == 0
    assert (
        card.cmdline.read_text()
        == f"console=ttyS0 root=/dev/vda2 ro systemd.machine_id={FIRST_ID}\n"
    )


@pytest.mark.parametrize("bad", ["", "uninitialized", "0" * 32, FIRST_ID.upper(), FIRST_ID[:-1]])
def test_no_valid_running_id_keeps_and_pins_nothing(tmp_path: Path, bad: str) -> None:
    card = Card(tmp_path / "card", bad)
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert "holds no valid machine-id" in run.stdout
    assert not card.kept.exists()
    assert card.cmdline.read_text() == CMDLINE + "\n"


def test_damaged_kept_file_is_replaced_by_this_boots_id(card: Card) -> None:
    card.kept.parent.mkdir(parents=True)
    card.kept.write_text("0123\x00garbage\n")
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.kept.read_text() == FIRST_ID + "\n"
    assert "is not a valid id" in run.stdout


def test_missing_cmdline_still_keeps_the_id(tmp_path: Path) -> None:
    card = Card(tmp_path / "card", FIRST_ID, cmdline=None)
    run = card.firstboot()
    assert run.returncode == 0, run.stderr
    assert card.kept.read_text() == FIRST_ID + "\n"
    assert "not pinned: no" in run.stdout and not card.cmdline.exists()


def test_unknown_step_is_refused_before_anything_runs(card: Card) -> None:
    run = card.firstboot("keep_machine_id", "grow_everything")
    assert run.returncode == 2
    assert "unknown step 'grow_everything'" in run.stderr
    assert not card.kept.exists()


def test_networkd_duid_derivation_matches_siphash_reference_vectors() -> None:
    """The full image test compares the DHCP identity on the wire with networkd_duid()."""
    key = bytes(range(16))  # the SipHash paper's reference key and messages 00, 00 01, ...
    assert siphash24(key, b"") == 0x726FDB47DD0E0E31
    assert siphash24(key, bytes(range(8))) == 0x93F5F5799A932462
    assert siphash24(key, bytes(range(15))) == 0xA129CA6149BE45E5
    duid = networkd_duid(FIRST_ID)
    assert duid[:6] == bytes.fromhex("0002 0000ab11")  # DUID-EN, enterprise number 43793
    assert duid != networkd_duid(OTHER_ID) and len(duid) == 14


def test_an_unseeded_card_gets_the_default_config_for_zero_touch(card: Card) -> None:
    run = card.firstboot("apply_seed", "zero_touch_config")
    assert run.returncode == 0, run.stderr
    config_path = card.data / "offhook/phone.toml"
    assert load_config(config_path) == PhoneConfig()  # no provisioning.url: discovery runs
    assert "default config for zero-touch" in run.stdout
    config_path.write_text('[device]\nname = "desk 7"\n')  # configured since: kept
    assert card.firstboot("zero_touch_config").returncode == 0
    assert load_config(config_path).device.name == "desk 7"


@pytest.mark.skipif(
    shutil.which("fw_printenv") is None or shutil.which("mkenvimage") is None,
    reason="needs libubootenv-tool and u-boot-tools (scripts/setup.sh)",
)
def test_a_uboot_card_gets_the_kept_machine_id_in_its_slot_state(tmp_path: Path) -> None:
    """U-Boot's script builds the command line from the slot state (image/uboot.py): the kept id
    goes there through the real fw_setenv, the slot variables RAUC keeps are left as they were."""
    card = Card(tmp_path, FIRST_ID)
    env = uboot.write_env(card.boot / "ab.env", {**uboot.FACTORY_STATE, "BOOT_ORDER": "B A"})
    card.fw_env_config.write_text(uboot.fw_env_config(str(env)))
    proc = card.firstboot()
    assert proc.returncode == 0, proc.stderr
    assert "machine-id pinned in the U-Boot slot state" in proc.stdout
    listed = subprocess.run(["fw_printenv", "-c", str(card.fw_env_config)], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    values = dict(line.split("=", 1) for line in listed.splitlines())
    assert values == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0",
                      "MACHINE_ID": FIRST_ID}  # fmt: skip
    before = env.read_bytes()
    assert "U-Boot slot state" not in card.firstboot().stdout
    assert env.read_bytes() == before  # an unchanged id is not written again
