"""The SQLite connection: WAL, migrations on open, one writer transaction at a time."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import sqlite3
import stat
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import aiosqlite

from bot.store import audit
from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration

log = logging.getLogger(__name__)


class DatabaseTooNew(Exception):
    """The database was written by a newer version of the bot; running old code on it is refused."""


# The database holds the bot's access token and copies of reported messages: owner only.
PRIVATE_MODE = 0o600


def secure_database_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite gives its -wal and -shm files the
    mode of the database file), and take group/other access away from an existing one, with a log
    line, since an older version of the bot created it world-readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # os.open's mode is the mode of a new file (a umask can only take bits away): no window in
    # which the file exists world-readable, and no process-wide umask change under other threads.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(file, mode & 0o700)
            log.warning("%s was readable by others (mode %04o); it holds the bot's access token, so it is now %04o",
                        file, mode, mode & 0o700)


@dataclass
class _Transaction:
    """The transaction a task has open: nested ``transaction()`` calls of the same task join it."""

    db: "Database"
    task: "asyncio.Task[object] | None"
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)
    depth: int = 0
    begun: bool = False  # a deferred transaction begins at its first write


_open: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar("open_transaction", default=None)


class Database:
    def __init__(self, conn: aiosqlite.Connection, head_file: audit.HeadFile | None = None) -> None:
        self.conn = conn
        # Where each committed audit head is appended; None: nowhere (a database of no file).
        self.head_file = head_file
        # aiosqlite runs every statement on one thread, but coroutines could still interleave
        # statements of two transactions; the lock keeps each transaction whole.
        self._write_lock = asyncio.Lock()

    dialect = "sqlite"

    @classmethod
    async def open(cls, path: str | Path, audit_head_file: str | Path | None = None) -> "Database":
        """Open (creating 0600 and migrating) the database; audit heads go to ``audit_head_file``
        (default: ``<database>.audit-head`` next to it).

        ``path`` may also be a URL: ``sqlite:///path/bot.db``, or ``postgresql://…`` for the
        PostgreSQL backend (bot/store/pg.py), which keeps no head file unless it is given one."""
        if isinstance(path, str) and is_postgres_url(path):
            from bot.store.pg import PostgresDatabase

            return await PostgresDatabase.connect(path, audit_head_file)
        path = sqlite_path(path)
        secure_database_file(path)
        head_file = audit.HeadFile(audit_head_file or audit.default_head_file(path))
        conn = await aiosqlite.connect(path, isolation_level=None, factory=_NulRefusingConnection)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return await cls._migrated(conn, head_file)

    @classmethod
    async def _migrated(cls, conn: aiosqlite.Connection, head_file: audit.HeadFile | None) -> "Database":
        """The database on ``conn``, migrated; ``conn`` closed if migrating fails."""
        db = cls(conn, head_file)
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
                for statement in self._migration_statements(migration):
                    await conn.execute(statement)
                await self._set_schema_version(conn, migration.version)

    def _migration_statements(self, migration: Migration) -> list[str]:
        return _split_sql(migration.sql)

    async def _set_schema_version(self, conn: aiosqlite.Connection, version: int) -> None:
        await conn.execute(f"PRAGMA user_version = {version:d}")

    def _joinable(self) -> _Transaction | None:
        tx = _open.get()
        if tx is not None and tx.db is self and tx.task is asyncio.current_task():
            return tx
        return None

    @asynccontextmanager
    async def transaction(self, *, deferred: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (cancellation included).

        Inside a transaction the same task already has open, this is a SAVEPOINT of it: what a
        repository writes joins the caller's unit of work (a case, its effects and the handled
        event commit together), and an exception still undoes exactly the inner block.

        ``deferred``: take the write lock and BEGIN only at the first write (the first nested
        ``transaction()``), so a unit of work that reads Matrix before it decides (a command
        fetching its evidence) does not hold every other writer back while it waits.
        """
        outer = self._joinable()
        if outer is not None:
            if not outer.begun:
                await self._begin(outer)
            async with self._savepoint(outer):
                yield self.conn
            return
        tx = _Transaction(self, asyncio.current_task())
        token = _open.set(tx)
        cancelled: asyncio.CancelledError | None = None
        try:
            if not deferred:
                await self._begin(tx)
            try:
                yield self.conn
            except BaseException:
                if tx.begun:
                    audit.take_pending(self.conn)
                    await self.conn.execute("ROLLBACK")
                _undo(tx.on_rollback)
                raise
            else:
                if tx.begun:
                    cancelled = await self._commit(tx)
                    head = audit.take_pending(self.conn)
                    if head is not None and self.head_file is not None:
                        # Still under the lock, so the file gets heads in commit order.
                        await self._write_head(head)
        finally:
            _open.reset(token)
            if tx.begun:
                self._write_lock.release()
        for callback in tx.after_commit:
            try:
                callback()
            except Exception:
                log.exception("an after-commit callback failed")
        if cancelled is not None:
            raise cancelled

    async def _commit(self, tx: _Transaction) -> asyncio.CancelledError | None:
        """COMMIT; if it fails, roll back what is left and undo memory, then re-raise. A cancel
        during the COMMIT is returned (to re-raise once the commit's memory work is done) when the
        COMMIT went through anyway: aiosqlite's worker thread runs it whatever the awaiting task."""
        try:
            await self.conn.execute("COMMIT")
            return None
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                try:
                    # Queued behind the COMMIT on the worker thread: once it returns, the COMMIT
                    # has run and in_transaction says how it ended.
                    await self.conn.execute("SELECT 1")
                except Exception:
                    pass
                if not self.conn.in_transaction:
                    return exc
            # A failed COMMIT (disk I/O error, disk full, busy) is no commit: SQLite may have
            # rolled the transaction back itself or left it open; either way nothing was stored,
            # so memory changed for it must be undone too.
            audit.take_pending(self.conn)
            try:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
            finally:
                _undo(tx.on_rollback)
            raise

    async def _begin(self, tx: _Transaction) -> None:
        await self._write_lock.acquire()
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        audit.take_pending(self.conn)  # a head left by a COMMIT that failed is no head
        tx.begun = True

    @asynccontextmanager
    async def _savepoint(self, tx: _Transaction) -> AsyncIterator[None]:
        tx.depth += 1
        name = f"sp{tx.depth}"
        callbacks, undos = len(tx.after_commit), len(tx.on_rollback)
        head = audit._pending.get(self.conn)
        await self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self.conn.execute(f"ROLLBACK TO {name}")
            await self.conn.execute(f"RELEASE {name}")
            del tx.after_commit[callbacks:]
            _undo(tx.on_rollback[undos:])
            del tx.on_rollback[undos:]
            if head is None:
                audit._pending.pop(self.conn, None)
            else:
                audit._pending[self.conn] = head
            raise
        else:
            await self.conn.execute(f"RELEASE {name}")
        finally:
            tx.depth -= 1

    async def files_folder(self) -> Path | None:
        """Where files that belong beside the database go (staged exports): its file's folder;
        None for a database of no file (":memory:")."""
        row = await self.fetchone("SELECT file FROM pragma_database_list WHERE name = 'main'")
        return Path(row[0]).parent if row is not None and row[0] else None

    async def table_names(self) -> list[str]:
        """The store's own tables, sorted (not the engine's bookkeeping): ``migrate-db`` copies
        these, and the tests compare every row of them on either backend."""
        rows = await self.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        return [r[0] for r in rows]

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the task's open transaction commits (dropped if it rolls back);
        at once when none is open. Memory follows the store, never runs ahead of it."""
        tx = self._joinable()
        if tx is None:
            callback()
        else:
            tx.after_commit.append(callback)

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` if the task's open transaction (or the savepoint now open) rolls back: for
        memory that had to change before the commit (a decision inside the unit reads it)."""
        tx = self._joinable()
        if tx is not None:
            tx.on_rollback.append(undo)

    @property
    def in_transaction(self) -> bool:
        return self._joinable() is not None

    async def _write_head(self, head: audit.Head) -> None:
        assert self.head_file is not None
        try:
            await asyncio.to_thread(self.head_file.write, head)
        except OSError:
            # The row is committed and the caller must not think otherwise; a file that lags
            # behind the chain is still correct, only weaker, so say so loudly and go on.
            log.exception("could not append the audit head (row %d) to %s", head.row_id, self.head_file.path)

    async def fetchall(self, sql: str, params: tuple = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: tuple = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()


# --- U+0000 in text (issue 11 review, break 5) ---------------------------------------------------
class TextHoldsNul(sqlite3.DataError):
    """A text parameter holds U+0000. PostgreSQL's text cannot hold it; SQLite could, but then a
    record would exist that ``migrate-db`` cannot carry over and the two backends would answer the
    same call differently, so both refuse it, with this error, before anything is written."""

    def __init__(self) -> None:
        super().__init__("text holding U+0000 (NUL) cannot be stored")


def refuse_nul(params: object) -> None:
    """Raise TextHoldsNul if any text among ``params`` (a sequence, or a dict of named ones) holds U+0000."""
    values = params.values() if isinstance(params, dict) else params
    if isinstance(values, (list, tuple)) or isinstance(params, dict):
        for value in values:  # type: ignore[union-attr]
            if isinstance(value, str) and "\x00" in value:
                raise TextHoldsNul()


class _NulRefusingConnection(sqlite3.Connection):
    """sqlite3's connection, refusing text with U+0000 as the PostgreSQL backend does."""

    def execute(self, sql, parameters=(), /):  # type: ignore[override]
        refuse_nul(parameters)
        return super().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters, /):  # type: ignore[override]
        rows = [tuple(row) if not isinstance(row, dict) else row for row in seq_of_parameters]
        for row in rows:
            refuse_nul(row)
        return super().executemany(sql, rows)
# --- end U+0000 ----------------------------------------------------------------------------------


# SQLite's words for a store that cannot commit now but may later (another process holds it, the
# disk is full or failing); a bad statement is a bug, and retrying the batch would never end.
_UNAVAILABLE = ("locked", "busy", "disk", "full", "unable to open", "readonly")


def store_unavailable(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says the store cannot commit now (but may later), not that a statement is bad."""
    if getattr(exc, "store_unavailable", False):  # the PostgreSQL backend says so itself (bot/store/pg.py)
        return True
    message = str(exc).lower()
    return any(word in message for word in _UNAVAILABLE)


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def sqlite_path(location: str | Path) -> Path:
    """``sqlite:///var/lib/bot.db`` (a file URL: the path is absolute; SQLAlchemy's four slashes
    work too) or a plain path → the file's path; ``sqlite://bot.db`` is relative."""
    if isinstance(location, str) and location.startswith("sqlite://"):
        rest = location[len("sqlite://"):]
        return Path("/" + rest.lstrip("/") if rest.startswith("/") else rest)
    return Path(location)


def _undo(callbacks: list[Callable[[], None]]) -> None:
    for callback in reversed(callbacks):
        try:
            callback()
        except Exception:
            log.exception("undoing a change to memory failed")


def _inside_body(lines: list[str]) -> bool:
    """Whether a ``;`` at the end of the last line is inside a body (a trigger's BEGIN … END, a
    PostgreSQL function's $$ … $$), not the end of the statement (append-only triggers, issue 11)."""
    text = "\n".join(lines)
    if text.count("$$") % 2:
        return True
    starts_trigger = re.match(r"\s*CREATE\s+(TEMP\w*\s+)?TRIGGER\b", text, re.IGNORECASE) is not None
    sqlite_body = starts_trigger and re.search(r"\bBEGIN\b", text, re.IGNORECASE) is not None
    return sqlite_body and re.search(r"\bEND\s*;$", text, re.IGNORECASE) is None


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT on its own; run statement by statement inside our transaction.
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped.strip():
            continue
        current.append(stripped)
        if stripped.endswith(";") and not _inside_body(current):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements
