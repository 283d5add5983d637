"""Server settings: defaults, overridden by OFFHOOK_* environment variables.

Environment variables (not a config file) because ``--workers N`` starts fresh interpreter
processes: the CLI exports its options and every worker reads the same values.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from offhook.provisioning.alert_settings import AlertSettings, alert_settings_from_env
from offhook.provisioning.sqlcipher import load_db_key

DEFAULT_DATA_DIR = "/var/lib/offhook-provisioning"
POLL_INTERVAL_ENV = "OFFHOOK_POLL_INTERVAL_S"
# The phone schema's default and bounds for provisioning.poll_interval_s (contract/config.py).
DEFAULT_POLL_INTERVAL_S = 3600
MIN_POLL_INTERVAL_S = 10
MAX_POLL_INTERVAL_S = 7 * 86400


@dataclass(frozen=True)
class RetentionDays:
    """How long each class of stored client data is kept (days; 0 = keep forever)."""

    identity: int = 365  # rejected/revoked devices not seen since: MAC, serial, lines
    network: int = 30  # status reports (IP, SIP contact)
    cdr: int = 180
    quality: int = 90  # quality records and device events
    security: int = 90  # login attempts, audit log


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    db_url: str = ""  # empty = SQLite file in data_dir
    key_file: Path | None = None  # empty = OFFHOOK_SECRET_KEY or data_dir/secret.key
    # Device API requests in flight per process before answering 503 + Retry-After.
    max_inflight: int = 64
    retry_after_s: int = 30
    enroll_retry_after_s: int = 60
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    notify_enabled: bool = True
    purge_interval_s: int = 3600  # 0 disables the periodic purge task
    # How often running rollouts are checked against their stage time limit (0: never).
    rollout_check_interval_s: int = 60
    migrate_on_start: bool = True
    web_ui: bool = True  # mount provisioning.web (False: device + REST API only)
    # The fleet's poll interval: the "not seen" threshold for phones that do not report theirs.
    poll_interval_s: int = DEFAULT_POLL_INTERVAL_S
    # A request's headers and body must arrive within this many seconds of its first byte (of
    # the connection, for the first request): a client trickling bytes (slowloris) is cut off.
    request_read_timeout_s: int = 60
    retention: RetentionDays = field(default_factory=RetentionDays)
    # Admin sign-in (provisioning/mfa.py, provisioning/sign_in.py): roles whose admins must
    # have a second factor (sent to enrol before anything else); when an enrolled admin is
    # asked for a code ("always", or "new-network": only from a network never seen for them);
    # failed sign-ins from one address across accounts before it gets 429 for the window;
    # how many earlier passwords a new one may not repeat.
    # SQLCipher passphrase of the SQLite file (OFFHOOK_DB_KEY / OFFHOOK_DB_KEY_FILE; "" = plain).
    db_key: str = field(default="", repr=False)
    mfa_required_roles: tuple[str, ...] = ()
    mfa_prompt: str = "always"
    login_ip_max_failures: int = 20
    login_ip_window_minutes: int = 15
    password_history: int = 5
    # The address admins open the web UI at (OFFHOOK_PUBLIC_URL, "https://prov.example.com"):
    # security keys are bound to its host name (the WebAuthn relying party) and origin, so a
    # key works only there. Empty: security keys are not offered.
    public_url: str = ""
    # Firmware bundles (docs/updates.md): the PEM keyring every uploaded RAUC bundle must verify
    # against (empty = data_dir/firmware-keyring.pem), where verified bundles are kept (empty =
    # data_dir/firmware) and the largest bundle accepted.
    firmware_keyring: Path | None = None
    firmware_dir: Path | None = None
    firmware_max_bytes: int = 2 * 1024**3
    firmware_max_downloads: int = 256  # bundle downloads in flight per process
    # Alerts (provisioning/alert_settings.py): rules, sweep interval, mail and webhook.
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @property
    def resolved_firmware_keyring(self) -> Path:
        return self.firmware_keyring or self.data_dir / "firmware-keyring.pem"

    @property
    def resolved_firmware_dir(self) -> Path:
        return self.firmware_dir or self.data_dir / "firmware"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'provisioning.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "secret.key"


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def check_poll_interval(value: int, where: str) -> int:
    if not MIN_POLL_INTERVAL_S <= value <= MAX_POLL_INTERVAL_S:
        raise ValueError(
            f"{where}={value!r}: seconds between phone polls, "
            f"{MIN_POLL_INTERVAL_S}-{MAX_POLL_INTERVAL_S}"
        )
    return value


def poll_interval_from_env(env: dict[str, str]) -> int:
    raw = env.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_POLL_INTERVAL_S
    if not raw.isdigit():
        raise ValueError(
            f"{POLL_INTERVAL_ENV}={raw!r}: seconds between phone polls, "
            f"{MIN_POLL_INTERVAL_S}-{MAX_POLL_INTERVAL_S}"
        )
    return check_poll_interval(int(raw), POLL_INTERVAL_ENV)


def _int_default(f: Field[Any]) -> int:
    if not isinstance(f.default, int):
        raise TypeError(f"RetentionDays.{f.name}: the default must be a whole number of days")
    return f.default


def settings_from_env(env: dict[str, str] | None = None) -> ServerSettings:
    env = dict(os.environ if env is None else env)
    retention = RetentionDays(
        **{
            f.name: _env_int(env, f"OFFHOOK_RETENTION_{f.name.upper()}_DAYS", _int_default(f))
            for f in fields(RetentionDays)
        }
    )
    key_file = env.get("OFFHOOK_KEY_FILE")
    return ServerSettings(
        data_dir=Path(env.get("OFFHOOK_DATA_DIR") or DEFAULT_DATA_DIR),
        db_url=env.get("OFFHOOK_DB_URL", ""),
        key_file=Path(key_file) if key_file else None,
        max_inflight=_env_int(env, "OFFHOOK_MAX_INFLIGHT", 64),
        retry_after_s=_env_int(env, "OFFHOOK_RETRY_AFTER_S", 30),
        enroll_retry_after_s=_env_int(env, "OFFHOOK_ENROLL_RETRY_AFTER_S", 60),
        lockout_threshold=_env_int(env, "OFFHOOK_LOCKOUT_THRESHOLD", 5),
        lockout_minutes=_env_int(env, "OFFHOOK_LOCKOUT_MINUTES", 15),
        notify_enabled=env.get("OFFHOOK_NOTIFY", "1") not in ("0", "false", "no"),
        purge_interval_s=_env_int(env, "OFFHOOK_PURGE_INTERVAL_S", 3600),
        rollout_check_interval_s=_env_int(env, "OFFHOOK_ROLLOUT_CHECK_INTERVAL_S", 60),
        migrate_on_start=env.get("OFFHOOK_MIGRATE_ON_START", "1") not in ("0", "false", "no"),
        web_ui=env.get("OFFHOOK_WEB_UI", "1") not in ("0", "false", "no"),
        poll_interval_s=poll_interval_from_env(env),
        request_read_timeout_s=_env_int(env, "OFFHOOK_REQUEST_READ_TIMEOUT_S", 60),
        retention=retention,
        db_key=load_db_key(env),
        mfa_required_roles=_env_roles(env, "OFFHOOK_MFA_REQUIRED_ROLES"),
        mfa_prompt=_env_choice(env, "OFFHOOK_MFA_PROMPT", MFA_PROMPTS),
        login_ip_max_failures=_env_int(env, "OFFHOOK_LOGIN_IP_MAX_FAILURES", 20),
        login_ip_window_minutes=_env_int(env, "OFFHOOK_LOGIN_IP_WINDOW_MINUTES", 15),
        password_history=_env_int(env, "OFFHOOK_PASSWORD_HISTORY", 5),
        public_url=_env_public_url(env, "OFFHOOK_PUBLIC_URL"),
        firmware_keyring=_env_path(env, "OFFHOOK_FIRMWARE_KEYRING"),
        firmware_dir=_env_path(env, "OFFHOOK_FIRMWARE_DIR"),
        firmware_max_bytes=_env_int(env, "OFFHOOK_FIRMWARE_MAX_BYTES", 2 * 1024**3),
        firmware_max_downloads=_env_int(env, "OFFHOOK_FIRMWARE_MAX_DOWNLOADS", 256),
        alerts=alert_settings_from_env(env),
    )


MFA_PROMPTS = ("always", "new-network")
# The role names of provisioning.models.ROLES (settings import nothing of the server's).
ROLE_NAMES = ("read-only", "operator", "admin")


def _env_roles(env: dict[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of roles; "all" means every role."""
    raw = env.get(name, "").strip()
    if raw == "all":
        return ROLE_NAMES
    roles = tuple(r.strip() for r in raw.split(",") if r.strip())
    for role in roles:
        if role not in ROLE_NAMES:
            raise ValueError(f"{name}: unknown role {role!r}; use {', '.join(ROLE_NAMES)} or all")
    return roles


def _env_choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or choices[0]
    if raw not in choices:
        raise ValueError(f"{name}={raw!r}: use one of {', '.join(choices)}")
    return raw


def _env_public_url(env: dict[str, str], name: str) -> str:
    """``scheme://host[:port]`` with no path: the origin browsers report in WebAuthn."""
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{name}={raw!r}: use http(s)://host[:port], e.g. https://prov.example.com"
        )
    if parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{name}={raw!r}: give only scheme, host and port, no path")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return raw
    raise ValueError(
        f"{name}={raw!r}: a host name is needed, not an IP address (browsers bind security "
        "keys to a domain; use localhost for a local test)"
    )


def _env_path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name, "")
    return Path(raw) if raw else None
