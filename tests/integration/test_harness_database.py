"""The harness's way into the bot's database (issue 11): the integration tests read it, change it as
its operator could, and look for secrets in it through harness.BotProcess, in the SQLite dialect
the store speaks, whichever backend the bot runs on. No homeserver: a migrated database alone."""

from __future__ import annotations

import sqlite3

import pytest

from bot.store import Store
from tests.integration.harness import BotProcess

pytestmark = pytest.mark.integration

ACCEPT = ("INSERT INTO agreement_acceptances (user_id, version, text_sha256, accepted_at, event_id, room_id, method)"
          " VALUES (?, ?, ?, ?, ?, ?, ?)")


@pytest.fixture
async def bot(bot_database, tmp_path) -> BotProcess:
    """A bot's config and folder, its database migrated as a first start would (no process runs)."""
    store = await Store.open(bot_database.get("url") or bot_database["path"], tmp_path / "bot.db.audit-head")
    await store.close()
    return BotProcess({"database": dict(bot_database)}, tmp_path)


async def test_rows_and_changes_speak_the_stores_sqlite_dialect_on_either_backend(bot, bot_backend):
    assert bot.backend == bot_backend
    await bot.change(ACCEPT, ("@ann:hs", "1", "a" * 64, 1000, "$e1", "!dm", "command"))
    assert await bot.rows("SELECT user_id, length(text_sha256), accepted_at > 0 FROM agreement_acceptances"
                          " WHERE version = ?", ("1",)) == [("@ann:hs", 64, 1)]
    assert await bot.value("SELECT COUNT(*) FROM agreement_acceptances WHERE user_id = ?", ("@nobody:hs",)) == 0
    assert await bot.value("SELECT method FROM agreement_acceptances WHERE user_id = ?", ("@nobody:hs",)) is None


async def test_a_change_past_the_append_only_triggers_puts_them_back(bot):
    await bot.change(ACCEPT, ("@ann:hs", "1", "a" * 64, 1000, "$e1", "!dm", "command"))
    # Refused as the bot's own write would be, and nothing changed.
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await bot.change("UPDATE agreement_acceptances SET version = ?", ("2",))
    assert await bot.rows("SELECT version FROM agreement_acceptances") == [("1",)]

    await bot.change("UPDATE agreement_acceptances SET version = ?", ("2",), past_append_only=True)
    assert await bot.rows("SELECT version FROM agreement_acceptances") == [("2",)]
    # The triggers are back for whatever comes next (the bot restarted on this database, say).
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await bot.change("DELETE FROM agreement_acceptances")
    assert await bot.value("SELECT COUNT(*) FROM agreement_acceptances") == 1


async def test_a_change_that_fails_changes_nothing(bot):
    with pytest.raises(sqlite3.IntegrityError):
        await bot.change(ACCEPT, ("@ann:hs", "1", "a" * 64, 1000, "$e1", "!dm", "by pigeon"))  # not a method
    assert await bot.value("SELECT COUNT(*) FROM agreement_acceptances") == 0
    await bot.change(ACCEPT, ("@ann:hs", "1", "a" * 64, 1000, "$e1", "!dm", "command"))  # the connection was let go


async def test_texts_holding_finds_a_value_in_any_table_and_only_where_it_is(bot):
    await bot.change("INSERT INTO kv (key, value) VALUES (?, ?)", ("probe", "xx-needle-42-yy"))
    await bot.change(ACCEPT, ("@needle-42:hs", "1", "a" * 64, 1000, "$e1", "!dm", "command"))
    assert sorted(await bot.texts_holding("needle-42")) == ["agreement_acceptances", "kv"]
    assert await bot.texts_holding("needle-43") == []
