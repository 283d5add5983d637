"""What a sign-in must pass besides the password: throttling of one source address across
accounts, and noticing a network never seen for that admin.

- Throttle: at most ``OFFHOOK_LOGIN_IP_MAX_FAILURES`` failed attempts (passwords and second
  factor codes, any usernames) from one address within ``OFFHOOK_LOGIN_IP_WINDOW_MINUTES``;
  then 429 until the oldest of them leaves the window. One indexed query that reads at most
  that many rows, so a flood costs the same per request.
- Networks: an IPv4 address counts by its /24, an IPv6 address by its /64 (a provider hands
  out a prefix, the host part changes). A sign-in completed from a network not in the admin's
  list is recorded (audit ``admin_user.new_network``), shown to them, and with
  ``OFFHOOK_MFA_PROMPT=new-network`` is the case that asks for the second factor.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.contract.errors import OffhookError
from offhook.provisioning import audit
from offhook.provisioning.models import AdminKnownNetwork, AdminUser, LoginAttempt, utcnow
from offhook.provisioning.operations import Actor
from offhook.provisioning.settings import ServerSettings

MFA_FAILURE_REASON = "bad_mfa_code"


class Throttled(OffhookError):
    """Too many failed sign-ins from one address: answer 429 with ``retry_after_s``."""

    def __init__(self, failures: int, window_minutes: int, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        minutes = max(1, math.ceil(retry_after_s / 60))
        super().__init__(
            f"Too many failed sign-ins from your address ({failures} in {window_minutes} "
            f"minutes). Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )


def network_of(ip: str) -> str:
    """``203.0.113.0/24`` for an IPv4 address, ``2001:db8:1:2::/64`` for IPv6; anything else
    (a test client's name) as it is."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def check_throttle(db: Session, settings: ServerSettings, ip: str, now: datetime) -> None:
    """Raise Throttled when ``ip`` has used up its failed attempts in the window."""
    limit = settings.login_ip_max_failures
    if limit <= 0 or not ip:
        return
    window = timedelta(minutes=settings.login_ip_window_minutes)
    times = list(
        db.scalars(
            select(LoginAttempt.time)
            .where(
                LoginAttempt.ip == ip[:64],
                LoginAttempt.success.is_(False),
                LoginAttempt.time > now - window,
            )
            .order_by(LoginAttempt.time.desc())
            .limit(limit)
        )
    )
    if len(times) < limit:
        return
    retry = max(1, math.ceil((times[-1] + window - now).total_seconds()))
    raise Throttled(limit, settings.login_ip_window_minutes, retry)


def recent_code_failures(db: Session, user: AdminUser, minutes: int, now: datetime) -> int:
    query = select(func.count(LoginAttempt.id)).where(
        LoginAttempt.username == user.username,
        LoginAttempt.reason == MFA_FAILURE_REASON,
        LoginAttempt.time > now - timedelta(minutes=minutes),
    )
    return int(db.scalar(query) or 0)


def log_code_failure(db: Session, user: AdminUser, ip: str) -> None:
    db.add(
        LoginAttempt(username=user.username, ip=ip[:64], success=False, reason=MFA_FAILURE_REASON)
    )


def is_new_network(db: Session, user: AdminUser, ip: str) -> bool:
    query = select(AdminKnownNetwork.id).where(
        AdminKnownNetwork.user_id == user.id, AdminKnownNetwork.network == network_of(ip)
    )
    return db.scalar(query.limit(1)) is None


def remember_network(db: Session, actor: Actor, user: AdminUser, ip: str) -> bool:
    """Note a completed sign-in's network; True (and audited) when it is new for this admin."""
    network = network_of(ip)
    row = db.scalar(
        select(AdminKnownNetwork).where(
            AdminKnownNetwork.user_id == user.id, AdminKnownNetwork.network == network
        )
    )
    if row is not None:
        row.last_seen = utcnow()
        db.flush()
        return False
    db.add(AdminKnownNetwork(user_id=user.id, network=network, first_ip=ip[:64]))
    db.flush()
    audit.record(
        db,
        actor.name,
        "admin_user.new_network",
        "admin_user",
        user.id,
        None,
        {"username": user.username, "network": network, "ip": ip},
        ip,
    )
    return True


def known_networks(db: Session, user: AdminUser) -> list[AdminKnownNetwork]:
    query = select(AdminKnownNetwork).where(AdminKnownNetwork.user_id == user.id)
    return list(db.scalars(query.order_by(AdminKnownNetwork.last_seen.desc()).limit(200)))


def recent_attempts(db: Session, user: AdminUser, limit: int = 20) -> list[LoginAttempt]:
    query = select(LoginAttempt).where(LoginAttempt.username == user.username)
    return list(db.scalars(query.order_by(LoginAttempt.id.desc()).limit(limit)))
