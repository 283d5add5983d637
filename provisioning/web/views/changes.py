"""The shared end of the device and group forms that change config: run the operation, then
commit and resync the devices it changed, or roll back and say why, on the page the form is on."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.forms import change_one_setting

Change = Callable[[], list[str]]  # an operation; returns the ids of the devices it changed
Message = Callable[[list[str]], str]  # the flash text, from the changed device ids


def apply_change(
    request: Request, db: Session, page: str, change: Change, message: Message, then: str = ""
) -> Response:
    """A refusal flashes its reason on ``page``; success goes to ``then`` (default ``page``)."""
    try:
        changed = change()
    except OperationError as exc:
        db.rollback()
        return done(request, page, str(exc), "error")
    commit_and_resync(request, db, changed)
    return done(request, then or page, message(changed))


def apply_setting_form(
    request: Request,
    db: Session,
    admin: AdminUser,
    scope: str,
    ref: str | int | None,
    page: str,
    message: Message,
    *,
    key: str,
    value: str,
    unset: str,
) -> Response:
    """One key of the fleet's (ref None), a group's or a device's settings form set (``key``,
    ``value``) or ``unset``.
    A refusal goes back to the form with the error and what was typed."""
    try:
        changed = change_one_setting(db, actor_for(request, admin), scope, ref, key, value, unset)
    except OperationError as exc:
        db.rollback()
        typed: dict[str, str | int] = {"error": str(exc), "key": key, "value": value}
        return back_with_form(request, f"{page}#settings", typed)
    commit_and_resync(request, db, changed)
    return done(request, page, message(changed))
