"""FastAPI application factory.

``create_app(settings)`` wires: database (migrated on start unless disabled), key ring, render
cache, NOTIFY sender, device API, admin REST API, the web UI (provisioning.web) and the periodic
retention purge. ``create_app_from_env()`` is the uvicorn factory used by ``offhook server``
(every worker process reads the same OFFHOOK_* environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offhook.contract.logs import kv, setup_logging
from offhook.provisioning.alert_tasks import AlertTasks
from offhook.provisioning.api.admin import router as admin_router
from offhook.provisioning.api.alerts import router as alerts_router
from offhook.provisioning.api.analytics import router as analytics_router
from offhook.provisioning.api.config_path import ConfigFastPath
from offhook.provisioning.api.device import router as device_router
from offhook.provisioning.api.firmware import admin_router as firmware_admin_router
from offhook.provisioning.api.firmware import device_router as firmware_device_router
from offhook.provisioning.api.privacy import router as privacy_router
from offhook.provisioning.api.rollouts import router as rollouts_router
from offhook.provisioning.api.security import router as security_router
from offhook.provisioning.api_docs import docs_router
from offhook.provisioning.auth import SqliteCredentialReader
from offhook.provisioning.crypto import load_key_ring
from offhook.provisioning.db import Database, TextWithNul
from offhook.provisioning.deps import DeviceInflight, Services, ServicesDep, get_services
from offhook.provisioning.errors import ApiError
from offhook.provisioning.limits import BodyLimit
from offhook.provisioning.notify import Notifier
from offhook.provisioning.pg_credentials import PgCredentialReader
from offhook.provisioning.private_files import private_directory
from offhook.provisioning.render import RenderCache
from offhook.provisioning.retention import purge_expired
from offhook.provisioning.rollouts import check_stage_timeouts
from offhook.provisioning.settings import ServerSettings, settings_from_env

# Re-exported: older callers name them from here; routers import provisioning.deps.
__all__ = ["DeviceInflight", "Services", "ServicesDep", "create_app", "get_services"]

log = logging.getLogger(__name__)

DEVICE_PREFIX = "/api/v1/device"
FIRMWARE_DOWNLOADS = DEVICE_PREFIX + "/firmware/"


def _error_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        422: "invalid",
        503: "unavailable",
    }.get(status, "error")


def _install_error_handlers(app: FastAPI, settings: ServerSettings) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "code": exc.code}, exc.status, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "code": _error_code(exc.status_code)},
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems), "code": "invalid"}, 422)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable", extra=kv(path=request.url.path, error=exc))
        return JSONResponse(
            {"detail": "database unavailable, retry later", "code": "unavailable"},
            503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    async def text_with_nul(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "code": "invalid"}, 422)

    app.add_exception_handler(TextWithNul, text_with_nul)
    app.add_exception_handler(OperationalError, unavailable)
    app.add_exception_handler(PoolTimeoutError, unavailable)
    app.add_exception_handler(DBAPIError, unavailable)


class DeviceApiLimiter:
    """Pure ASGI middleware capping device API requests in flight (per process): beyond
    ``max_inflight`` it answers 503 + Retry-After at once, so the fleet backs off instead of
    queueing into timeouts. Admin and web requests are not counted."""

    def __init__(self, app: ASGIApp, inflight: DeviceInflight, retry_after_s: int) -> None:
        self.app = app
        self.inflight = inflight
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(DEVICE_PREFIX)
            or scope["path"].startswith(FIRMWARE_DOWNLOADS)  # minutes long: a cap of their own
        ):
            await self.app(scope, receive, send)
            return
        if self.inflight.count >= self.inflight.limit:
            busy = JSONResponse(
                {"detail": "server busy, retry later", "code": "overloaded"},
                503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await busy(scope, receive, send)
            return
        self.inflight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight.count -= 1


HSTS = (b"strict-transport-security", b"max-age=31536000")


class StrictTransportSecurity:
    """Pure ASGI middleware: every answer of the web UI, the admin API and /docs given over
    HTTPS says to use nothing else for a year (``Strict-Transport-Security``), so a browser
    that once reached the server over TLS never falls back to plain HTTP. Over plain HTTP the
    header means nothing and is left out. The device API is left out too: phones are no
    browsers (they pin the CA), and its answers stay the same on the inline poll path, which
    never reaches this middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("scheme") != "https"
            or scope["path"].startswith(DEVICE_PREFIX)
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), HSTS]
            await send(message)

        await self.app(scope, receive, send_with_hsts)


async def _purge_periodically(services: Services) -> None:

    interval = services.settings.purge_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            counts = await asyncio.to_thread(
                purge_expired, services.database, services.settings.retention, "system:purge"
            )
            log.info("retention purge done", extra=kv(**counts))
        except Exception:  # the next round retries; a failed purge must not kill the server
            log.exception("retention purge failed")


def _rollout_stage_check(database: Database) -> list[int]:
    with database.session() as db:
        return check_stage_timeouts(db)


async def _watch_rollouts(services: Services) -> None:
    """Rollouts whose stage outlasts its time limit pause: no phone report would say so."""
    interval = services.settings.rollout_check_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            paused = await asyncio.to_thread(_rollout_stage_check, services.database)
            if paused:
                log.warning("rollout stages timed out", extra=kv(rollouts=paused))
        except Exception:  # the next round retries; a failed check must not kill the server
            log.exception("rollout stage check failed")


def _sqlite_reader(database: Database) -> SqliteCredentialReader | None:
    path = database.engine.url.database if database.is_sqlite else None
    if not path or path == ":memory:":
        return None
    return SqliteCredentialReader(path, database.sqlite_key)


def create_app(settings: ServerSettings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or settings_from_env()
    private_directory(settings.data_dir)  # key ring, TLS key and SQLite live here
    database = database or Database(settings.database_url, settings.db_key)
    if settings.migrate_on_start:
        database.migrate()
    services = Services(
        settings=settings,
        database=database,
        keys=load_key_ring(settings.resolved_key_file, create=True),
        render_cache=RenderCache(),
        notifier=Notifier(enabled=settings.notify_enabled),
        device_inflight=DeviceInflight(settings.max_inflight),
        credential_reader=_sqlite_reader(database),
        pg_credential_reader=(
            PgCredentialReader(database.engine)
            if database.engine.dialect.name == "postgresql"
            else None
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if settings.purge_interval_s > 0:
            tasks.append(asyncio.create_task(_purge_periodically(services)))
        if settings.rollout_check_interval_s > 0:
            tasks.append(asyncio.create_task(_watch_rollouts(services)))
        alert_tasks = AlertTasks(database, settings, services.alert_wakeup)
        alert_tasks.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await alert_tasks.stop()  # before the database goes: its threads may be using it
            services.notifier.close()
            if services.credential_reader is not None:
                services.credential_reader.close()
            if services.pg_credential_reader is not None:
                await services.pg_credential_reader.close()
            database.dispose()

    app = FastAPI(
        title="offhook provisioning server",
        version="1",
        description="Device API (phones) and admin REST API for an offhook phone fleet.",
        lifespan=lifespan,
        # /docs is provisioning.api_docs (Swagger UI from the package, strict CSP); ReDoc
        # would load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.database = database
    app.state.settings = settings

    app.include_router(device_router, prefix=DEVICE_PREFIX)
    app.include_router(admin_router, prefix="/api/v1/admin")
    app.include_router(firmware_device_router, prefix=DEVICE_PREFIX)
    app.include_router(firmware_admin_router, prefix="/api/v1/admin")
    app.include_router(rollouts_router, prefix="/api/v1/admin")
    app.include_router(security_router, prefix="/api/v1/admin")
    app.include_router(privacy_router, prefix="/api/v1/admin")
    app.include_router(analytics_router, prefix="/api/v1/admin")
    app.include_router(alerts_router, prefix="/api/v1/admin")
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
    if settings.web_ui:
        _mount_web(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _install_error_handlers(app, settings)
    app.add_middleware(StrictTransportSecurity)
    app.add_middleware(
        DeviceApiLimiter,
        inflight=services.device_inflight,
        retry_after_s=settings.retry_after_s,
    )
    # Outermost of ours: an oversized body is refused before anything else reads it.
    app.add_middleware(BodyLimit)
    return app


def with_config_fast_path(app: FastAPI) -> ASGIApp:
    """``app`` behind ConfigFastPath: the config poll is answered before FastAPI's own stack
    (telemetry check, error middleware, routing), everything else passes through unchanged."""

    services: Services = app.state.services
    return ConfigFastPath(app, services, services.settings.retry_after_s)


def _mount_web(app: FastAPI) -> None:
    try:
        import offhook.provisioning.web as web
    except ImportError as exc:
        # Only a missing provisioning.web itself is tolerated; its own broken imports surface.
        if exc.name not in ("offhook.provisioning.web",):
            raise
        return
    router = getattr(web, "router", None)
    if router is not None:
        app.include_router(router)
    setup = getattr(web, "setup", None)
    if callable(setup):
        setup(app)


def create_app_from_env() -> ASGIApp:
    """uvicorn factory (``--factory``) for multi-worker runs: the app behind the fast path."""

    setup_logging(os.environ.get("OFFHOOK_LOG_LEVEL", "info"), identifier="offhook-provisioning")
    return with_config_fast_path(create_app(settings_from_env()))
