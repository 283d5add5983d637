"""Firmware updates end to end on the booted qemu-amd64 card, through a real rollout of the real
provisioning server (releases uploaded and verified against the server's keyring): the phone in
QEMU downloads the bundle over its user network with its device credential, RAUC installs it
into the other slot (verity bundle, dm-verity in the guest), the phone reboots, GRUB boots the
new slot on trial, the phone registers at a Kamailio on the host, marks the slot good and
reports the new version; its config, credential and call history on /data survive.

Then power cuts (QEMU killed with SIGKILL) at seeded random moments, $OFFHOOK_UPDATE_CUTS of each
kind (default 3): while RAUC writes the slot, and during the new slot's trial boot. After each
the card must come back on a working slot (registered, control API answering) and the rollout
must carry on or report what happened (``rolled_back``/``boot_failed``, paused by its failure
threshold). Every cut, its delay and its outcome are printed and written to
``cuts.json`` in the test's directory. $OFFHOOK_UPDATE_SEED replays a run's cut moments.

``test_broken_b_rolls_back``: a bundle whose phone registers nowhere (built with the test-only
``test_registrar``) fails its health check on the trial boot; the phone marks the slot bad,
GRUB falls back to A, the phone reports ``rolled_back``/``health_check_failed`` and the rollout
pauses at its failure threshold.

Opt-in (builds three images, then boots under TCG: see docs/updates.md for the times measured):
OFFHOOK_TEST_UPDATE_QEMU=1, root. OFFHOOK_UPDATE_IMAGE_A (an .img, its .raucb beside it),
OFFHOOK_UPDATE_BUNDLE_B (a .raucb of another version, same signing key) and
OFFHOOK_UPDATE_BUNDLE_BROKEN skip the builds. $OFFHOOK_TEST_PORTS (LOW-HIGH) keeps the host's
ports (server, Kamailio, the control API forward) in a range.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import time
from pathlib import Path

import pytest

from offhook.contract.signing import development_pair
from offhook.firmware.control import ControlClient
from offhook.image.boottest import (
    OutputWatcher,
    _Card,
    _control_state,
    read_data_file,
    read_grubenv,
    running_kamailio,
    scratch_copy,
)
from offhook.image.build import BuildOptions, build, default_cache
from offhook.image.qemu import GUEST_CONTROL_PORT, HOST_FROM_GUEST
from offhook.image.seed import parse_seed
from tests.fixtures.provisioning_server import ProvisioningServer
from tests.fixtures.waiting import wait_until

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("OFFHOOK_TEST_UPDATE_QEMU") != "1",
        reason="builds two images and boots them under QEMU: OFFHOOK_TEST_UPDATE_QEMU=1",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the image build needs root"),
    pytest.mark.timeout(5400),  # builds, downloads and installs under TCG
]
B_VERSION = "0.1.0+b2"
BROKEN_VERSION = "0.1.0+broken"
# TEST-NET-1 (RFC 5737): nothing answers there, so the broken build's phone never registers
BROKEN_REGISTRAR = "192.0.2.1:5060"
CUTS = int(os.environ.get("OFFHOOK_UPDATE_CUTS", "3"))
SEED = int(os.environ.get("OFFHOOK_UPDATE_SEED") or secrets.randbelow(1_000_000))
BOOTING = re.compile(r"offhook-grub: booting slot (\w)")
PHONE_CONFIG = "/data/offhook/phone.toml"
WRITING = re.compile(r"Copying image to rootfs\.[01]|Updating slot rootfs\.[01]")
STATE_FILE = "/offhook/state/update/state.json"  # the agent's record, on /data


def sim_mac(config_path: str = PHONE_CONFIG) -> str:
    """The MAC the emulated board's phone enrols with (firmware.provisioning.identity)."""
    digest = hashlib.sha256(config_path.encode()).hexdigest()
    return "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Image A, its own bundle (version A) and the bundle of build B (version B)."""
    given_a = os.environ.get("OFFHOOK_UPDATE_IMAGE_A", "")
    given_b = os.environ.get("OFFHOOK_UPDATE_BUNDLE_B", "")
    if given_a and given_b:
        return Path(given_a), Path(given_a).with_suffix(".raucb"), Path(given_b)
    out = tmp_path_factory.mktemp("update-images")
    build(BuildOptions(board="qemu-amd64", out=out / "a", compress=False))
    build(BuildOptions(board="qemu-amd64", out=out / "b", compress=False,
                       firmware_version=B_VERSION))  # fmt: skip
    a = out / "a" / "offhook-qemu-amd64.img"
    return a, a.with_suffix(".raucb"), out / "b" / "offhook-qemu-amd64.raucb"


@pytest.fixture(scope="module")
def broken_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose phone registers nowhere: the test-only ``test_registrar`` build knob."""
    given = os.environ.get("OFFHOOK_UPDATE_BUNDLE_BROKEN", "")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("update-broken")
    build(BuildOptions(board="qemu-amd64", out=out, compress=False,
                       firmware_version=BROKEN_VERSION,
                       test_registrar=BROKEN_REGISTRAR))  # fmt: skip
    return out / "offhook-qemu-amd64.raucb"


class Cuts:
    """Every power cut of the run: where, after how long, what came back (printed as it goes
    and kept in cuts.json)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rng = random.Random(SEED)
        self.done: list[dict] = []

    def delay(self, low: float, high: float) -> float:
        return round(self.rng.uniform(low, high), 1)

    def record(self, kind: str, delay_s: float, outcome: str, recovered_s: float) -> None:
        entry = {"kind": kind, "delay_s": delay_s, "outcome": outcome,
                 "recovered_s": round(recovered_s)}  # fmt: skip
        self.done.append(entry)
        print(f"power cut {len(self.done)} (seed {SEED}): {kind} +{delay_s} s -> {outcome}; "
              f"registered again {recovered_s:.0f} s after power-on", flush=True)  # fmt: skip
        self.path.write_text(json.dumps({"seed": SEED, "cuts": self.done}, indent=1))

    def count(self, kind: str) -> int:
        return sum(1 for c in self.done if c["kind"] == kind)


class Rig:
    """Kamailio, the provisioning server with the release pinned, and the scratch card."""

    def __init__(
        self, work: Path, image: Path, bundles: list[Path], stack: contextlib.ExitStack
    ) -> None:
        self.work = work
        self.stack = stack
        self.kport, self.kamailio = stack.enter_context(running_kamailio(work))
        self.server = ProvisioningServer(work / "server")
        keyring = self.server.data_dir / "firmware-keyring.pem"
        shutil.copyfile(development_pair(default_cache() / "dev-keys").cert, keyring)
        self.server.start()
        stack.callback(self.server.stop)
        self.mac = sim_mac()
        self.server.add_device(self.mac)
        self.server.add_line(self.mac, extension="1001", password="update-test",
                             registrar=f"{HOST_FROM_GUEST}:{self.kport}")  # fmt: skip
        self.releases = []
        for bundle in bundles:
            with open(bundle, "rb") as fh:
                reply = self.server.admin.post("/firmware", content=fh.read(), timeout=300)
            assert reply.status_code == 201, reply.text
            self.releases.append(reply.json())
        self.token = secrets.token_hex(16)
        seed = parse_seed(
            {
                "hostname": "offhook-update",
                "provisioning": {
                    "url": f"http://{HOST_FROM_GUEST}:{self.server.port}",
                    "enrollment_token": self.server.enrollment_token(),
                    "poll_interval_s": 10,
                },
                "control": {"listen": f"0.0.0.0:{GUEST_CONTROL_PORT}", "token": self.token},
            },
            "update test seed",
        )
        self.disk = scratch_copy(image, seed, work)
        self.card = _Card(self.disk, work, stack, 1024)
        self.boots = 0
        self.console: OutputWatcher | None = None
        self.earlier: list[str] = []  # GRUB's choices in the consoles since the last cut
        self.cold_reboots = 0

    def start_rollout(self, release: dict) -> dict:
        """A fleet rollout of the release in one stage; one failed phone passes the threshold."""
        body = {"release": str(release["id"]), "stages": [100], "failure_threshold_pct": 50}
        reply = self.server.admin.post("/rollouts", json=body)
        assert reply.status_code == 201, reply.text
        return reply.json()

    def rollout(self, rollout: dict) -> dict:
        reply = self.server.admin.get(f"/rollouts/{rollout['id']}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    def abort(self, rollout: dict) -> None:
        reply = self.server.admin.post(f"/rollouts/{rollout['id']}/abort")
        assert reply.status_code == 200, reply.text

    def audit(self, action: str) -> list[dict]:
        reply = self.server.admin.get("/audit", params={"action": action})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return body["items"] if isinstance(body, dict) else body

    def grubenv(self) -> dict[str, str]:
        return read_grubenv(self.disk, self.work)

    def power_on(self) -> OutputWatcher:
        self.boots += 1
        self.console, _, _ = self.card.power_on(self.boots, self.work / f"console{self.boots}.log")
        return self.console

    def cut(self) -> None:
        """Power cut: QEMU killed; the next power-on starts a fresh count of boots."""
        self.card.power_off()
        self.earlier = []

    def follow(self) -> None:
        """A guest reboot ends QEMU (-no-reboot): power the same card on again, as its own
        reboot would. (Warm reboots inside one QEMU sometimes left SeaBIOS/GRUB stuck reading
        the new slot's kernel here; a cold start of the same disk never did.)"""
        proc = self.card.proc
        if proc is not None and proc.poll() is not None:
            self.earlier += self._choices()
            self.cold_reboots += 1
            self.power_on()

    def _choices(self) -> list[str]:
        return BOOTING.findall(self.console.text) if self.console else []

    def slots_booted(self) -> list[str]:
        self.follow()
        return self.earlier + self._choices()

    def phone_state(self) -> dict:
        return _control_state(self.card.host_port, self.token) or {}

    def registered(self) -> bool:
        self.follow()
        lines = self.phone_state().get("registration") or []
        return bool(lines) and all(line.get("registered") for line in lines)

    def firmware(self) -> dict:
        self.follow()
        reply = self.server.admin.get(f"/devices/{self.mac}/firmware")
        return reply.json() if reply.status_code == 200 else {}


def boot_to_registered(rig: Rig, slot: str, what: str) -> float:
    """Power on; GRUB must choose ``slot`` and the phone register there. Seconds taken."""
    started = time.monotonic()
    rig.power_on()
    wait_until(lambda: rig.slots_booted()[:1] == [slot], f"GRUB booting slot {slot} ({what})",
               timeout=180, interval=2.0)  # fmt: skip
    wait_until(rig.registered, f"registered on slot {slot} ({what})", timeout=900, interval=2.0)
    return time.monotonic() - started


def place_call(rig: Rig, number: str) -> None:
    """Handset up, dial, a moment, handset down: a call record in the history on /data."""
    client = ControlClient(f"127.0.0.1:{rig.card.host_port}", rig.token, timeout=30)
    client.hook(True)
    client.keys(number)
    time.sleep(8)
    client.hook(False)


def cut_cycle(rig: Rig, cuts: Cuts, serving: str, versions: dict[str, str]) -> str:
    """A rollout to the other slot's version, cut while RAUC writes it and cut again in its
    trial boot; returns the slot in service after it."""
    wait = functools.partial(wait_until, interval=2.0)
    other = "A" if serving == "B" else "B"
    release = next(r for r in rig.releases if r["version"] == versions[other])
    rollout = rig.start_rollout(release)
    wait(lambda: WRITING.search(rig.console.text if rig.console else ""),
         f"RAUC writing slot {other}", timeout=1800)  # fmt: skip
    delay = cuts.delay(0, 40)
    time.sleep(delay)
    rig.cut()
    env = rig.grubenv()
    if env["ORDER"].startswith(other) and env[f"{other}_OK"] == "1":
        # the install had finished: this power-on is the trial boot, cut below
        cuts.record("install", delay, f"install had finished; next boot: {other} on trial", 0)
        rig.power_on()
        wait(lambda: rig.slots_booted() == [other], f"slot {other} on trial", timeout=180)
    else:
        took = boot_to_registered(rig, serving, "after an install cut")
        cuts.record("install", delay, f"back on slot {serving}, registered", took)
        # the agent installs again from the kept bundle, then reboots into the slot
        wait(lambda: rig.slots_booted()[1:] == [other], f"GRUB booting slot {other} on trial",
             timeout=1800)  # fmt: skip
    delay = cuts.delay(5, 60)  # somewhere in the kernel, systemd or the phone
    time.sleep(delay)
    rig.cut()
    env = rig.grubenv()
    if env[f"{other}_OK"] == "1" and env[f"{other}_TRY"] == "0":
        # the phone got as far as marking the slot good before the cut: it stays
        took = boot_to_registered(rig, other, "after a cut once marked good")
        wait(lambda: rig.firmware().get("running_version") == versions[other],
             "the new version reported", timeout=600)  # fmt: skip
        cuts.record("trial boot", delay, f"slot {other} already marked good: runs it", took)
        return other
    took = boot_to_registered(rig, serving, "after a cut during the trial boot")
    wait(lambda: rig.firmware().get("state") == "rolled_back", "rollback reported",
         timeout=600)  # fmt: skip
    assert rig.firmware().get("reason") == "boot_failed", rig.firmware()
    wait(lambda: rig.rollout(rollout)["status"] == "paused", "the rollout paused", timeout=300)
    assert "failed or rolled back" in rig.rollout(rollout)["pause_reason"]
    cuts.record("trial boot", delay, f"GRUB fell back to {serving}; rolled_back/boot_failed "
                "reported, rollout paused", took)  # fmt: skip
    rig.abort(rollout)
    return serving


def test_update_a_to_b_by_rollout_then_power_cuts(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    image, bundle_a, bundle_b = images
    wait = functools.partial(wait_until, interval=2.0)
    cuts = Cuts(tmp_path / "cuts.json")
    print(f"power-cut seed {SEED} (OFFHOOK_UPDATE_SEED replays it), {CUTS} cuts of each kind")
    with contextlib.ExitStack() as stack:
        rig = Rig(tmp_path, image, [bundle_a, bundle_b], stack)
        release_a, release_b = rig.releases
        versions = {"A": release_a["version"], "B": B_VERSION}
        t0 = time.monotonic()
        rig.power_on()
        wait(lambda: rig.slots_booted() == ["A"], "GRUB booting slot A", timeout=180)
        # the phone enrols (pre-registered MAC), takes its line, reports its board
        wait(lambda: rig.firmware().get("compatible") == "offhook-qemu-amd64",
             "the phone's compatible at the server", timeout=900)  # fmt: skip
        wait(rig.registered, "registered on slot A", timeout=600)
        print(f"slot A: power-on to registered {time.monotonic() - t0:.0f} s", flush=True)
        place_call(rig, "2002")  # Kamailio answers 404: an outgoing call in the history

        # 1. A -> B by a rollout: download, install, reboot, trial boot, registered, marked good
        started = time.monotonic()
        rollout = rig.start_rollout(release_b)
        wait(lambda: rig.slots_booted() == ["A", "B"], "GRUB booting slot B after the update",
             timeout=1800)  # fmt: skip
        rebooted_in = time.monotonic() - started
        wait(lambda: rig.firmware().get("running_version") == B_VERSION
             and rig.firmware().get("state") == "running", "running the new version",
             timeout=900)  # fmt: skip
        wait(lambda: rig.rollout(rollout)["status"] == "completed", "the rollout completed",
             timeout=300)  # fmt: skip
        print(f"update A->B by rollout: start to reboot {rebooted_in:.0f} s, "
              f"start to running {time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
        assert rig.registered()  # with the line the server gave it before the update
        # The server counts a status with the new version as running; the slot is good only
        # once the phone's health check marked it, which must be on the disk at once (synced:
        # RAUC's grub-editenv alone left it in the guest's page cache), so a cut now keeps it.
        wait(lambda: rig.grubenv().get("B_TRY") == "0", "slot B marked good on the disk",
             timeout=600)  # fmt: skip
        # the agent's record on /data (written by A, kept by B) is durable right after the mark
        # (a status with the new version makes the server say "running" before either)
        wait(lambda: '"phase": "idle"' in read_data_file(rig.disk, STATE_FILE),
             "the agent's record idle on the disk", timeout=120)  # fmt: skip
        rig.cut()
        env = rig.grubenv()
        assert (env["ORDER"], env["B_OK"], env["B_TRY"]) == ("B A", "1", "0")
        assert "2002" in read_data_file(rig.disk, "/offhook/history.jsonl")  # A's call history
        assert "1001" in read_data_file(rig.disk, "/offhook/phone.toml")  # the server's line

        # 2. cycles back and forth: a power cut while RAUC writes the other slot, then one
        # during that slot's trial boot; each time the card must come back on a working slot
        serving = "B"
        boot_to_registered(rig, serving, "after the update")
        for _ in range(CUTS):
            serving = cut_cycle(rig, cuts, serving, versions)  # leaves the phone registered
        assert cuts.count("install") == CUTS and cuts.count("trial boot") == CUTS
        print(f"power cuts survived: {len(cuts.done)} (seed {SEED}); guest reboots then cold"
              f" starts: {rig.cold_reboots}; run {time.monotonic() - t0:.0f} s")  # fmt: skip


def test_broken_b_rolls_back(
    images: tuple[Path, Path, Path], broken_bundle: Path, tmp_path: Path
) -> None:
    image, _, _ = images
    wait = functools.partial(wait_until, interval=2.0)
    with contextlib.ExitStack() as stack:
        rig = Rig(tmp_path, image, [broken_bundle], stack)
        (broken,) = rig.releases
        t0 = time.monotonic()
        rig.power_on()
        wait(lambda: rig.firmware().get("compatible") == "offhook-qemu-amd64",
             "the phone's compatible at the server", timeout=900)  # fmt: skip
        wait(rig.registered, "registered on slot A", timeout=600)
        running_a = rig.firmware()["running_version"]
        started = time.monotonic()
        rollout = rig.start_rollout(broken)
        wait(lambda: rig.slots_booted() == ["A", "B"], "GRUB booting the broken slot B",
             timeout=1800)  # fmt: skip
        # B's phone starts but cannot register: its health check marks B bad and reboots
        wait(lambda: rig.slots_booted() == ["A", "B", "A"], "GRUB back on slot A",
             timeout=1200)  # fmt: skip
        wait(rig.registered, "registered on slot A again", timeout=900)
        wait(lambda: rig.firmware().get("state") == "rolled_back", "rollback reported",
             timeout=600)  # fmt: skip
        fw = rig.firmware()
        assert fw["reason"] == "health_check_failed", fw
        assert "not registered" in fw["detail"], fw
        assert fw["running_version"] == running_a
        wait(lambda: rig.rollout(rollout)["status"] == "paused", "the rollout paused",
             timeout=300)  # fmt: skip
        paused = rig.rollout(rollout)
        assert "failed or rolled back" in paused["pause_reason"]
        assert paused["rolled_back"] == 1
        assert rig.audit("rollout.auto_pause"), "the automatic pause is audited"
        env = rig.grubenv()
        assert env["B_OK"] == "0" and env["ORDER"].startswith("A"), env
        print(f"broken B: rollout start to rolled back and paused {time.monotonic() - started:.0f}"
              f" s; whole run {time.monotonic() - t0:.0f} s")  # fmt: skip
