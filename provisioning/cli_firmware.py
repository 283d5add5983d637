"""``offhook fleet firmware ...`` and ``offhook fleet rollout ...``: the same service functions
as the REST API and the web UI (``provisioning.firmware_releases``, ``provisioning.rollouts``),
audited as ``cli:<login>``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("firmware", "rollout")


def add_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = cmd(
        "firmware",
        "firmware releases and per-phone firmware: upload FILE, list, versions, "
        "show DEVICE, pin DEVICE RELEASE, unpin/exclude/include DEVICE",
    )
    p.add_argument(
        "action",
        choices=["upload", "list", "versions", "show", "pin", "unpin", "exclude", "include"],
    )
    p.add_argument("target", nargs="?", help="upload: the .raucb file; others: a device")
    p.add_argument("release", nargs="?", help="pin: the release (id, version, board:version)")
    p.add_argument("--json", action="store_true")
    p = cmd(
        "rollout",
        "firmware rollouts: start RELEASE [--group G], list, show ID, pause/resume/abort ID, "
        "threshold ID PCT",
    )
    p.add_argument(
        "action", choices=["start", "list", "show", "pause", "resume", "abort", "threshold"]
    )
    p.add_argument("target", nargs="?", help="start: the release; others: the rollout id")
    p.add_argument("value", nargs="?", help="threshold: the new failure threshold in percent")
    p.add_argument("--group", help="start: only this group's subtree (default: the whole fleet)")
    p.add_argument(
        "--stages",
        default="5,25,50,100",
        help="start: cumulative percentages, the first the canary (default 5,25,50,100)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        help="start: pause when this percentage of the phones asked failed (default 10)",
    )
    p.add_argument("--window", default="", help="start: maintenance window HH:MM-HH:MM")
    p.add_argument("--json", action="store_true")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _need(value: str | None, what: str) -> str:
    if not value:
        raise SystemExit(f"give {what}")
    return value


def run(ctx: Any, db: Any, args: argparse.Namespace, resync: Callable[[list[str]], int]) -> int:
    if args.command == "firmware":
        return _firmware(ctx, db, args, resync)
    return _rollout(ctx, db, args, resync)


def _firmware(
    ctx: Any, db: Any, args: argparse.Namespace, resync: Callable[[list[str]], int]
) -> int:
    from offhook.provisioning import firmware_releases as fr
    from offhook.provisioning import rollouts
    from offhook.provisioning.operations import get_device

    action = args.action
    if action == "upload":
        path = Path(_need(args.target, "the bundle file: firmware upload FILE.raucb"))
        received = fr.receive_file(ctx.settings, path)
        release = fr.register_release(db, ctx.actor, ctx.settings, received)
        db.commit()
        print(
            f"release {release.id}: {release.compatible} {release.version} "
            f"({release.size} bytes, signed by {release.signer or 'unknown'})"
            f" sha256={release.sha256}"
        )
        return 0
    if action == "list":
        releases = [fr.release_snapshot(r) for r in fr.list_releases(db)]
        if args.json:
            _print(releases)
        for r in [] if args.json else releases:
            print(
                f"{r['id']:>4}  {r['compatible']:<24} {r['version']:<20} {r['size']:>12}"
                f"  {r['signer']}"
            )
        return 0
    if action == "versions":
        versions = rollouts.fleet_versions(db)
        if args.json:
            _print(versions)
        for v in [] if args.json else versions:
            board = v["compatible"] or "(board unknown)"
            print(
                f"{board:<24} {v['version'] or '(none)':<20} {v['devices']:>6} phones"
                f"  {v['updating']} updating"
            )
        return 0
    device = get_device(db, _need(args.target, "a device (MAC or id)"))
    device_id = device.id
    if action == "pin":
        changed = rollouts.pin_device(db, ctx.actor, device_id, _need(args.release, "the release"))
    elif action == "unpin":
        changed = rollouts.pin_device(db, ctx.actor, device_id, None)
    elif action in ("exclude", "include"):
        changed = rollouts.exclude_device(db, ctx.actor, device_id, action == "exclude")
    else:
        changed = []
    db.commit()
    resync(changed)
    _print(rollouts.device_firmware_snapshot(db, get_device(db, device_id)))
    return 0


def _rollout(
    ctx: Any, db: Any, args: argparse.Namespace, resync: Callable[[list[str]], int]
) -> int:
    from offhook.provisioning import rollouts

    action = args.action
    if action == "list":
        listed = [rollouts.rollout_snapshot(db, r) for r in rollouts.list_rollouts(db)]
        if args.json:
            _print(listed)
        for r in [] if args.json else listed:
            print(
                f"{r['id']:>4}  {r['release']['version']:<16} {r['group'] or '(fleet)':<16} "
                f"{r['status']:<10} stage {r['stage'] + 1}/{len(r['stages'])} ({r['stage_pct']}%)  "
                f"{r['running']}/{r['eligible']} running, {r['failed'] + r['rolled_back']} failed"
                + (f"  - {r['pause_reason']}" if r["pause_reason"] else "")
            )
        return 0
    target = _need(args.target, "the release (start) or the rollout id")
    if action == "start":
        try:
            stages = [int(s) for s in args.stages.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--stages {args.stages!r}: comma-separated percentages") from None
        rollout, changed = rollouts.start_rollout(
            db,
            ctx.actor,
            target,
            group=args.group,
            stages=stages,
            failure_threshold_pct=args.threshold,
            maintenance_window=args.window,
        )
    elif action == "show":
        rollout, changed = rollouts.get_rollout(db, target), []
    elif action == "threshold":
        value = _need(args.value, "the threshold in percent: rollout threshold ID PCT")
        try:
            pct = float(value)
        except ValueError:
            raise SystemExit(f"{value!r} is not a percentage") from None
        rollout, changed = rollouts.set_threshold(db, ctx.actor, target, pct), []
    else:
        steer = {
            "pause": rollouts.pause_rollout,
            "resume": rollouts.resume_rollout,
            "abort": rollouts.abort_rollout,
        }[action]
        rollout, changed = steer(db, ctx.actor, target)
    rollout_id = rollout.id
    db.commit()
    asked = resync(changed)
    shown = rollouts.rollout_snapshot(db, rollouts.get_rollout(db, rollout_id))
    if args.json or action == "show":
        _print(shown)
    else:
        print(
            f"rollout {rollout_id} {shown['status']}: stage {shown['stage'] + 1}/"
            f"{len(shown['stages'])} ({shown['stage_pct']}%), {shown['admitted']} of "
            f"{shown['eligible']} phones asked, {len(changed)} told now ({asked} answered)"
        )
    return 0
