"""The FastAPI dependencies the routers need, apart from the application factory.

Routers (provisioning.api.*, provisioning.web.*) import these from here, never from
provisioning.app: app.py imports the routers, so a router importing app.py would close an
import circle. ``Services`` is filled in by ``app.create_app``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from offhook.provisioning.admin_auth import require_permission
from offhook.provisioning.alert_tasks import AlertWakeup
from offhook.provisioning.auth import SqliteCredentialReader
from offhook.provisioning.crypto import KeyRing
from offhook.provisioning.db import Database, DbSession
from offhook.provisioning.notify import Notifier
from offhook.provisioning.pg_credentials import PgCredentialReader
from offhook.provisioning.render import InheritedCache, RenderCache
from offhook.provisioning.settings import ServerSettings

__all__ = [
    "DbSession",
    "DeviceInflight",
    "Services",
    "ServicesDep",
    "get_services",
    "require_permission",
]


@dataclass
class DeviceInflight:
    """Device API requests in flight in this process: shared by DeviceApiLimiter (inside
    FastAPI) and ConfigFastPath (in front of it), so one cap covers both."""

    limit: int
    count: int = 0


@dataclass
class Services:
    """Per-process objects shared by request handlers (``request.app.state.services``)."""

    settings: ServerSettings
    database: Database
    keys: KeyRing
    render_cache: RenderCache
    notifier: Notifier
    inherited_cache: InheritedCache = field(default_factory=InheritedCache)
    device_inflight: DeviceInflight = field(default_factory=lambda: DeviceInflight(64))
    # SQLite file databases: the config path's credential lookup without the pool.
    credential_reader: SqliteCredentialReader | None = None
    # PostgreSQL: the same lookup on the event loop (async connections of its own).
    pg_credential_reader: PgCredentialReader | None = None
    # Wakes this process's alert notification sender after ingestion opened or resolved one.
    alert_wakeup: AlertWakeup = field(default_factory=AlertWakeup)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
