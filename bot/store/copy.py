"""``python -m bot migrate-db``: every record from one database into an empty one (SQLite →
PostgreSQL, or back), then proof that nothing changed on the way.

Both ends are opened (and so migrated) by the same code, so they have the same tables and
columns. The copy is one transaction on the target, tables parents first (foreign keys), rows in
primary-key order; on PostgreSQL it holds the writer lock, so no bot writes there meanwhile. Before
it commits, the audit chain is verified on the target, row by row and against the heads kept of
the source (its own head record, its head file, the source's last row), and every table's row
count is compared: a copy that does not match is rolled back. A target that holds any row is refused: copying onto a live database would
interleave two histories, and emptying one is not a side effect a copy tool should have.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from bot.store import audit
from bot.store.db import Database, is_postgres_url, sqlite_path


class CopyRefused(Exception):
    """The copy was not started: the message says why (nothing was written)."""


@dataclass
class CopySummary:
    rows: dict[str, int] = field(default_factory=dict)
    verified: audit.VerifyResult | None = None
    heads_checked: int = 0


async def copy_database(source: str, target: str, *, batch: int = 5_000) -> CopySummary:
    """Copy every table of ``source`` into the empty ``target`` and verify the copy."""
    if not is_postgres_url(source) and not sqlite_path(source).is_file():
        raise CopyRefused(f"the source database {sqlite_path(source)} does not exist")
    src = await Database.open(source, _source_head_file(source))
    try:
        dst = await Database.open(target)
        try:
            return await _copy(src, dst, batch)
        finally:
            await dst.close()
    finally:
        await src.close()


def _source_head_file(source: str) -> Path | None:
    return None if is_postgres_url(source) else audit.default_head_file(sqlite_path(source))


async def _copy(src: Database, dst: Database, batch: int) -> CopySummary:
    tables = await _tables_parents_first(src)
    for table in tables:
        if await dst.fetchone(f"SELECT 1 FROM {table} LIMIT 1") is not None:
            raise CopyRefused(f"the target is not empty (table {table} has rows): copy into a new, empty database")
    summary = CopySummary()
    async with dst.transaction() as conn:
        for table in tables:
            columns, key = await _columns(src, table)
            select = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}"
            count = 0
            async for rows in _batches(src, select, batch):
                _refuse_nul(table, columns, key, rows)
                await _insert(dst, conn, table, columns, rows)
                count += len(rows)
            summary.rows[table] = count
        if dst.dialect == "postgresql":
            await conn.sync_identities()  # type: ignore[attr-defined]
        # Checked before the commit: a copy that does not match is rolled back, not left behind.
        await _check(src, dst, tables, summary)
    return summary


def _refuse_nul(table: str, columns: list[str], key: list[str], rows: list[Any]) -> None:
    """A record holding U+0000 in a text (SQLite took it before the store refused it) cannot go to
    PostgreSQL: the copy is refused naming the row, so the operator can mend it and run again
    (review 11, break 6; COPY otherwise failed with a traceback naming nothing)."""
    for row in rows:
        for column, value in zip(columns, row):
            if isinstance(value, str) and "\x00" in value:
                where = ", ".join(f"{name} = {_short(row[columns.index(name)])}" for name in key)
                raise CopyRefused(f"table {table}, row {where}: column {column} holds U+0000 (NUL), which"
                                  " PostgreSQL cannot store; remove it from that row in the source and copy again")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def _check(src: Database, dst: Database, tables: list[str], summary: CopySummary) -> None:
    for table in tables:
        (source_count,) = await src.fetchone(f"SELECT COUNT(*) FROM {table}")  # type: ignore[misc]
        (target_count,) = await dst.fetchone(f"SELECT COUNT(*) FROM {table}")  # type: ignore[misc]
        if source_count != target_count or target_count != summary.rows[table]:
            raise CopyRefused(f"table {table}: {source_count} rows in the source, {target_count} in the target")
    heads: list[tuple[str, audit.Head]] = []
    kept = await audit.stored_head(src.conn)
    if kept is not None:
        heads.append(("the source's head record", kept))
    if src.head_file is not None:
        heads += [(f"the source's head file {src.head_file.path}", h) for h in await asyncio.to_thread(src.head_file.read) or []]
    last = await src.fetchone("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
    if last is not None:
        heads.append(("the source's last row", audit.Head(int(last[0]), str(last[1]))))
    summary.heads_checked = len(heads)
    summary.verified = await audit.verify(dst.conn, heads)
    if not summary.verified.ok:
        raise CopyRefused(f"the audit chain on the target is broken at row {summary.verified.bad_row}:"
                          f" {summary.verified.problem}")


async def _tables_parents_first(db: Database) -> list[str]:
    """The store's tables (not the schema version's), each after the tables its foreign keys name."""
    names = await db.table_names()
    if db.dialect == "sqlite":
        links = [(r[0], r[1]) for r in await db.fetchall(
            "SELECT m.name, p.\"table\" FROM sqlite_master m, pragma_foreign_key_list(m.name) p WHERE m.type = 'table'")]
    else:
        links = [(r[0], r[1]) for r in await db.fetchall(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.connamespace = to_regnamespace(current_schema())::oid")]
    parents: dict[str, set[str]] = {name: set() for name in names}
    for child, parent in links:
        if child in parents and parent != child:
            parents[child].add(parent)
    ordered: list[str] = []
    while parents:
        ready = sorted(t for t, needs in parents.items() if not needs - set(ordered))
        if not ready:
            raise CopyRefused(f"foreign keys between {', '.join(sorted(parents))} form a cycle")
        ordered += ready
        for table in ready:
            del parents[table]
    return ordered


async def _columns(db: Database, table: str) -> tuple[list[str], list[str]]:
    """A table's columns in their order, and its primary key (all columns if it has none)."""
    if db.dialect == "sqlite":
        rows = await db.fetchall(f"SELECT name, pk FROM pragma_table_info('{table}') ORDER BY cid")
        columns = [r[0] for r in rows]
        key = [r[0] for r in sorted((r for r in rows if r[1]), key=lambda r: r[1])]
    else:
        rows = await db.fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position", (table,))
        columns = [r[0] for r in rows]
        key = list(db.conn.translator.schema.primary_keys.get(table, ()))  # type: ignore[attr-defined]
    return columns, key or columns


async def _batches(db: Database, sql: str, size: int) -> AsyncIterator[list[Any]]:
    if db.dialect == "sqlite":
        async with db.conn.execute(sql) as cur:
            while rows := await cur.fetchmany(size):
                yield [tuple(r) for r in rows]
        return
    from bot.store.pg import iterate

    rows = []
    async for row in iterate(db.conn, sql, size):  # type: ignore[arg-type]
        rows.append(tuple(row))
        if len(rows) >= size:
            yield rows
            rows = []
    if rows:
        yield rows


async def _insert(db: Database, conn: Any, table: str, columns: list[str], rows: list[Any]) -> None:
    if db.dialect == "postgresql":
        # COPY: a million audit rows in seconds, not one round trip each.
        await conn.raw.copy_records_to_table(table, records=rows, columns=columns)
    else:
        marks = ", ".join("?" for _ in columns)
        await conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def shown(url: str) -> str:
    """A database URL fit to print: its password masked."""
    if not is_postgres_url(url):
        return url
    from urllib.parse import urlsplit, urlunsplit

    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    return urlunsplit(parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)))


def _masked(message: str, *urls: str) -> str:
    """``message`` with every password of ``urls`` (and each piece of one, cut at a URL's
    delimiters as a parser may have cut it) replaced by ***."""
    from urllib.parse import unquote, urlsplit

    secrets: set[str] = set()
    for url in urls:
        if not is_postgres_url(url):
            continue
        userinfo = url.split("://", 1)[1].rpartition("@")[0]
        password = userinfo.partition(":")[2]
        for text in (password, unquote(password)):
            secrets.add(text)
            secrets.update(piece for piece in re.split(r"[#?/@:]", text) if len(piece) >= 3)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


async def migrate_db_command(source: str, target: str) -> int:
    """``python -m bot migrate-db --from … --to …``: copy, verify, print a summary; 1 if refused."""
    import sys

    from bot.config import database_url_problem
    from bot.store.db import store_unavailable

    for option, url in (("--from", source), ("--to", target)):
        # The check database.url gets: a URL asyncpg would choke on (a '#' in the password cut
        # the port short, and its int() error quoted the password) is refused before any connect.
        if is_postgres_url(url) and (problem := database_url_problem(url)) is not None:
            print(f"error: {option} {problem}", file=sys.stderr)
            return 1
    try:
        summary = await copy_database(source, target)
    except CopyRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # asyncpg's parse of a URL the check above let through
        print(f"error: a database URL was refused: {_masked(str(exc), source, target)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a database that cannot be reached: say which, without its password
        if not store_unavailable(exc):  # type: ignore[arg-type]
            raise
        print(f"error: {_masked(str(exc), source, target)}", file=sys.stderr)
        return 1
    width = max(map(len, summary.rows), default=0)
    print(f"copied {len(summary.rows)} tables from {shown(source)} to {shown(target)}:")
    for table, count in summary.rows.items():
        print(f"  {table:<{width}}  {count:>10,}")
    verified = summary.verified
    assert verified is not None
    head = verified.head.token() if verified.head is not None and verified.rows_checked else "(empty)"
    print(f"audit chain intact on the target: {verified.rows_checked:,} rows, head {head},"
          f" checked against {summary.heads_checked} head(s) kept of the source")
    print("row counts match the source in every table")
    return 0
