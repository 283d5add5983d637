"""Each admin's display time zone: a zoneinfo name, validated, UTC by default. Every time the web
UI shows, the analytics' days and busy hours, and the billing export's local start use it."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy.orm import Session

from offhook.provisioning import audit
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import Actor, OperationError

DEFAULT_ZONE = "UTC"


def zone_names() -> list[str]:
    """Every zone the server's tz database knows, sorted (for the preference's choice list)."""
    return sorted(available_timezones() | {DEFAULT_ZONE})


def parse_zone(name: str) -> ZoneInfo:
    """``Europe/Berlin`` -> its ZoneInfo; anything else is refused naming the value. Only names of
    the tz database count: ``ZoneInfo`` would also open a path-like key such as ``posixrules``."""
    text = (name or "").strip()
    if text not in available_timezones() and text != DEFAULT_ZONE:
        raise OperationError(
            f"time zone {text!r} is not a tz database name (like Europe/Berlin or UTC)"
        )
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):  # listed but unreadable: a broken tzdata
        raise OperationError(f"time zone {text!r} cannot be loaded from tzdata") from None


def admin_zone(user: AdminUser | None) -> ZoneInfo:
    """The admin's zone; a stored name the tz database no longer has falls back to UTC."""
    try:
        return parse_zone(user.time_zone if user is not None else DEFAULT_ZONE)
    except OperationError:
        return ZoneInfo(DEFAULT_ZONE)


def set_time_zone(db: Session, actor: Actor, user: AdminUser, name: str) -> AdminUser:
    """Store the admin's display zone (audited as ``admin_user.time_zone``)."""
    zone = parse_zone(name)
    before = user.time_zone
    user.time_zone = zone.key
    audit.record(
        db,
        actor.name,
        "admin_user.time_zone",
        "admin_user",
        user.id,
        before={"time_zone": before},
        after={"time_zone": zone.key},
        ip=actor.ip,
    )
    db.flush()
    return user
