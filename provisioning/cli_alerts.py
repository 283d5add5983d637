"""``offhook fleet alerts list|ack``: the same service functions as the REST API and the web
UI (``provisioning.services.alerts``), acknowledgements audited as ``cli:<login>``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

COMMANDS = ("alerts",)


def add_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = cmd(
        "alerts",
        "alerts from the phones' reports: list [--state S] [--kind K] [--json], ack ID...",
    )
    p.add_argument("action", choices=["list", "ack"])
    p.add_argument("ids", nargs="*", type=int, help="ack: the alerts' ids")
    p.add_argument(
        "--state",
        default="active",
        help="list: active (open or acknowledged, the default), open, acknowledged, resolved, all",
    )
    p.add_argument("--kind", default="", help="list: only this kind (e.g. not_seen)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")


def run(ctx: Any, db: Any, args: argparse.Namespace) -> int:
    from offhook.provisioning.services import alerts

    if args.action == "ack":
        result = alerts.acknowledge(db, ctx.actor, args.ids)
        db.commit()
        print(result.summary)
        for alert_id, why in result.skipped:
            print(f"alert {alert_id}: {why}")
        return 0
    wanted = alerts.parse_filter(args.state, args.kind)
    found = alerts.list_alerts(db, wanted, max(1, min(args.limit, 10000)))
    if args.json:
        sent = alerts.notifications_of(db, [a.id for a in found])
        public_url = ctx.settings.alerts.public_url
        snapshot = [alerts.alert_snapshot(a, public_url, sent[a.id]) for a in found]
        print(json.dumps(snapshot, indent=2, sort_keys=True, default=str))
        return 0
    for a in found:
        since = a.first_seen.strftime("%Y-%m-%d %H:%M")
        who = f" by {a.acknowledged_by}" if a.acknowledged_by else ""
        print(
            f"{a.id:>5}  {a.severity:<8} {a.state + who:<28} {a.kind:<18} "
            f"{a.subject_type} {a.subject_name}: {a.message}  (since {since} UTC)"
        )
    counts = alerts.counts(db)
    print(f"{counts.open} open, {counts.acknowledged} acknowledged")
    return 0
