"""Store: migrations on a real temp file, acceptances, and the audit hash chain."""

import sqlite3

import pytest

from bot.store import Acceptance, DatabaseTooNew, Store
from bot.store.audit import append, verify
from bot.store.migrations import LATEST_VERSION


def _acceptance(user="@u:hs", event="$e1", version="1", at=1000):
    return Acceptance(user, version, "ab" * 32, at, event, "!dm:hs", "command")


async def test_fresh_database_is_migrated_to_the_latest_version(store):
    assert await store.db.schema_version() == LATEST_VERSION
    tables = {r[0] for r in await store.db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"kv", "agreement_acceptances", "agreement_prompts", "dm_rooms", "room_mutes", "audit_log"} <= tables
    mode = await store.db.fetchone("PRAGMA journal_mode")
    assert mode[0] == "wal"


async def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path):
    store = await Store.open(tmp_path / "bot.db")
    await store.put("sync_token", "s1")
    await store.close()
    store = await Store.open(tmp_path / "bot.db")
    assert await store.get("sync_token") == "s1"
    await store.close()


async def test_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(DatabaseTooNew, match="upgrade the bot"):
        await Store.open(path)


async def test_failed_transaction_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError):
        async with store.db.transaction() as conn:
            await conn.execute("INSERT INTO kv (key, value) VALUES ('a', 'b')")
            raise RuntimeError("crash mid-work")
    assert await store.get("a") is None


async def test_acceptance_is_recorded_once_with_its_audit_row(store):
    assert await store.agreements.record_acceptance(_acceptance())
    # The same event replayed after a crash: no second row, no second audit record.
    assert not await store.agreements.record_acceptance(_acceptance())
    latest = await store.agreements.latest_for("@u:hs")
    assert (latest.version, latest.event_id, latest.accepted_at) == ("1", "$e1", 1000)
    rows = await store.db.fetchall("SELECT actor, action, target FROM audit_log")
    assert [tuple(r) for r in rows] == [("@u:hs", "agreement.accept", "@u:hs")]


async def test_latest_versions_and_who_to_ask_again(store):
    await store.agreements.record_acceptance(_acceptance("@a:hs", "$1", "1"))
    await store.agreements.record_acceptance(_acceptance("@a:hs", "$2", "2", at=2000))
    await store.agreements.record_acceptance(_acceptance("@b:hs", "$3", "1"))
    assert await store.agreements.latest_versions() == {"@a:hs": "2", "@b:hs": "1"}
    assert await store.agreements.users_to_ask_again("2") == ["@b:hs"]


async def _chain(store, rows=5):
    for i in range(rows):
        async with store.db.transaction() as conn:
            await append(conn, now_ms=i, actor="@m:hs", action="test", target=f"@t{i}:hs", details={"n": i, "text": "中文"})


async def test_intact_chain_verifies(store):
    await _chain(store)
    result = await verify(store.db.conn)
    assert result.ok and result.rows_checked == 5


@pytest.mark.parametrize(
    "tamper, bad_row",
    [
        ("UPDATE audit_log SET details = '{\"n\":99}' WHERE id = 3", 3),
        ("DELETE FROM audit_log WHERE id = 2", 2),
        ("UPDATE audit_log SET id = id + 1 WHERE id >= 4", 4),
    ],
    ids=["edited", "deleted", "gap"],
)
async def test_tampering_is_detected_at_the_row(store, tamper, bad_row):
    await _chain(store)
    # Work on the highest ids first so the id shift does not collide.
    async with store.db.transaction() as conn:
        if "id + 1" in tamper:
            for row_id in (5, 4):
                await conn.execute("UPDATE audit_log SET id = id + 1 WHERE id = ?", (row_id,))
        else:
            await conn.execute(tamper)
    result = await verify(store.db.conn)
    assert not result.ok and result.bad_row == bad_row


async def test_inserted_row_is_detected(store):
    await _chain(store)
    async with store.db.transaction() as conn:
        row = await (await conn.execute("SELECT * FROM audit_log WHERE id = 5")).fetchone()
        await conn.execute("DELETE FROM audit_log WHERE id = 5")
        await conn.execute(
            "INSERT INTO audit_log VALUES (5, 4, '@evil:hs', 'forged', '@x:hs', '{}', ?, ?)", (row["prev_hash"], "f" * 64)
        )
    result = await verify(store.db.conn)
    assert not result.ok and result.bad_row == 5 and "altered" in result.problem
