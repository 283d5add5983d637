"""Who may do what: the one table of actions and the least role each needs.

The admin REST API (``provisioning.api.admin``), the web UI (``provisioning.web``) and the CLI's
API-token commands name an action from ``PERMISSIONS``; none of them compares roles itself, so
a route and the page or button doing the same thing cannot disagree.

Roles are ordered ``read-only < operator < admin``; a role may do what any lower role may.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from offhook.provisioning.models import ROLE_ADMIN, ROLE_OPERATOR, ROLE_READ_ONLY, ROLES

# action -> the least role allowed to do it
PERMISSIONS: Mapping[str, str] = MappingProxyType(
    {
        # Every list, detail page, report and the audit log.
        "fleet.read": ROLE_READ_ONLY,
        # Pre-register, import, rename, move devices.
        "device.write": ROLE_OPERATOR,
        # approve | reject | revoke | reset enrollment.
        "device.status": ROLE_OPERATOR,
        "device.resync": ROLE_OPERATOR,
        # A device and everything it reported, for good.
        "device.delete": ROLE_ADMIN,
        "line.write": ROLE_OPERATOR,
        "group.write": ROLE_OPERATOR,
        "template.write": ROLE_OPERATOR,
        "settings.device": ROLE_OPERATOR,
        "settings.group": ROLE_OPERATOR,
        # Fleet defaults reach every phone at once.
        "settings.fleet": ROLE_ADMIN,
        "enrollment_token.write": ROLE_OPERATOR,
        # Privacy requests: everything stored about one person, out or gone.
        "privacy.export": ROLE_ADMIN,
        "privacy.erase": ROLE_ADMIN,
        "retention.purge": ROLE_ADMIN,
        # Admin users: list, create, role, password, disable/enable, unlock.
        "admin_user.manage": ROLE_ADMIN,
        # One's own API tokens: create (within MAX_API_TOKEN_DAYS), list, revoke.
        "api_token.own": ROLE_READ_ONLY,
        # Every user's API tokens: list and revoke.
        "api_token.any": ROLE_ADMIN,
        # One's own sign-in security: second factor, sessions, networks, password.
        "account.security": ROLE_READ_ONLY,
        # A firmware bundle (verified against the server's keyring) that phones can be sent.
        "firmware.upload": ROLE_ADMIN,
        # Rollouts to a group: start, pause, resume, abort; per-device pin and exclude.
        "rollout.group": ROLE_OPERATOR,
        "firmware.device": ROLE_OPERATOR,
        # A rollout to the whole fleet (like fleet defaults, it reaches every phone).
        "rollout.fleet": ROLE_ADMIN,
        # Acknowledge alerts (someone is on it); reading them is fleet.read.
        "alert.ack": ROLE_OPERATOR,
    }
)

# API tokens always expire. Without a choice they last DEFAULT_API_TOKEN_DAYS; the longest a
# role may ask for is below (a leaked automation token of an admin is worth the longer life
# only for admins, who can also see and revoke every token).
DEFAULT_API_TOKEN_DAYS = 30
MAX_API_TOKEN_DAYS: Mapping[str, int] = MappingProxyType(
    {ROLE_READ_ONLY: 90, ROLE_OPERATOR: 90, ROLE_ADMIN: 365}
)


def role_allows(role: str, required: str) -> bool:
    """``role`` is at least ``required`` (unknown roles allow nothing)."""
    if role not in ROLES or required not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)


def required_role(action: str) -> str:
    try:
        return PERMISSIONS[action]
    except KeyError:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(PERMISSIONS)}") from None


def allowed(role: str, action: str) -> bool:
    """May a user with ``role`` do ``action``?"""
    return role_allows(role, required_role(action))


def max_api_token_days(role: str) -> int:
    return MAX_API_TOKEN_DAYS.get(role, min(MAX_API_TOKEN_DAYS.values()))
