"""``offhook fleet calls analytics|list|quality|export`` and ``offhook fleet time-zone``: the call
analytics of the web UI's Analytics and Quality pages and the REST API's
``/analytics/...`` and ``/calls``, from the same service (``provisioning.services.call_analytics``).
Reading calls (list, export) is audited as ``cdr.read`` with ``cli`` as the front end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from offhook.contract.atomic import atomic_write_text
from offhook.provisioning import privacy
from offhook.provisioning.services import admin_users
from offhook.provisioning.services import call_analytics as ca
from offhook.provisioning.services.time_zones import admin_zone, parse_zone, set_time_zone

COMMANDS = ("calls", "time-zone")


def add_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = cmd(
        "calls",
        "call analytics (volume, busy hours, answer/miss rates, durations, per-day trend), "
        "list (both legs joined), quality (MOS trends), export (the billing CSV)",
    )
    p.add_argument("action", choices=["analytics", "list", "quality", "export"])
    p.add_argument("--from", dest="since", default="", help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="until", default="", help="last day (included), YYYY-MM-DD")
    p.add_argument("--tz", default="UTC", help="zoneinfo name for days and hours (UTC)")
    p.add_argument("--group", default="", help="a site or group (id or name), with subgroups")
    p.add_argument("--device", default="", help="MAC or id")
    p.add_argument("--extension", default="")
    p.add_argument("--threshold", default="", help="quality: poor below this MOS (3.6)")
    p.add_argument("--poor-only", action="store_true", help="quality: only the poor samples")
    p.add_argument("--out", help="export: write the CSV to this file (else to stdout)")
    p.add_argument("--json", action="store_true", help="analytics, list, quality: JSON")
    p = cmd("time-zone", "an admin's display time zone: show USER, or set USER ZONE")
    p.add_argument("username")
    p.add_argument("zone", nargs="?", help="a tz database name such as Europe/Berlin")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def run(ctx: Any, db: Any, args: argparse.Namespace) -> int:
    if args.command == "time-zone":
        user = admin_users.get_admin_user(db, args.username)
        if args.zone:
            set_time_zone(db, ctx.actor, user, args.zone)
        print(f"{user.username}: {admin_zone(user).key}")
        return 0
    scope = ca.parse_scope(
        db,
        parse_zone(args.tz),
        since=args.since,
        until=args.until,
        group=args.group,
        device=args.device,
        extension=args.extension,
    )
    if args.action == "analytics":
        return _analytics(ca.call_stats(db, scope), args.json)
    if args.action == "quality":
        trend = ca.quality_trend(db, scope, ca.parse_threshold(args.threshold), args.poor_only)
        return _quality(trend, args.json)
    calls = ca.calls_in(db, scope)
    where = "cli-export" if args.action == "export" else "cli"
    privacy.record_cdr_access(db, ctx.actor, where, scope.as_filters(), len(calls))
    if args.action == "export":
        lines = ca.csv_lines(calls, scope.zone)
        if args.out:
            atomic_write_text(args.out, "".join(lines))
            print(f"{len(calls)} call(s) exported to {args.out}", file=sys.stderr)
        else:
            sys.stdout.writelines(lines)
        return 0
    if args.json:
        _print([ca.call_dict(c, scope.zone) for c in calls])
        return 0
    for c in calls:
        row = ca.call_dict(c, scope.zone)
        print(
            f"{row['start_local']}  {c.direction:8}  {c.disposition:9}  "
            f"{c.caller.number or c.caller.uri} -> {c.callee.number or c.callee.uri}  "
            f"{round(c.duration_s)} s  legs={len(c.legs)}"
        )
    print(f"{len(calls)} call(s)")
    return 0


def _analytics(stats: ca.CallStats, as_json: bool) -> int:
    if as_json:
        _print(ca.stats_dict(stats))
        return 0
    s = stats.scope
    print(
        f"{s.since} to {s.until} ({s.zone.key}){' group ' + s.group_name if s.group_name else ''}"
    )
    duration = stats.average_duration_s
    print(
        f"calls {stats.calls}  answered {stats.answered} ({_pct(stats.answer_rate)})  "
        f"missed {stats.missed} of {stats.rang_fleet} ({_pct(stats.miss_rate)})  "
        f"average talk {'-' if duration is None else f'{duration:.0f} s'}"
    )
    if stats.busiest:
        day, hour, count = stats.busiest
        print(f"busiest hour: {day} {hour:02d}:00 ({count} calls)")
    for p in stats.days:
        if p.calls:
            mos = "-" if p.mos is None else f"{p.mos:.2f} ({p.mos_samples} samples)"
            print(
                f"  {p.day}  calls {p.calls}  answered {p.answered}  missed {p.missed}  MOS {mos}"
            )
    return 0


def _quality(trend: ca.QualityTrend, as_json: bool) -> int:
    if as_json:
        _print(ca.trend_dict(trend))
        return 0
    print(f"{trend.samples} sample(s); poor below MOS {trend.threshold:g}")
    for title, rows in (("groups", trend.groups), ("devices", trend.devices)):
        print(f"{title}:")
        for r in rows:
            mos = "-" if r.mos is None else f"{r.mos:.2f}"
            print(f"  {r.label}: MOS {mos} over {r.samples} sample(s), {r.poor} poor")
    return 0
