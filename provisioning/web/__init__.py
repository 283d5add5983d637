"""Server-rendered admin web UI, mounted at ``/`` by the app factory.

``router`` carries every page; ``setup(app)`` lets the admin REST API accept a web session
(safe methods, or with the session's CSRF token in ``X-CSRF-Token``), reads the fleet's poll
interval (``OFFHOOK_POLL_INTERVAL_S``) for the "not seen" threshold, and installs the HTML 404
page for browsers.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from offhook.provisioning.web.core import api_session_user
from offhook.provisioning.web.liveness import not_seen_after, poll_interval_from_env
from offhook.provisioning.web.not_found import install_html_404
from offhook.provisioning.web.views import (
    admins,
    alerts,
    analytics,
    api_tokens,
    approvals,
    audit_log,
    dashboard,
    devices,
    firmware,
    fleet,
    groups,
    login,
    privacy,
    records,
    security,
    security_keys,
    static,
    templates,
    tokens,
)

router = APIRouter(include_in_schema=False)
for _module in (
    static,
    login,
    dashboard,
    alerts,
    devices,
    approvals,
    fleet,
    groups,
    templates,
    tokens,
    records,
    analytics,
    audit_log,
    firmware,
    privacy,
    api_tokens,
    security,
    security_keys,
    admins,
):
    router.include_router(_module.router)


def setup(app: FastAPI) -> None:
    app.state.session_user = api_session_user
    # Read once per process, like the server's other OFFHOOK_* settings; a bad value stops
    # the start with a clear message.
    app.state.web_not_seen_after = not_seen_after(poll_interval_from_env())
    install_html_404(app)


__all__ = ["router", "setup"]
