"""Admin second factor: TOTP (RFC 6238, 30 s steps, 6 digits, SHA-1 as authenticator apps
expect) with one-time recovery codes, for the web sign-in, the REST API and the CLI.

The TOTP secret is stored encrypted with the server's key ring (``provisioning.crypto``,
purpose ``admin_mfa.secret``); recovery codes only as SHA-256 (they are random, 60 bits, so a
slow hash adds nothing) and are shown once. A code is accepted once: the newest accepted time
step is kept and a code for it or an earlier step is refused, so a code seen over a shoulder
cannot be replayed within its 90 s window. Which roles must have a second factor is a server
setting (``OFFHOOK_MFA_REQUIRED_ROLES``), met by TOTP or by a security key
(``provisioning.webauthn_keys``); API tokens are not sign-ins and keep working.
Every function flushes; the caller commits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pyotp
import segno
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from offhook.provisioning import audit, webauthn_keys
from offhook.provisioning.admin_auth import AdminError
from offhook.provisioning.crypto import KeyRing
from offhook.provisioning.models import AdminMfa, AdminRecoveryCode, AdminUser, utcnow
from offhook.provisioning.operations import Actor
from offhook.provisioning.settings import ServerSettings

SECRET_PURPOSE = "admin_mfa.secret"
ISSUER = "offhook"
STEP_S = 30
DIGITS = 6
# Codes one step either side of now are accepted: phone clocks drift and typing takes time.
VALID_WINDOW = 1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off paper


class MfaError(AdminError):
    """A second-factor request that cannot be done (the message says why)."""

    status = 400


class MfaRefused(MfaError):
    status = 409


@dataclass(frozen=True)
class Enrolment:
    """What an authenticator app needs: the base32 secret, the otpauth URI and its QR code."""

    secret: str
    uri: str

    @property
    def qr_svg(self) -> str:
        """The URI as an inline SVG QR code, drawn on the server (no script, no third party)."""
        return str(
            segno.make(self.uri, error="m").svg_inline(scale=5, border=2, dark="#000", light="#fff")
        )


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)


def get_mfa(db: Session, user: AdminUser) -> AdminMfa | None:
    return db.get(AdminMfa, user.id)


def mfa_enabled(db: Session, user: AdminUser) -> bool:
    row = get_mfa(db, user)
    return row is not None and row.confirmed_at is not None


def has_second_factor(db: Session, user: AdminUser) -> bool:
    """TOTP in force or at least one security key: what an enforced role needs."""
    return mfa_enabled(db, user) or webauthn_keys.key_count(db, user) > 0


def mfa_required(settings: ServerSettings, user: AdminUser) -> bool:
    """The user's role must have a second factor (the server setting)."""
    return user.role in settings.mfa_required_roles


def enrolment_required(db: Session, settings: ServerSettings, user: AdminUser) -> bool:
    """An admin of an enforced role without a confirmed second factor: enrol first. No query
    unless the role is enforced."""
    return mfa_required(settings, user) and not has_second_factor(db, user)


def _hash_code(code: str) -> str:
    normal = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(normal.encode("ascii", "replace")).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))  # 12 x 5 bits
    return "-".join(raw[i : i + 4] for i in range(0, 12, 4))


def _replace_recovery_codes(db: Session, user: AdminUser) -> list[str]:
    db.execute(delete(AdminRecoveryCode).where(AdminRecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    db.add_all(AdminRecoveryCode(user_id=user.id, code_hash=_hash_code(c)) for c in codes)
    db.flush()
    return codes


def recovery_codes_left(db: Session, user: AdminUser) -> int:
    query = select(func.count(AdminRecoveryCode.id)).where(
        AdminRecoveryCode.user_id == user.id, AdminRecoveryCode.used_at.is_(None)
    )
    return int(db.scalar(query) or 0)


def status(db: Session, settings: ServerSettings, user: AdminUser) -> dict[str, Any]:
    row = get_mfa(db, user)
    confirmed = row.confirmed_at if row is not None else None
    return {
        "username": user.username,
        "enabled": confirmed is not None,
        "enabled_at": confirmed.isoformat() if confirmed else None,
        "enrolment_pending": row is not None and confirmed is None,
        "required_for_role": mfa_required(settings, user),
        "recovery_codes_left": recovery_codes_left(db, user) if confirmed else 0,
        "security_keys": webauthn_keys.key_count(db, user),
    }


def _enrolment(keys: KeyRing, user: AdminUser, row: AdminMfa) -> Enrolment:
    secret = keys.decrypt(row.secret_enc, SECRET_PURPOSE)
    uri = _totp(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
    return Enrolment(secret, uri)


def start_enrolment(db: Session, keys: KeyRing, user: AdminUser) -> Enrolment:
    """A new secret, not yet in force: sign-in asks for codes only once one is confirmed."""
    row = get_mfa(db, user)
    if row is not None and row.confirmed_at is not None:
        raise MfaRefused("a second factor is already enabled: disable it first to start over")
    secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
    if row is None:
        row = AdminMfa(user_id=user.id, secret_enc="")
        db.add(row)
    row.secret_enc = keys.encrypt(secret, SECRET_PURPOSE)
    row.last_step = 0
    db.flush()
    return _enrolment(keys, user, row)


def pending_enrolment(db: Session, keys: KeyRing, user: AdminUser) -> Enrolment | None:
    """The enrolment started and not yet confirmed (the page shows it again on reload)."""
    row = get_mfa(db, user)
    if row is None or row.confirmed_at is not None:
        return None
    return _enrolment(keys, user, row)


def _accept_totp(keys: KeyRing, row: AdminMfa, code: str, now: float) -> bool:
    code = "".join(c for c in code if c.isdigit())
    if len(code) != DIGITS:
        return False
    totp = _totp(keys.decrypt(row.secret_enc, SECRET_PURPOSE))
    current = int(now // STEP_S)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if step <= row.last_step:
            continue  # used already: a code is good once
        if hmac.compare_digest(totp.generate_otp(step), code):
            row.last_step = step
            return True
    return False


def confirm_enrolment(
    db: Session, keys: KeyRing, actor: Actor, user: AdminUser, code: str
) -> list[str]:
    """The first code proves the app holds the secret: the factor is in force from now on.
    Returns the recovery codes (shown once)."""
    row = get_mfa(db, user)
    if row is None or row.confirmed_at is not None:
        raise MfaError("no enrolment in progress: start one first")
    if not _accept_totp(keys, row, code, time.time()):
        raise MfaError("that code does not match: check the phone's clock and try the next code")
    row.confirmed_at = utcnow()
    codes = _replace_recovery_codes(db, user)
    audit.record(
        db,
        actor.name,
        "admin_user.mfa_enable",
        "admin_user",
        user.id,
        {"username": user.username, "mfa": False},
        {"username": user.username, "mfa": True, "recovery_codes": len(codes)},
        actor.ip,
    )
    return codes


def verify(db: Session, keys: KeyRing, user: AdminUser, code: str) -> str | None:
    """Check a sign-in's second factor: "totp", "recovery" (that code is now used up) or None."""
    row = get_mfa(db, user)
    if row is None or row.confirmed_at is None:
        return None
    if _accept_totp(keys, row, code, time.time()):
        db.flush()
        return "totp"
    recovery = db.scalar(
        select(AdminRecoveryCode).where(
            AdminRecoveryCode.user_id == user.id,
            AdminRecoveryCode.code_hash == _hash_code(code),
            AdminRecoveryCode.used_at.is_(None),
        )
    )
    if recovery is None:
        return None
    recovery.used_at = utcnow()
    db.flush()
    return "recovery"


def regenerate_recovery_codes(db: Session, actor: Actor, user: AdminUser) -> list[str]:
    """New recovery codes; the old ones stop working."""
    if not mfa_enabled(db, user):
        raise MfaError("enable the second factor first")
    left = recovery_codes_left(db, user)
    codes = _replace_recovery_codes(db, user)
    audit.record(
        db,
        actor.name,
        "admin_user.mfa_recovery_codes",
        "admin_user",
        user.id,
        {"username": user.username, "recovery_codes_left": left},
        {"username": user.username, "recovery_codes_left": len(codes)},
        actor.ip,
    )
    return codes


def remove(
    db: Session,
    settings: ServerSettings,
    actor: Actor,
    user: AdminUser,
    acting_user: AdminUser | None,
) -> None:
    """Turn the second factor off: one's own (not when the role requires it), or another
    admin's (``admin_user.manage``: a lost phone; they enrol again at their next sign-in when
    their role requires it). ``acting_user`` None: the CLI, the server's owner."""
    own = acting_user is not None and acting_user.id == user.id
    keys = webauthn_keys.key_count(db, user)
    if own and mfa_required(settings, user) and keys == 0:
        raise MfaRefused(f"the {user.role} role requires a second factor: it cannot be turned off")
    row = get_mfa(db, user)
    if row is None and (own or keys == 0):
        raise MfaError(f"{user.username} has no second factor")
    was = row is not None and row.confirmed_at is not None
    if row is not None:
        db.delete(row)
    db.execute(delete(AdminRecoveryCode).where(AdminRecoveryCode.user_id == user.id))
    # A reset (a lost phone or key) takes every factor; turning one's own TOTP off keeps keys.
    removed_keys = 0 if own else webauthn_keys.remove_all(db, user)
    db.flush()
    audit.record(
        db,
        actor.name,
        "admin_user.mfa_disable" if own else "admin_user.mfa_reset",
        "admin_user",
        user.id,
        {"username": user.username, "mfa": was, "security_keys": keys},
        {"username": user.username, "mfa": False, "security_keys": keys - removed_keys},
        actor.ip,
    )


def remove_security_key(
    db: Session, settings: ServerSettings, actor: Actor, user: AdminUser, key_id: int
) -> str:
    """Remove one of one's own security keys, unless it is the last factor a role requires."""
    if (
        mfa_required(settings, user)
        and not mfa_enabled(db, user)
        and webauthn_keys.key_count(db, user) <= 1
    ):
        raise MfaRefused(
            f"the {user.role} role requires a second factor: add another key or TOTP before "
            "removing the last one"
        )
    return webauthn_keys.remove_key(db, actor, user, key_id)
