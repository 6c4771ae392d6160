"""Forging a tampered record in a test: the append-only triggers (migration 10) are dropped first,
as whoever owns the database file or server could; what must then detect the forgery is the audit
chain, which is what these tests are about."""

from __future__ import annotations

import sqlite3

from bot.store.migrations import APPEND_ONLY_TABLES

_TRIGGERS = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%append_only%'"


def drop_append_only_sqlite(conn: sqlite3.Connection) -> None:
    """On a plain sqlite3 connection to the bot's file."""
    for (name,) in conn.execute(_TRIGGERS).fetchall():
        conn.execute(f"DROP TRIGGER {name}")


async def drop_append_only(store) -> None:
    """On an open store, either backend."""
    if store.db.dialect == "postgresql":
        for table in APPEND_ONLY_TABLES:
            await store.db.conn.raw.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        return
    for (name,) in await store.db.fetchall(_TRIGGERS):
        await store.db.conn.execute(f"DROP TRIGGER {name}")
