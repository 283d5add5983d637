"""Rollouts: which phone is asked to run which firmware release, stage by stage.

A rollout sends one release to the approved phones of a group's subtree (or the fleet) whose
reported board (RAUC ``compatible``) is the release's, leaving out excluded and pinned phones.
``stages`` are cumulative percentages of those phones, the first one the canary
(``[5, 25, 50, 100]``). Phones are taken in a fixed pseudo-random order (SHA-256 of rollout id
and device id), so the canary is a spread sample and a re-evaluation picks the same phones.

A phone admitted to a stage gets the release in its ``device_firmware`` row; the config render
turns that into ``[firmware]`` (docs/updates.md) and its revision is bumped, so the next poll,
or the check-sync NOTIFY the caller sends after commit, brings it the target. Its reports move
its state (``record_event``, ``record_status``), and each change re-evaluates its rollout:
past ``failure_threshold_pct`` of failed + rolled-back phones among those admitted, the rollout
pauses itself (audited as ``rollout.auto_pause`` with the reason); once every admitted phone
has finished, the next stage is admitted, and after the last the rollout is completed. A stage
that has not finished ``stage_timeout_s`` after it began (or the rollout resumed) pauses it too
(``check_stage_timeouts``, run by the server every ``OFFHOOK_ROLLOUT_CHECK_INTERVAL_S``).

Every function takes the session and the acting principal, writes its audit entry and returns
the ids of the devices whose config changed; the caller commits, then resyncs them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from offhook.contract.config import WINDOW_RE
from offhook.contract.logs import kv
from offhook.provisioning import audit
from offhook.provisioning.firmware_releases import FirmwareError, check_offered, get_release
from offhook.provisioning.models import (
    DEVICE_APPROVED,
    ROLLOUT_ABORTED,
    ROLLOUT_COMPLETED,
    ROLLOUT_PAUSED,
    ROLLOUT_RUNNING,
    Device,
    DeviceFirmware,
    FirmwareRelease,
    Group,
    Rollout,
    utcnow,
)
from offhook.provisioning.operations import Actor, get_device, get_group
from offhook.provisioning.render import bump_devices, subtree_group_ids

log = logging.getLogger(__name__)

SYSTEM = Actor("system:rollout")
DEFAULT_STAGES = (5, 25, 50, 100)
# A phone's update state, from its reports (docs/updates.md). "assigned": asked, nothing heard.
ASSIGNED = "assigned"
RUNNING = "running"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
CANCELLED = "cancelled"
IN_PROGRESS = (ASSIGNED, "downloading", "installed", "rebooting")
FINISHED = (RUNNING, FAILED, ROLLED_BACK)
EVENT_STATES = {
    "firmware_downloading": "downloading",
    "firmware_installed": "installed",
    "firmware_rebooting": "rebooting",
    "firmware_running": RUNNING,
    "firmware_failed": FAILED,
    "firmware_rolled_back": ROLLED_BACK,
}
ACTIVE = (ROLLOUT_RUNNING, ROLLOUT_PAUSED)
ADMIT_CHUNK = 5000  # ids per UPDATE (SQLite's bound-parameter limit is 32766)
MAX_STAGE_TIMEOUT_S = 90 * 24 * 3600


class RolloutError(FirmwareError):
    """A rollout action that cannot be done; the message says why."""


def rollout_action(group: object | None) -> str:
    """The permission a rollout needs (provisioning.permissions): fleet-wide ones are the
    admins', like fleet defaults; a group's are the operators'."""
    return "rollout.fleet" if group is None else "rollout.group"


# --- reading ------------------------------------------------------------------------------------


def get_rollout(db: Session, ref: int | str) -> Rollout:
    text = str(ref)
    rollout = (
        db.get(Rollout, int(text)) if text.isascii() and text.isdigit() and len(text) < 10 else None
    )
    if rollout is None:
        raise RolloutError(f"rollout {text!r} not found", 404, "not_found")
    return rollout


def firmware_row(db: Session, device_id: str) -> DeviceFirmware:
    row = db.get(DeviceFirmware, device_id)
    if row is None:
        row = DeviceFirmware(device_id=device_id, excluded=False, state="", reason="", detail="")
        row.compatible = ""
        db.add(row)
        db.flush()
    return row


def _scope_group_ids(db: Session, rollout: Rollout) -> list[int] | None:
    return None if rollout.group_id is None else subtree_group_ids(db, rollout.group_id)


def _order_key(rollout_id: int, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()


def _eligible_query(db: Session, rollout: Rollout, *columns: Any) -> Any:
    """Approved, in scope, of the release's board, neither excluded nor pinned, not taken by
    another active rollout."""
    others = select(Rollout.id).where(Rollout.status.in_(ACTIVE), Rollout.id != rollout.id)
    query = (
        select(*columns)
        .select_from(Device)
        .join(DeviceFirmware, DeviceFirmware.device_id == Device.id)
        .where(
            Device.status == DEVICE_APPROVED,
            DeviceFirmware.compatible == rollout.release.compatible,
            DeviceFirmware.excluded.is_(False),
            DeviceFirmware.pinned_release_id.is_(None),
            (DeviceFirmware.rollout_id.is_(None)) | (DeviceFirmware.rollout_id.not_in(others)),
        )
    )
    groups = _scope_group_ids(db, rollout)
    return query if groups is None else query.where(Device.group_id.in_(groups))


def eligible_device_ids(db: Session, rollout: Rollout) -> list[str]:
    """The phones this rollout may ask, in its fixed order."""
    ids = list(db.scalars(_eligible_query(db, rollout, Device.id)))
    return sorted(ids, key=lambda device_id: _order_key(rollout.id, device_id))


def eligible_count(db: Session, rollout: Rollout) -> int:
    """How many phones it may ask: one COUNT, as each report re-evaluates the rollout."""
    return int(db.scalar(_eligible_query(db, rollout, func.count())) or 0)


@dataclass(frozen=True)
class Progress:
    eligible: int  # phones the rollout covers now (admitted ones included)
    admitted: int
    quota: int  # phones the current stage admits in all
    states: dict[str, int]
    # Per stage (index): (phones it asked, of them failed or rolled back).
    stages: dict[int, tuple[int, int]]

    def worst_stage(self) -> tuple[int, int, int] | None:
        """(stage, asked, failures) of the stage with the highest failure rate."""
        rated = [(f / n, stage, n, f) for stage, (n, f) in self.stages.items() if n]
        return max(rated)[1:] if rated else None

    @property
    def failures(self) -> int:
        return self.states.get(FAILED, 0) + self.states.get(ROLLED_BACK, 0)

    @property
    def finished(self) -> int:
        return sum(self.states.get(s, 0) for s in FINISHED)

    @property
    def failure_rate_pct(self) -> float:
        return 100.0 * self.failures / self.admitted if self.admitted else 0.0


def progress(db: Session, rollout: Rollout, count_eligible: bool = True) -> Progress:
    """``count_eligible=False``: the states only (eligible taken as the phones asked), for the
    checks a report makes before it can matter whether more phones are eligible."""
    rows = db.execute(
        select(DeviceFirmware.stage, DeviceFirmware.state, func.count())
        .where(DeviceFirmware.rollout_id == rollout.id)
        .group_by(DeviceFirmware.stage, DeviceFirmware.state)
    ).all()
    states: dict[str, int] = {}
    stages: dict[int, tuple[int, int]] = {}
    for stage, state, n in rows:
        states[state] = states.get(state, 0) + n
        if state != CANCELLED and stage is not None:
            asked, failed = stages.get(stage, (0, 0))
            stages[stage] = (asked + n, failed + (n if state in (FAILED, ROLLED_BACK) else 0))
    admitted = sum(n for state, n in states.items() if state != CANCELLED)
    active = count_eligible and rollout.status in ACTIVE
    eligible = eligible_count(db, rollout) if active else admitted
    eligible = max(eligible, admitted)
    return Progress(eligible, admitted, _quota(rollout, eligible), states, stages)


def _quota(rollout: Rollout, eligible: int) -> int:
    pct = rollout.stages[min(rollout.stage, len(rollout.stages) - 1)]
    return min(eligible, math.ceil(eligible * pct / 100))


def rollout_snapshot(db: Session, rollout: Rollout) -> dict[str, Any]:
    done = progress(db, rollout)
    return {
        "id": rollout.id,
        "release": {
            "id": rollout.release.id,
            "compatible": rollout.release.compatible,
            "version": rollout.release.version,
        },
        "group": rollout.group.name if rollout.group is not None else None,
        "status": rollout.status,
        "stages": list(rollout.stages),
        "stage": rollout.stage,
        "stage_pct": rollout.stages[rollout.stage],
        "failure_threshold_pct": rollout.failure_threshold_pct,
        "maintenance_window": rollout.maintenance_window,
        "pause_reason": rollout.pause_reason,
        "stage_timeout_s": rollout.stage_timeout_s,
        "stage_started_at": _iso(rollout.stage_started_at),
        "eligible": done.eligible,
        "admitted": done.admitted,
        "stage_quota": done.quota,
        "running": done.states.get(RUNNING, 0),
        "failed": done.states.get(FAILED, 0),
        "rolled_back": done.states.get(ROLLED_BACK, 0),
        "in_progress": sum(done.states.get(s, 0) for s in IN_PROGRESS),
        "states": done.states,
        "failure_rate_pct": round(done.failure_rate_pct, 2),
        "per_stage": [
            {"stage": k + 1, "pct": rollout.stages[k], "asked": n, "failed": f}
            for k, (n, f) in sorted(done.stages.items())
        ],
        "created_by": rollout.created_by,
        "created_at": _iso(rollout.created_at),
        "finished_at": _iso(rollout.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_rollouts(db: Session) -> list[Rollout]:
    return list(db.scalars(select(Rollout).order_by(Rollout.id.desc())))


def fleet_versions(db: Session) -> list[dict[str, Any]]:
    """Approved phones per (board, running version), with how many are mid-update."""
    rows = db.execute(
        select(
            DeviceFirmware.compatible,
            Device.firmware_version,
            func.count(),
            func.sum(_in_progress_case()),
        )
        .select_from(Device)
        .outerjoin(DeviceFirmware, DeviceFirmware.device_id == Device.id)
        .where(Device.status == DEVICE_APPROVED)
        .group_by(DeviceFirmware.compatible, Device.firmware_version)
        .order_by(DeviceFirmware.compatible, Device.firmware_version)
    ).all()
    return [
        {
            "compatible": compatible or "",
            "version": version or "",
            "devices": count,
            "updating": int(updating or 0),
        }
        for compatible, version, count, updating in rows
    ]


def _in_progress_case() -> Any:
    return case((DeviceFirmware.state.in_(IN_PROGRESS), 1), else_=0)


def device_firmware_snapshot(db: Session, device: Device) -> dict[str, Any]:
    row = db.get(DeviceFirmware, device.id)
    target = db.get(FirmwareRelease, row.release_id) if row and row.release_id else None
    pinned = (
        db.get(FirmwareRelease, row.pinned_release_id) if row and row.pinned_release_id else None
    )
    return {
        "device_id": device.id,
        "mac": device.mac,
        "running_version": device.firmware_version,
        "compatible": row.compatible if row else "",
        "target_version": target.version if target else "",
        "target_release": target.id if target else None,
        "rollout": row.rollout_id if row else None,
        "pinned": pinned.version if pinned else "",
        "excluded": bool(row and row.excluded),
        "state": row.state if row else "",
        "reason": row.reason if row else "",
        "detail": row.detail if row else "",
        "state_at": _iso(row.state_at) if row else None,
    }


# --- starting and steering ----------------------------------------------------------------------


def _check_stages(stages: Iterable[int]) -> list[int]:
    out = [int(s) for s in stages]
    if not out:
        raise RolloutError("stages: give at least one percentage, e.g. 5,25,100")
    if any(not 0 < s <= 100 for s in out) or out != sorted(set(out)):
        raise RolloutError(f"stages {out}: rising percentages between 1 and 100, e.g. 5,25,100")
    if out[-1] != 100:
        out.append(100)  # a rollout ends with every eligible phone
    return out


def _overlaps(db: Session, a: int | None, b: int | None) -> bool:
    if a is None or b is None:
        return True
    return b in subtree_group_ids(db, a) or a in subtree_group_ids(db, b)


def start_rollout(
    db: Session,
    actor: Actor,
    release_ref: int | str,
    *,
    group: int | str | None = None,
    stages: Iterable[int] = DEFAULT_STAGES,
    failure_threshold_pct: float = 10.0,
    maintenance_window: str = "",
    stage_timeout_s: int = 0,
) -> tuple[Rollout, list[str]]:
    """A running rollout with its first stage (the canary) admitted. ``stage_timeout_s``: a
    stage not finished that long after it began pauses the rollout (0: no limit)."""
    release = get_release(db, release_ref)
    check_offered(release)
    if not 0 <= stage_timeout_s <= MAX_STAGE_TIMEOUT_S:
        raise RolloutError(f"stage time limit: 0 (none) to {MAX_STAGE_TIMEOUT_S} seconds (90 days)")
    group_row: Group | None = get_group(db, group) if group is not None else None
    stage_list = _check_stages(stages)
    if not 0 <= failure_threshold_pct <= 100:
        raise RolloutError("failure threshold: a percentage between 0 and 100")
    if maintenance_window and not WINDOW_RE.match(maintenance_window):
        raise RolloutError("maintenance window must be HH:MM-HH:MM (24 h)")
    group_id = group_row.id if group_row is not None else None
    for other in db.scalars(select(Rollout).where(Rollout.status.in_(ACTIVE))):
        if other.release.compatible == release.compatible and _overlaps(
            db, other.group_id, group_id
        ):
            raise RolloutError(
                f"rollout {other.id} ({other.release.version}, {other.status}) already covers"
                " these phones: abort it first",
                409,
                "conflict",
            )
    rollout = Rollout(
        release_id=release.id,
        group_id=group_id,
        status=ROLLOUT_RUNNING,
        stages=stage_list,
        stage=0,
        failure_threshold_pct=float(failure_threshold_pct),
        maintenance_window=maintenance_window,
        pause_reason="",
        stage_timeout_s=int(stage_timeout_s),
        stage_started_at=utcnow(),
        created_by=actor.name,
    )
    db.add(rollout)
    db.flush()
    changed = _admit(db, rollout)
    audit.record(
        db,
        actor.name,
        "rollout.start",
        "rollout",
        rollout.id,
        None,
        rollout_snapshot(db, rollout),
        actor.ip,
    )
    changed += evaluate(db, rollout)  # phones already on the version count as done
    return rollout, changed


def _admit(db: Session, rollout: Rollout) -> list[str]:
    """Admit phones up to the current stage's share; returns the ones whose config changed."""
    eligible = eligible_device_ids(db, rollout)
    admitted = set(
        db.scalars(select(DeviceFirmware.device_id).where(DeviceFirmware.rollout_id == rollout.id))
    )
    quota = _quota(rollout, max(len(eligible), len(admitted)))
    wanted = [d for d in eligible if d not in admitted][: max(0, quota - len(admitted))]
    if not wanted:
        return []
    versions = dict(
        db.execute(select(Device.id, Device.firmware_version).where(Device.id.in_(wanted))).all()
    )
    db.flush()
    # Set-based: a stage can ask tens of thousands of phones in one transaction, which holds
    # SQLite's write lock; one UPDATE per chunk instead of an ORM object per phone.
    for chunk in _chunks(wanted, ADMIT_CHUNK):
        for state, ids in (
            (RUNNING, [d for d in chunk if versions.get(d) == rollout.release.version]),
            (ASSIGNED, [d for d in chunk if versions.get(d) != rollout.release.version]),
        ):
            if ids:
                db.execute(
                    update(DeviceFirmware)
                    .where(DeviceFirmware.device_id.in_(ids))
                    .values(
                        rollout_id=rollout.id,
                        release_id=rollout.release_id,
                        stage=rollout.stage,
                        state=state,  # RUNNING: already on the version, nothing to install
                        reason="",
                        detail="",
                        state_at=utcnow(),
                    )
                    .execution_options(synchronize_session=False)
                )
        bump_devices(db, chunk)
    log.info(
        "rollout stage admitted",
        extra=kv(rollout=rollout.id, stage=rollout.stage, devices=len(wanted)),
    )
    return wanted


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate(db: Session, rollout: Rollout) -> list[str]:
    """Pause past the failure threshold, else move to the next stage once every admitted
    phone has finished. Returns the devices newly admitted."""
    if rollout.status != ROLLOUT_RUNNING:
        return []
    changed: list[str] = []
    while True:
        done = progress(db, rollout, count_eligible=False)
        worst = done.worst_stage()
        if worst is not None and 100.0 * worst[2] / worst[1] > rollout.failure_threshold_pct:
            stage, asked, failed = worst
            _auto_pause(
                db,
                rollout,
                f"failure rate {100.0 * failed / asked:.1f}% ({failed} of {asked} phones of"
                f" stage {stage + 1} ({rollout.stages[stage]}%) failed or rolled back) passed"
                f" the threshold of {rollout.failure_threshold_pct:g}%",
                "failure_threshold",
            )
            return changed
        if done.admitted and done.finished < done.admitted:
            return changed  # the stage is still under way (most reports end here)
        done = progress(db, rollout)
        if done.admitted < done.quota:
            admitted = _admit(db, rollout)  # phones that became eligible since
            changed += admitted
            if admitted:
                continue
            return changed
        if done.finished < done.admitted or not done.admitted:
            return changed  # no phone yet: it waits for phones to report this board
        if rollout.stage + 1 >= len(rollout.stages):
            rollout.status = ROLLOUT_COMPLETED
            rollout.finished_at = utcnow()
            audit.record(
                db,
                SYSTEM.name,
                "rollout.complete",
                "rollout",
                rollout.id,
                None,
                {"running": done.states.get(RUNNING, 0), "failed": done.failures},
            )
            return changed
        rollout.stage += 1
        rollout.stage_started_at = utcnow()
        audit.record(
            db,
            SYSTEM.name,
            "rollout.stage",
            "rollout",
            rollout.id,
            {"stage": rollout.stage - 1},
            {"stage": rollout.stage, "pct": rollout.stages[rollout.stage]},
        )
        changed += _admit(db, rollout)


def _auto_pause(db: Session, rollout: Rollout, reason: str, cause: str) -> None:
    before = {"status": rollout.status}
    rollout.status = ROLLOUT_PAUSED
    rollout.pause_reason = reason
    audit.record(
        db,
        SYSTEM.name,
        "rollout.auto_pause",
        "rollout",
        rollout.id,
        before,
        {"status": rollout.status, "reason": reason, "cause": cause},
    )
    log.warning("rollout paused", extra=kv(rollout=rollout.id, cause=cause, reason=reason))


def check_stage_timeouts(db: Session, now: datetime | None = None) -> list[int]:
    """Pause every running rollout whose current stage has not finished within its time limit
    (phones still downloading, installing or silent); returns their ids. The caller commits."""
    now = now or utcnow()
    paused = []
    for rollout in db.scalars(
        select(Rollout).where(Rollout.status == ROLLOUT_RUNNING, Rollout.stage_timeout_s > 0)
    ):
        if now < rollout.stage_started_at + timedelta(seconds=rollout.stage_timeout_s):
            continue
        done = progress(db, rollout, count_eligible=False)
        if done.admitted and done.finished >= done.admitted:
            continue  # finished: the next report or evaluation moves it on
        waiting = done.admitted - done.finished
        _auto_pause(
            db,
            rollout,
            f"stage {rollout.stage + 1} ({rollout.stages[rollout.stage]}%) did not complete"
            f" within its time limit of {_duration(rollout.stage_timeout_s)}: {waiting} of"
            f" {done.admitted} phones asked had not finished",
            "stage_timeout",
        )
        paused.append(rollout.id)
    return paused


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _steer(db: Session, actor: Actor, rollout: Rollout, action: str, status: str) -> None:
    audit.record(
        db,
        actor.name,
        f"rollout.{action}",
        "rollout",
        rollout.id,
        {"status": rollout.status},
        {"status": status},
        actor.ip,
    )
    rollout.status = status


def pause_rollout(db: Session, actor: Actor, ref: int | str) -> tuple[Rollout, list[str]]:
    """No more phones are asked; those already asked carry on."""
    rollout = get_rollout(db, ref)
    if rollout.status != ROLLOUT_RUNNING:
        raise RolloutError(
            f"rollout {rollout.id} is {rollout.status}, not running", 409, "conflict"
        )
    _steer(db, actor, rollout, "pause", ROLLOUT_PAUSED)
    rollout.pause_reason = f"paused by {actor.name}"
    return rollout, []


def resume_rollout(db: Session, actor: Actor, ref: int | str) -> tuple[Rollout, list[str]]:
    """Running again; failures so far no longer count against the threshold only if the
    operator raised it, so a rollout paused for failures pauses again at once unless it was
    fixed (the failed phones retried) or the threshold changed."""
    rollout = get_rollout(db, ref)
    if rollout.status != ROLLOUT_PAUSED:
        raise RolloutError(f"rollout {rollout.id} is {rollout.status}, not paused", 409, "conflict")
    _steer(db, actor, rollout, "resume", ROLLOUT_RUNNING)
    rollout.pause_reason = ""
    rollout.stage_started_at = utcnow()  # the stage's time limit counts again from now
    return rollout, evaluate(db, rollout)


def set_threshold(
    db: Session, actor: Actor, ref: int | str, failure_threshold_pct: float
) -> Rollout:
    rollout = get_rollout(db, ref)
    if not 0 <= failure_threshold_pct <= 100:
        raise RolloutError("failure threshold: a percentage between 0 and 100")
    audit.record(
        db,
        actor.name,
        "rollout.threshold",
        "rollout",
        rollout.id,
        {"failure_threshold_pct": rollout.failure_threshold_pct},
        {"failure_threshold_pct": failure_threshold_pct},
        actor.ip,
    )
    rollout.failure_threshold_pct = float(failure_threshold_pct)
    return rollout


def abort_rollout(db: Session, actor: Actor, ref: int | str) -> tuple[Rollout, list[str]]:
    """Stopped for good: every phone asked that does not run the new version yet loses the
    target (its config drops ``[firmware]``, so a download stops, a written slot is not
    booted)."""
    rollout = get_rollout(db, ref)
    if rollout.status not in ACTIVE:
        raise RolloutError(f"rollout {rollout.id} is already {rollout.status}", 409, "conflict")
    _steer(db, actor, rollout, "abort", ROLLOUT_ABORTED)
    rollout.finished_at = utcnow()
    rows = list(
        db.scalars(
            select(DeviceFirmware).where(
                DeviceFirmware.rollout_id == rollout.id, DeviceFirmware.state != RUNNING
            )
        )
    )
    for row in rows:
        row.release_id = None
        if row.state in IN_PROGRESS:
            row.state = CANCELLED
    db.flush()
    return rollout, bump_devices(db, [r.device_id for r in rows])


# --- per device ---------------------------------------------------------------------------------


def pin_device(
    db: Session, actor: Actor, device_ref: str, release_ref: int | str | None
) -> list[str]:
    """Hold a phone on one release (``None``: unpin); a pin wins over every rollout."""
    device = get_device(db, device_ref)
    row = firmware_row(db, device.id)
    before = device_firmware_snapshot(db, device)
    if release_ref is None:
        if row.pinned_release_id is None:
            return []
        row.pinned_release_id = None
        if row.rollout_id is None:
            row.release_id = None
            row.state = ""
    else:
        release = get_release(db, release_ref)
        check_offered(release)
        if row.compatible and row.compatible != release.compatible:
            raise RolloutError(
                f"device {device.mac} is a {row.compatible}; release {release.id} is for"
                f" {release.compatible}"
            )
        row.pinned_release_id = release.id
        row.release_id = release.id
        row.rollout_id = None
        row.stage = None
        row.state = RUNNING if device.firmware_version == release.version else ASSIGNED
        row.reason = row.detail = ""
        row.state_at = utcnow()
    db.flush()
    audit.record(
        db,
        actor.name,
        "firmware.pin" if release_ref is not None else "firmware.unpin",
        "device",
        device.id,
        before,
        device_firmware_snapshot(db, device),
        actor.ip,
    )
    return bump_devices(db, [device.id])


def exclude_device(db: Session, actor: Actor, device_ref: str, excluded: bool) -> list[str]:
    """Leave a phone out of every rollout (an update it has not finished is withdrawn)."""
    device = get_device(db, device_ref)
    row = firmware_row(db, device.id)
    if row.excluded == excluded:
        return []
    before = device_firmware_snapshot(db, device)
    row.excluded = excluded
    changed = []
    if excluded and row.rollout_id is not None and row.state != RUNNING:
        row.release_id = None
        row.rollout_id = None
        row.state = CANCELLED if row.state in IN_PROGRESS else row.state
        changed = [device.id]
    db.flush()
    audit.record(
        db,
        actor.name,
        "firmware.exclude" if excluded else "firmware.include",
        "device",
        device.id,
        before,
        device_firmware_snapshot(db, device),
        actor.ip,
    )
    return bump_devices(db, changed)


# --- the phone's reports ------------------------------------------------------------------------


def _move(db: Session, row: DeviceFirmware, state: str, reason: str, detail: str) -> list[str]:
    if row.state == state and row.reason == reason:
        return []
    row.state = state
    row.reason = reason[:32]
    row.detail = detail[:4000]
    row.state_at = utcnow()
    db.flush()
    if state not in FINISHED:
        return []  # a step on the way can neither pass the threshold nor end a stage
    rollout = db.get(Rollout, row.rollout_id) if row.rollout_id is not None else None
    return evaluate(db, rollout) if rollout is not None else []


def record_event(
    db: Session, device: Device, event_type: str, version: str, reason: str, detail: str
) -> list[str]:
    """A ``firmware_*`` event moves the phone's state when it is about its current target."""
    state = EVENT_STATES.get(event_type)
    row = db.get(DeviceFirmware, device.id)
    if state is None or row is None or row.release_id is None:
        return []
    target = db.get(FirmwareRelease, row.release_id)
    if target is None or (version and version != target.version):
        return []  # about an older target: stored as an event, the state stays
    return _move(db, row, state, reason, detail)


def record_status(db: Session, device: Device, running_version: str, compatible: str) -> list[str]:
    """A status snapshot: the board it reports, and ``running`` once it runs the target."""
    row = db.get(DeviceFirmware, device.id)
    if row is None:
        if not compatible:
            return []
        row = firmware_row(db, device.id)
    joined: list[str] = []
    if compatible and row.compatible != compatible:
        # A board reported for the first time (or changed): a rollout waiting for phones of
        # it, or between stages, may ask this one now.
        row.compatible = compatible[:128]
        db.flush()
        for rollout in db.scalars(
            select(Rollout)
            .join(FirmwareRelease, FirmwareRelease.id == Rollout.release_id)
            .where(Rollout.status == ROLLOUT_RUNNING, FirmwareRelease.compatible == compatible)
        ):
            joined += evaluate(db, rollout)
    if row.release_id is None or not running_version or row.state == RUNNING:
        return joined
    target = db.get(FirmwareRelease, row.release_id)
    if target is not None and target.version == running_version:
        return joined + _move(db, row, RUNNING, "", "")
    return joined
