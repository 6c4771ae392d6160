"""Store: migrations on a real temp file, acceptances, and the audit hash chain."""

import os
import sqlite3
import stat

import pytest

from bot.store import Acceptance, DatabaseTooNew, Store
from bot.store.audit import Head, append, row_hash, stored_head, verify
from bot.store.migrations import LATEST_VERSION
from tests.tamper import drop_append_only

# The store's tests run on SQLite and on PostgreSQL (issue 11): tests/conftest.py.


def _acceptance(user="@u:hs", event="$e1", version="1", at=1000):
    return Acceptance(user, version, "ab" * 32, at, event, "!dm:hs", "command")


async def test_fresh_database_is_migrated_to_the_latest_version(store):
    assert await store.db.schema_version() == LATEST_VERSION
    if store.db.dialect == "sqlite":
        tables = {r[0] for r in await store.db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = await store.db.fetchone("PRAGMA journal_mode")
        assert mode[0] == "wal"
    else:
        tables = {r[0] for r in await store.db.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    assert {"kv", "agreement_acceptances", "agreement_prompts", "dm_rooms", "room_mutes", "audit_log"} <= tables


async def test_reopening_keeps_data_and_does_not_migrate_again(database):
    store = await database.open()
    await store.put("sync_token", "s1")
    await store.close()
    store = await database.open()
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
    await drop_append_only(store)
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
    await drop_append_only(store)
    async with store.db.transaction() as conn:
        row = await (await conn.execute("SELECT * FROM audit_log WHERE id = 5")).fetchone()
        await conn.execute("DELETE FROM audit_log WHERE id = 5")
        await conn.execute(
            "INSERT INTO audit_log VALUES (5, 4, '@evil:hs', 'forged', '@x:hs', '{}', ?, ?)", (row["prev_hash"], "f" * 64)
        )
    result = await verify(store.db.conn)
    assert not result.ok and result.bad_row == 5 and "altered" in result.problem


# -- the chain's head, kept outside the rows it covers ------------------------------------------

def _file_heads(store):
    return store.db.head_file.read()


async def test_each_commit_records_the_head_in_the_database_and_the_head_file(store, tmp_path):
    await _chain(store)
    last = await store.db.fetchone("SELECT id, hash, created_at FROM audit_log ORDER BY id DESC LIMIT 1")
    assert await stored_head(store.db.conn) == Head(5, last["hash"], last["created_at"])
    heads = _file_heads(store)
    assert store.db.head_file.path == tmp_path / "bot.db.audit-head"
    assert [h.row_id for h in heads] == [1, 2, 3, 4, 5] and heads[-1].hash == last["hash"]
    assert stat.S_IMODE(os.stat(store.db.head_file.path).st_mode) == 0o600


async def test_a_rolled_back_append_reaches_neither_the_head_record_nor_the_file(store):
    await _chain(store, rows=2)
    with pytest.raises(RuntimeError):
        async with store.db.transaction() as conn:
            await append(conn, now_ms=9, actor="@m:hs", action="test", target="@t:hs", details={})
            raise RuntimeError("crash before commit")
    await store.put("unrelated", "x")  # a later commit must not write the rolled-back head either
    assert (await stored_head(store.db.conn)).row_id == 2
    assert [h.row_id for h in _file_heads(store)] == [1, 2]
    result = await verify(store.db.conn, [("file", h) for h in _file_heads(store)])
    assert result.ok and result.rows_checked == 2


async def test_cutting_the_newest_rows_is_caught_by_the_head(store):
    await _chain(store)
    await drop_append_only(store)
    async with store.db.transaction() as conn:
        await conn.execute("DELETE FROM audit_log WHERE id >= 4")
    # What is left is a valid chain: that is why the head is kept apart from the rows.
    assert (await verify(store.db.conn)).ok
    result = await verify(store.db.conn, [("the head file", h) for h in _file_heads(store)])
    assert not result.ok and result.bad_row == 4 and result.rows_checked == 3
    assert result.problem == "rows 4..5 were removed (the head file records row 5)"
    # The database's own head record sees it too, until someone fixes that as well.
    result = await verify(store.db.conn, [("the database", await stored_head(store.db.conn))])
    assert not result.ok and result.problem.startswith("rows 4..5 were removed")


async def test_a_chain_rewritten_after_its_head_was_kept_is_caught(store):
    await _chain(store)
    kept = _file_heads(store)
    await drop_append_only(store)
    # Rewrite row 4 and re-hash everything after it: row by row, the chain holds again.
    rows = await store.db.fetchall("SELECT * FROM audit_log WHERE id >= 4 ORDER BY id")
    prev = (await store.db.fetchone("SELECT hash FROM audit_log WHERE id = 3"))["hash"]
    async with store.db.transaction() as conn:
        for row in rows:
            details = '{"n":99}' if row["id"] == 4 else row["details"]
            digest = row_hash(prev, row["id"], row["created_at"], row["actor"], row["action"], row["target"], details)
            await conn.execute("UPDATE audit_log SET details = ?, prev_hash = ?, hash = ? WHERE id = ?",
                               (details, prev, digest, row["id"]))
            prev = digest
    assert (await verify(store.db.conn)).ok
    result = await verify(store.db.conn, [("the head file", h) for h in kept])
    assert not result.ok and result.bad_row == 4
    assert result.problem == "row 4 does not match the head kept in the head file: the chain was rewritten"


def test_a_head_is_parsed_from_what_audit_head_prints():
    head = Head(42, "ab" * 32)
    assert Head.parse(head.token()) == head and Head.parse(" 42:" + "AB" * 32 + "\n") == head
    for bad in ("42", "x:" + "ab" * 32, "42:abc", "42:" + "zz" * 32):
        with pytest.raises(ValueError, match="is not a head like 42:"):
            Head.parse(bad)


# -- file modes -------------------------------------------------------------------------------

async def test_the_database_and_its_wal_and_shm_files_are_created_private(tmp_path):
    store = await Store.open(tmp_path / "data" / "bot.db")
    try:
        await store.put("access_token", "secret")
        names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data").iterdir()}
    finally:
        await store.close()
    assert {"bot.db", "bot.db-wal", "bot.db-shm"} <= set(names)
    assert all(mode == 0o600 for mode in names.values()), {n: oct(m) for n, m in names.items()}


async def test_an_existing_readable_database_is_made_private_at_start_up(tmp_path, caplog):
    path = tmp_path / "bot.db"
    store = await Store.open(path)
    await store.put("access_token", "secret")
    await store.close()
    path.chmod(0o644)
    caplog.set_level("WARNING")
    store = await Store.open(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "bot.db-wal").stat().st_mode) == 0o600
    finally:
        await store.close()
    assert f"{path} was readable by others (mode 0644)" in caplog.text and "now 0600" in caplog.text


async def test_a_head_file_that_cannot_be_written_never_undoes_the_commit(database, tmp_path, caplog):
    store = await database.open(tmp_path / "no-such-dir" / "heads")
    try:
        await _chain(store, rows=1)
        assert (await verify(store.db.conn)).rows_checked == 1 and (await stored_head(store.db.conn)).row_id == 1
    finally:
        await store.close()
    assert "could not append the audit head (row 1)" in caplog.text


def test_a_torn_last_line_of_the_head_file_is_no_head(tmp_path):
    from bot.store.audit import HeadFile

    path = tmp_path / "heads"
    path.write_text(f"1 {'a' * 64} 5\n2 {'b' * 64} 6\n3 {'c' * 20}")  # a crash mid-write
    assert [h.row_id for h in HeadFile(path).read()] == [1, 2]
    assert HeadFile(tmp_path / "absent").read() is None
