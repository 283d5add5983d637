"""The config path's credential lookup on PostgreSQL without a thread-pool hop.

Each app process keeps a few autocommit ``psycopg.AsyncConnection``s of its own and runs the one
indexed SELECT on the event loop: the sync engine would need a worker thread per request (the
hop, and the GIL hand-offs between threads, cost more than the query). Autocommit: every
SELECT sees the latest commit, so a revocation or a new revision made through any process is
honoured on the very next request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

SQL = "SELECT secret_hash, status, revision FROM devices WHERE id = %s"


class PgCredentialReader:
    def __init__(self, engine: Engine, size: int = 4, connect_timeout_s: int = 5) -> None:
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open = 0
        self._available: asyncio.Condition | None = None

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        if self._available is None:  # created on the serving loop, not at import
            self._available = asyncio.Condition()
        async with self._available:
            while not self._idle and self._open >= self.size:
                await self._available.wait()
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=self.connect_timeout_s
            )
        except BaseException:
            await self._release(None)
            raise

    async def _release(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        assert self._available is not None
        async with self._available:
            if conn is None:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._available.notify()

    async def fetch(self, device_id: str) -> tuple[Any, ...] | None:
        try:
            conn = await self._acquire()
        except psycopg.Error as exc:
            raise DBAPIError.instance(SQL, (device_id,), exc, psycopg.Error) from exc
        try:
            cursor = await conn.execute(SQL, (device_id,))
            row = await cursor.fetchone()
        except BaseException as exc:  # broken, or cancelled mid-query: never reused
            await conn.close()
            await self._release(None)
            if isinstance(exc, psycopg.Error):
                raise DBAPIError.instance(SQL, (device_id,), exc, psycopg.Error) from exc
            raise
        await self._release(conn)
        return tuple(row) if row is not None else None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
