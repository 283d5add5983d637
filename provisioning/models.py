"""The provisioning server's data model (SQLAlchemy 2 declarative, one schema for SQLite and PG).

Settings at each level (fleet defaults, group, template, device) are *partial* PhoneConfig dicts
stored as JSON; render.py merges them. Columns ending in ``_enc`` hold AES-GCM ciphertexts from
crypto.py, never plaintext. Record ids of phone reports are the phone's own ids (idempotency).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Device lifecycle. "approved" with no secret yet = pre-registered or reset, waiting to enroll.
DEVICE_PENDING = "pending"
DEVICE_APPROVED = "approved"
DEVICE_REJECTED = "rejected"
DEVICE_REVOKED = "revoked"
DEVICE_STATUSES = (DEVICE_PENDING, DEVICE_APPROVED, DEVICE_REJECTED, DEVICE_REVOKED)

ROLE_ADMIN = "admin"
ROLE_OPERATOR = "operator"
ROLE_READ_ONLY = "read-only"
ROLES = (ROLE_READ_ONLY, ROLE_OPERATOR, ROLE_ADMIN)  # ascending privilege

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops tzinfo otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use provisioning.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


group_templates = Table(
    "group_templates",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("template_id", ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
)


class FleetDefaults(Base):
    """Single row (id=1): the settings every device starts from."""

    __tablename__ = "fleet_defaults"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Bumped by any change to fleet defaults, groups or templates (render.py's flush hook):
    # the key of every process's cache of inherited settings.
    settings_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Group(Base):
    """A site or group; nested via parent_id. Settings inherit root -> leaf."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="group")  # "site" | "group"
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="RESTRICT"), index=True
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    parent: Mapped[Group | None] = relationship(remote_side=[id])
    templates: Mapped[list[Template]] = relationship(
        secondary=group_templates, order_by="Template.name"
    )


class Template(Base):
    """Partial PhoneConfig settings applied to the groups it is attached to."""

    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    groups: Mapped[list[Group]] = relationship(
        secondary=group_templates, back_populates="templates"
    )


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    serial: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(128), default="")
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=DEVICE_PENDING, index=True)
    pre_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Bumped by every change that affects this device's rendered config.
    revision: Mapped[int] = mapped_column(Integer, default=1)

    # Credential: SHA-256 hex of the secret for auth; the secret itself encrypted, because the
    # NOTIFY signature and the same-nonce enrollment retry both need it.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    secret_enc: Mapped[str | None] = mapped_column(Text)
    enroll_nonce: Mapped[str | None] = mapped_column(String(128))
    enrollment_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollment_tokens.id", ondelete="SET NULL")
    )
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Last report (network data class, purged by retention).
    firmware_version: Mapped[str] = mapped_column(String(64), default="")
    last_ip: Mapped[str] = mapped_column(String(64), default="")
    sip_contact: Mapped[str] = mapped_column(String(128), default="")
    reported_revision: Mapped[int | None] = mapped_column(Integer)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The phone's own poll interval as it last reported it (None: older firmware).
    poll_interval_s: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    group: Mapped[Group | None] = relationship()
    lines: Mapped[list[Line]] = relationship(
        back_populates="device", order_by="Line.position", cascade="all, delete-orphan"
    )


class Line(Base):
    """A SIP account on a device; becomes ``accounts[position]`` of the rendered config."""

    __tablename__ = "lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    extension: Mapped[str] = mapped_column(String(64), index=True)
    auth_user: Mapped[str] = mapped_column(String(64), default="")
    password_enc: Mapped[str] = mapped_column(Text, default="")
    display_name: Mapped[str] = mapped_column(String(128), default="")
    registrar: Mapped[str] = mapped_column(String(255))
    transport: Mapped[str] = mapped_column(String(8), default="udp")
    outbound_proxy: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    device: Mapped[Device] = relationship(back_populates="lines")


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_enc: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_uses: Mapped[int] = mapped_column(Integer, default=1)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusReport(Base):
    __tablename__ = "status_reports"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    firmware_version: Mapped[str] = mapped_column(String(64), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    uptime_s: Mapped[float] = mapped_column(Float, default=0.0)
    config_revision: Mapped[int | None] = mapped_column(Integer)
    sip_contact: Mapped[str] = mapped_column(String(128), default="")
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class CallRecordRow(Base):
    __tablename__ = "call_records"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    account: Mapped[int] = mapped_column(Integer, default=0)
    local_uri: Mapped[str] = mapped_column(String(255), default="")
    remote_uri: Mapped[str] = mapped_column(String(255), default="")
    remote_name: Mapped[str] = mapped_column(String(255), default="")
    start: Mapped[float] = mapped_column(Float, index=True)
    answer: Mapped[float | None] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    disposition: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    # The SIP Call-ID the phone reported ("" from older firmware): two fleet phones calling each
    # other report one record each with the same Call-ID (services/call_analytics.py joins them).
    sip_call_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class QualityRecord(Base):
    __tablename__ = "quality_records"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    call_record_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    codec: Mapped[str] = mapped_column(String(32), default="")
    jitter_ms: Mapped[float] = mapped_column(Float, default=0.0)
    loss_pct: Mapped[float] = mapped_column(Float, default=0.0)
    rtt_ms: Mapped[float] = mapped_column(Float, default=0.0)
    mos: Mapped[float] = mapped_column(Float, default=0.0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DeviceEvent(Base):
    __tablename__ = "device_events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    type: Mapped[str] = mapped_column(String(32))
    config_revision: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AdminUser(Base):
    __tablename__ = "admin_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=ROLE_READ_ONLY)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # IANA zone name (zoneinfo) every time is shown in and busy hours are bucketed by.
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")


class LoginAttempt(Base):
    """Security log: every password login, successful or not."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    # Indexed: failures from one address across accounts are throttled (provisioning.sign_in).
    ip: Mapped[str] = mapped_column(String(64), default="", index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32), default="")
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ApiToken(Base):
    """Bearer token for the admin REST API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[AdminUser] = relationship()


class AuditEntry(Base):
    """Who changed what, when, with before/after JSON (secrets masked)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")


# --- firmware updates (provisioning/firmware_releases.py, provisioning/rollouts.py) -------------

ROLLOUT_RUNNING = "running"
ROLLOUT_PAUSED = "paused"
ROLLOUT_ABORTED = "aborted"
ROLLOUT_COMPLETED = "completed"
ROLLOUT_STATUSES = (ROLLOUT_RUNNING, ROLLOUT_PAUSED, ROLLOUT_ABORTED, ROLLOUT_COMPLETED)


class FirmwareRelease(Base):
    """A RAUC bundle whose signature verified against the server's keyring when it was
    uploaded (nothing else is ever stored). The file is ``<firmware dir>/<sha256>.raucb``."""

    __tablename__ = "firmware_releases"
    __table_args__ = (UniqueConstraint("compatible", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    compatible: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    build: Mapped[str] = mapped_column(String(128), default="")
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    signer: Mapped[str] = mapped_column(String(255), default="")
    uploaded_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Withdrawn: no longer offered to new rollouts or pins; phones running it are left alone.
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_by: Mapped[str] = mapped_column(String(128), default="")


class Rollout(Base):
    """A release rolled out to a group's subtree (or the fleet, group_id None) in stages: each
    stage is a cumulative percentage of the eligible devices (the first one the canary)."""

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(
        ForeignKey("firmware_releases.id", ondelete="RESTRICT"), index=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=ROLLOUT_RUNNING, index=True)
    stages: Mapped[list[int]] = mapped_column(JSON, default=list)
    stage: Mapped[int] = mapped_column(Integer, default=0)  # index into stages
    # Failed + rolled back over the devices admitted so far, in percent, above which the
    # rollout pauses itself.
    failure_threshold_pct: Mapped[float] = mapped_column(Float, default=10.0)
    maintenance_window: Mapped[str] = mapped_column(String(16), default="")
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    # A stage whose phones have not all finished this long after it began (or resumed) pauses
    # the rollout (0: no limit).
    stage_timeout_s: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    release: Mapped[FirmwareRelease] = relationship()
    group: Mapped[Group | None] = relationship()


class DeviceFirmware(Base):
    """A device's update state: the release it is asked to run (rendered into its config's
    ``[firmware]``), why (a rollout, or a pin), and the last step it reported."""

    __tablename__ = "device_firmware"
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    release_id: Mapped[int | None] = mapped_column(
        ForeignKey("firmware_releases.id", ondelete="RESTRICT"), index=True
    )
    rollout_id: Mapped[int | None] = mapped_column(
        ForeignKey("rollouts.id", ondelete="SET NULL"), index=True
    )
    stage: Mapped[int | None] = mapped_column(Integer)  # the rollout stage that admitted it
    pinned_release_id: Mapped[int | None] = mapped_column(
        ForeignKey("firmware_releases.id", ondelete="RESTRICT")
    )
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    # assigned | downloading | installed | rebooting | running | failed | rolled_back
    state: Mapped[str] = mapped_column(String(16), default="", index=True)
    reason: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    compatible: Mapped[str] = mapped_column(String(128), default="")
    state_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- admin account security (provisioning/mfa.py, provisioning/sign_in.py,
# provisioning/services/sessions.py) ---------------------------------------------------------------


class AdminMfa(Base):
    """An admin's TOTP second factor (RFC 6238). ``confirmed_at`` None: enrolment started, the
    first code not yet entered, so sign-in does not ask for it. ``last_step`` is the newest
    time step a code was accepted for: a code is good once."""

    __tablename__ = "admin_mfa"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_enc: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdminRecoveryCode(Base):
    """A one-time recovery code, stored as its SHA-256 (codes are random, 60 bits)."""

    __tablename__ = "admin_recovery_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdminSecurityKey(Base):
    """A WebAuthn credential (security key or passkey) an admin registered as a second factor.
    ``sign_count`` is the authenticator's counter at the last sign-in: a response that does not
    raise it (a cloned key; authenticators that keep no counter report 0 every time) is refused."""

    __tablename__ = "admin_security_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)  # base64url
    public_key: Mapped[str] = mapped_column(Text)  # COSE key, base64url
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[str] = mapped_column(String(128), default="")  # comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminWebauthnChallenge(Base):
    """An outstanding WebAuthn ceremony: the challenge given to one browser session (named by
    the SHA-256 of its session id) for one purpose. Deleted when a response is checked, right
    or wrong, so a challenge is good once; older than its time-out it is refused and purged."""

    __tablename__ = "admin_webauthn_challenges"
    __table_args__ = (UniqueConstraint("session_digest", "purpose"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    session_digest: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))  # "register" | "sign-in"
    challenge: Mapped[str] = mapped_column(String(128))  # base64url
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AdminKnownNetwork(Base):
    """A network (IPv4 /24, IPv6 /64) an admin completed a sign-in from."""

    __tablename__ = "admin_known_networks"
    __table_args__ = (UniqueConstraint("user_id", "network"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    network: Mapped[str] = mapped_column(String(64))
    first_ip: Mapped[str] = mapped_column(String(64), default="")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdminPasswordHistory(Base):
    """Earlier password hashes of an admin (argon2), so a new password cannot reuse them."""

    __tablename__ = "admin_password_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdminSession(Base):
    """A web sign-in, listed to its admin and revocable. The cookie stays the credential; this
    row names it by ``sid_digest`` (the revocation digest, never the session id itself)."""

    __tablename__ = "admin_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    sid_digest: Mapped[str] = mapped_column(String(32), unique=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    second_factor: Mapped[str] = mapped_column(String(16), default="")  # ""|totp|recovery|key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str] = mapped_column(String(32), default="")


# --- alerts (provisioning/alert_engine.py, provisioning/services/alerts.py) ----------------------

ALERT_OPEN = "open"
ALERT_ACKNOWLEDGED = "acknowledged"
ALERT_RESOLVED = "resolved"
ALERT_STATES = (ALERT_OPEN, ALERT_ACKNOWLEDGED, ALERT_RESOLVED)


class Alert(Base):
    """Something wrong in the fleet, found by a rule from the phones' reports. ``active_key``
    (``kind:subject_type:subject_id``) is set while the alert is open or acknowledged and
    cleared when it resolves: its unique index keeps one active alert per (kind, subject), in
    any number of server processes. A condition that comes back after resolving opens a new
    alert."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16))  # critical | warning
    subject_type: Mapped[str] = mapped_column(String(16))  # device | group | rollout | fleet
    subject_id: Mapped[str] = mapped_column(String(64), default="")
    subject_name: Mapped[str] = mapped_column(String(255), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default=ALERT_OPEN, index=True)
    active_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertNotification(Base):
    """One message about an alert (it opened, or it resolved) for one channel: written in the
    alert's own transaction and delivered afterwards by the server's sender, so a mail server
    or webhook that is down never loses the alert or holds up a phone's report. ``status``:
    pending, sending (claimed by one process), sent, failed (after the last attempt; ``error``
    says why)."""

    __tablename__ = "alert_notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(16))  # opened | resolved
    channel: Mapped[str] = mapped_column(String(16))  # smtp | webhook
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When a process claimed it: a claim older than the sender's limit is taken over (the
    # process died mid-send), so a crash delivers twice rather than never.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    alert: Mapped[Alert] = relationship()
