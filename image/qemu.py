"""The QEMU machine each board's image boots on, in one place: the boot test and the boot
benchmark build their command lines from here.

Every machine has a virtio disk, user networking (the guest reaches the host at 10.0.2.2; the host
reaches the guest's control API through a ``hostfwd`` on a loopback port), a serial console on
stdio, and a sound card driven by a real kernel driver: QEMU's Intel HDA controller with an
hda-duplex codec (line out, line in), whose audio is QEMU's ``alsa`` backend on the host. There the
backend's PCMs are alsa-lib ``file`` PCMs (``asoundrc()``): what the phone plays lands in a raw
file the host reads, and what the phone captures is read from a raw file the host wrote.

``MACHINES`` has one entry per machine: the default per card architecture (amd64: a qemu-amd64
card; arm64: a Raspberry Pi card under ``-M virt``) and opt-in ones for a card's architecture
(``raspi3b``: the Pi card on QEMU's Raspberry Pi 3 model with the DTB its firmware would load, the
SD card, the mini UART and USB networking): binary, machine and CPU, what its kernel command line
needs there, devices. Another machine is another entry.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError

GUEST_CONTROL_PORT = 8080
HOST_FROM_GUEST = "10.0.2.2"  # QEMU user networking's address for the host
AUDIO_RATE = 16000  # the host side of the emulated card: mono S16_LE at this rate, both ways
AUDIO_PLAYBACK_PCM = "offhook_played"  # host alsa-lib PCM names in asoundrc()
AUDIO_CAPTURE_PCM = "offhook_mic"


class QemuMachineError(OffhookError, ValueError):
    """An unknown QEMU machine, or one that cannot boot the card given."""


@dataclass(frozen=True)
class Machine:
    """How a card of one architecture is run under QEMU."""

    binary: str
    qemu_arch: str  # platform.machine() of a host that can run it with KVM
    card_arch: str  # the architecture of the cards it boots
    machine: tuple[str, ...] = ()  # -M/-cpu arguments
    smp: int = 1
    memory_mb: int | None = None  # a board model with fixed memory; None: as the caller asks
    # cmdline.txt arguments this machine replaces (prefixes), and what it appends
    drop_cmdline: tuple[str, ...] = ()
    add_cmdline: tuple[str, ...] = ()
    drive: str = "virtio"  # -drive if=
    disk_power_of_two: bool = False  # QEMU's SD card model needs a power-of-two size
    dtb: str | None = None  # the device tree, by its name on the card's boot partition
    serial: tuple[str, ...] = ("-serial", "stdio")  # the console's UART on stdio
    net_device: str = "virtio-net-pci"
    extra: tuple[str, ...] = ("-device", "virtio-rng-pci")
    # Intel HDA works on any machine with PCI (pc, q35, arm virt): the guest's snd-hda-intel.
    sound: tuple[str, ...] = ("-device", "intel-hda", "-device", "hda-duplex,audiodev=snd0")
    # A U-Boot card (the Pi's A/B): False, U-Boot is QEMU's firmware (-bios, u-boot-qemu's
    # build for the machine); True, the card's own U-Boot is loaded as the kernel, with the DTB,
    # as the Pi firmware loads it.
    uboot_as_kernel: bool = False
    # How the boot call checks audio: "line" (the host reads the line out, writes the line in)
    # or "echo" (no sound card on the host side: the guest loops its playback into its capture).
    audio_check: str = "line"


# A Pi card's device tree for -M raspi3b: what the Pi 3 B's firmware loads with upstream_kernel=1.
RASPI3B_DTB = "bcm2837-rpi-3-b.dtb"

MACHINES: dict[str, Machine] = {
    "amd64": Machine(binary="qemu-system-x86_64", qemu_arch="x86_64", card_arch="amd64"),
    # A Raspberry Pi card under -M virt: the console is QEMU's PL011 (ttyAMA0; the card names the
    # Pi header's ttyS1) and offhook.board=emulated runs the phone without Pi hardware (the rpi
    # overlay's offhook-board-override reads it). Multi-threaded TCG: two vCPUs roughly halve
    # the emulated boot on two host cores.
    "arm64": Machine(
        binary="qemu-system-aarch64",
        qemu_arch="aarch64",
        card_arch="arm64",
        machine=("-M", "virt", "-cpu", "cortex-a53"),
        smp=2,
        drop_cmdline=("console=", "quiet"),
        add_cmdline=("console=ttyAMA0,115200", "offhook.board=emulated"),
    ),
    # QEMU's Raspberry Pi 3 B (BCM2837, four Cortex-A53, 1 GiB): the card's kernel, initramfs and
    # the Pi 3 B's upstream DTB, the root on the SD card (sdhost/sdhci), the console on the mini
    # UART (ttyS1, QEMU's second serial port, as cmdline.txt says), networking through the dwc2
    # USB host and a usb-net device. vchiq (the VideoCore's firmware channel) is not
    # emulated and its probe stalls the boot, so it is not loaded. The model has no sound
    # device QEMU can back, so the guest's snd-aloop is the card and the phone's audio is looped
    # back to it (offhook.audio=loopback, read by the rpi overlay's offhook-board-override).
    "raspi3b": Machine(
        binary="qemu-system-aarch64",
        qemu_arch="aarch64",
        card_arch="arm64",
        machine=("-M", "raspi3b"),
        smp=4,
        memory_mb=1024,
        drop_cmdline=("console=", "quiet"),
        add_cmdline=(
            "console=ttyS1,115200",
            "modprobe.blacklist=vchiq",
            "modules_load=snd-aloop",
            "offhook.board=emulated",
            "offhook.audio=loopback",
        ),
        drive="sd",
        disk_power_of_two=True,
        dtb=RASPI3B_DTB,
        serial=("-serial", "null", "-serial", "stdio"),
        # The guest binds it with cdc_subset (QEMU's usb-net has the Linux gadget's USB ids),
        # which names it usb0 with a random MAC: the image's networkd matches usb* too.
        net_device="usb-net",
        extra=(),
        sound=(),
        audio_check="echo",
        uboot_as_kernel=True,
    ),
}
QEMU_ARCH = {arch: machine.qemu_arch for arch, machine in MACHINES.items()}
DEFAULT_MACHINE = {"amd64": "amd64", "arm64": "arm64"}  # card architecture -> machine


def machine_names(card_arch: str) -> list[str]:
    """The machines that boot a card of this architecture."""
    return [name for name, machine in MACHINES.items() if machine.card_arch == card_arch]


def machine_for(arch: str) -> Machine:
    try:
        return MACHINES[arch]
    except KeyError:
        raise QemuMachineError(f"no QEMU machine {arch!r} (known: {', '.join(MACHINES)})") from None


def accelerator_args() -> list[str]:
    """KVM when usable, else TCG. A kvm_pvm host opens /dev/kvm fine but guests then fail with
    "emulation failure", so that case counts as unusable; OFFHOOK_QEMU_ACCEL overrides."""
    forced = os.environ.get("OFFHOOK_QEMU_ACCEL", "")
    if forced:
        return ["-accel", forced]
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
    # With both, QEMU falls back to TCG when KVM cannot start.
    return ["-accel", "kvm", "-accel", "tcg"] if usable else ["-accel", "tcg"]


def machine_args(arch: str) -> list[str]:
    """The QEMU binary, machine, accelerator and CPUs: KVM only for the host's own architecture."""
    machine = machine_for(arch)
    native = machine.qemu_arch == platform.machine()
    accel = accelerator_args() if native else ["-accel", "tcg"]
    return [machine.binary, *machine.machine, *accel, "-smp", str(machine.smp)]


def guest_cmdline(cmdline: str, arch: str) -> str:
    """cmdline.txt as this architecture's QEMU machine needs it."""
    machine = machine_for(arch)
    kept = [arg for arg in cmdline.split()
            if not any(arg.startswith(prefix) for prefix in machine.drop_cmdline)]  # fmt: skip
    return " ".join([*kept, *machine.add_cmdline])


def asoundrc(played: Path, mic: Path) -> str:
    """alsa-lib config for QEMU's audio backend (put in $HOME/.asoundrc of the QEMU process):
    playback appended raw to ``played``, capture read raw from ``mic``. Both sit on the ``null``
    PCM, which has no clock: QEMU's audio timer and the emulated card pace them."""
    return (
        f'pcm.{AUDIO_PLAYBACK_PCM} {{\n    type file\n    slave.pcm "null"\n'
        f'    file "{played}"\n    format "raw"\n}}\n'
        f'pcm.{AUDIO_CAPTURE_PCM} {{\n    type file\n    slave.pcm "null"\n'
        f'    file "/dev/null"\n    infile "{mic}"\n    format "raw"\n}}\n'
    )


def audiodev_args() -> list[str]:
    # try-poll=off: the null PCM is always ready, polling it would spin QEMU's main loop.
    fixed = f"frequency={AUDIO_RATE},channels=1,format=s16"
    spec = ",".join(
        [
            "alsa,id=snd0",
            f"out.dev={AUDIO_PLAYBACK_PCM}",
            f"in.dev={AUDIO_CAPTURE_PCM}",
            "out.try-poll=off",
            "in.try-poll=off",
            *(f"out.{kv}" for kv in fixed.split(",")),
            *(f"in.{kv}" for kv in fixed.split(",")),
        ]
    )
    return ["-audiodev", spec]


def qemu_command(
    disk: Path,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str,
    host_port: int,
    memory_mb: int,
    pcap: Path | None = None,
    arch: str = "amd64",
    *,
    monitor: Path | None = None,
    sound: bool = True,
    dtb: Path | None = None,
    reboot_in_guest: bool = False,
    firmware: Path | None = None,
) -> list[str]:
    """The QEMU command line for one power-on of a card (direct kernel boot); ``cmdline`` as
    given (``guest_cmdline`` makes it fit the machine). ``arch`` names the machine
    (``MACHINES``); one with a ``dtb`` needs that file given as ``dtb``."""
    machine = machine_for(arch)
    if machine.dtb and dtb is None:
        raise QemuMachineError(f"QEMU machine {arch!r} boots with a device tree: none given")
    device_tree = ["-dtb", str(dtb)] if dtb else []
    # The guest's traffic on the user network, for its DHCP identity.
    dump = ["-object", f"filter-dump,id=dump0,netdev=n0,file={pcap}"] if pcap else []
    # QMP on a socket: the call test adds the RTP port forward once it is known.
    mon = ["-monitor", "none"] + (["-qmp", f"unix:{monitor},server=on,wait=off"] if monitor else [])
    audio = [*audiodev_args(), *machine.sound] if sound else []
    # No kernel: the firmware boots the disk's own bootloader: SeaBIOS GRUB on a qemu-amd64 A/B
    # card; on a Pi A/B card ``firmware`` (u-boot-qemu's U-Boot) runs the card's boot script.
    direct = (
        ["-kernel", str(kernel), "-initrd", str(initrd), *device_tree, "-append", cmdline]
        if kernel is not None and initrd is not None
        else []
    )
    bios: list[str] = []
    if firmware is not None:
        bios = (["-kernel", str(firmware), *device_tree] if machine.uboot_as_kernel
                else ["-bios", str(firmware)])  # fmt: skip
    # A guest's reboot ends QEMU (a boot test sees it), unless the test wants it rebooted.
    no_reboot = [] if reboot_in_guest else ["-no-reboot"]
    return [
        *machine_args(arch),
        "-m", str(machine.memory_mb or memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", *no_reboot,
        *machine.serial, *mon,
        *bios, *direct,
        "-drive", f"file={disk},format=raw,if={machine.drive},cache=unsafe",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_CONTROL_PORT}",
        "-device", f"{machine.net_device},netdev=n0",
        *machine.extra,
        *audio,
        *dump,
    ]  # fmt: skip
