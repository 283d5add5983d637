"""Whole-database encryption for SQLite with SQLCipher (AES-256 per page, HMAC-SHA512 per page,
key derived with PBKDF2-HMAC-SHA512; the ``sqlcipher3`` module, from the ``sqlcipher3-binary``
wheel, which bundles SQLCipher 4).

Off unless a key is given: ``OFFHOOK_DB_KEY`` (the passphrase) or ``OFFHOOK_DB_KEY_FILE`` (a
file holding it, mode 0600 like the secret key ring). With a key, every SQLite connection of the
server, its workers, the inline poll path and ``offhook fleet`` opens the file through SQLCipher
and sets the key first; without it, or with another, the file does not open ("file is not a
database"). ``encrypt_copy`` turns a plain database into an encrypted one (SQLCipher's
``sqlcipher_export``). PostgreSQL has no such mode: encrypt its storage underneath.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from offhook.provisioning.crypto import CryptoError

DB_KEY_ENV = "OFFHOOK_DB_KEY"
DB_KEY_FILE_ENV = "OFFHOOK_DB_KEY_FILE"
MIN_KEY_CHARS = 16


class SqlCipherError(CryptoError):
    """An encrypted database that cannot be opened as configured (the message says why)."""


def load_db_key(env: dict[str, str] | None = None) -> str:
    """The database passphrase from the environment, or "" (encryption off)."""
    env = dict(os.environ if env is None else env)
    key = env.get(DB_KEY_ENV, "")
    path = env.get(DB_KEY_FILE_ENV, "")
    if key and path:
        raise SqlCipherError(f"set {DB_KEY_ENV} or {DB_KEY_FILE_ENV}, not both")
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SqlCipherError(f"{DB_KEY_FILE_ENV}={path}: {exc.strerror}") from None
    if key and len(key) < MIN_KEY_CHARS:
        raise SqlCipherError(f"the database key must have at least {MIN_KEY_CHARS} characters")
    return key


def dbapi() -> ModuleType:
    """sqlcipher3's DB-API module (imported only when a key is set: an optional dependency)."""
    try:
        import sqlcipher3.dbapi2 as module  # type: ignore[import-untyped]
    except ImportError:
        raise SqlCipherError(
            f"{DB_KEY_ENV} is set but SQLCipher is not installed: pip install sqlcipher3-binary"
        ) from None
    return module


def key_pragma(key: str) -> str:
    """``PRAGMA key`` with the passphrase as an SQL string literal (quotes doubled)."""
    return "PRAGMA key = '" + key.replace("'", "''") + "'"


def apply_key(dbapi_conn: Any, key: str) -> None:
    """Set the key on a fresh connection, before anything reads the file, and prove it opens
    (SQLCipher only finds a wrong key on the first read)."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(key_pragma(key))
        cursor.execute("SELECT count(*) FROM sqlite_master")
    except Exception as exc:  # the module's own DatabaseError class
        raise SqlCipherError(
            f"the database does not open with this key ({exc}): a wrong {DB_KEY_ENV}, or a "
            "database that is not encrypted (encrypt a copy with 'offhook fleet encrypt-db')"
        ) from None
    finally:
        cursor.close()


def connect(path: str, key: str, **kwargs: Any) -> Any:
    """A raw SQLCipher connection with the key set (the inline poll path's reader)."""
    conn = dbapi().connect(path, **kwargs)
    apply_key(conn, key)
    return conn


def encrypt_copy(plain: Path, encrypted: Path, key: str) -> None:
    """Write an encrypted copy of the plain database ``plain`` to ``encrypted`` (new file)."""
    if encrypted.exists():
        raise SqlCipherError(f"{encrypted} exists: name a new file")
    conn = dbapi().connect(str(plain))
    try:
        conn.execute("ATTACH DATABASE ? AS encrypted KEY ?", (str(encrypted), key))
        conn.execute("SELECT sqlcipher_export('encrypted')")
        conn.execute("DETACH DATABASE encrypted")
    finally:
        conn.close()
    os.chmod(encrypted, 0o600)
