"""Device credentials: per-device 256-bit secret, stored as SHA-256, sent as HTTP Basic."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from offhook.provisioning import sqlcipher
from offhook.provisioning.crypto import sha256_hex
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import DEVICE_APPROVED, DEVICE_REVOKED, Device

MAC_RE = re.compile(r"^[0-9a-f]{12}$")
SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def normalise_mac(mac: str) -> str:
    """``B8-27-EB-12-34-56`` / ``b827.eb12.3456`` / ``b827eb123456`` -> ``b8:27:eb:12:34:56``."""
    bare = re.sub(r"[:\-.]", "", mac.strip().lower())
    if not MAC_RE.match(bare):
        raise ValueError(f"{mac!r} is not a MAC address (12 hex digits)")
    return ":".join(bare[i : i + 2] for i in range(0, 12, 2))


def check_serial(serial: str) -> str:
    if not SERIAL_RE.match(serial):
        raise ValueError(f"{serial!r} is not a serial number (1-64 of A-Z a-z 0-9 . _ -)")
    return serial


def new_device_secret() -> str:
    """256 random bits, base64url without padding: 43 characters."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    return sha256_hex(secret)


def parse_basic(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    device_id, sep, secret = decoded.partition(":")
    if not sep or not device_id or not secret or "\x00" in decoded:
        return None  # a NUL would reach the database query (PostgreSQL refuses it: a 503)
    return device_id, secret


@dataclass(frozen=True)
class DeviceKey:
    """What the config hot path needs from the devices row."""

    id: str
    revision: int


def _refuse(status: str | None) -> None:
    if status == DEVICE_REVOKED:
        raise ApiError(403, "revoked", "this device has been revoked; re-enrol it")
    if status != DEVICE_APPROVED:
        raise ApiError(403, "not_approved", "this device is not approved")


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "missing or invalid device credential",
        {"WWW-Authenticate": 'Basic realm="offhook-device"'},
    )


_CREDENTIAL_SQL = {
    "qmark": "SELECT secret_hash, status, revision FROM devices WHERE id = ?",
    "pyformat": "SELECT secret_hash, status, revision FROM devices WHERE id = %(id)s",
    "format": "SELECT secret_hash, status, revision FROM devices WHERE id = %s",
    "numeric_dollar": "SELECT secret_hash, status, revision FROM devices WHERE id = $1",
}


def _fetch_credential(engine: Engine, device_id: str) -> tuple[Any, ...] | None:
    """One indexed lookup on a pooled DBAPI connection: the ORM and even Core cost several
    times the query itself on the polling hot path."""
    style = engine.dialect.paramstyle
    params: Any = {"id": device_id} if style == "pyformat" else (device_id,)
    conn = engine.raw_connection()
    # psycopg: autocommit for this single SELECT saves the BEGIN and ROLLBACK round trips.
    driver = conn.driver_connection
    autocommit = engine.dialect.name == "postgresql" and hasattr(driver, "autocommit")
    try:
        if autocommit:
            driver.autocommit = True  # type: ignore[union-attr]
        cursor = conn.cursor()
        try:
            cursor.execute(_CREDENTIAL_SQL[style], params)
            row = cursor.fetchone()
        finally:
            cursor.close()
        if autocommit:
            driver.autocommit = False  # type: ignore[union-attr]
        else:
            conn.rollback()  # end the read transaction before the connection is pooled again
    except engine.dialect.loaded_dbapi.Error as exc:
        conn.invalidate()  # a broken connection must not go back to the pool
        raise DBAPIError.instance(_CREDENTIAL_SQL[style], params, exc, Exception) from exc
    finally:
        conn.close()
    return tuple(row) if row is not None else None


class SqliteCredentialReader:
    """The credential lookup on SQLite without the connection pool: one autocommit,
    read-only connection per thread (in practice the event loop's). Every SELECT is its own
    transaction, so it always sees the latest commit - a revocation or a new revision is
    honoured on the very next request, as with the pooled lookup. The pool's checkout and
    return cost more than the indexed lookup itself."""

    SQL = _CREDENTIAL_SQL["qmark"]

    def __init__(self, path: str, sqlite_key: str = "") -> None:
        self.path = path
        self.sqlite_key = sqlite_key  # SQLCipher passphrase ("" = a plain file)
        self._errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if sqlite_key:  # sqlcipher3's errors are its own classes, not sqlite3's
            self._errors += (sqlcipher.dbapi().Error,)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.sqlite_key:
                conn = sqlcipher.connect(
                    self.path, self.sqlite_key, timeout=5, isolation_level=None
                )
            else:
                conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def fetch(self, device_id: str) -> tuple[Any, ...] | None:
        try:
            row = self._connection().execute(self.SQL, (device_id,)).fetchone()
        except self._errors as exc:
            self.close()  # reopen on the next request rather than reuse a broken connection
            raise DBAPIError.instance(self.SQL, (device_id,), exc, sqlite3.Error) from exc
        return tuple(row) if row is not None else None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def authenticate_device_key(
    engine: Engine,
    authorization: str,
    fetch: Callable[[str], tuple[Any, ...] | None] | None = None,
) -> DeviceKey:
    """Like authenticate_device, for the config hot path (no ORM, no session). ``fetch``:
    the credential lookup by device id (default: one query on a pooled connection)."""
    device_id, digest = _device_credential(authorization)
    row = fetch(device_id) if fetch is not None else _fetch_credential(engine, device_id)
    return _checked_key(device_id, digest, row)


async def authenticate_device_key_async(
    authorization: str, fetch: Callable[[str], Awaitable[tuple[Any, ...] | None]]
) -> DeviceKey:
    """authenticate_device_key with an awaitable lookup (PostgreSQL on the event loop)."""
    device_id, digest = _device_credential(authorization)
    return _checked_key(device_id, digest, await fetch(device_id))


@functools.lru_cache(maxsize=20000)  # as many as the render cache holds
def _parsed_credential(authorization: str) -> tuple[str, str] | None:
    """(device id, secret digest) of a Basic header. A phone sends the same header at every
    poll: remembering the decode and the hash saves a third of the lookup's own cost. Only
    the parse is cached; the check against the database row happens on every request."""
    parsed = parse_basic(authorization)
    if parsed is None or len(parsed[0]) > 36:
        return None
    return parsed[0], secret_digest(parsed[1])


def _device_credential(authorization: str) -> tuple[str, str]:
    parsed = _parsed_credential(authorization or "") if len(authorization or "") < 256 else None
    if parsed is None:
        raise _unauthorized()
    return parsed


def _checked_key(device_id: str, digest: str, row: tuple[Any, ...] | None) -> DeviceKey:
    # Compare even when there is no device, so timing does not reveal which ids exist.
    stored = row[0] if row is not None and row[0] else "0" * 64
    if not hmac.compare_digest(stored, digest) or row is None:
        raise _unauthorized()
    _refuse(row[1])
    return DeviceKey(device_id, int(row[2]))


def authenticate_device(db: Session, authorization: str) -> Device:
    """The device behind an Authorization header, or ApiError 401/403 per the protocol."""
    unauthorized = _unauthorized()
    parsed = parse_basic(authorization or "")
    if parsed is None:
        raise unauthorized
    device_id, secret = parsed
    if len(device_id) > 36:
        raise unauthorized
    device = db.scalar(select(Device).where(Device.id == device_id))
    digest = secret_digest(secret)
    # Compare even when there is no device, so timing does not reveal which ids exist.
    stored = device.secret_hash if device is not None and device.secret_hash else "0" * 64
    if not hmac.compare_digest(stored, digest) or device is None:
        raise unauthorized
    _refuse(device.status)
    return device
