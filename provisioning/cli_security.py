"""``offhook fleet mfa ...``, ``offhook fleet sessions ...`` and ``offhook fleet privacy ...``:
admins' second factors and web sessions, the client data classes and a data subject's archive,
through the same service functions as the REST API and the web UI (``provisioning.mfa``,
``provisioning.services.sessions``, ``provisioning.privacy``), audited as ``cli:<login>``. The
server's owner on its console is the way back in when an admin lost the phone with the
authenticator app: ``fleet mfa reset USER``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

COMMANDS = ("mfa", "sessions", "privacy", "encrypt-db")


def add_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = cmd("mfa", "admins' second factor: status USER, reset USER (a lost phone)")
    p.add_argument("action", choices=["status", "reset"])
    p.add_argument("username")
    p = cmd("sessions", "admins' web sessions: list [--user USER], revoke ID")
    p.add_argument("action", choices=["list", "revoke"])
    p.add_argument("session_id", nargs="?", type=int, help="revoke: the session's id")
    p.add_argument("--user", help="list: only this admin's")
    p.add_argument("--json", action="store_true")
    p = cmd(
        "privacy",
        "client data: classes (what is kept, why, where, how long, who reads it), "
        "archive --device/--extension --out FILE.zip (a data subject's export)",
    )
    p.add_argument("action", choices=["classes", "archive"])
    p.add_argument("--device")
    p.add_argument("--extension")
    p.add_argument("--out", help="archive: the zip file to write")
    p = cmd(
        "encrypt-db",
        "write an SQLCipher-encrypted copy of the (plain) SQLite database; then point the "
        "server at it with OFFHOOK_DB_KEY_FILE",
    )
    p.add_argument("--out", required=True, help="the new encrypted database file")
    p.add_argument("--db-key-file", required=True, help="the file that holds the passphrase")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def run(ctx: Any, db: Any, args: argparse.Namespace) -> int:
    from offhook.provisioning import mfa
    from offhook.provisioning.services import admin_users
    from offhook.provisioning.services import sessions as session_rows

    if args.command == "encrypt-db":
        return _encrypt_db(ctx, args)
    if args.command == "privacy":
        return _privacy(ctx, db, args)
    if args.command == "mfa":
        user = admin_users.get_admin_user(db, args.username)
        if args.action == "reset":
            mfa.remove(db, ctx.settings, ctx.actor, user, None)
            db.commit()
            print(f"second factor of {user.username} removed")
            return 0
        _print(mfa.status(db, ctx.settings, user))
        return 0
    if args.action == "revoke":
        if args.session_id is None:
            raise SystemExit("sessions revoke: name the session's id (see sessions list)")
        try:
            row = session_rows.revoke(db, ctx.actor, None, args.session_id)
        except session_rows.SessionNotFound as exc:
            raise SystemExit(str(exc)) from None
        db.commit()
        print(f"session {row.id} ended")
        return 0
    owner = admin_users.get_admin_user(db, args.user) if args.user else None
    names = {u.id: u.username for u in admin_users.list_admin_users(db)}
    rows = [
        {**session_rows.session_snapshot(r), "user": names.get(r.user_id, "")}
        for r in session_rows.list_sessions(db, owner)
    ]
    if args.json:
        _print(rows)
        return 0
    for r in rows:
        factor = r["second_factor"] or "-"
        print(f"{r['id']:>6}  {r['user']:<20} {r['created_at']}  {r['ip']:<16} {factor}")
    if not rows:
        print("no live sessions")
    return 0


def _privacy(ctx: Any, db: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from offhook.contract.atomic import atomic_write_bytes
    from offhook.provisioning import privacy, retention

    if args.action == "classes":
        _print(privacy.data_classes(ctx.settings))
        return 0
    if not args.out:
        raise SystemExit("privacy archive: --out FILE.zip")
    data = retention.export_subject(db, ctx.actor, device=args.device, extension=args.extension)
    db.commit()  # the export is audited
    atomic_write_bytes(Path(args.out), privacy.export_archive(data), mode=0o600)
    print(f"exported to {args.out}")
    return 0


def _encrypt_db(ctx: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from offhook.provisioning import sqlcipher

    if not ctx.database.is_sqlite or ctx.database.sqlite_key:
        raise SystemExit("encrypt-db copies a plain SQLite database (no OFFHOOK_DB_KEY set)")
    key = sqlcipher.load_db_key({sqlcipher.DB_KEY_FILE_ENV: args.db_key_file})
    ctx.database.checkpoint()  # everything in the WAL into the file first
    plain = Path(ctx.database.engine.url.database)
    sqlcipher.encrypt_copy(plain, Path(args.out), key)
    print(f"encrypted copy written to {args.out}; stop the server, move it in place of {plain}")
    print(f"and start the server with {sqlcipher.DB_KEY_FILE_ENV}={args.db_key_file}")
    return 0
