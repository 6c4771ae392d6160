import pytest

from bot.store import Store


@pytest.fixture
async def store(tmp_path, backend, request):
    """A migrated store, closed even when the test fails: an open aiosqlite connection's worker
    thread would keep the test process from exiting. ``backend`` is "sqlite" (a temp file) unless
    the module is marked ``both_backends``: then also "postgres" (a fresh copy of the migrated
    template in the session's cluster, tests/postgres.py)."""
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        opened = await Store.open(await cluster.fresh(), tmp_path / "bot.db.audit-head")
    else:
        opened = await Store.open(tmp_path / "bot.db")
    yield opened
    await opened.close()
