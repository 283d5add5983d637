"""``offhook server`` (run the provisioning server) and ``offhook fleet`` (manage the fleet).

``offhook fleet`` talks to the database directly (--db URL, or the SQLite file in --data-dir) and
uses the same key ring as the server: it works with the server stopped, needs no API token, and
writes the same audit entries (actor ``cli:<user>``). Remote administration uses the REST API.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from offhook.contract.errors import OffhookError
from offhook.provisioning.settings import (
    POLL_INTERVAL_ENV,
    ServerSettings,
    check_poll_interval,
    settings_from_env,
)

log = logging.getLogger(__name__)


def _common_db_args(parser: argparse.ArgumentParser, *, on_subcommand: bool = False) -> None:
    """--db, --data-dir, --key-file. Also given to every ``offhook fleet`` subcommand, so they
    work after it too (``offhook fleet status --data-dir D``); there they default to
    SUPPRESS, so a subcommand without them keeps what was given before it."""
    default: Any = argparse.SUPPRESS if on_subcommand else None
    parser.add_argument(
        "--db", default=default, help="database URL (default: SQLite file in the data dir)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=default, help="server data dir (key, TLS, SQLite)"
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default,
        help="secret key file (default DATA_DIR/secret.key)",
    )


def _settings_from_args(args: argparse.Namespace) -> ServerSettings:
    settings = settings_from_env()
    changes: dict[str, Any] = {}
    if args.db:
        changes["db_url"] = args.db
    if args.data_dir:
        changes["data_dir"] = args.data_dir.resolve()
    if args.key_file:
        changes["key_file"] = args.key_file.resolve()
    return replace(settings, **changes)


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


# --- offhook server -----------------------------------------------------------------------------


def server_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="offhook server",
        description="Run the provisioning server (HTTPS with a self-signed CA unless told "
        "otherwise). 'offhook server migrate' only upgrades the database schema.",
    )
    parser.add_argument("command", nargs="?", choices=["run", "migrate"], default="run")
    _common_db_args(parser)
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("0.0.0.0", 8443),
        help="HOST:PORT (default 0.0.0.0:8443)",
    )
    parser.add_argument("--cert", type=Path, help="operator TLS certificate chain (PEM)")
    parser.add_argument("--key", type=Path, help="operator TLS private key (PEM)")
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="plain HTTP (tests, or behind a TLS-terminating proxy)",
    )
    parser.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="extra name/IP for the generated server certificate (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=1, help="app processes (default 1)")
    parser.add_argument(
        "--poll-interval",
        type=int,
        metavar="SECONDS",
        help="the fleet's poll interval, for the 'not seen' threshold of phones that do not "
        "report their own (default: OFFHOOK_POLL_INTERVAL_S or 3600)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("OFFHOOK_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.poll_interval is not None:
        try:
            check_poll_interval(args.poll_interval, "--poll-interval")
        except ValueError as exc:
            parser.error(str(exc))
        os.environ[POLL_INTERVAL_ENV] = str(args.poll_interval)  # workers read the environment

    from offhook.contract.logs import setup_logging
    from offhook.provisioning.crypto import load_key_ring
    from offhook.provisioning.db import Database
    from offhook.provisioning.private_files import private_directory

    setup_logging(args.log_level, identifier="offhook-provisioning")
    settings = _settings_from_args(args)
    private_directory(settings.data_dir)
    database = Database(settings.database_url, settings.db_key)
    database.migrate()  # once here, so workers starting together do not race
    database.dispose()
    if args.command == "migrate":
        print(f"database schema is up to date ({database.engine.dialect.name})")
        return 0
    load_key_ring(settings.resolved_key_file, create=True)

    ssl: dict[str, str] = {}
    if not args.insecure_http:
        if args.cert:
            from offhook.provisioning.tls import fingerprint_of

            chain = args.cert.read_bytes()
            last = chain[chain.rfind(b"-----BEGIN CERTIFICATE-----") :]
            ssl = {"ssl_certfile": str(args.cert), "ssl_keyfile": str(args.key)}
            print(
                f"TLS: operator certificate {args.cert}; chain root fingerprint (SHA-256): "
                f"{fingerprint_of(last)}",
                flush=True,
            )
        else:
            from offhook.provisioning.tls import ensure_tls

            files = ensure_tls(settings.data_dir, [args.listen[0], *args.hostname])
            ssl = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
            print(
                f"TLS: CA {files.ca_cert}\nCA fingerprint (SHA-256, pin this on phones): "
                f"{files.ca_fingerprint}",
                flush=True,
            )

    os.environ.update(
        {
            "OFFHOOK_DATA_DIR": str(settings.data_dir),
            "OFFHOOK_DB_URL": settings.database_url,
            "OFFHOOK_KEY_FILE": str(settings.resolved_key_file),
            "OFFHOOK_MIGRATE_ON_START": "0",
            "OFFHOOK_LOG_LEVEL": args.log_level,
        }
    )
    import uvicorn

    from offhook.provisioning.uvicorn_contract import server_http_protocol

    host, port = args.listen
    scheme = "http" if args.insecure_http else "https"
    print(f"listening on {scheme}://{host}:{port} workers={args.workers}", flush=True)
    uvicorn.run(
        "offhook.provisioning.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        http=server_http_protocol(),  # the inline poll protocol if this uvicorn fits
        **ssl,  # type: ignore[arg-type]
    )
    return 0


# --- offhook fleet ------------------------------------------------------------------------------


class FleetSetupError(OffhookError):
    """No fleet where the options point (a mistyped --data-dir or --db): nothing was created."""


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _check_existing_fleet(database: Any, url: str) -> None:
    """Only ``init`` creates a fleet: anything else needs the schema to be there already."""
    from sqlalchemy import inspect

    if not inspect(database.engine).has_table("alembic_version"):
        raise FleetSetupError(
            f"{database.engine.url.render_as_string()} holds no offhook fleet: check --db, "
            "or create one with 'offhook fleet init'"
        )


class FleetContext:
    def __init__(self, args: argparse.Namespace) -> None:
        from offhook.provisioning.crypto import load_key_ring
        from offhook.provisioning.db import Database

        self.settings = _settings_from_args(args)
        url = self.settings.database_url
        create = args.command == "init"
        sqlite_file = _sqlite_file(url)
        if not create and sqlite_file is not None and not sqlite_file.is_file():
            # Checked before connecting: SQLite would create an empty file (and its directory).
            raise FleetSetupError(
                f"no fleet database at {sqlite_file}: check --data-dir (or --db), or create "
                "one with 'offhook fleet init'"
            )
        if create:
            from offhook.provisioning.private_files import private_directory

            private_directory(self.settings.data_dir)  # the key file goes here
        self.database = Database(url, self.settings.db_key)
        try:
            if not create:
                _check_existing_fleet(self.database, url)
            self.database.migrate()
            self.keys = load_key_ring(self.settings.resolved_key_file, create=create)
        except BaseException:
            self.database.dispose()
            raise
        user = os.environ.get("SUDO_USER") or getpass.getuser()
        from offhook.provisioning.services.actors import cli_actor

        self.actor = cli_actor(user)


def _value(text: str) -> Any:
    """``true``/``80``/``["PCMU"]`` as JSON, anything else as a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _secret_arg(args: argparse.Namespace, name: str, prompt: str) -> str:
    env_name = getattr(args, f"{name}_env", None)
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise SystemExit(f"environment variable {env_name} is not set")
        return value
    if getattr(args, f"{name}_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise SystemExit(f"give the {name} with --{name}-env VAR or --{name}-stdin")


def _scope(text: str) -> tuple[str, str | None]:
    if text == "fleet":
        return "fleet", None
    kind, sep, ref = text.partition(":")
    if not sep or kind not in ("group", "device") or not ref:
        raise SystemExit(f"scope {text!r}: use fleet, group:NAME or device:MAC-or-ID")
    return kind, ref


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _build_fleet_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offhook fleet",
        description="Manage the fleet. Talks to the database directly (--db URL, or the SQLite "
        "file in --data-dir) with the server's key ring; works with the server stopped and "
        "audits every change as cli:<user>. Remote administration: the REST API (/docs).",
    )
    _common_db_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        _common_db_args(command, on_subcommand=True)
        return command

    p = cmd(
        "init",
        "create the database (the only command that may), schema and key; optionally the "
        "first admin",
    )
    p.add_argument("--admin", help="username of an admin to create")
    p.add_argument("--password-env")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--api-token", action="store_true", help="also create and print an API token")
    p = cmd("create-admin", "create an admin user (and optionally an API token)")
    p.add_argument("username")
    p.add_argument("--role", default="admin", choices=["admin", "operator", "read-only"])
    p.add_argument("--password-env", help="read the password from this environment variable")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--api-token", action="store_true", help="also create and print an API token")
    p = cmd("add-device", "pre-register a device (approved when it enrols)")
    p.add_argument("mac")
    for opt in ("--serial", "--model", "--name", "--group"):
        p.add_argument(opt, default="")
    p = cmd("import", "import devices from CSV (mac,serial,model,name,group)")
    p.add_argument("csv_file", type=Path)
    for action in ("approve", "reject", "revoke", "reset"):
        p = cmd(action, f"{action} a device (by MAC or id)")
        p.add_argument("device")
        if action == "approve":
            p.add_argument("--name", help="name the phone as it is approved")
            p.add_argument("--group", help="put it into this group (id or name)")
    p = cmd(
        "devices",
        "list devices as the web UI's table finds them: search, filters, sort; --csv to export",
    )
    p.add_argument("--q", "--search", dest="q", default="", help="name, MAC, extension, IP, serial")
    p.add_argument(
        "--status", default="", choices=["", "pending", "approved", "rejected", "revoked"]
    )
    p.add_argument("--group", default="", help="group id or name")
    p.add_argument("--subgroups", action="store_true", help="with the group's subgroups")
    p.add_argument("--firmware", default="", help="reported firmware version")
    p.add_argument(
        "--sort", default="name", help="name, mac, group, status, last_seen, ... (-key: descending)"
    )
    p.add_argument("--csv", action="store_true", help="CSV, as the web UI exports it")
    cmd("groups", "groups and sites as a tree, with device counts that include subgroups")
    p = cmd("effective", "a device's settings: each key's value and where it comes from")
    p.add_argument("device", help="MAC or id")
    p.add_argument("--json", action="store_true")
    p = cmd(
        "bulk", "one action on many devices: approve, reject, revoke, reset, move, resync, delete"
    )
    p.add_argument(
        "action", choices=["approve", "reject", "revoke", "reset", "move", "resync", "delete"]
    )
    p.add_argument("devices", nargs="+", metavar="DEVICE", help="MACs or ids")
    p.add_argument("--group", default="", help="move: the group (omit: out of any group)")
    p.add_argument("--yes", action="store_true", help="confirm (needed for delete, reset, revoke)")
    p = cmd(
        "admin-user",
        "admin users: list, role USER ROLE, disable/enable/unlock USER, password USER",
    )
    p.add_argument("action", choices=["list", "role", "disable", "enable", "unlock", "password"])
    p.add_argument("username", nargs="?", help="the user (name or id)")
    p.add_argument("role", nargs="?", choices=["admin", "operator", "read-only"])
    p.add_argument("--password-env", help="password: read it from this environment variable")
    p.add_argument("--password-stdin", action="store_true")
    p = cmd("group", "add a group or site")
    p.add_argument("name")
    p.add_argument("--parent")
    p.add_argument("--kind", default="group", choices=["group", "site"])
    p = cmd("template", "create or update a template and attach it to groups")
    p.add_argument("name")
    p.add_argument("--file", type=Path, help="JSON file with the partial config")
    p.add_argument("--attach", action="append", default=[], help="group to attach to")
    p = cmd("set", "set settings: SCOPE key=value... (SCOPE: fleet, group:NAME, device:MAC)")
    p.add_argument("scope")
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--unset", action="append", default=[], metavar="KEY")
    p = cmd("add-line", "add a SIP line (account) to a device")
    p.add_argument("device")
    p.add_argument("--extension", required=True)
    p.add_argument("--registrar", required=True, help="SIP domain/registrar host[:port]")
    p.add_argument("--display-name", default="")
    p.add_argument("--auth-user", default="")
    p.add_argument("--transport", default="udp", choices=["udp", "tcp", "tls"])
    p.add_argument("--password-env")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--no-password", action="store_true")
    p = cmd("tokens", "enrollment tokens: list, create, revoke")
    p.add_argument("action", choices=["list", "create", "revoke"])
    p.add_argument("--id", type=int)
    p.add_argument("--name", default="")
    p.add_argument("--ttl-hours", type=float, default=24 * 7)
    p.add_argument("--max-uses", type=int, default=1)
    p = cmd("api-tokens", "admin API tokens: list, create (for a user), revoke")
    p.add_argument("action", choices=["list", "create", "revoke"])
    p.add_argument("--user", help="list/create: this user's tokens (list default: everyone's)")
    p.add_argument("--id", type=int, help="revoke: the token id (from list)")
    p.add_argument("--name", default="")
    p.add_argument(
        "--days",
        type=float,
        help="create: lifetime in days (default 30; at most 90, for admins 365)",
    )
    p = cmd("status", "fleet status table")
    p.add_argument("--status", choices=["pending", "approved", "rejected", "revoked"])
    p.add_argument("--json", action="store_true")
    p = cmd("resync", "send NOTIFY check-sync now")
    p.add_argument("devices", nargs="*")
    p.add_argument("--group")
    p.add_argument("--all", action="store_true")
    cmd("purge", "delete data older than its retention period")
    for name in ("export", "erase"):
        p = cmd(name, f"{name} the personal data of a device or an extension")
        p.add_argument("--device")
        p.add_argument("--extension")
        if name == "export":
            p.add_argument("--out", type=Path, help="write JSON here (default stdout)")
        else:
            p.add_argument("--yes", action="store_true", help="confirm the erase")
    p = cmd("rotate-key", "add a new secret key and re-encrypt every stored secret with it")
    p.add_argument("--drop-old", action="store_true", help="remove old keys afterwards")
    from offhook.provisioning.cli_firmware import add_commands as add_firmware_commands

    add_firmware_commands(cmd)
    from offhook.provisioning.cli_security import add_commands as add_security_commands

    add_security_commands(cmd)
    from offhook.provisioning.cli_alerts import add_commands as add_alert_commands

    add_alert_commands(cmd)
    from offhook.provisioning.cli_calls import add_commands as add_calls_commands

    add_calls_commands(cmd)
    return parser


def fleet_main(argv: list[str]) -> int:
    args = _build_fleet_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    from offhook.provisioning.admin_auth import AdminError
    from offhook.provisioning.crypto import CryptoError
    from offhook.provisioning.firmware_releases import FirmwareError
    from offhook.provisioning.operations import OperationError

    try:
        ctx = FleetContext(args)
        try:
            return _run_fleet(ctx, args)
        finally:
            ctx.database.dispose()
    except (OperationError, AdminError, CryptoError, FleetSetupError, FirmwareError) as exc:
        print(f"offhook fleet {args.command}: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # usage problems found after parsing
        if isinstance(exc.code, str):
            print(f"offhook fleet {args.command}: {exc.code}", file=sys.stderr)
            return 2
        raise


def _run_fleet(ctx: FleetContext, args: argparse.Namespace) -> int:
    from offhook.provisioning import operations as ops
    from offhook.provisioning import retention
    from offhook.provisioning.admin_auth import AdminError, issue_api_token
    from offhook.provisioning.services.admin_users import create_admin_user

    command = args.command
    with ctx.database.session() as db:
        if command in ("init", "create-admin"):
            username = args.admin if command == "init" else args.username
            if username:
                password = _secret_arg(args, "password", f"password for {username}: ")
                user = create_admin_user(
                    db, ctx.actor, username, password, getattr(args, "role", "admin")
                )
                print(f"created {user.role} {user.username}")
                if getattr(args, "api_token", False):
                    token, row = issue_api_token(db, ctx.actor.name, "", user, "cli")
                    if row.expires_at is None:  # create_api_token always sets one
                        raise AdminError(f"api token {row.id} was issued without an expiry")
                    print(f"api token: {token}")
                    print(f"api token expires: {row.expires_at.isoformat(timespec='seconds')}")
            print(f"database ready: {ctx.database.engine.url.render_as_string()}")
            return 0
        if command == "add-device":
            device = ops.add_device(
                db,
                ctx.actor,
                args.mac,
                serial=args.serial,
                model=args.model,
                name=args.name,
                group=args.group or None,
            )
            print(f"added {device.mac} id={device.id} (pre-registered)")
            return 0
        if command == "import":
            return _import(ctx, db, args.csv_file)
        if command == "approve":
            device, changed = ops.approve_device(
                db, ctx.actor, args.device, name=args.name, group=args.group
            )
            db.commit()
            _resync(ctx, db, changed)
            print(f"{device.mac} id={device.id} status={device.status}")
            return 0
        if command in ("reject", "revoke", "reset"):
            device = ops.set_device_status(db, ctx.actor, args.device, command)
            print(f"{device.mac} id={device.id} status={device.status}")
            return 0
        if command == "admin-user":
            return _admin_user(ctx, db, args)
        if command == "devices":
            return _devices(db, args)
        if command == "bulk":
            return _bulk(ctx, db, args)
        if command == "groups":
            return _groups(db)
        if command == "effective":
            return _effective(db, args)
        if command == "group":
            group = ops.create_group(db, ctx.actor, args.name, args.kind, args.parent)
            print(f"created {group.kind} {group.name} id={group.id}")
            return 0
        if command == "template":
            return _template(ctx, db, args)
        if command == "set":
            kind, ref = _scope(args.scope)
            values = {}
            for item in args.assignments:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise SystemExit(f"{item!r}: use key=value, e.g. audio.tone_plan=uk")
                values[key.strip()] = _value(raw)
            changed = ops.change_settings(
                db, ctx.actor, kind, ref, set_values=values, unset=args.unset
            )
            db.commit()
            _resync(ctx, db, changed)
            print(f"{args.scope}: {len(changed)} device(s) changed")
            return 0
        if command == "add-line":
            password = "" if args.no_password else _secret_arg(args, "password", "SIP password: ")
            line, changed = ops.add_line(
                db,
                ctx.keys,
                ctx.actor,
                args.device,
                extension=args.extension,
                registrar=args.registrar,
                password=password,
                display_name=args.display_name,
                auth_user=args.auth_user,
                transport=args.transport,
            )
            db.commit()
            _resync(ctx, db, changed)
            print(f"line {line.id}: {line.extension}@{line.registrar} position={line.position}")
            return 0
        if command == "tokens":
            return _tokens(ctx, db, args)
        if command == "status":
            return _status(db, args)
        if command == "resync":
            if not (args.all or args.group or args.devices):
                raise SystemExit("name devices, --group or --all")
            ids = ops.request_resync(
                db, ctx.actor, devices=args.devices, group=args.group, all_devices=args.all
            )
            db.commit()  # the audit entry stands even if no phone answers
            answered = _resync(ctx, db, ids)
            print(f"resync: {len(ids)} device(s), {answered} answered the NOTIFY")
            return 0
        if command == "api-tokens":
            return _api_tokens(ctx, db, args)
        if command == "purge":
            counts = retention.purge_session(db, ctx.settings.retention, ctx.actor.name)
            for name, count in counts.items():
                print(f"{name}: {count} purged")
            return 0
        if command == "export":
            data = retention.export_subject(
                db, ctx.actor, device=args.device, extension=args.extension
            )
            text = json.dumps(data, indent=2, sort_keys=True, default=str)
            if args.out:
                from offhook.contract.atomic import atomic_write_text

                atomic_write_text(args.out, text + "\n")
                print(f"exported to {args.out}")
            else:
                print(text)
            return 0
        if command == "erase":
            if not args.yes:
                raise SystemExit("erase deletes data for good: add --yes to confirm")
            counts = retention.erase_subject(
                db, ctx.actor, device=args.device, extension=args.extension
            )
            db.commit()
            ctx.database.checkpoint()
            _print_json(counts)
            return 0
        if command == "rotate-key":
            return _rotate_key(ctx, db, args.drop_old)
        from offhook.provisioning import cli_firmware

        if command in cli_firmware.COMMANDS:
            return cli_firmware.run(ctx, db, args, lambda ids: _resync(ctx, db, ids))
        from offhook.provisioning import cli_security

        if command in cli_security.COMMANDS:
            return cli_security.run(ctx, db, args)
        from offhook.provisioning import cli_alerts

        if command in cli_alerts.COMMANDS:
            return cli_alerts.run(ctx, db, args)
        from offhook.provisioning import cli_calls

        if command in cli_calls.COMMANDS:
            return cli_calls.run(ctx, db, args)
    raise SystemExit(f"unknown command {command}")


def _devices(db: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from offhook.provisioning.services import device_list

    wanted = device_list.parse_filter(
        q=args.q,
        status=args.status,
        group=args.group or None,
        subgroups=args.subgroups,
        firmware=args.firmware,
        sort=args.sort,
        db=db,
    )
    devices = device_list.find_devices(db, wanted, limit=1_000_000)
    if args.csv:
        sys.stdout.write(device_list.devices_csv(db, devices))
        return 0
    table = Table("name", "MAC", "status", "extensions", "last seen", "firmware", "IP")
    extensions = device_list.extensions_by_device(db, [d.id for d in devices])
    for d in devices:
        table.add_row(
            d.name,
            d.mac,
            d.status,
            " ".join(extensions.get(d.id, [])),
            d.last_seen.isoformat(timespec="seconds") if d.last_seen else "never",
            d.firmware_version,
            d.last_ip,
        )
    Console().print(table)
    print(f"{len(devices)} device(s)")
    return 0


def _effective(db: Any, args: argparse.Namespace) -> int:
    """The device page's "effective value and its source", from the same service."""
    from rich.console import Console
    from rich.table import Table

    from offhook.provisioning import audit
    from offhook.provisioning.operations import get_device
    from offhook.provisioning.services import setting_fields

    device = get_device(db, args.device)
    secret = {f.key for s in setting_fields.sections() for f in s.fields if f.secret}
    rows = [
        (key, audit.MASK if key in secret and value else value, source)
        for key, (value, source) in sorted(setting_fields.device_effective(db, device).items())
    ]
    if args.json:
        _print_json([{"key": k, "value": v, "source": s} for k, v, s in rows])
        return 0
    table = Table("setting", "value", "source")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    Console().print(table)
    return 0


def _groups(db: Any) -> int:
    from rich.console import Console
    from rich.tree import Tree

    from offhook.provisioning.services.group_tree import GroupNode, group_tree, ungrouped_count

    def label(node: GroupNode) -> str:
        pending = node.by_status.get("pending", 0)
        text = f"{node.name} ({node.kind}): {node.total} device(s)"
        if node.children:
            text += f", {node.devices} here"
        return text + (f", {pending} pending" if pending else "")

    def add(parent: Tree, node: GroupNode) -> None:
        branch = parent.add(label(node))
        for child in node.children:
            add(branch, child)

    root = Tree(f"fleet ({ungrouped_count(db)} device(s) in no group)")
    for node in group_tree(db):
        add(root, node)
    Console().print(root)
    return 0


def _bulk(ctx: FleetContext, db: Any, args: argparse.Namespace) -> int:
    """The web UI's bulk actions; the confirmation that page asks for is --yes here."""
    from offhook.provisioning.services.device_bulk import run_bulk

    if args.action in ("delete", "reset", "revoke") and not args.yes:
        raise SystemExit(
            f"bulk {args.action} of {len(args.devices)} device(s): add --yes to confirm"
        )
    result = run_bulk(db, ctx.actor, args.action, args.devices, group=args.group or None)
    db.commit()
    _resync(ctx, db, result.changed)
    print(result.summary)
    for label, why in result.skipped:
        print(f"  skipped {label}: {why}", file=sys.stderr)
    return 0


def _admin_user(ctx: FleetContext, db: Any, args: argparse.Namespace) -> int:
    """The same use cases as the web UI's admin page and the REST API's /users routes; the CLI
    acts as the server's owner, so no rule about one's own account applies."""
    from rich.console import Console
    from rich.table import Table

    from offhook.provisioning.services import admin_users

    if args.action == "list":
        table = Table("id", "username", "role", "disabled", "locked until", "last sign-in")
        for u in admin_users.list_admin_users(db):
            table.add_row(
                str(u.id),
                u.username,
                u.role,
                "yes" if u.disabled else "",
                u.locked_until.isoformat(timespec="seconds") if u.locked_until else "",
                u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never",
            )
        Console().print(table)
        return 0
    if not args.username:
        raise SystemExit(f"admin-user {args.action} needs a username")
    if args.action == "role":
        if not args.role:
            raise SystemExit("admin-user role needs USER ROLE (admin, operator or read-only)")
        user = admin_users.change_admin_role(db, ctx.actor, args.username, args.role)
        print(f"{user.username} is now {user.role}")
    elif args.action == "password":
        password = _secret_arg(args, "password", f"new password for {args.username}: ")
        user = admin_users.reset_admin_password(db, ctx.actor, args.username, password)
        print(f"new password set for {user.username}; their sessions and API tokens ended")
    else:
        user = admin_users.change_admin_state(db, ctx.actor, args.username, args.action)
        print(f"{user.username}: {args.action}d")
    return 0


def _resync(ctx: FleetContext, db: Any, device_ids: list[str]) -> int:
    """Send the NOTIFYs from this process and wait for the batch (bounded)."""
    from offhook.provisioning.notify import send_batch
    from offhook.provisioning.resync import notify_targets

    if not device_ids or not ctx.settings.notify_enabled:
        return 0
    targets = notify_targets(db, ctx.keys, device_ids)
    result = send_batch(targets)
    return len(result.answered or {})


def _import(ctx: FleetContext, db: Any, path: Path) -> int:
    from rich.progress import Progress

    from offhook.provisioning.operations import import_devices_csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    with Progress(transient=False) as progress:
        task = progress.add_task(f"importing {path.name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = import_devices_csv(db, ctx.actor, text, advance)
    db.commit()
    _resync(ctx, db, result.updated)  # updated phones fetch their new config, as from the web UI
    print(
        f"created {len(result.created)}, updated {len(result.updated)}, errors {len(result.errors)}"
    )
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return 1 if result.errors else 0


def _template(ctx: FleetContext, db: Any, args: argparse.Namespace) -> int:
    from offhook.provisioning import operations as ops

    settings = None
    if args.file:
        try:
            settings = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{args.file}: {exc}") from None
    changed: list[str] = []
    try:
        ops.get_template(db, args.name)
        if settings is not None:
            changed += ops.update_template(db, ctx.actor, args.name, settings=settings)
    except ops.NotFound:
        ops.create_template(db, ctx.actor, args.name, settings or {})
    for group in args.attach:
        changed += ops.attach_template(db, ctx.actor, group, args.name)
    db.commit()
    _resync(ctx, db, changed)
    print(f"template {args.name}: {len(set(changed))} device(s) changed")
    return 0


def _tokens(ctx: FleetContext, db: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from offhook.provisioning import operations as ops
    from offhook.provisioning.models import EnrollmentToken

    if args.action == "create":
        plain, token = ops.create_enrollment_token(
            db,
            ctx.keys,
            ctx.actor,
            name=args.name,
            ttl=timedelta(hours=args.ttl_hours),
            max_uses=args.max_uses,
        )
        print(
            f"token id={token.id} expires={token.expires_at.isoformat()} "
            f"max_uses={token.max_uses}\n{plain}"
        )
        return 0
    if args.action == "revoke":
        if args.id is None:
            raise SystemExit("tokens revoke needs --id")
        ops.revoke_enrollment_token(db, ctx.actor, args.id)
        print(f"token {args.id} revoked")
        return 0
    table = Table("id", "name", "expires", "uses", "revoked")
    for t in db.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id)):
        table.add_row(
            str(t.id),
            t.name,
            t.expires_at.isoformat(timespec="seconds"),
            f"{t.uses}/{t.max_uses}",
            "yes" if t.revoked else "",
        )
    Console().print(table)
    return 0


def _api_tokens(ctx: FleetContext, db: Any, args: argparse.Namespace) -> int:
    """The CLI acts for the named user: a token gets that user's role and lifetime limits."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from offhook.provisioning.admin_auth import (
        AdminError,
        issue_api_token,
        list_api_tokens,
        revoke_api_token,
    )
    from offhook.provisioning.models import AdminUser

    user = None
    if args.user:
        user = db.scalar(select(AdminUser).where(AdminUser.username == args.user))
        if user is None:
            raise AdminError(f"admin user {args.user!r} not found")
    if args.action == "create":
        if user is None:
            raise SystemExit("api-tokens create needs --user")
        plain, row = issue_api_token(db, ctx.actor.name, "", user, args.name, args.days)
        if row.expires_at is None:  # create_api_token always sets one
            raise AdminError(f"api token {row.id} was issued without an expiry")
        expires = row.expires_at.isoformat(timespec="seconds")
        print(f"api token id={row.id} user={user.username} expires={expires}\n{plain}")
        return 0
    if args.action == "revoke":
        if args.id is None:
            raise SystemExit("api-tokens revoke needs --id")
        row = revoke_api_token(db, ctx.actor.name, "", None, args.id)
        print(f"api token {row.id} of {row.user.username} revoked")
        return 0
    table = Table("id", "user", "name", "prefix", "expires", "last used", "revoked")
    for t in list_api_tokens(db, user):
        table.add_row(
            str(t.id),
            t.user.username,
            t.name,
            t.prefix,
            t.expires_at.isoformat(timespec="seconds") if t.expires_at else "",
            t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never",
            "yes" if t.revoked else "",
        )
    Console().print(table)
    return 0


def _status(db: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from offhook.provisioning.models import Device, Group
    from offhook.provisioning.operations import fleet_summary

    query = select(Device).order_by(Device.mac)
    if args.status:
        query = query.where(Device.status == args.status)
    devices = list(db.scalars(query))
    if args.json:
        _print_json(
            {
                "summary": fleet_summary(db),
                "devices": [
                    {
                        "id": d.id,
                        "mac": d.mac,
                        "name": d.name,
                        "status": d.status,
                        "revision": d.revision,
                        "reported_revision": d.reported_revision,
                        "last_seen": d.last_seen,
                    }
                    for d in devices
                ],
            }
        )
        return 0
    groups = {g.id: g.name for g in db.scalars(select(Group))}
    table = Table("MAC", "name", "group", "status", "config", "firmware", "last seen", "contact")
    for d in devices:
        in_sync = d.reported_revision == d.revision
        config = f"r{d.revision}" + ("" if in_sync else f" (phone r{d.reported_revision or '-'})")
        table.add_row(
            d.mac,
            d.name,
            groups.get(d.group_id or -1, ""),
            d.status,
            config,
            d.firmware_version,
            d.last_seen.isoformat(timespec="seconds") if d.last_seen else "",
            d.sip_contact,
        )
    console = Console()
    console.print(table)
    summary = fleet_summary(db)
    console.print(
        " ".join(f"{k}={v}" for k, v in summary["devices"].items())
        + f" out_of_date={summary['out_of_date']}"
    )
    return 0


def _rotate_key(ctx: FleetContext, db: Any, drop_old: bool) -> int:
    from rich.progress import Progress
    from sqlalchemy import select

    from offhook.provisioning import audit
    from offhook.provisioning.crypto import KEY_ENV, add_key, write_key_ring
    from offhook.provisioning.mfa import SECRET_PURPOSE as MFA_PURPOSE
    from offhook.provisioning.models import AdminMfa, Device, EnrollmentToken, Line

    if os.environ.get(KEY_ENV):
        raise SystemExit(
            f"{KEY_ENV} is set: rotate with a key file (--key-file), or add a key "
            f"line to {KEY_ENV} yourself and re-run with a key file"
        )
    key_file = ctx.settings.resolved_key_file
    old = ctx.keys
    new = add_key(key_file)
    columns = [
        (Line, "password_enc", "lines.password"),
        (Device, "secret_enc", "devices.secret"),
        (EnrollmentToken, "token_enc", "enrollment_tokens.token"),
        (AdminMfa, "secret_enc", MFA_PURPOSE),
    ]
    count = 0
    with Progress() as progress:
        for model, column, purpose in columns:
            rows = list(db.scalars(select(model)))
            task = progress.add_task(f"{model.__tablename__}.{column}", total=len(rows))
            for row in rows:
                value = getattr(row, column)
                if value and new.needs_rotation(value):
                    setattr(row, column, new.encrypt(old.decrypt(value, purpose), purpose))
                    count += 1
                progress.advance(task)
    audit.record(
        db,
        ctx.actor.name,
        "crypto.rotate_key",
        "key",
        new.current,
        None,
        {"re_encrypted": count, "dropped_old": drop_old},
    )
    db.commit()
    ctx.database.checkpoint()
    if drop_old:
        new.keys = {new.current: new.keys[new.current]}
        write_key_ring(key_file, new)
    print(
        f"new key {new.current}; re-encrypted {count} secret(s)"
        + ("; old keys removed" if drop_old else "; old keys kept for reading")
    )
    return 0
