from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.store import Store
from tests.tamper import drop_append_only


class DatabaseUnderTest:
    """Where a test's records live, on either backend: the config's ``database`` section, a store
    opened on it, and raw SQL for what only a test does (forging rows past the append-only guard)."""

    def __init__(self, backend: str, tmp_path: Path, dsn: str | None) -> None:
        self.backend, self.dsn = backend, dsn
        self.path = tmp_path / "bot.db"
        self.head_file = tmp_path / "bot.db.audit-head"  # the default for both (bot.config)

    @property
    def location(self) -> str | Path:
        return self.dsn if self.dsn is not None else self.path

    @property
    def config(self) -> dict[str, Any]:
        """The config's ``database`` section, for a config file beside the database file."""
        return {"url": self.dsn} if self.dsn is not None else {"path": str(self.path)}

    @property
    def settings(self) -> dict[str, Any]:
        """``Settings(**database.settings)`` built without a config file: where a config file would
        put the files that go beside the database (the audit head, the identity key) on PostgreSQL,
        rather than into the working directory."""
        return {"database": self.config, "records": {"audit_head_file": str(self.head_file)},
                "identity": {"key_file": str(self.path.parent / "identity.key")}}

    async def open(self, head_file: Path | None = None) -> Store:
        return await Store.open(self.location, head_file or self.head_file)

    async def forge(self, *statements: str) -> None:
        """Run ``statements`` with the append-only guard off, as whoever owns the database could."""
        store = await self.open()
        try:
            await drop_append_only(store)
            for statement in statements:
                if self.dsn is not None:
                    await store.db.conn.raw.execute(statement)
                else:
                    await store.db.conn.execute(statement)
                    await store.db.conn.commit()
        finally:
            await store.close()

    def forge_now(self, *statements: str) -> None:
        """``forge`` from a test that is not a coroutine (one that runs the command line)."""
        asyncio.run(self.forge(*statements))


@pytest.fixture
def database(tmp_path, backend, request) -> DatabaseUnderTest:
    """An empty place for the bot's records; ``backend`` as for ``store``."""
    dsn = None
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        dsn = _run(cluster.fresh())
    return DatabaseUnderTest(backend, tmp_path, dsn)


def _run(coroutine):
    """Await from a fixture that may be set up inside a running event loop (an async test's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


@pytest.fixture
async def store(database):
    """A migrated store, closed even when the test fails: an open aiosqlite connection's worker
    thread would keep the test process from exiting. Each test that takes it runs twice
    (tests/conftest.py): ``backend`` "sqlite" (a temp file) and "postgres" (a fresh copy of the
    migrated template in the session's cluster, tests/postgres.py), unless marked ``sqlite_only``."""
    opened = await database.open()
    yield opened
    await opened.close()
