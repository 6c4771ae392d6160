"""The SQLite connection: WAL, migrations on open, one writer transaction at a time."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from bot.store.migrations import LATEST_VERSION, MIGRATIONS

log = logging.getLogger(__name__)


class DatabaseTooNew(Exception):
    """The database was written by a newer version of the bot; running old code on it is refused."""


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        # aiosqlite runs every statement on one thread, but coroutines could still interleave
        # statements of two transactions; the lock keeps each transaction whole.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> "Database":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        db = cls(conn)
        try:
            await db._migrate()
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self.conn.close()

    async def schema_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0])

    async def _migrate(self) -> None:
        current = await self.schema_version()
        if current > LATEST_VERSION:
            raise DatabaseTooNew(
                f"the database is at schema version {current}, but this version of the bot knows "
                f"only up to {LATEST_VERSION}; upgrade the bot or use another database"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            log.info("migrating database to version %d: %s", migration.version, migration.description)
            async with self.transaction() as conn:
                for statement in _split_sql(migration.sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {migration.version:d}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (cancellation included)."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def fetchall(self, sql: str, params: tuple = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: tuple = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT on its own; run statement by statement inside our transaction.
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped.strip():
            continue
        current.append(stripped)
        if stripped.endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements
