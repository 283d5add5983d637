"""The rollout rules on a migrated SQLite database (the service functions the REST API, the CLI
and the web UI call); the HTTP side and real RAUC bundles are in
tests/integration/test_firmware_rollouts.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from offhook.provisioning import operations as ops
from offhook.provisioning import rollouts
from offhook.provisioning.crypto import KeyRing, new_key_line
from offhook.provisioning.db import Database
from offhook.provisioning.firmware_targets import firmware_section
from offhook.provisioning.models import Device, DeviceFirmware, FirmwareRelease
from offhook.provisioning.render import render_device

ACTOR = ops.Actor("test:rollouts")
BOARD = "offhook-qemu-amd64"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def release(db: Session, version: str = "0.2.0", board: str = BOARD) -> FirmwareRelease:
    """A release row (uploads, which verify the bundle with rauc, are tested over HTTP)."""
    row = FirmwareRelease(
        compatible=board,
        version=version,
        sha256=hashlib.sha256(f"{board}{version}".encode()).hexdigest(),
        size=1234,
    )
    db.add(row)
    db.flush()
    return row


def phones(db: Session, count: int, board: str | None = BOARD) -> list[Device]:
    made = []
    for n in range(count):
        device = Device(mac=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}", status="approved")
        device.firmware_version = "0.1.0"
        db.add(device)
        db.flush()
        if board:
            rollouts.record_status(db, device, "0.1.0", board)
        made.append(device)
    return made


def finish(db: Session, device: Device, kind: str = "running", reason: str = "") -> list[str]:
    return rollouts.record_event(db, device, f"firmware_{kind}", "0.2.0", reason, "")


def state(db: Session, device: Device) -> str:
    row = db.get(DeviceFirmware, device.id)
    return row.state if row is not None else ""


def test_stages_take_a_fixed_spread_share_and_bump_only_the_phones_asked(db: Session) -> None:
    fleet = phones(db, 20)
    revisions = {d.id: d.revision for d in fleet}
    rollout, changed = rollouts.start_rollout(db, ACTOR, release(db).id, stages=[10, 50])
    assert len(changed) == 2  # 10 % of 20
    assert all(db.get(Device, d).revision == revisions[d] + 1 for d in changed)
    order = rollouts.eligible_device_ids(db, rollout)
    assert changed == order[:2]  # the fixed order's head, the same on every evaluation
    for device_id in changed:
        finish(db, db.get(Device, device_id))
    assert rollout.stage == 1
    asked = [d for d in fleet if state(db, d) == "assigned"]
    assert len(asked) == 8  # up to 50 %: the last stage is 100 % even when not named


def test_steps_on_the_way_do_not_end_a_stage_and_a_waiting_rollout_takes_late_phones(
    db: Session,
) -> None:
    rollout, changed = rollouts.start_rollout(db, ACTOR, release(db).id, stages=[50])
    assert changed == [] and rollout.status == "running"  # no phone of this board yet
    [late] = phones(db, 1)  # its first status names the board: the rollout asks it
    assert state(db, late) == "assigned"
    config = render_device(db, late, KeyRing.parse(new_key_line(), "t"))
    assert b'"version":"0.2.0"' in config.body and b'"rollout":"' in config.body
    for step in ("downloading", "installed", "rebooting"):
        assert finish(db, late, step) == []
        assert rollout.status == "running"
    finish(db, late, "running")
    assert rollout.status == "completed"


def test_failures_past_the_threshold_pause_and_a_pin_or_exclusion_wins(db: Session) -> None:
    fleet = phones(db, 10)
    pinned, excluded = fleet[0], fleet[1]
    old = release(db, "0.1.9")
    rollouts.pin_device(db, ACTOR, pinned.id, old.id)
    rollouts.exclude_device(db, ACTOR, excluded.id, True)
    rollout, changed = rollouts.start_rollout(
        db, ACTOR, release(db).id, stages=[50], failure_threshold_pct=20
    )
    assert len(changed) == 4 and pinned.id not in changed and excluded.id not in changed
    assert (firmware_section(db, pinned.id) or {})["version"] == "0.1.9"
    first, second, *_ = [db.get(Device, d) for d in changed]
    finish(db, first, "rolled_back", "health_check_failed")  # 1 of 4 = 25 % > 20 %
    assert rollout.status == "paused" and "25.0% (1 of 4" in rollout.pause_reason
    assert finish(db, second, "failed", "download_failed") == []  # paused: nothing more
    with pytest.raises(rollouts.RolloutError, match="not running"):
        rollouts.pause_rollout(db, ACTOR, rollout.id)


def test_a_phone_already_on_the_version_counts_as_done_when_asked(db: Session) -> None:
    fleet = phones(db, 4)
    for device in fleet:
        device.firmware_version = "0.2.0"  # e.g. flashed with the new image
    db.flush()
    rollout, changed = rollouts.start_rollout(db, ACTOR, release(db).id, stages=[25, 100])
    assert len(changed) == 4  # the canary was done at once, so every stage went through
    assert rollout.status == "completed"
    assert {state(db, d) for d in fleet} == {"running"}
