"""The update agent's service against the real RAUC (Debian's rauc 1.8 service on a private
D-Bus system bus, file-backed slots, grubenv through grub-editenv) and a real HTTP server that
serves the bundle with Basic auth and Range requests (tests/fixtures/rauc_system.py)."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from offhook.contract.config import FirmwareSettings, parse_config
from offhook.contract.signing import development_pair, make_signing_pair
from offhook.firmware.control import ControlServer, PhoneActions
from offhook.firmware.phone import Phone as PhoneCore
from offhook.firmware.phone_process import png_renderer
from offhook.firmware.runtime import Runtime
from offhook.firmware.update import agent as ag
from offhook.firmware.update.download import HttpBundleFetcher, file_sha256
from offhook.firmware.update.rauc_cli import RaucCli
from offhook.firmware.update.service import UpdateService
from offhook.firmware.update.wiring import update_service
from offhook.image.bundle import BundleError, bundle_info, write_bundle
from tests.fixtures import rauc_system
from tests.fixtures.rauc_system import RaucSystem, grubenv, make_plain_bundle, slot_file
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.skipif(bool(rauc_system.available()), reason=rauc_system.available())
wait = functools.partial(wait_until, timeout=60.0, interval=0.1)
PORTS = iter(range(18300, 18340))
AUTH = "Basic " + base64.b64encode(b"dev-1:secret").decode()


class BundleServer(http.server.ThreadingHTTPServer):
    """Serves files with Basic auth and Range; ``cut_after`` drops the first response mid-body."""

    def __init__(self, port: int, directory: Path) -> None:
        super().__init__(("127.0.0.1", port), BundleHandler)
        self.directory = directory
        self.cut_after: int | None = None
        self.requests: list[dict[str, str]] = []


class BundleHandler(http.server.BaseHTTPRequestHandler):
    server: BundleServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers.items()))
        if self.headers.get("Authorization") != AUTH:
            self.send_error(401)
            return
        path = self.server.directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = f'"{file_sha256(path)[:16]}"'
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and self.headers.get("If-Range") == etag:
            start = int(ranged[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body = body[: self.server.cut_after]
            self.server.cut_after = None
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection dies mid-body
            return
        self.wfile.write(body)


@pytest.fixture
def keys(tmp_path: Path):
    return make_signing_pair(tmp_path / "keys", "offhook test signing")


@pytest.fixture
def system(tmp_path: Path, keys):
    rauc = RaucSystem(tmp_path / "rauc", keyring=keys.cert)
    rauc.root.mkdir()
    try:
        rauc.setup()
        yield rauc
    finally:
        rauc.close()


@pytest.fixture
def server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    srv = BundleServer(next(PORTS), served)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Phone:
    """What the service needs of the phone, under the test's control."""

    def __init__(self) -> None:
        self.idle = True
        self.registered = False
        self.events: list[dict] = []
        self.reboots = 0

    def enqueue(self, kind: str, record: dict) -> None:
        assert kind == "events"
        self.events.append(record)

    def types(self) -> list[str]:
        return [e["type"].removeprefix("firmware_") for e in self.events]


def service(system: RaucSystem, server: BundleServer, phone: Phone, state: Path, version: str,
            health_timeout_s: float = 300.0) -> UpdateService:  # fmt: skip
    svc = UpdateService(
        state,
        RaucCli(env=system.env, conf=system.root / "system.conf"),
        HttpBundleFetcher(f"http://127.0.0.1:{server.server_port}", lambda: AUTH, None),
        enqueue=phone.enqueue,
        idle=lambda: phone.idle,
        health=lambda: (phone.registered, True),
        reboot=lambda: setattr(phone, "reboots", phone.reboots + 1),
        running_version=version,
        tick_s=0.2,
    )
    svc.agent.health_timeout_s = health_timeout_s
    return svc


def wanted(bundle: Path, version: str, rollout: str = "r-1") -> FirmwareSettings:
    return FirmwareSettings(version=version, url=f"/{bundle.name}", sha256=file_sha256(bundle),
                            size=bundle.stat().st_size, rollout=rollout)  # fmt: skip


def test_status_through_the_real_service(system: RaucSystem) -> None:
    status = RaucCli(env=system.env).status()
    assert (status.compatible, status.booted, status.primary) == (rauc_system.COMPATIBLE, "A", "A")
    assert [s.bootname for s in status.slots] == ["A", "B"]


def test_update_a_to_b_installs_reboots_and_marks_good(
    system: RaucSystem, server: BundleServer, keys, tmp_path: Path
) -> None:
    bundle = make_plain_bundle(server.directory, keys.key, keys.cert, "0.2.0")
    phone, state = Phone(), tmp_path / "data" / "update"
    svc = service(system, server, phone, state, "0.1.0")
    svc.start()
    try:
        # the slot A in service is marked good on this boot (GRUB set its TRY at power-on)
        svc.wanted(wanted(bundle, "0.2.0"))
        phone.idle = False  # in a call: downloaded, but not installed
        wait(lambda: svc.agent.record.phase == "downloaded", "download")
        assert slot_file(system.slot("B"), "offhook-version") == ""
        phone.idle = True
        wait(lambda: phone.reboots == 1, "reboot after install")
    finally:
        svc.stop()
    assert phone.types() == ["downloading", "installed", "rebooting"]
    assert slot_file(system.slot("B"), "offhook-version") == "0.2.0"
    env = grubenv(system.grubenv_path)
    assert (env["ORDER"], env["B_OK"], env["B_TRY"]) == ("B A", "1", "0")

    assert system.power_on() == "B"  # what GRUB does: B first, tried
    phone2 = Phone()
    svc = service(system, server, phone2, state, "0.2.0")
    svc.start()
    try:
        wait(lambda: svc.agent.record.phase == "verifying", "trial boot")
        assert grubenv(system.grubenv_path)["B_TRY"] == "1"  # not good before the check
        phone2.registered = True
        wait(lambda: phone2.types() == ["running"], "running report")
    finally:
        svc.stop()
    env = grubenv(system.grubenv_path)
    assert (env["B_OK"], env["B_TRY"]) == ("1", "0")
    report = phone2.events[0]
    assert (report["firmware_version"], report["from_version"], report["slot"],
            report["rollout"]) == ("0.2.0", "0.1.0", "B", "r-1")  # fmt: skip
    assert RaucCli(env=system.env).status().booted == "B"
    firmware = svc.status()  # what the status snapshot carries to the server
    assert (firmware["slot"], firmware["compatible"], firmware["state"]) == (
        "B", rauc_system.COMPATIBLE, "idle",
    )  # fmt: skip


def test_trial_boot_without_registration_falls_back_and_is_reported(
    system: RaucSystem, server: BundleServer, keys, tmp_path: Path
) -> None:
    bundle = make_plain_bundle(server.directory, keys.key, keys.cert, "0.2.0")
    phone, state = Phone(), tmp_path / "data" / "update"
    svc = service(system, server, phone, state, "0.1.0")
    svc.start()
    try:
        phone.registered = True
        svc.wanted(wanted(bundle, "0.2.0"))
        wait(lambda: phone.reboots == 1, "reboot after install")
    finally:
        svc.stop()
    assert system.power_on() == "B"
    broken = Phone()  # the new firmware never registers
    svc = service(system, server, broken, state, "0.2.0", health_timeout_s=2.0)
    svc.start()
    try:
        wait(lambda: broken.reboots == 1, "reboot after the failed health check")
    finally:
        svc.stop()
    assert grubenv(system.grubenv_path)["B_OK"] == "0"  # marked bad through RAUC
    assert system.power_on() == "A"  # GRUB skips the bad slot
    back = Phone()
    svc = service(system, server, back, state, "0.1.0")
    svc.start()
    try:
        wait(lambda: back.types() == ["rolled_back"], "rollback report")
        wait(lambda: grubenv(system.grubenv_path)["A_TRY"] == "0", "slot A marked good")
    finally:
        svc.stop()
    report = back.events[0]
    assert (report["reason"], report["slot"], report["firmware_version"]) == (
        "health_check_failed", "A", "0.2.0",
    )  # fmt: skip


def test_bundle_signed_with_another_key_is_refused_and_nothing_written(
    system: RaucSystem, server: BundleServer, tmp_path: Path
) -> None:
    other = make_signing_pair(tmp_path / "other-keys", "someone else")
    bundle = make_plain_bundle(server.directory, other.key, other.cert, "0.2.0")
    before = grubenv(system.grubenv_path)
    phone = Phone()
    svc = service(system, server, phone, tmp_path / "data" / "update", "0.1.0")
    svc.start()
    try:
        svc.wanted(wanted(bundle, "0.2.0"))
        wait(lambda: "failed" in phone.types(), "failed report")
    finally:
        svc.stop()
    assert phone.types() == ["downloading", "failed"]
    assert phone.events[-1]["reason"] == "bundle_refused"
    assert (
        "signature" in phone.events[-1]["detail"].lower()
        or "verif" in phone.events[-1]["detail"].lower()
    )
    assert slot_file(system.slot("B"), "offhook-version") == ""
    assert grubenv(system.grubenv_path) == before
    assert not (tmp_path / "data" / "update" / "bundle.raucb").exists()


def test_interrupted_download_resumes_with_range(
    system: RaucSystem, server: BundleServer, keys, tmp_path: Path
) -> None:
    bundle = make_plain_bundle(server.directory, keys.key, keys.cert, "0.2.0")
    server.cut_after = bundle.stat().st_size // 3
    phone = Phone()
    svc = service(system, server, phone, tmp_path / "data" / "update", "0.1.0")
    svc.agent.retry_at = 0.0
    delays = ag.DOWNLOAD_RETRY_S
    ag.DOWNLOAD_RETRY_S = (0.1,)
    svc.start()
    try:
        svc.wanted(wanted(bundle, "0.2.0"))
        wait(lambda: phone.reboots == 1, "install after the resumed download")
    finally:
        svc.stop()
        ag.DOWNLOAD_RETRY_S = delays
    ranges = [r.get("Range", "") for r in server.requests]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert slot_file(system.slot("B"), "offhook-version") == "0.2.0"


def test_image_bundle_verifies_with_its_keyring_only(tmp_path: Path) -> None:
    """The build's own bundle writer (verity format): rauc info accepts it with the signing
    certificate and refuses it with another keyring."""
    pair = development_pair(tmp_path / "dev-keys")
    assert pair.development
    rootfs = tmp_path / "rootfs.ext4"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "payload").write_bytes(os.urandom(64 * 1024))  # squashfs must exceed 4 KiB
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(rootfs), "8M"], check=True)
    bundle = write_bundle(rootfs, tmp_path / "offhook-qemu-amd64.raucb",
                          compatible="offhook-qemu-amd64", version="0.3.0", pair=pair,
                          workdir=tmp_path / "work")  # fmt: skip
    info = bundle_info(bundle, pair.cert)
    assert (info["compatible"], info["version"]) == ("offhook-qemu-amd64", "0.3.0")
    other = make_signing_pair(tmp_path / "other", "someone else")
    with pytest.raises(BundleError, match="rauc info failed"):
        bundle_info(bundle, other.cert)
    # the development pair is made once and then reused
    assert development_pair(tmp_path / "dev-keys").cert.read_bytes() == pair.cert.read_bytes()


WATCHDOG = Path(__file__).resolve().parents[2] / "image/overlay/ab/usr/local/sbin"


def run_watchdog(system: RaucSystem, tmp_path: Path, cmdline: str = "", uptime: str = "950.2"):
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    (tmp_path / "uptime").write_text(f"{uptime} 100.0\n")
    marker = tmp_path / "rebooted"
    marker.unlink(missing_ok=True)
    env = {
        **os.environ, **system.env,
        "OFFHOOK_CMDLINE": str(tmp_path / "cmdline"), "OFFHOOK_UPTIME": str(tmp_path / "uptime"),
        "OFFHOOK_REBOOT": f"touch {marker}",
    }  # fmt: skip
    proc = subprocess.run([str(WATCHDOG / "offhook-slot-watchdog")], capture_output=True,
                          text=True, env=env, timeout=60, check=False)  # fmt: skip
    return proc, marker.exists()


def test_slot_watchdog_leaves_a_slot_never_marked_good(
    system: RaucSystem, keys, tmp_path: Path
) -> None:
    """The overlay's offhook-slot-watchdog against the real RAUC: a trial boot whose phone never
    ran (nothing marked the slot) is marked bad and rebooted; a good slot is left alone."""
    bundle = make_plain_bundle(tmp_path, keys.key, keys.cert, "0.2.0")
    subprocess.run(["rauc", "install", str(bundle)], check=True, capture_output=True,
                   env={**os.environ, **system.env})  # fmt: skip
    assert system.power_on() == "B"  # B_TRY=1: on trial, nobody marks it
    proc, rebooted = run_watchdog(system, tmp_path, cmdline="offhook.slot_watchdog=off")
    assert (proc.returncode, rebooted) == (0, False)
    assert "off" in proc.stdout
    proc, rebooted = run_watchdog(system, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert rebooted
    assert "slot B not marked good" in proc.stdout
    assert grubenv(system.grubenv_path)["B_OK"] == "0"
    assert system.power_on() == "A"  # GRUB's choice now
    subprocess.run(["rauc", "status", "mark-good", "booted"], check=True, capture_output=True,
                   env={**os.environ, **system.env})  # fmt: skip
    proc, rebooted = run_watchdog(system, tmp_path)
    assert (proc.returncode, rebooted) == (0, False)
    assert "slot A is good" in proc.stdout


def test_a_phone_without_a_provisioning_server_still_marks_its_slot_good(
    system: RaucSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRUB marks the slot it boots as tried at every boot, and only the update service marks it
    good again: a phone on a static config (no provisioning server) must run it too, or the slot
    watchdog marks its healthy slot bad and reboots it every 15 minutes."""
    for name, value in system.env.items():  # the phone's rauc talks to this test's RAUC service
        monkeypatch.setenv(name, value)
    assert system.power_on() == "A"
    assert grubenv(system.grubenv_path)["A_TRY"] == "1"
    config = parse_config({"accounts": [{"user": "1001", "domain": "127.0.0.1", "password": "x"}]})
    runtime = Runtime(PhoneCore(config))
    runtime.start()
    control = ControlServer("127.0.0.1:0", "t0ken", PhoneActions(runtime, png_renderer(128, 64)))
    control.start()
    try:
        config = parse_config(
            {
                "accounts": [{"user": "1001", "domain": "127.0.0.1", "password": "x"}],
                "control": {"listen": f"127.0.0.1:{control.port}", "token": "t0ken"},
            }
        )
        svc = update_service(
            config, tmp_path / "state", None, runtime, "0.1.0", system.root / "system.conf"
        )
        assert svc is not None, "no update service on a card without a provisioning server"
        svc.start()
        try:
            wait(lambda: grubenv(system.grubenv_path)["A_TRY"] == "0", "slot A marked good")
        finally:
            svc.stop()
    finally:
        control.stop()
        runtime.stop()
    proc, rebooted = run_watchdog(system, tmp_path)
    assert (proc.returncode, rebooted) == (0, False), proc.stdout + proc.stderr
    assert "slot A is good" in proc.stdout


@pytest.fixture
def uboot_system(tmp_path: Path, keys):
    """The Pi card's RAUC: the uboot backend on a U-Boot environment file (fw_setenv)."""
    rauc = RaucSystem(tmp_path / "rauc-uboot", keyring=keys.cert, bootloader="uboot")
    rauc.root.mkdir()
    try:
        rauc.setup()
        yield rauc
    finally:
        rauc.close()


def uboot_env(system: RaucSystem) -> dict[str, str]:
    listed = subprocess.run(["fw_printenv", "-c", str(system.fw_env_config)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)


def uboot_power_on(system: RaucSystem, slot: str) -> None:
    """What U-Boot's script does when it boots ``slot`` (run for real in test_uboot_ab.py):
    one attempt fewer; then the service restarts as that slot booted."""
    left = int(uboot_env(system)[f"BOOT_{slot}_LEFT"])
    subprocess.run(["fw_setenv", "-c", str(system.fw_env_config), f"BOOT_{slot}_LEFT",
                    str(left - 1)], check=True)  # fmt: skip
    system.stop_service()
    system.booted = slot
    system.start_service()


@pytest.mark.skipif(shutil.which("fw_setenv") is None, reason="needs libubootenv-tool")
def test_slot_watchdog_on_uboot_goes_by_the_phones_mark_not_rauc_status(
    uboot_system: RaucSystem, keys, tmp_path: Path
) -> None:
    """Under U-Boot, RAUC reports a slot "good" while it has attempts left, so a trial boot
    that never ran the phone looks good to RAUC: the watchdog must go by the mark the update
    service records for this boot (its boot id), and then mark the slot bad and reboot."""
    system = uboot_system
    bundle = make_plain_bundle(tmp_path, keys.key, keys.cert, "0.2.0")
    subprocess.run(["rauc", "install", str(bundle)], check=True, capture_output=True,
                   env={**os.environ, **system.env})  # fmt: skip
    assert uboot_env(system)["BOOT_ORDER"] == "B A"
    uboot_power_on(system, "B")
    marked = tmp_path / "marked-good-boot-id"
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("5b1c0a7e-0000-4000-8000-000000000002\n")
    conf = {"OFFHOOK_RAUC_CONF": str(system.root / "system.conf"),
            "OFFHOOK_MARKED_GOOD": str(marked), "OFFHOOK_BOOT_ID": str(boot_id)}  # fmt: skip
    # a mark from an earlier boot does not count for this one
    marked.write_text("5b1c0a7e-0000-4000-8000-000000000001\n")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in conf.items():
            mp.setenv(name, value)
        proc, rebooted = run_watchdog(system, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert rebooted and "slot B not marked good" in proc.stdout
        assert uboot_env(system)["BOOT_B_LEFT"] == "0"  # U-Boot boots A next
        uboot_power_on(system, "A")
        marked.write_text(boot_id.read_text())  # the phone came up on A and marked it
        proc, rebooted = run_watchdog(system, tmp_path)
        assert (proc.returncode, rebooted) == (0, False)
        assert "slot A is good (marked this boot)" in proc.stdout


def test_update_service_records_the_boot_it_marked_good(
    system: RaucSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's mark-good goes to the real RAUC and leaves this boot's id beside the
    record, for the slot watchdog."""
    for name, value in system.env.items():
        monkeypatch.setenv(name, value)
    assert system.power_on() == "A"
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("5b1c0a7e-0000-4000-8000-00000000000a\n")
    svc = UpdateService(
        tmp_path / "state", RaucCli(), HttpBundleFetcher("https://127.0.0.1:9", lambda: None, None),
        enqueue=lambda kind, record: None, idle=lambda: True, health=lambda: (True, True),
        reboot=lambda: None, running_version="0.1.0", boot_id_file=boot_id,
    )  # fmt: skip
    svc._mark_good(ag.MarkGood())
    assert grubenv(system.grubenv_path)["A_TRY"] == "0"  # RAUC's mark-good reached grubenv
    marker = tmp_path / "state" / "marked-good-boot-id"
    assert marker.read_text() == "5b1c0a7e-0000-4000-8000-00000000000a\n"
