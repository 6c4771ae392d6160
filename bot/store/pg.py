"""PostgreSQL behind the store's interface (asyncpg).

The repositories were written for aiosqlite: ``await conn.execute(sql, params)`` or ``async with
conn.execute(…) as cur``, ``cur.fetchone()``, ``cur.rowcount``, ``cur.lastrowid``, rows read as
``row[0]`` or ``row["col"]``. ``PgConnection`` offers exactly that over one asyncpg connection and
runs each statement through ``bot.store.sqlpg`` (SQLite's SQL → PostgreSQL's, cached per string),
so a repository works unchanged on both backends.

The guarantees the store gives on SQLite (one writer at a time, so the audit chain is appended in
commit order, one open appeal per case, an event handled once) come from BEGIN IMMEDIATE there.
Here every write transaction takes a transaction-scoped advisory lock first: one writer at a time
across every bot process on the database, released by COMMIT or ROLLBACK (or a dropped
connection), under READ COMMITTED, so no transaction ever fails for serialisation and needs a retry.

Errors keep SQLite's shape, because that is what the callers catch: a violated constraint is a
``sqlite3.IntegrityError``; a server that is gone, shutting down, out of disk or connections is a
``sqlite3.OperationalError`` that ``store_unavailable`` recognises (the sync batch fails and is
fetched again), and the next statement after a lost connection connects again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence

import asyncpg

from bot.store import audit
from bot.store.db import Database, _split_sql, refuse_nul
from bot.store.migrations import Migration
from bot.store.sqlpg import Schema, Translator, translate_ddl

log = logging.getLogger(__name__)

# pg_advisory_xact_lock keys: every write transaction of every bot on the database takes the first;
# the second is for the active bot among several (the standby of issue 11 waits for it).
WRITER_LOCK = 0x6D72625F77726974  # "mrb_writ"
ACTIVE_LOCK = 0x6D72625F61637476  # "mrb_actv"

# --- fencing the active bot (issue 11 review, breaks 1 and 2) ---
# Every connection of this process names it (application_name), so the bot that takes over can
# end the old active's sessions (bot.ha) and an operator can tell the bots' sessions apart.
INSTANCE = f"{os.getpid()}-{secrets.token_hex(4)}"
APPLICATION_NAME = f"rulesbot {INSTANCE}"
# The leadership epoch, a fencing token: each takeover adds one (bot.leader.claim_epoch) under the
# writer lock, and each write transaction of an active checks, under the same lock, that it is
# still its own. A process that lost the lock without noticing (frozen, its loop blocked) can then
# commit nothing after the new active's first step: its next BEGIN is refused.
EPOCH_KEY = "ha.epoch"
_NOT_ACTIVE = "RB001"  # the SQLSTATE the fence raises (class RB: none of PostgreSQL's own)
# A session idle inside a transaction longer than this is ended by the server, its locks (the
# writer lock) with it: a bot frozen mid-transaction must not hold every other writer back. The
# bot's transactions wait for nothing but their own statements (a unit of work that reads Matrix
# first opens its transaction only at its first write: Database.transaction(deferred=True)); a
# reading one (migrate-db's, audit verify's cursor) waits for its own batch between fetches. It
# is the backstop: the bot that takes over ends the old active's sessions at once (bot.ha).
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
# A writer waits this long for the writer lock (or any lock), then the store is unavailable for
# now (55P03) and the work is tried again, rather than waiting for ever behind a stuck holder.
LOCK_TIMEOUT_MS = 20_000

# SQLSTATE classes of a server that cannot do it now but may later: 08 connection, 53 resources
# (disk full, too many connections), 57 operator intervention (shutdown, cancel), 58 system (I/O),
# 40 transaction rollback (deadlock), 55P03 lock not available.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40")


class StoreUnavailable(sqlite3.OperationalError):
    """PostgreSQL cannot commit now (the server is gone, shutting down, full): try again later."""

    store_unavailable = True


class NotActive(StoreUnavailable):
    """This process is no longer the active bot: another took over, and its writes are refused.

    A kind of unavailable store, so a sync batch or an effect in hand fails and is left to the new
    active, as after a lost connection."""


class PgIntegrityError(sqlite3.IntegrityError):
    """A constraint said no (a unique key, a check): what SQLite raises as IntegrityError."""


class PgDataError(sqlite3.DataError):
    """A value the column cannot hold (SQLSTATE class 22): what SQLite raises as DataError."""


class PgCursor:
    """The result of one statement, read like an aiosqlite cursor."""

    def __init__(self, rows: Sequence[asyncpg.Record], rowcount: int, lastrowid: int | None,
                 columns: Sequence[str]) -> None:
        self._rows = list(rows)
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.description = tuple((name, None, None, None, None, None, None) for name in columns)

    async def fetchone(self) -> asyncpg.Record | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[asyncpg.Record]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __aiter__(self) -> "PgCursor":
        return self

    async def __anext__(self) -> asyncpg.Record:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def close(self) -> None:
        self._rows = []

    async def __aenter__(self) -> "PgCursor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Execution:
    """What ``execute`` returns: awaited it is the cursor, and ``async with`` works as on aiosqlite."""

    def __init__(self, conn: "PgConnection", sql: str, params: Sequence[Any]) -> None:
        self._conn, self._sql, self._params = conn, sql, params
        self._cursor: PgCursor | None = None

    def __await__(self):
        return self._conn._run(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        if self._sql.lstrip()[:6].upper() == "SELECT":
            self._cursor = _DeferredCursor(self._conn, self._sql, self._params,
                                           await self._conn._columns(self._sql))
        else:
            self._cursor = await self._conn._run(self._sql, self._params)
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class _DeferredCursor(PgCursor):
    """A SELECT opened with ``async with``: read whole by ``fetchone``/``fetchall``, or row by row
    by ``async for`` through a server-side cursor, so ``audit verify`` walks a chain of millions of
    rows in constant memory (aiosqlite steps through its rows the same way)."""

    def __init__(self, conn: "PgConnection", sql: str, params: Sequence[Any], columns: Sequence[str]) -> None:
        super().__init__([], -1, None, columns)
        self._conn, self._sql, self._params = conn, sql, params
        self._loaded = False
        self._stream: AsyncIterator[asyncpg.Record] | None = None

    async def _load(self) -> None:
        if not self._loaded:
            self._rows = (await self._conn._run(self._sql, self._params))._rows
            self._loaded = True

    async def fetchone(self) -> asyncpg.Record | None:
        await self._load()
        return await super().fetchone()

    async def fetchall(self) -> list[asyncpg.Record]:
        await self._load()
        return await super().fetchall()

    def __aiter__(self) -> "_DeferredCursor":
        if not self._loaded and self._stream is None:
            self._stream = self._conn._stream(self._sql, self._params)
        return self

    async def __anext__(self) -> asyncpg.Record:
        if self._stream is None:
            return await super().__anext__()
        return await self._stream.__anext__()

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # type: ignore[attr-defined]
        await super().close()


_DDL = ("CREATE", "ALTER", "DROP", "DO", "COMMENT", "TRUNCATE")
_TRANSACTION_CONTROL = ("COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK TO", "END")


class PgConnection:
    """One asyncpg connection spoken to like an aiosqlite one; statements one at a time (asyncpg
    refuses two at once on a connection, aiosqlite queued them on its thread)."""

    def __init__(self, dsn: str, raw: asyncpg.Connection) -> None:
        self._dsn = dsn
        self._raw = raw
        self._lock = asyncio.Lock()
        self._prepared: dict[str, asyncpg.prepared_stmt.PreparedStatement] = {}
        self._open = False  # a BEGIN without its COMMIT or ROLLBACK yet (the server may have gone)
        # The leadership epoch this connection writes in (bot.ha sets it on the active's store);
        # None: no fence (a single bot, migrate-db, the command line).
        self.epoch: int | None = None
        self.translator = Translator(Schema({}, frozenset()))

    @classmethod
    async def connect(cls, dsn: str) -> "PgConnection":
        return cls(dsn, await _connect(dsn))

    @property
    def raw(self) -> asyncpg.Connection:
        return self._raw

    @property
    def in_transaction(self) -> bool:
        # A lost connection's transaction is still ours to end (ROLLBACK) before the next one.
        return self._open if self._raw.is_closed() else self._raw.is_in_transaction()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Execution:
        return _Execution(self, sql, params)

    async def close(self) -> None:
        await self._raw.close()

    async def _run(self, sql: str, params: Sequence[Any]) -> PgCursor:
        async with self._lock:
            word = sql.lstrip()[:12].upper()
            if self._raw.is_closed():
                if word.startswith("ROLLBACK"):
                    # The server rolled back whatever the lost connection had open.
                    self._open = self._open and word.startswith("ROLLBACK TO")
                    return PgCursor([], -1, None, ())
                if self._open or word.startswith(_TRANSACTION_CONTROL):
                    raise StoreUnavailable("the connection to PostgreSQL was lost inside a transaction")
                await self._reconnect()
            if word.startswith("BEGIN"):
                self._open = True
            elif word.startswith(("COMMIT", "END")) or (word.startswith("ROLLBACK") and not word.startswith("ROLLBACK TO")):
                self._open = False
            with self._sqlite_errors():
                return await self._statement(sql, word, params)

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """asyncpg's errors in the shape the callers catch (see the module's docstring)."""
        try:
            yield
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise PgIntegrityError(str(exc)) from exc
        except asyncpg.DataError as exc:
            # Class 22 (a value the column cannot hold): SQLite's DataError, a bad value not an
            # outage (review 11, break 5).
            raise PgDataError(f"{type(exc).__name__}: {exc}") from exc
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            if self._raw.is_closed() or _sqlstate(exc).startswith(_UNAVAILABLE_CLASSES) or \
                    _sqlstate(exc) == "55P03" or isinstance(exc, (OSError, asyncio.TimeoutError)):
                raise StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}") from exc
            raise

    async def _statement(self, sql: str, word: str, params: Sequence[Any]) -> PgCursor:
        if word.startswith("BEGIN"):
            try:
                return await self._begin()
            except BaseException:
                # The BEGIN went through and the lock wait (or the fence) did not: the caller never
                # saw a transaction open, so it will not end it, and every later statement on this
                # connection would fail as "current transaction is aborted". End it here.
                await self._abandon_begin()
                raise
        return await self._query(sql, word, params)

    async def _abandon_begin(self) -> None:
        self._open = False
        if self._raw.is_closed():
            return
        # Unconditionally: after a timeout asyncpg may not know yet what the cancelled BEGIN left
        # open, and a ROLLBACK with nothing open is only a warning.
        try:
            await self._raw.execute("ROLLBACK")
        except Exception:  # the connection is past saving: the next statement reconnects
            log.warning("could not roll back a transaction whose BEGIN failed; closing the connection")
            self._raw.terminate()

    async def _begin(self) -> PgCursor:
        # One writer at a time, across processes, in commit order (see the module's docstring).
        begin = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
        if self.epoch is None:
            await self._raw.execute(begin)
            return PgCursor([], -1, None, ())
        # The fence: a statement of its own after the lock, so that under READ COMMITTED it
        # reads the epoch as the last takeover (also under the lock) committed it.
        try:
            await self._raw.execute(f"{begin}; {_fence_check(self.epoch)}")
        except asyncpg.PostgresError as exc:
            if _sqlstate(exc) != _NOT_ACTIVE:
                raise
            await self._raw.execute("ROLLBACK")
            self._open = False
            raise NotActive(f"this process is no longer the active bot, its write is refused: {exc}") from exc
        return PgCursor([], -1, None, ())

    async def _query(self, sql: str, word: str, params: Sequence[Any]) -> PgCursor:
        if word.startswith(("ROLLBACK", *_TRANSACTION_CONTROL)) or word.startswith(_DDL):
            if word.startswith(_DDL):
                self._prepared.clear()  # a plan may depend on the table changed
            await self._raw.execute(sql)
            return PgCursor([], -1, None, ())
        refuse_nul(params)  # as the SQLite backend does (bot/store/db.py), before the server says 22021
        translated = self.translator.translate(sql)
        statement = await self._prepare(translated.sql)
        if translated.names:
            params = [params[name] for name in translated.names]  # type: ignore[call-overload]
        if translated.before is not None:
            await (await self._prepare(translated.before)).fetch(*_arguments([params[i] for i in translated.before_params]))
        rows = await statement.fetch(*_arguments(params))
        status = statement.get_statusmsg() or ""
        last = status.rsplit(" ", 1)[-1]
        rowcount = int(last) if last.isdigit() and not status.startswith("SELECT") else -1
        lastrowid = rows[0][0] if translated.returns_id and rows else None
        return PgCursor([] if translated.returns_id else rows, rowcount, lastrowid,
                        [attribute.name for attribute in statement.get_attributes()])

    async def _columns(self, sql: str) -> list[str]:
        async with self._lock:
            if self._raw.is_closed() and not self._open:
                await self._reconnect()
            with self._sqlite_errors():
                statement = await self._prepare(self.translator.translate(sql).sql)
            return [attribute.name for attribute in statement.get_attributes()]

    async def _stream(self, sql: str, params: Sequence[Any], batch: int = 2_000) -> AsyncIterator[asyncpg.Record]:
        """The rows of a SELECT in batches of a server-side cursor; the connection is this
        iteration's until it ends (a cursor lives in a transaction: a read-only one if none is open)."""
        async with self._lock:
            translated = self.translator.translate(sql)
            if translated.names:
                params = [params[name] for name in translated.names]  # type: ignore[call-overload]
            with self._sqlite_errors():
                statement = await self._prepare(translated.sql)
                if self._raw.is_in_transaction():
                    async for row in statement.cursor(*_arguments(params), prefetch=batch):
                        yield row
                else:
                    async with self._raw.transaction(readonly=True):
                        async for row in statement.cursor(*_arguments(params), prefetch=batch):
                            yield row

    async def _prepare(self, sql: str) -> asyncpg.prepared_stmt.PreparedStatement:
        statement = self._prepared.get(sql)
        if statement is None:
            statement = self._prepared[sql] = await self._raw.prepare(sql)
        return statement

    async def _reconnect(self) -> None:
        log.warning("reconnecting to PostgreSQL")
        self._prepared.clear()
        try:
            self._raw = await _connect(self._dsn)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def load_schema(self) -> None:
        """Read the primary keys and identity columns the translator needs (after migrating)."""
        rows = await self._raw.fetch(
            "SELECT c.relname AS table_name, i.indexrelid, i.indisprimary, a.attname AS column_name,"
            " a.attidentity <> '' AS is_identity"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indisunique AND i.indpred IS NULL AND c.relnamespace = to_regnamespace(current_schema())::oid"
            " ORDER BY c.relname, i.indexrelid, array_position(i.indkey::int2[], a.attnum)")
        primary: dict[str, list[str]] = {}
        unique: dict[str, dict[int, list[str]]] = {}
        identity = set()
        for row in rows:
            if row["indisprimary"]:
                primary.setdefault(row["table_name"], []).append(row["column_name"])
                if row["is_identity"] and row["column_name"] == "id":
                    identity.add(row["table_name"])
            else:
                unique.setdefault(row["table_name"], {}).setdefault(row["indexrelid"], []).append(row["column_name"])
        self.translator = Translator(Schema(
            {t: tuple(c) for t, c in primary.items()}, frozenset(identity),
            {t: tuple(tuple(c) for c in keys.values()) for t, keys in unique.items()}))
        self._prepared.clear()

    async def sync_identities(self) -> None:
        """Move each identity's sequence past the ids rows were given explicitly (a migration's
        table rebuild, ``migrate-db``): PostgreSQL does not, SQLite's rowid needs no sequence."""
        for table in sorted(self.translator.schema.identity_tables):
            await self._raw.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}")


# Seconds a statement may take before the store counts as unavailable: a server cut off by the
# network would otherwise hold the sync loop forever (no statement of the bot comes near it).
COMMAND_TIMEOUT = 60.0


SESSION_SETTINGS = {
    "application_name": APPLICATION_NAME,
    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
    "lock_timeout": str(LOCK_TIMEOUT_MS),
}


async def _connect(dsn: str) -> asyncpg.Connection:
    # No statement cache of asyncpg's own: PgConnection keeps its prepared statements itself.
    conn = await asyncpg.connect(dsn, timeout=10, statement_cache_size=0, command_timeout=COMMAND_TIMEOUT,
                                 server_settings=SESSION_SETTINGS)
    # SQLite has no booleans: `x IS NOT NULL` is 1 or 0 there, and an export must not say True.
    await conn.set_type_codec("bool", schema="pg_catalog", format="text",
                              encoder=lambda value: "t" if value else "f", decoder=lambda text: int(text == "t"))
    return conn


def _fence_check(epoch: int) -> str:
    return (f"DO $$ BEGIN IF (SELECT value FROM kv WHERE key = '{EPOCH_KEY}') IS DISTINCT FROM '{int(epoch)}' THEN "
            f"RAISE EXCEPTION USING ERRCODE = '{_NOT_ACTIVE}', MESSAGE = 'leadership epoch {int(epoch)} is over: "
            f"another bot process took over'; END IF; END $$")


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def _arguments(params: Sequence[Any]) -> list[Any]:
    # SQLite stores True as 1; asyncpg wants an int for a BIGINT column.
    return [int(p) if isinstance(p, bool) else p for p in params]


class PostgresDatabase(Database):
    """``Database`` with a ``PgConnection``: the transactions, savepoints and callbacks are the
    same code; only opening, the schema version and the migrations' DDL differ."""

    dialect = "postgresql"

    @classmethod
    async def connect(cls, dsn: str, audit_head_file: str | Path | None = None) -> "PostgresDatabase":
        try:
            conn = await PgConnection.connect(dsn)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
        head_file = audit.HeadFile(audit_head_file) if audit_head_file is not None else None
        return await cls._migrated(conn, head_file)  # type: ignore[arg-type, return-value]

    async def schema_version(self) -> int:
        raw = self.conn.raw
        if await raw.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        return int(await raw.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def _migrate(self) -> None:
        before = await self.schema_version()
        await super()._migrate()
        await self.conn.load_schema()
        if before != await self.schema_version():
            await self.conn.sync_identities()

    def _migration_statements(self, migration: Migration) -> list[str]:
        return _split_sql(migration.postgres if migration.postgres is not None else translate_ddl(migration.sql))

    async def _set_schema_version(self, conn: Any, version: int) -> None:
        # PRAGMA user_version's place: one row, written in the migration's own transaction.
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        await conn.raw.execute("DELETE FROM schema_version")
        await conn.raw.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def files_folder(self) -> Path | None:
        """PostgreSQL's files are the server's: files beside the database go beside the audit head file
        (by default ``<database.path>.audit-head``, next to the config file)."""
        return None if self.head_file is None else self.head_file.path.parent

    async def table_names(self) -> list[str]:
        rows = await self.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_type = 'BASE TABLE' AND table_name <> 'schema_version' ORDER BY table_name")
        return [r[0] for r in rows]

    async def try_advisory_lock(self) -> bool:
        """Take the active bot's session lock if no other process holds it (held until close)."""
        return bool(await self.conn.raw.fetchval("SELECT pg_try_advisory_lock($1)", ACTIVE_LOCK))


async def iterate(conn: PgConnection, sql: str, batch: int = 10_000) -> AsyncIterator[asyncpg.Record]:
    """Rows of a large SELECT in batches through a server-side cursor (``migrate-db``)."""
    async with conn.raw.transaction(readonly=True):
        async for row in conn.raw.cursor(sql, prefetch=batch):
            yield row
