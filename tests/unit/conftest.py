import pytest

from bot.store import Store


@pytest.fixture
async def store(tmp_path):
    """A migrated store on a temp file, closed even when the test fails: an open aiosqlite
    connection's worker thread would keep the test process from exiting."""
    opened = await Store.open(tmp_path / "bot.db")
    yield opened
    await opened.close()
