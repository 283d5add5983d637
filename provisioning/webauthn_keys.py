"""Admin second factor: WebAuthn security keys and passkeys (py_webauthn), beside TOTP.

The relying party is the server's public URL (``OFFHOOK_PUBLIC_URL``): its host name is the
RP ID and its origin the only one accepted, so a key registered here answers nowhere else and
a response made for another site is refused. Without that setting keys are not offered.

Each ceremony's challenge is kept in ``admin_webauthn_challenges`` for one browser session
(the SHA-256 of its session id) and one purpose, at most one at a time; checking a response
deletes it first, so a challenge is good once, whether the response was right or not, and one
older than ``CHALLENGE_TTL_S`` is refused. The authenticator's sign counter must rise at each
sign-in (a cloned key would repeat it). Every function flushes; the caller commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidJSONStructure, WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from offhook.contract.logs import kv
from offhook.provisioning import audit
from offhook.provisioning.admin_auth import AdminError
from offhook.provisioning.models import (
    AdminSecurityKey,
    AdminUser,
    AdminWebauthnChallenge,
    utcnow,
)
from offhook.provisioning.operations import Actor
from offhook.provisioning.settings import ServerSettings

log = logging.getLogger(__name__)

RP_NAME = "offhook provisioning"
CHALLENGE_TTL_S = 120  # the browser's own time-out is 60 s; the rest covers a slow round trip
TIMEOUT_MS = 60_000
MAX_KEYS = 20
NAME_MAX = 64
REGISTER = "register"
SIGN_IN = "sign-in"


class WebauthnError(AdminError):
    """A security-key request that cannot be done (the message says why)."""

    status = 400


class KeyNotFound(WebauthnError):
    status = 404


@dataclass(frozen=True)
class RelyingParty:
    """Who the keys are registered with: the RP ID (a host name) and the one accepted origin."""

    id: str
    origin: str

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> RelyingParty:
        if not settings.public_url:
            raise WebauthnError(
                "security keys need the server's public address: set OFFHOOK_PUBLIC_URL "
                "(https://prov.example.com) and restart the server"
            )
        host = urlsplit(settings.public_url).hostname or ""
        return cls(host, settings.public_url)


def available(settings: ServerSettings) -> bool:
    return bool(settings.public_url)


def session_digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def list_keys(db: Session, user: AdminUser) -> list[AdminSecurityKey]:
    query = select(AdminSecurityKey).where(AdminSecurityKey.user_id == user.id)
    return list(db.scalars(query.order_by(AdminSecurityKey.id)))


def key_count(db: Session, user: AdminUser) -> int:
    query = select(func.count(AdminSecurityKey.id)).where(AdminSecurityKey.user_id == user.id)
    return int(db.scalar(query) or 0)


def _descriptors(keys: list[AdminSecurityKey]) -> list[PublicKeyCredentialDescriptor]:
    out = []
    for key in keys:
        transports = []
        for name in filter(None, key.transports.split(",")):
            try:
                transports.append(AuthenticatorTransport(name))
            except ValueError:
                continue  # a transport this version of the library does not know
        out.append(
            PublicKeyCredentialDescriptor(
                id=base64url_to_bytes(key.credential_id), transports=transports or None
            )
        )
    return out


def _store_challenge(
    db: Session, user: AdminUser, sid: str, purpose: str, challenge: bytes
) -> None:
    """One outstanding challenge per session and purpose; expired ones of anyone are purged."""
    digest = session_digest(sid)
    db.execute(
        delete(AdminWebauthnChallenge).where(
            (AdminWebauthnChallenge.created_at < utcnow() - timedelta(seconds=CHALLENGE_TTL_S))
            | (
                (AdminWebauthnChallenge.session_digest == digest)
                & (AdminWebauthnChallenge.purpose == purpose)
            )
        )
    )
    db.add(
        AdminWebauthnChallenge(
            user_id=user.id,
            session_digest=digest,
            purpose=purpose,
            challenge=bytes_to_base64url(challenge),
        )
    )
    db.flush()


def _take_challenge(db: Session, user: AdminUser, sid: str, purpose: str) -> bytes:
    """The session's challenge for ``purpose``, deleted as it is read: good once."""
    row = db.scalar(
        select(AdminWebauthnChallenge).where(
            AdminWebauthnChallenge.session_digest == session_digest(sid),
            AdminWebauthnChallenge.purpose == purpose,
        )
    )
    if row is None or row.user_id != user.id:
        raise WebauthnError("no security-key request is waiting (it was used already): try again")
    db.delete(row)
    db.flush()
    if utcnow() - row.created_at > timedelta(seconds=CHALLENGE_TTL_S):
        raise WebauthnError("the security-key request expired: try again")
    return base64url_to_bytes(row.challenge)


def registration_options(db: Session, rp: RelyingParty, user: AdminUser, sid: str) -> str:
    """The JSON for ``navigator.credentials.create()``; the admin's keys are excluded so one
    authenticator is not registered twice."""
    keys = list_keys(db, user)
    if len(keys) >= MAX_KEYS:
        raise WebauthnError(f"at most {MAX_KEYS} security keys: remove one first")
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=RP_NAME,
        user_name=user.username,
        user_id=f"offhook-admin-{user.id}".encode(),
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=_descriptors(keys),
    )
    _store_challenge(db, user, sid, REGISTER, options.challenge)
    return options_to_json(options)


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise WebauthnError('give the key a name ("YubiKey on the keyring")')
    if len(name) > NAME_MAX:
        raise WebauthnError(f"the key's name is longer than {NAME_MAX} characters")
    return name


def _transports(response_json: str) -> str:
    try:
        body = json.loads(response_json)
    except ValueError:
        return ""
    found = body.get("response", {}).get("transports") if isinstance(body, dict) else None
    if not isinstance(found, list):
        return ""
    return ",".join(t for t in found if isinstance(t, str))[:128]


def finish_registration(
    db: Session,
    rp: RelyingParty,
    actor: Actor,
    user: AdminUser,
    sid: str,
    name: str,
    response_json: str,
) -> AdminSecurityKey:
    """Check the authenticator's attestation against this session's challenge and keep the
    credential; audited ``admin_user.security_key_add``."""
    name = _clean_name(name)
    challenge = _take_challenge(db, user, sid, REGISTER)
    try:
        verified = verify_registration_response(
            credential=response_json,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except (WebAuthnException, InvalidJSONStructure, ValueError, KeyError, TypeError) as exc:
        log.info("security key registration refused", extra=kv(user=user.username, error=str(exc)))
        raise WebauthnError(f"the security key's answer was refused: {exc}") from exc
    credential_id = bytes_to_base64url(verified.credential_id)
    taken = select(AdminSecurityKey.id).where(AdminSecurityKey.credential_id == credential_id)
    if db.scalar(taken) is not None:
        raise WebauthnError("that security key is registered already")
    key = AdminSecurityKey(
        user_id=user.id,
        name=name,
        credential_id=credential_id,
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=_transports(response_json),
    )
    db.add(key)
    db.flush()
    audit.record(
        db,
        actor.name,
        "admin_user.security_key_add",
        "admin_user",
        user.id,
        {"username": user.username, "security_keys": len(list_keys(db, user)) - 1},
        {"username": user.username, "security_key": name, "key_id": key.id},
        actor.ip,
    )
    return key


def remove_key(db: Session, actor: Actor, user: AdminUser, key_id: int) -> str:
    """Remove one of the admin's keys (the caller checks the role still has a factor left);
    returns its name. Audited ``admin_user.security_key_remove``."""
    key = db.get(AdminSecurityKey, key_id)
    if key is None or key.user_id != user.id:
        raise KeyNotFound(f"{user.username} has no security key {key_id}")
    name = key.name
    db.delete(key)
    db.flush()
    audit.record(
        db,
        actor.name,
        "admin_user.security_key_remove",
        "admin_user",
        user.id,
        {"username": user.username, "security_key": name, "key_id": key_id},
        {"username": user.username, "security_keys": key_count(db, user)},
        actor.ip,
    )
    return name


def remove_all(db: Session, user: AdminUser) -> int:
    """Every key of the admin (a second-factor reset); the caller audits the reset."""
    result = db.execute(delete(AdminSecurityKey).where(AdminSecurityKey.user_id == user.id))
    db.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def authentication_options(db: Session, rp: RelyingParty, user: AdminUser, sid: str) -> str:
    """The JSON for ``navigator.credentials.get()``, allowing only this admin's keys."""
    keys = list_keys(db, user)
    if not keys:
        raise WebauthnError(f"{user.username} has no security key")
    options = generate_authentication_options(
        rp_id=rp.id,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(keys),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    _store_challenge(db, user, sid, SIGN_IN, options.challenge)
    return options_to_json(options)


def verify_sign_in(
    db: Session, rp: RelyingParty, user: AdminUser, sid: str, response_json: str
) -> AdminSecurityKey:
    """Check a sign-in's assertion: this session's challenge (used up now), one of the admin's
    keys, its signature, and a sign counter above the stored one. Raises WebauthnError."""
    challenge = _take_challenge(db, user, sid, SIGN_IN)
    try:
        raw_id = json.loads(response_json).get("rawId") or ""
    except (ValueError, AttributeError):
        raw_id = ""
    key = db.scalar(
        select(AdminSecurityKey).where(
            AdminSecurityKey.user_id == user.id, AdminSecurityKey.credential_id == str(raw_id)
        )
    )
    if key is None:
        raise WebauthnError("that security key is not registered for this account")
    try:
        verified = verify_authentication_response(
            credential=response_json,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(key.public_key),
            credential_current_sign_count=key.sign_count,
        )
    except (WebAuthnException, InvalidJSONStructure, ValueError, KeyError, TypeError) as exc:
        log.info("security key sign-in refused", extra=kv(user=user.username, error=str(exc)))
        raise WebauthnError(f"the security key's answer was refused: {exc}") from exc
    key.sign_count = verified.new_sign_count
    key.last_used_at = utcnow()
    db.flush()
    return key
