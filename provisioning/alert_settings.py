"""Alert settings (``OFFHOOK_ALERT_*``): the rules' thresholds, the sweep, and the channels.

Read from the environment like the rest of ``provisioning.settings`` (every worker process
reads the same values); a bad value stops the start with a message naming the variable.
Credentials come from files (``..._PASSWORD_FILE``, ``..._SECRET_FILE``), never from the
environment itself, so ``ps e`` and the journal do not show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from offhook.contract.errors import OffhookError

SMTP_SECURITY = ("starttls", "ssl", "none")


class AlertSettingsError(OffhookError, ValueError):
    """An OFFHOOK_ALERT_* value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class SmtpChannel:
    host: str
    port: int
    security: str  # starttls | ssl | none
    sender: str
    recipients: tuple[str, ...]
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None  # the CA the mail server's certificate must chain to
    timeout_s: float = 10.0


@dataclass(frozen=True)
class WebhookChannel:
    url: str
    secret: str = field(default="", repr=False)  # HMAC-SHA256 key of X-Offhook-Signature
    ca_file: Path | None = None
    timeout_s: float = 5.0


@dataclass(frozen=True)
class AlertSettings:
    # Seconds between sweeps of the time-based rules (not seen, quality windows); 0 = off.
    sweep_interval_s: int = 60
    # A phone is "not seen" after this many minutes without a report; 0 = its liveness
    # threshold (two missed polls at +20 % jitter of its own interval, provisioning.liveness).
    not_seen_minutes: int = 0
    # Poor call quality per group: the mean MOS of at least ``quality_min_calls`` calls in the
    # last ``quality_window_minutes`` below ``mos_threshold``.
    mos_threshold: float = 3.5
    quality_window_minutes: int = 60
    quality_min_calls: int = 3
    # Attempts per notification (the first one included) before it is marked failed.
    notify_attempts: int = 3
    retry_delay_s: float = 2.0  # before the second attempt; doubled for each further one
    # OFFHOOK_PUBLIC_URL, the address admins open the web UI at: links in notifications and
    # the REST API's alerts are absolute with it (paths without it).
    public_url: str = ""
    smtp: SmtpChannel | None = None
    webhook: WebhookChannel | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, channel in (("smtp", self.smtp), ("webhook", self.webhook))
            if channel is not None
        )


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AlertSettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise AlertSettingsError(f"{name}={value}: must be {low}-{high}")
    return value


def _float(env: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AlertSettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise AlertSettingsError(f"{name}={raw}: must be {low:g}-{high:g}")
    return value


def _secret_file(env: dict[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    try:
        return Path(raw).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AlertSettingsError(f"{name}={raw}: cannot read it ({exc.strerror})") from None


def _ca_file(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not Path(raw).is_file():
        raise AlertSettingsError(f"{name}={raw}: no such file")
    return Path(raw)


def _smtp(env: dict[str, str]) -> SmtpChannel | None:
    host = env.get("OFFHOOK_ALERT_SMTP_HOST", "").strip()
    if not host:
        return None
    security = env.get("OFFHOOK_ALERT_SMTP_SECURITY", "").strip() or "starttls"
    if security not in SMTP_SECURITY:
        raise AlertSettingsError(
            f"OFFHOOK_ALERT_SMTP_SECURITY={security!r}: use one of {', '.join(SMTP_SECURITY)}"
        )
    default_port = {"starttls": 587, "ssl": 465, "none": 25}[security]
    sender = env.get("OFFHOOK_ALERT_SMTP_FROM", "").strip()
    recipients = tuple(
        r.strip() for r in env.get("OFFHOOK_ALERT_SMTP_TO", "").split(",") if r.strip()
    )
    if "@" not in sender:
        raise AlertSettingsError("OFFHOOK_ALERT_SMTP_FROM: give the sender's address")
    if not recipients or any("@" not in r for r in recipients):
        raise AlertSettingsError("OFFHOOK_ALERT_SMTP_TO: give comma-separated addresses")
    username = env.get("OFFHOOK_ALERT_SMTP_USER", "").strip()
    password = _secret_file(env, "OFFHOOK_ALERT_SMTP_PASSWORD_FILE")
    if username and not password:
        raise AlertSettingsError(
            "OFFHOOK_ALERT_SMTP_USER is set: give OFFHOOK_ALERT_SMTP_PASSWORD_FILE too"
        )
    return SmtpChannel(
        host=host,
        port=_int(env, "OFFHOOK_ALERT_SMTP_PORT", default_port, 1, 65535),
        security=security,
        sender=sender,
        recipients=recipients,
        username=username,
        password=password,
        ca_file=_ca_file(env, "OFFHOOK_ALERT_SMTP_CA_FILE"),
        timeout_s=_float(env, "OFFHOOK_ALERT_SMTP_TIMEOUT_S", 10.0, 0.1, 300),
    )


def _webhook(env: dict[str, str]) -> WebhookChannel | None:
    url = env.get("OFFHOOK_ALERT_WEBHOOK_URL", "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise AlertSettingsError(
            f"OFFHOOK_ALERT_WEBHOOK_URL={url!r}: an https:// URL (alerts name phones and sites)"
        )
    return WebhookChannel(
        url=url,
        secret=_secret_file(env, "OFFHOOK_ALERT_WEBHOOK_SECRET_FILE"),
        ca_file=_ca_file(env, "OFFHOOK_ALERT_WEBHOOK_CA_FILE"),
        timeout_s=_float(env, "OFFHOOK_ALERT_WEBHOOK_TIMEOUT_S", 5.0, 0.1, 120),
    )


def alert_settings_from_env(env: dict[str, str]) -> AlertSettings:
    public_url = env.get("OFFHOOK_PUBLIC_URL", "").strip().rstrip("/")
    if public_url and urlsplit(public_url).scheme not in ("http", "https"):
        raise AlertSettingsError(f"OFFHOOK_PUBLIC_URL={public_url!r}: an http(s):// URL")
    return AlertSettings(
        public_url=public_url,
        sweep_interval_s=_int(env, "OFFHOOK_ALERT_SWEEP_INTERVAL_S", 60, 0, 86400),
        not_seen_minutes=_int(env, "OFFHOOK_ALERT_NOT_SEEN_MINUTES", 0, 0, 30 * 24 * 60),
        mos_threshold=_float(env, "OFFHOOK_ALERT_MOS_THRESHOLD", 3.5, 1.0, 5.0),
        quality_window_minutes=_int(env, "OFFHOOK_ALERT_QUALITY_WINDOW_MINUTES", 60, 1, 10080),
        quality_min_calls=_int(env, "OFFHOOK_ALERT_QUALITY_MIN_CALLS", 3, 1, 10000),
        notify_attempts=_int(env, "OFFHOOK_ALERT_NOTIFY_ATTEMPTS", 3, 1, 10),
        retry_delay_s=_float(env, "OFFHOOK_ALERT_RETRY_DELAY_S", 2.0, 0.0, 300),
        smtp=_smtp(env),
        webhook=_webhook(env),
    )
