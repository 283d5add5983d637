"""The QEMU machines a card boots on (image/qemu.py) and how the boot test picks and prepares one:
-M raspi3b for a Pi card (its DTB, the SD card padded to a power of two, the mini UART, USB
networking, the guest's snd-aloop), checked against real QEMU and a real card image."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.image.boottest import (
    BootTestError,
    extract_dtb,
    guest_cmdline,
    pad_to_power_of_two,
    pick_machine,
)
from offhook.image.layout import MIB, read_partition_table
from offhook.image.qemu import MACHINES, RASPI3B_DTB, QemuMachineError, machine_names, qemu_command
from offhook.image.sample import make_sample_image

PI_CMDLINE = (
    "console=ttyS1,115200 console=tty1 root=PARTUUID=19852b1c-02 rootfstype=ext4 ro "
    "fsck.repair=yes net.ifnames=0 rootwait quiet"
)


def test_raspi3b_command_line_is_the_pi_3_model(tmp_path: Path) -> None:
    f = tmp_path / "f"
    cmd = qemu_command(f, f, f, "root=x", 1234, 768, arch="raspi3b", dtb=tmp_path / "pi3.dtb")
    assert cmd[0] == "qemu-system-aarch64" and cmd[cmd.index("-M") + 1] == "raspi3b"
    assert cmd[cmd.index("-m") + 1] == "1024"  # the model's fixed memory, not the 768 asked
    assert cmd[cmd.index("-dtb") + 1] == str(tmp_path / "pi3.dtb")
    assert f"file={f},format=raw,if=sd,cache=unsafe" in cmd
    # the header UART is QEMU's second serial port (the PL011 is the first)
    serial = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-serial"]
    assert serial == ["null", "stdio"]
    assert "usb-net,netdev=n0" in cmd
    assert "intel-hda" not in cmd and "virtio-rng-pci" not in cmd  # no PCI on the Pi model
    with pytest.raises(QemuMachineError, match="device tree"):
        qemu_command(f, f, f, "root=x", 1234, 768, arch="raspi3b")


def test_raspi3b_kernel_command_line() -> None:
    args = guest_cmdline(PI_CMDLINE, "raspi3b").split()
    assert [a for a in args if a.startswith("console=")] == ["console=ttyS1,115200"]
    assert "quiet" not in args and "root=PARTUUID=19852b1c-02" in args
    for needed in ("modprobe.blacklist=vchiq", "modules_load=snd-aloop",
                   "offhook.board=emulated", "offhook.audio=loopback"):  # fmt: skip
        assert needed in args
    assert "offhook.audio=loopback" not in guest_cmdline(PI_CMDLINE, "arm64")


def test_machines_per_card_architecture() -> None:
    assert machine_names("arm64") == ["arm64", "raspi3b"]
    assert machine_names("amd64") == ["amd64"]
    assert MACHINES["raspi3b"].audio_check == "echo" and MACHINES["arm64"].audio_check == "line"


def test_pick_machine_for_a_pi_card(tmp_path: Path) -> None:
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB)  # config.txt: a Pi card
    assert pick_machine(image, None) == "arm64"
    assert pick_machine(image, "raspi3b") == "raspi3b"
    with pytest.raises(BootTestError, match=r"boots amd64 cards.*arm64, raspi3b"):
        pick_machine(image, "amd64")
    with pytest.raises(BootTestError, match="no QEMU machine 'pi5'"):
        pick_machine(image, "pi5")


def test_dtb_comes_from_the_boot_partition(tmp_path: Path) -> None:
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB)
    with pytest.raises(BootTestError, match=f"no {RASPI3B_DTB} on the boot partition"):
        extract_dtb(image, tmp_path, RASPI3B_DTB)
    assert extract_dtb(image, tmp_path, "config.txt").read_text().startswith("# sample")


def test_sd_card_padded_to_a_power_of_two_keeps_the_partitions(tmp_path: Path) -> None:
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB, disk_size=None)
    before = read_partition_table(image)
    size = image.stat().st_size
    assert size & (size - 1)  # the sample is not a power of two already
    padded = pad_to_power_of_two(image)
    assert padded == image.stat().st_size and padded & (padded - 1) == 0
    assert size < padded < 2 * size
    assert read_partition_table(image) == before
    assert pad_to_power_of_two(image) == padded  # already one: unchanged


@pytest.mark.skipif(not shutil.which("qemu-system-aarch64"), reason="no qemu-system-aarch64")
def test_real_qemu_accepts_the_raspi3b_devices(tmp_path: Path) -> None:
    """QEMU itself parses the machine's command line (SD drive, two serial ports, usb-net on the
    dwc2 bus) and refuses a card that is not a power of two, which is why it is padded. (The
    Pi's real DTB is loaded in the opt-in boot of the rpi image: QEMU checks it at start.)"""
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB, disk_size=None)
    kernel = tmp_path / "kernel"
    kernel.write_bytes(bytes(4096))
    cmd = qemu_command(image, kernel, kernel, "root=x", 0, 0, arch="raspi3b", dtb=kernel)
    del cmd[cmd.index("-dtb") : cmd.index("-dtb") + 2]
    cmd[cmd.index("-netdev") + 1] = "user,id=n0"  # no host port forward needed here
    bad = subprocess.run([*cmd, "-S"], capture_output=True, text=True, timeout=60, check=False)
    assert "power of 2" in bad.stderr
    pad_to_power_of_two(image)
    started = subprocess.Popen([*cmd, "-S"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        try:
            _, err = started.communicate(timeout=5)
            pytest.fail(f"QEMU refused the raspi3b command line: {err.decode()}")
        except subprocess.TimeoutExpired:
            pass  # still running, stopped at the first instruction (-S): every device accepted
    finally:
        started.kill()
        started.wait()


def test_a_uboot_card_boots_uboot_as_firmware_or_as_the_pis_kernel(tmp_path: Path) -> None:
    """-M virt runs u-boot-qemu's U-Boot as its firmware; -M raspi3b loads the card's own U-Boot
    with the DTB, as the Pi firmware does (config.txt kernel=u-boot.bin). Neither gets an
    initrd or a command line from QEMU: U-Boot's script builds them."""
    disk, fw, dtb = tmp_path / "card.img", tmp_path / "u-boot.bin", tmp_path / "pi3.dtb"
    virt = qemu_command(disk, None, None, "", 1234, 1024, arch="arm64", firmware=fw)
    assert virt[virt.index("-bios") + 1] == str(fw)
    assert "-kernel" not in virt and "-append" not in virt and "-initrd" not in virt
    pi = qemu_command(disk, None, None, "", 1234, 1024, arch="raspi3b", firmware=fw, dtb=dtb)
    assert pi[pi.index("-kernel") + 1] == str(fw) and pi[pi.index("-dtb") + 1] == str(dtb)
    assert "-bios" not in pi and "-append" not in pi
