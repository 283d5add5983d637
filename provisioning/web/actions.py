"""Helpers for views that change things: the acting admin, commit + resync, redirect + flash."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse

from offhook.provisioning.admin_auth import client_ip
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import Actor
from offhook.provisioning.services import actors
from offhook.provisioning.services.actors import admin_actor
from offhook.provisioning.web.core import redirect
from offhook.provisioning.web.sessions import add_flash, stash_form

log = logging.getLogger(__name__)


def actor_for(request: Request, admin: AdminUser) -> Actor:
    """Audit entries name the admin the same way the REST API does (services.actors)."""
    return admin_actor(admin, client_ip(request))


def commit_and_resync(request: Request, db: Session, device_ids: list[str]) -> int:
    """Commit, then tell the phones (services.actors.commit_and_resync); how many were told."""
    services = request.app.state.services
    return actors.commit_and_resync(db, services.keys, services.notifier, device_ids)


def done(request: Request, url: str, message: str, kind: str = "ok") -> RedirectResponse:
    response = redirect(url)
    add_flash(request, response, kind, message)
    return response


def back_with_form(request: Request, url: str, data: Mapping[str, str | int]) -> RedirectResponse:
    """A refused form goes back to its page (Post/Redirect/Get), which shows ``data`` (the error
    and what was typed) once; a reload then shows the plain page and re-posts nothing."""
    response = redirect(url)
    stash_form(request, response, urlsplit(url).path, data)
    return response
