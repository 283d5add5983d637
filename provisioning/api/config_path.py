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
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import joinedload
from starlette.types import ASGIApp, Receive, Scope, Send

from offhook.contract.config import ConfigError
from offhook.contract.logs import kv
from offhook.provisioning.auth import (
    DeviceKey,
    authenticate_device_key,
    authenticate_device_key_async,
)
from offhook.provisioning.deps import Services
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import Device, FleetDefaults
from offhook.provisioning.render import Rendered, render_device

log = logging.getLogger(__name__)

CONFIG_PATH = "/api/v1/device/config"


def etag_matches(header: str, etag: str) -> bool:
    if header == etag:  # what a polling phone sends: the ETag it was given, alone
        return True
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag in [c.strip().removeprefix("W/") for c in header.split(",")]


def _render_for(services: Services, key: DeviceKey) -> Rendered:
    db = services.database.read_sessionmaker()
    try:  # read only: closing rolls back, no commit round trip
        # The device, its lines and the settings epoch in one statement (one snapshot): the
        # inherited-settings cache entry for that epoch is then consistent with this revision.
        row = (
            db.execute(
                select(Device, FleetDefaults.settings_epoch)
                .outerjoin(FleetDefaults, FleetDefaults.id == 1)  # no row: epoch None, re-read
                .options(joinedload(Device.lines))
                .where(Device.id == key.id)
            )
            .unique()
            .first()
        )
        if row is None:  # deleted between the two queries
            raise ApiError(401, "unauthorized", "missing or invalid device credential")
        device, epoch = row
        try:
            rendered = render_device(
                db, device, services.keys, services.inherited_cache, epoch=epoch
            )
        except ConfigError as exc:
            log.error("rendered config invalid", extra=kv(device=device.id, error=exc))
            raise ApiError(500, "config_invalid", f"server-side config is invalid: {exc}") from None
    finally:
        db.close()
    services.render_cache.put(key.id, rendered)
    return rendered


def _key_and_render(services: Services, authorization: str) -> tuple[DeviceKey, Rendered]:
    """Credential lookup and, on a cache miss (a new revision), the render: one thread-pool
    hop for both on network databases."""
    key = authenticate_device_key(services.database.engine, authorization)
    rendered = services.render_cache.get(key.id, key.revision)
    return key, rendered if rendered is not None else _render_for(services, key)


async def config_reply(
    services: Services,
    authorization: str,
    if_none_match: str,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body). Raises ApiError; database errors propagate (-> 503).
    The SQLite lookup (a local file, microseconds) runs inline, the PostgreSQL one on the event
    loop's own async connections; renders run in the thread pool."""
    if services.database.is_sqlite:
        reader = services.credential_reader
        key = authenticate_device_key(
            services.database.engine, authorization, reader.fetch if reader else None
        )
        cached = services.render_cache.get(key.id, key.revision)
        rendered = (
            cached if cached is not None else await run_in_threadpool(_render_for, services, key)
        )
    elif services.pg_credential_reader is not None:
        key = await authenticate_device_key_async(
            authorization, services.pg_credential_reader.fetch
        )
        cached = services.render_cache.get(key.id, key.revision)
        rendered = (
            cached if cached is not None else await run_in_threadpool(_render_for, services, key)
        )
    else:
        key, rendered = await run_in_threadpool(_key_and_render, services, authorization)
    return _rendered_reply(rendered, if_none_match)


def _rendered_reply(rendered: Rendered, if_none_match: str) -> tuple[int, dict[str, str], bytes]:
    headers = {
        "ETag": rendered.etag,
        "X-Config-Revision": str(rendered.revision),
        # The body carries SIP passwords: no cache may keep it (the phone revalidates with
        # If-None-Match by itself).
        "Cache-Control": "no-store",
    }
    if etag_matches(if_none_match, rendered.etag):
        return 304, headers, b""
    headers["Content-Type"] = "application/json"
    return 200, headers, rendered.body


InlineReply = tuple[int, bytes, bytes]  # status, header lines (CRLF-terminated), body


def config_reply_inline(
    fast_path: ConfigFastPath, authorization: str, if_none_match: str
) -> InlineReply | None:
    """The reply when it needs no waiting (SQLite lookup, render cache hit), else None and the
    caller takes the ASGI path. Same statuses and headers as ConfigFastPath; the header lines
    of a rendered config are encoded once per revision."""
    services = fast_path.services
    reader = services.credential_reader
    inflight = services.device_inflight
    if reader is None or inflight.count >= inflight.limit:
        return None  # PostgreSQL's awaited lookup, or the cap's 503: the ASGI path
    try:
        key = authenticate_device_key(services.database.engine, authorization, reader.fetch)
        rendered = services.render_cache.get(key.id, key.revision)
        if rendered is None:
            return None  # a new revision: rendered in the thread pool on the ASGI path
        status = 304 if etag_matches(if_none_match, rendered.etag) else 200
        head = rendered.wire.get(status)
        if head is None:
            _, headers, body = _rendered_reply(rendered, if_none_match)
            head = rendered.wire[status] = _head(status, _raw(headers), body)
        return status, head, rendered.body if status == 200 else b""
    except ApiError as exc:
        status, headers, body = _api_error_reply(exc)
        return status, _head(status, _raw(headers), body), body
    except SQLAlchemyError as exc:
        log.error("database unavailable", extra=kv(path=CONFIG_PATH, error=exc))
        raw = _json_headers(retry_after=fast_path._retry_after)
        return 503, _head(503, raw, _UNAVAILABLE_BODY), _UNAVAILABLE_BODY
    except Exception:
        log.exception("config request failed", extra=kv(path=CONFIG_PATH))
        return 500, _head(500, _json_headers(), _INTERNAL_BODY), _INTERNAL_BODY


def _head(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    if status != 304:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _api_error_reply(exc: ApiError) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"detail": exc.detail, "code": exc.code}).encode()
    return exc.status, {"Content-Type": "application/json", **(exc.headers or {})}, body


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


_BUSY_BODY = b'{"detail": "server busy, retry later", "code": "overloaded"}'
_UNAVAILABLE_BODY = b'{"detail": "database unavailable, retry later", "code": "unavailable"}'
_INTERNAL_BODY = b'{"detail": "internal server error", "code": "internal"}'


class ConfigFastPath:
    """Raw ASGI in front of the FastAPI app (``provisioning.app.with_config_fast_path``):
    answers GET /api/v1/device/config itself and passes everything else on. It counts itself
    in the per-process device API cap (``services.device_inflight``) like DeviceApiLimiter."""

    def __init__(self, app: ASGIApp, services: Services, retry_after_s: int) -> None:
        self.app = app
        self.services = services
        self.retry_after_s = retry_after_s
        self._retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CONFIG_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        inflight = self.services.device_inflight
        if inflight.count >= inflight.limit:
            await _send(send, 503, _json_headers(retry_after=self._retry_after), _BUSY_BODY)
            return
        inflight.count += 1
        try:
            await self._serve(scope, send)
        finally:
            inflight.count -= 1

    async def _serve(self, scope: Scope, send: Send) -> None:
        authorization = if_none_match = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        try:
            status, headers, body = await config_reply(self.services, authorization, if_none_match)
        except ApiError as exc:
            status, headers, body = _api_error_reply(exc)
        except SQLAlchemyError as exc:
            log.error("database unavailable", extra=kv(path=CONFIG_PATH, error=exc))
            raw = _json_headers(retry_after=self._retry_after)
            await _send(send, 503, raw, _UNAVAILABLE_BODY)
            return
        except Exception:  # FastAPI's error middleware is behind us: answer 500 here
            log.exception("config request failed", extra=kv(path=CONFIG_PATH))
            await _send(send, 500, _json_headers(), _INTERNAL_BODY)
            return
        await _send(send, status, _raw(headers), body)


def _json_headers(retry_after: bytes = b"") -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if retry_after:
        headers.append((b"retry-after", retry_after))
    return headers


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 304:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
