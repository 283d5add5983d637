"""The Raspberry Pi recipe for real, up to the card image: arm64 debootstrap under qemu-user,
Debian's arm64 kernel, raspi-firmware and its hooks, the initramfs; then overlay, configure(),
boot_files(), strip and assembly exactly as ``offhook image build --board rpi`` runs them
(image/build.py's image_from_tree), read back with mtools, debugfs, file and fsck.

Only the firmware venv is left out: it needs a cp311 aarch64 pjsua2 wheel. The card tests are
opt-in with OFFHOOK_TEST_RPI_ROOTFS=1, as root (7-8.5 minutes cold on 2 shared cores, mostly
debootstrap and dpkg under qemu-user; about 25 s with the root filesystem cached in the image
cache). The config.txt check at the end runs with every `make image-test`, in milliseconds.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from offhook.contract.signing import development_pair
from offhook.image import rootfs, uboot
from offhook.image.assemble import source_date_epoch
from offhook.image.boards import board
from offhook.image.build import (
    ENABLED_UNITS,
    WIFI_DEVICE,
    BuildError,
    BuildOptions,
    Steps,
    check_pi_config,
    default_cache,
    image_from_tree,
    pi_config_files,
)
from offhook.image.layout import MIB, Layout

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]

# What a Pi 3 / 3+ / Zero 2 W (start.elf, fixup.dat, bootcode.bin read by the boot ROM) and a
# Pi 4 (start4.elf, fixup4.dat; its boot code is in EEPROM) need on the FAT partition.
PI_FIRMWARE = ("bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat")
# upstream_kernel=1 makes the firmware load the upstream names (bcm2837-*), which Debian's kernel
# ships, instead of the Raspberry Pi kernel's bcm2710-* ones.
PI_DTBS = {
    "bcm2837-rpi-3-b.dtb": "raspberrypi,3-model-b",
    "bcm2837-rpi-3-b-plus.dtb": "raspberrypi,3-model-b-plus",
    "bcm2837-rpi-zero-2-w.dtb": "raspberrypi,model-zero-2-w",
    "bcm2711-rpi-4-b.dtb": "raspberrypi,4-model-b",
}
# Drivers for a root file system on the SD card (Pi 3/Zero 2 W sdhost, Pi 4 emmc2 and its
# regulators) and on USB (dwc2, xhci behind PCIe with the VL805 reset).
INITRAMFS_DRIVERS = (
    "ext4.ko", "vfat.ko", "bcm2835.ko", "sdhci-iproc.ko", "fixed.ko", "gpio-regulator.ko",
    "dwc2.ko", "phy-generic.ko", "xhci-pci.ko", "reset-raspberrypi.ko", "usb-storage.ko",
    "uas.ko", "sd_mod.ko",
)  # fmt: skip
EM_AARCH64 = 183
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@dataclass(frozen=True)
class Card:
    image: Path
    layout: Layout
    boot: Path  # the FAT partition's files, copied out with mcopy
    boot_fat: Path
    root_ext4: Path
    data_ext4: Path
    etc: Path  # /etc of the root partition, dumped with debugfs


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, check=True, **kwargs)


def extract(image: Path, start: int, size: int, dest: Path) -> Path:
    run(["dd", f"if={image}", f"of={dest}", "bs=1M", f"skip={start // MIB}",
         f"count={size // MIB}", "conv=sparse", "status=none"])  # fmt: skip
    return dest


def debugfs(part: Path, request: str) -> str:
    return run(["debugfs", "-R", request, str(part)], text=True).stdout


def resolve(card: Card, path: str, hops: int = 8) -> str:
    """``path`` in the root partition with its symbolic links followed."""
    for _ in range(hops):
        found = re.search(r'link dest: "([^"]+)"', debugfs(card.root_ext4, f"stat {path}"))
        if found is None:
            return path
        path = os.path.normpath(os.path.join(os.path.dirname(path), found[1]))
    raise AssertionError(f"{path}: more than {hops} symbolic links")


def cpio_names(archive: bytes) -> list[str]:
    """Member names of a newc cpio archive (the initramfs format)."""
    names, offset = [], 0
    while archive.startswith(b"070701", offset):
        header = archive[offset : offset + 110]
        name_size, file_size = int(header[94:102], 16), int(header[54:62], 16)
        name = archive[offset + 110 : offset + 110 + name_size - 1].decode()
        if name == "TRAILER!!!":
            break
        names.append(name)
        offset += -(-(110 + name_size) // 4) * 4 + -(-file_size // 4) * 4
    return names


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Card:
    if os.environ.get("OFFHOOK_TEST_RPI_ROOTFS") != "1":
        pytest.skip(
            "arm64 root filesystem under qemu-user takes minutes: OFFHOOK_TEST_RPI_ROOTFS=1"
        )
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    work = tmp_path_factory.mktemp("rpi")
    target = board("rpi", BuildOptions(board="rpi", out=work).mirror)
    tree, boot = work / "root", work / "boot"
    steps = Steps(Console(stderr=True))
    with open(work / "rootfs.log", "w", encoding="utf-8") as log_to:
        steps.run(
            "root filesystem (debootstrap, kernel)",
            rootfs.cached_bootstrap, target.recipe, tree, default_cache() / "rootfs", log_to,
        )  # fmt: skip
    image = work / "offhook-rpi.img"
    layout = image_from_tree(
        tree, boot, target, image, size=None, id_seed="offhook", epoch=source_date_epoch(),
        workdir=work / "parts", steps=steps, signing=development_pair(work / "keys"),
    )  # fmt: skip
    parts = {p.name: p for p in layout.partitions}
    boot_fat = extract(image, parts["boot"].start, parts["boot"].size, work / "boot.fat")
    root_ext4 = extract(image, parts["root"].start, parts["root"].size, work / "root.ext4")
    data_ext4 = extract(image, parts["data"].start, parts["data"].size, work / "data.ext4")
    copied = work / "boot-copy"
    copied.mkdir()
    run(["mcopy", "-s", "-n", "-i", str(boot_fat), "::/*", str(copied)], env=MTOOLS_ENV)
    etc = work / "etc-copy"
    etc.mkdir()
    debugfs(root_ext4, f"rdump /etc {etc}")
    return Card(image, layout, copied, boot_fat, root_ext4, data_ext4, etc / "etc")


def test_boot_partition_holds_the_pi_boot_chain(card: Card, tmp_path: Path) -> None:
    for name in PI_FIRMWARE:  # as shipped by the raspi-firmware package in the root
        packaged = tmp_path / name
        debugfs(card.root_ext4, f"dump /usr/lib/raspi-firmware/{name} {packaged}")
        on_card = (card.boot / name).read_bytes()
        assert on_card and on_card == packaged.read_bytes(), name
    for name, compatible in PI_DTBS.items():
        blob = (card.boot / name).read_bytes()
        assert blob[:4] == b"\xd0\x0d\xfe\xed", name  # flattened device tree magic
        assert compatible.encode() in blob, name


def test_config_txt_boots_uboot_which_boots_the_slots_kernel(card: Card, tmp_path: Path) -> None:
    """The firmware loads U-Boot (u-boot-rpi's 64-bit build) as its kernel; U-Boot's script
    boots the kernel and initramfs of the slot it picks, from that slot (image/uboot.py)."""
    config = (card.boot / "config.txt").read_text()
    lines = {line.strip() for line in config.splitlines()}
    assert {"arm_64bit=1", "upstream_kernel=1", "enable_uart=1", "dtparam=i2c_arm=on"} <= lines
    named = pi_config_files(config)
    assert named == {"kernel": uboot.UBOOT_KERNEL_NAME}  # no initramfs: U-Boot loads the slot's
    packaged = tmp_path / "u-boot.bin"
    debugfs(card.root_ext4, f"dump /{uboot.RPI_UBOOT} {packaged}")
    assert (card.boot / "u-boot.bin").read_bytes() == packaged.read_bytes()
    assert b"U-Boot 2023.01" in packaged.read_bytes()
    assert not list(card.boot.glob("vmlinuz*")) and not list(card.boot.glob("initrd.img*"))
    script = (card.boot / uboot.SCRIPT_NAME).read_bytes()
    assert script[:4] == b"\x27\x05\x19\x56"  # a U-Boot image (mkimage), type script
    assert b"console=ttyS1,115200" in script and b"rauc.slot=" in script
    kernel = tmp_path / "vmlinuz"
    debugfs(card.root_ext4, f"dump {resolve(card, '/vmlinuz')} {kernel}")
    raw = kernel.read_bytes()
    image = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    assert image[56:60] == b"ARM\x64"  # arm64 Image header magic: what booti boots
    initrd = tmp_path / "initrd.img"
    debugfs(card.root_ext4, f"dump {resolve(card, '/initrd.img')} {initrd}")
    initramfs = subprocess.run(["zstd", "-dc", str(initrd)], capture_output=True, check=True).stdout
    members = {Path(name).name for name in cpio_names(initramfs)}
    assert "init" in members
    missing = [driver for driver in INITRAMFS_DRIVERS if driver not in members]
    assert not missing, f"initramfs lacks {missing}"


def test_card_has_two_slots_and_the_uboot_slot_state(card: Card, tmp_path: Path) -> None:
    table = json.loads(run(["sfdisk", "--json", str(card.image)], text=True).stdout)
    parts = table["partitiontable"]["partitions"]
    assert len(parts) == 4 and parts[1]["size"] == parts[3]["size"]  # A and B, equal
    assert card.layout.partition("root").size == board("rpi", "m").slot_size
    state = tmp_path / "ab.env"
    run(["mcopy", "-i", str(card.boot_fat), f"::/{uboot.ENV_FILE}", str(state)], env=MTOOLS_ENV)
    config = tmp_path / "fw_env.config"
    config.write_text(uboot.fw_env_config(str(state)))
    listed = run(["fw_printenv", "-c", str(config)], text=True).stdout.split()
    assert listed == ["BOOT_A_LEFT=3", "BOOT_B_LEFT=0", "BOOT_ORDER=A"]
    # RAUC's side: the uboot backend, and fw_setenv pointed at the same file
    system = (card.etc / "rauc/system.conf").read_text()
    assert "bootloader=uboot" in system and "/run/offhook/slots/B" in system
    assert "/boot/firmware/offhook/ab.env" in (card.etc / "fw_env.config").read_text()
    wanted = {link.name for link in (card.etc / "systemd/system").glob("*.wants/*")}
    assert {"offhook-rauc-slots.service", "offhook-slot-watchdog.service"} <= wanted
    assert (card.etc / "systemd/system/rauc.service.d/offhook-slots.conf").is_file()


def test_root_partition_is_the_configured_arm64_system(card: Card, tmp_path: Path) -> None:
    fstab = (card.etc / "fstab").read_text()
    fat_label = run(["mlabel", "-s", "-i", str(card.boot_fat), "::"], text=True, env=MTOOLS_ENV)
    labels = {
        "/data": run(["e2label", str(card.data_ext4)], text=True).stdout.strip(),
        "/boot/firmware": fat_label.stdout.split()[-1],
    }
    for mountpoint, label in labels.items():
        pattern = rf"^LABEL={re.escape(label)}\s+{re.escape(mountpoint)}\s"
        assert re.search(pattern, fstab, re.MULTILINE), (mountpoint, label)
    # both slots carry OFFHOOK-ROOT: the root is the one U-Boot named (read-only, "ro")
    assert not re.search(r"^LABEL=OFFHOOK-ROOT\s+/\s", fstab, re.MULTILINE)
    units = card.etc / "systemd/system"
    wanted = {link.name for link in units.glob("*.wants/*")}
    for unit in ENABLED_UNITS:
        assert unit in wanted, unit
    # Wi-Fi comes up with wlan0 and holds nothing when there is none.
    wifi = units / f"{WIFI_DEVICE}.wants/wpa_supplicant@wlan0.service"
    assert os.readlink(wifi) == "/lib/systemd/system/wpa_supplicant@.service"
    assert not list(units.glob("*.target.wants/wpa_supplicant*"))
    assert (card.etc / "machine-id").read_bytes() == b""
    assert "OFFHOOK_BOARD=rpi" in (card.etc / "default/offhook").read_text()
    assert "ttyS1,115200" in (card.etc / "default/raspi-firmware").read_text()
    assert "Type: directory" in debugfs(card.root_ext4, "stat /boot/firmware")
    # cfg80211's regulatory.db and the Pi 4's Wi-Fi firmware, both reached through links
    for wifi_file in ("/lib/firmware/regulatory.db", "/lib/firmware/brcm/brcmfmac43455-sdio.bin"):
        assert "Type: regular" in debugfs(card.root_ext4, f"stat {resolve(card, wifi_file)}")
    bash = tmp_path / "bash"
    debugfs(card.root_ext4, f"dump /usr/bin/bash {bash}")
    assert "ARM aarch64" in run(["file", "-b", str(bash)], text=True).stdout
    header = bash.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64


def test_every_partition_passes_fsck(card: Card) -> None:
    run(["fsck.vfat", "-n", str(card.boot_fat)])
    for part in (card.root_ext4, card.data_ext4):
        run(["e2fsck", "-fn", str(part)])


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({}, "wrote no config.txt"),
        ({"config.txt": "arm_64bit=1\ninitramfs initrd.img\n", "initrd.img": ""}, "no kernel"),
        ({"config.txt": "kernel=vmlinuz\n", "vmlinuz": ""}, "no initramfs"),
        ({"config.txt": "kernel=vmlinuz\ninitramfs initrd.img\n", "vmlinuz": ""}, "initrd.img"),
    ],
)
def test_a_boot_tree_the_firmware_cannot_boot_is_refused(
    tmp_path: Path, files: dict[str, str], error: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(BuildError, match=error):
        check_pi_config(tmp_path)
    (tmp_path / "vmlinuz").write_text("")
    (tmp_path / "initrd.img").write_text("")
    (tmp_path / "config.txt").write_text(
        "kernel=vmlinuz # Image\ninitramfs initrd.img followkernel\n"
    )
    check_pi_config(tmp_path)


# --- opt-in: the whole rpi image with the phone inside, booted to a call ------------------------


@pytest.fixture(scope="module")
def rpi_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``offhook image build --board rpi`` as a user runs it: the pjsua2 wheel cached (the
    compile test before this file caches it) or compiled from the pinned release."""
    if os.environ.get("OFFHOOK_TEST_RPI_IMAGE") != "1":
        pytest.skip("the rpi image build and its emulated boot take many minutes: "
                    "OFFHOOK_TEST_RPI_IMAGE=1 (make image-test-rpi)")  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    from offhook.image.build import build

    out = tmp_path_factory.mktemp("rpi-image")
    manifest = build(BuildOptions(board="rpi", out=out, compress=False), Console(stderr=True))
    print("rpi image build steps:", manifest["step_seconds"], "total", manifest["build_seconds"])
    return out / "offhook-rpi.img", manifest


def test_rpi_image_holds_the_firmware_venv_with_the_compiled_pjsua2(
    rpi_image: tuple[Path, dict],
) -> None:
    image, manifest = rpi_image
    assert manifest["board"] == "rpi" and manifest["arch"] == "arm64"
    assert manifest["pjsua2"]["origin"] in ("cache", "compile")
    assert manifest["pjsua2"]["wheel"] == "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl"
    packages = manifest["python_packages"]
    assert packages["pjsua2"] == "2.15.1" and "offhook" in packages
    assert "rpi-gpio" in {re.sub(r"[-_.]+", "-", name).lower() for name in packages}
    # The self-test ran again in the image tree (its own libssl3, libopus0, the venv's python).
    assert "pjsua2 self-test in the image (qemu-user)" in manifest["step_seconds"]
    assert "libopus0" in manifest["debian_packages"]
    assert image.stat().st_size == manifest["layout"]["disk_size"]


def test_rpi_image_boots_under_qemu_virt_to_a_call(rpi_image: tuple[Path, dict]) -> None:
    """The card's own kernel and initramfs (named by its config.txt) and root filesystem under
    qemu-system-aarch64 -M virt; the phone (emulated board, offhook.board=emulated) registers
    with a Kamailio on the host and calls a baresip there, audio checked both ways."""
    from offhook.image.boottest import boot_test

    image, _ = rpi_image
    result = boot_test(image, call=True, timeout=2400, memory_mb=1024)
    print("rpi boot under qemu-system-aarch64 -M virt:", result.summary())
    # U-Boot (u-boot-qemu as firmware) ran the card's script, which booted slot A's own kernel
    # with the command line it built (the kernel reports it)
    assert "rauc.slot=A" in result.boots[0].cmdline
    assert "root=PARTUUID=" in result.boots[0].cmdline
    assert result.hostname == "offhook-boottest"
    assert result.registered_contact
    assert {"firstboot", "service", "control_api", "registered"} <= set(result.milestones)
    assert result.call is not None
    assert {"call_connected", "audio", "hung_up"} <= set(result.milestones)


def test_rpi_image_boots_under_qemu_raspi3b_to_a_call(rpi_image: tuple[Path, dict]) -> None:
    """The same card through QEMU's Raspberry Pi 3 B model (opt-in on top of the image test:
    OFFHOOK_TEST_RPI_RASPI3B=1, or make image-test-rpi RASPI3B=1): the card's own U-Boot (what
    its config.txt names) with the Pi 3 B's upstream DTB, which runs the card's boot script and
    boots slot A's kernel and initramfs, the root on the emulated SD card (sdhost),
    the console on the mini UART (ttyS1), the network through dwc2 and usb-net. The phone
    registers, calls baresip, and baresip's tone comes back to it through the phone's playback
    and capture on the guest's snd-aloop (the model has no sound device the host can back)."""
    if os.environ.get("OFFHOOK_TEST_RPI_RASPI3B") != "1":
        pytest.skip("the raspi3b boot takes many minutes more: OFFHOOK_TEST_RPI_RASPI3B=1")
    from offhook.image.boottest import boot_test

    image, _ = rpi_image
    result = boot_test(image, call=True, timeout=2400, machine="raspi3b")
    print("rpi boot under qemu-system-aarch64 -M raspi3b:", result.summary())
    assert result.hostname == "offhook-boottest" and result.registered_contact
    assert "rauc.slot=A" in result.boots[0].cmdline  # the card's U-Boot chose the slot
    assert {"firstboot", "service", "control_api", "registered"} <= set(result.milestones)
    assert result.call is not None and result.call.echo_share >= 0.5
    assert {"call_connected", "audio", "hung_up"} <= set(result.milestones)


def test_rpi_image_audio_survives_dmix_drops_and_xruns(
    rpi_image: tuple[Path, dict], tmp_path: Path
) -> None:
    """The firmware's audio bridge on alsa-lib's own default PCMs for a card (dmix and dsnoop
    with softvol, as a Pi's USB sound card gets them) in the booted image under -M virt, on
    snd-hda-intel: a tone started every 4 s drops the playback queue, TCG makes both streams
    xrun. Before the fix the first drop left the playback at EBADFD for good (dmix still reports
    RUNNING after a drop, so pyalsaaudio never prepares it): hundreds to thousands of
    "File descriptor in bad state" writes in 30 s. Now such a PCM is reopened."""
    from tests.fixtures.guest_ssh import booted_with_ssh

    image, _ = rpi_image
    probe = Path(__file__).parents[1] / "fixtures" / "guest_audio_probe.py"
    with booted_with_ssh(image, tmp_path) as guest:
        # the phone holds hw:0,0 (its plug default on the emulated board): stop it first
        assert guest.run("systemctl stop offhook.service").returncode == 0
        guest.copy(probe, "/tmp/guest_audio_probe.py")
        done = guest.run("/opt/offhook/venv/bin/python /tmp/guest_audio_probe.py 30", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print("bridge on dmix/dsnoop in the guest:", report)
    assert report["cards"] == [True, True]  # alsa-lib names the card behind both PCMs
    assert not [why for why in report["reasons"] if "bad state" in why]
    assert report["reopens"][0] >= 1  # the tone drops did leave dmix unrestartable
    # both streams kept moving (how far depends on the guest's speed under TCG: 300-1700
    # periods of 10 ms in 30 s here, from load average 17 down to 5)
    assert report["stats"]["frames_played"] > 100 and report["stats"]["frames_captured"] > 100
