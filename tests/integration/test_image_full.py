"""Full qemu-amd64 image: debootstrap build, then boot under QEMU to a registered, answering phone
that calls a baresip on the host with audio both ways through the guest's kernel sound driver
(QEMU's intel-hda), cut the power and boot the same card again: it keeps its machine-id and DHCP
identity. The build's own .img.zst flashes directly.

Runs in `make test` (so CI) and `make image-test` (--run-image-full): about 3 minutes cold on 2
cores (debootstrap ~70 s, firmware venv ~40 s, assembly ~15 s, boot to READY ~45-100 s under TCG,
second boot to DHCP ~20-40 s). Skipped without root: debootstrap and chroot need it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from offhook.image.boottest import boot_test, networkd_duid
from offhook.image.build import BuildOptions, build
from offhook.image.layout import read_partition_table
from offhook.image.manifest import verify_manifest

pytestmark = [pytest.mark.image, pytest.mark.image_full, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("building a root filesystem needs root (debootstrap, chroot)")
    out = tmp_path_factory.mktemp("image-out")
    cache = Path(os.environ.get("OFFHOOK_IMAGE_CACHE", Path.home() / ".cache" / "offhook-image"))
    build(BuildOptions(board="qemu-amd64", out=out, cache=cache, compress=True))
    return out


def test_build_outputs_and_manifest(built: Path) -> None:
    image = built / "offhook-qemu-amd64.img"
    manifest = verify_manifest(built / "offhook-qemu-amd64.manifest.json")
    assert set(manifest["outputs"]) == {
        image.name, image.name + ".bmap", image.name + ".zst", "offhook-qemu-amd64.raucb",
    }  # fmt: skip
    assert (built / "offhook-qemu-amd64.raucb").stat().st_size > 0  # the signed update bundle
    assert manifest["debian_packages"]["systemd"].startswith("252")
    assert "offhook" in manifest["python_packages"]
    assert "pjsua2_python" in {k.lower().replace("-", "_") for k in manifest["python_packages"]}
    assert len(read_partition_table(image)) == 4  # boot, root A, data, root B
    unpacked = built / "unpacked.img"
    subprocess.run(["zstd", "-q", "-d", str(image) + ".zst", "-o", str(unpacked)], check=True)
    assert subprocess.run(["cmp", "-s", str(image), str(unpacked)]).returncode == 0
    unpacked.unlink()
    json.dumps(manifest)


def test_boots_to_registered_phone_and_keeps_its_identity(built: Path, tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    result = boot_test(
        built / "offhook-qemu-amd64.img",
        kamailio=True,
        call=True,
        timeout=900,
        console_log=console,
        reboots=1,
    )
    assert result.hostname == "offhook-boottest"
    assert list(result.milestones) == [
        "firstboot", "service", "control_api", "registered",
        "call_connected", "audio", "hung_up",
        "boot2_firstboot", "boot2_dhcp",
    ]  # fmt: skip
    assert result.registered_contact.startswith("<sip:1001@")
    assert "data partition grown" in console.read_text(errors="replace")
    # The call: audio both ways through snd-hda-intel in the guest.
    call = result.call
    assert call is not None and call.codec
    assert call.phone_tone_share >= 0.5, "baresip did not hear the phone's microphone tone"
    assert call.peer_tone_share >= 0.5, "the phone's line out did not play the far end"
    text = console.read_text(errors="replace")
    assert "snd_hda_codec_generic" in text
    # The card paces both streams (alsa-lib reports it): no wall-clock pacing, no 'stalled' xruns.
    for direction in ("playback", "capture"):
        assert f"audio device clocked device=default direction={direction}" in text
    assert 'reason="stalled' not in text  # the xrun's reason field (offhook.contract.logs)

    first, second = result.boots
    kept = result.kept_machine_id_on_disk
    assert len(kept) == 32, f"no machine-id kept on /data: {kept!r}"
    # The first boot ran with the id systemd made and kept it; the power-cycled card boots with it.
    assert first.machine_id == second.machine_id == kept
    assert first.kept_machine_id == second.kept_machine_id == kept
    assert "systemd.machine_id=" not in first.cmdline
    pinned = [word for word in second.cmdline.split() if word.startswith("systemd.machine_id=")]
    assert pinned == [f"systemd.machine_id={kept}"]
    assert second.hostname == "offhook-boottest"
    # systemd-networkd's DHCPv4 client identifier (0xff, IAID, DUID) is the same on both boots
    # and its DUID is the one derived from the kept machine-id.
    assert first.dhcp_client_id == second.dhcp_client_id
    assert first.dhcp_client_id[:1] == b"\xff"
    assert first.dhcp_client_id[5:] == networkd_duid(kept)


def test_build_writes_a_zst_that_flashes_directly(built: Path, tmp_path: Path) -> None:
    """`offhook flash offhook-qemu-amd64.img.zst` (the build's own output) writes the image."""
    from offhook.image.cli import flash_main
    from offhook.image.manifest import sha256_file

    card = tmp_path / "card.img"
    assert flash_main([str(built / "offhook-qemu-amd64.img.zst"), str(card)]) == 0
    assert sha256_file(card) == sha256_file(built / "offhook-qemu-amd64.img")
