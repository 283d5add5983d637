"""Engine, sessions and migrations for SQLite (default, WAL mode) and PostgreSQL (scale-out).

Usage in request handlers: ``db: Session = Depends(get_session)``; outside the app:
``with database.session() as db: ...`` (commits on success, rolls back on error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from offhook.contract.logs import kv
from offhook.provisioning import sqlcipher
from offhook.provisioning.private_files import private_directory, private_sqlite_files

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# Execution option naming how a SQLite transaction starts: "IMMEDIATE" takes the write lock at
# BEGIN (writers), anything else is a deferred BEGIN (readers).
SQLITE_BEGIN = "sqlite_begin"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off (SQLAlchemy's documented workaround): it would
    # BEGIN only before DML, so a SAVEPOINT outside it started and RELEASE committed a
    # transaction of its own, and every transaction began deferred. _sqlite_begin emits BEGIN.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # Overwrite deleted/replaced content, so an erased record or a re-encrypted secret does not
    # linger in free pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN for SQLite, IMMEDIATE for writers. A deferred transaction that reads and then
    writes cannot wait for the write lock in WAL mode: once another writer committed after its
    read, SQLite refuses the upgrade at once ("database is locked" in milliseconds, whatever
    busy_timeout says). BEGIN IMMEDIATE waits for the lock (busy_timeout) before reading, so
    concurrent writers queue instead of failing."""
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return
    mode = "BEGIN IMMEDIATE" if options.get(SQLITE_BEGIN) == "IMMEDIATE" else "BEGIN"
    conn.exec_driver_sql(mode)


class TextWithNul(ValueError):
    """A statement parameter holds a NUL character: PostgreSQL refuses it (a DataError, which
    would read as an outage), SQLite stores it but C strings end there. Bad input, on both."""


def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    """The last line of defence for text from every front end (REST, web forms, CLI): request
    bodies already refuse NUL characters with a message naming the field."""
    for row in parameters if executemany else (parameters,):
        if isinstance(row, dict):
            values: Any = row.values()
        else:
            values = row if isinstance(row, list | tuple) else (row,)
        for value in values:
            if isinstance(value, str) and "\x00" in value:
                raise TextWithNul("text must not contain a NUL character (\\u0000)")


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` is typed as returning a plain
    ``Result``; for a DML statement it is a ``CursorResult``, which alone carries the count."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"not the result of an UPDATE or DELETE: {type(result).__name__}")
    return result.rowcount


def make_engine(url: str, sqlite_key: str = "") -> Engine:
    """``sqlite_key``: open the SQLite file through SQLCipher with this passphrase
    (``provisioning.sqlcipher``; ignored for PostgreSQL)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            private_directory(path.parent)
            private_sqlite_files(path)  # before SQLite creates it 0644 (and its WAL with it)
        cipher: dict[str, Any] = {"module": sqlcipher.dbapi()} if sqlite_key else {}
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            pool_pre_ping=False,
            **cipher,
        )
        if sqlite_key:
            # First of the connect hooks: nothing may read the file before the key is set.
            event.listen(
                engine, "connect", lambda conn, _rec: sqlcipher.apply_key(conn, sqlite_key)
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _refuse_nul)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # Short connect timeout so a dead database turns into a quick 503, not a hung request.
        # No pre-ping (a round trip per checkout on the polling hot path): a connection that
        # died with a database restart fails once (503, phone retries) and SQLAlchemy then
        # invalidates the whole pool.
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=10,
            pool_timeout=5,
            connect_args={"connect_timeout": 5},
        )
        event.listen(engine, "before_cursor_execute", _refuse_nul)
        return engine
    raise ValueError(f"unsupported database URL {parsed.render_as_string()!r}: use sqlite or pg")


class Database:
    def __init__(self, url: str, sqlite_key: str = "") -> None:
        self.url = normalise_url(url)
        self.sqlite_key = sqlite_key
        self.engine = make_engine(self.url, sqlite_key)
        # Writers (requests that may change something, the CLI): BEGIN IMMEDIATE on SQLite.
        writer = self.engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self.sessionmaker = sessionmaker(writer, expire_on_commit=False)
        # GET/HEAD requests: a deferred BEGIN, so reads do not queue behind a long write (an
        # import) on SQLite.
        self.deferred_sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # Read-only work on the polling path (renders): on PostgreSQL in autocommit mode, which
        # saves the BEGIN and ROLLBACK round trips; same pool.
        reader = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )
        self.read_sessionmaker = sessionmaker(reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        db = self.sessionmaker()
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()

    def checkpoint(self) -> None:
        """SQLite: fold the WAL into the main file and truncate it, so old row versions (e.g.
        before an erase or a key rotation) do not stay in the WAL. No-op on PostgreSQL."""
        if not self.is_sqlite:
            return
        # On the DBAPI connection (no BEGIN: pysqlite's own is off): a checkpoint inside a
        # transaction could not truncate the WAL past that transaction's snapshot.
        conn = self.engine.raw_connection()
        try:
            conn.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            conn.close()

    def migrate(self) -> None:
        run_migrations(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine) -> Any:

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def run_migrations(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision``; several processes starting together are safe on PG
    (advisory lock) and serialised by SQLite's own write lock."""

    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(727001)"))
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(727001)"))
                conn.commit()
    else:
        command.upgrade(cfg, revision)
    log.info("migrations applied", extra=kv(revision=revision, db=engine.dialect.name))


def get_database(request: Request) -> Database:
    return request.app.state.database


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: one session per request, committed when the handler returns. One
    transaction type per request: GET/HEAD read (deferred), every other method writes."""
    database: Database = request.app.state.database
    maker = database.deferred_sessionmaker if request.method in READ_METHODS else None
    db: Session = (maker or database.sessionmaker)()
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


# scope="function": commit before the response is sent, so a client that acts on a response
# (e.g. enrols right after an approval) never races the commit.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
