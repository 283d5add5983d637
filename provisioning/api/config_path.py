"""``GET /api/v1/device/config``: the fleet's polling hot path.

One indexed lookup for the credential and revision, then the (device, revision) render cache;
the ORM only when a new revision has to be rendered. ``ConfigFastPath`` serves this one route as
plain ASGI, ahead of FastAPI's routing and dependency resolution (most of the per-request cost);
the FastAPI route in device.py uses the same ``config_reply`` and documents it in OpenAPI.
"""

from __future__ import annotations

import json
import logging

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import joinedload
from starlette.types import ASGIApp, Receive, Scope, Send

from firmware.config import ConfigError
from provisioning.auth import DeviceKey, authenticate_device_key
from provisioning.errors import ApiError
from provisioning.models import Device
from provisioning.render import Rendered, render_device

log = logging.getLogger(__name__)

CONFIG_PATH = "/api/v1/device/config"


def etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag in [c.strip().removeprefix("W/") for c in header.split(",")]


def _render_for(services, key: DeviceKey) -> Rendered:  # type: ignore[no-untyped-def]
    db = services.database.read_sessionmaker()
    try:  # read only: closing rolls back, no commit round trip
        device = db.get(Device, key.id, options=[joinedload(Device.lines)])
        if device is None:  # deleted between the two queries
            raise ApiError(401, "unauthorized", "missing or invalid device credential")
        try:
            rendered = render_device(db, device, services.keys, services.inherited_cache)
        except ConfigError as exc:
            log.error("rendered config invalid device=%s error=%s", device.id, exc)
            raise ApiError(500, "config_invalid", f"server-side config is invalid: {exc}") from None
    finally:
        db.close()
    services.render_cache.put(key.id, rendered)
    return rendered


async def config_reply(
    services,
    authorization: str,
    if_none_match: str,  # type: ignore[no-untyped-def]
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body). Raises ApiError; database errors propagate (-> 503).
    The SQLite lookup (a local file, microseconds) runs inline; network databases and renders
    run in the thread pool so the event loop never waits on them."""
    engine = services.database.engine
    if services.database.is_sqlite:
        key = authenticate_device_key(engine, authorization)
    else:
        key = await run_in_threadpool(authenticate_device_key, engine, authorization)
    rendered = services.render_cache.get(key.id, key.revision)
    if rendered is None:
        rendered = await run_in_threadpool(_render_for, services, key)
    headers = {
        "ETag": rendered.etag,
        "X-Config-Revision": str(rendered.revision),
        "Cache-Control": "no-cache",
    }
    if etag_matches(if_none_match, rendered.etag):
        return 304, headers, b""
    headers["Content-Type"] = "application/json"
    return 200, headers, rendered.body


class ConfigFastPath:
    def __init__(self, app: ASGIApp, services, retry_after_s: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.services = services
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CONFIG_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        authorization = if_none_match = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        try:
            status, headers, body = await config_reply(self.services, authorization, if_none_match)
        except ApiError as exc:
            status, body = exc.status, json.dumps({"detail": exc.detail, "code": exc.code}).encode()
            headers = {"Content-Type": "application/json", **(exc.headers or {})}
        except SQLAlchemyError as exc:
            log.error("database unavailable path=%s error=%s", CONFIG_PATH, exc)
            status = 503
            body = b'{"detail": "database unavailable, retry later", "code": "unavailable"}'
            headers = {"Content-Type": "application/json", "Retry-After": str(self.retry_after_s)}
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if status != 304:
            raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
