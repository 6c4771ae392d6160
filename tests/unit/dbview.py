"""Everything a store holds, read the same way on SQLite and on PostgreSQL: the tests that show a
command changed nothing (a dry run, a refusal) compare these before and after."""

from __future__ import annotations

from typing import Any

_PG_SCHEMA = (
    "SELECT 'column', table_name || '.' || column_name, data_type || ' ' || is_nullable || ' '"
    " || COALESCE(column_default, '') FROM information_schema.columns WHERE table_schema = current_schema()"
    " UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
    " UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
    " ORDER BY 1, 2")


async def rows(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the store, as dicts, in a stable order."""
    tables = {}
    for name in await db.table_names():
        fetched = await db.fetchall(f'SELECT * FROM "{name}" ORDER BY 1')
        tables[name] = [dict(zip(row.keys(), tuple(row))) for row in fetched]
    return tables


async def schema(db: Any) -> list[tuple]:
    """The tables, columns, indexes and triggers: a command must not change these either."""
    sql = "SELECT type, name, sql FROM sqlite_master ORDER BY name" if db.dialect == "sqlite" else _PG_SCHEMA
    return [tuple(r) for r in await db.fetchall(sql)]


async def texts_holding(db: Any, needle: str) -> list[str]:
    """The tables one of whose text values holds ``needle`` (once per value)."""
    hits = []
    for name, table in (await rows(db)).items():
        hits += [name for row in table for value in row.values() if isinstance(value, str) and needle in value]
    return hits
