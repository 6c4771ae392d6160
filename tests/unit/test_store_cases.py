"""Cases are append-only: an end is a record of its own; closure codes are single-use and expire."""

import pytest

from bot.store import ClosureRequest, NewCase
from bot.store.audit import verify

# The store's tests run on SQLite and on PostgreSQL (issue 11): tests/conftest.py.


async def test_case_open_end_and_derived_state(store):
    case = await store.cases.open(NewCase("@t:hs", "restrict", "@mod:hs", "spam", 1000, expires_at=5000, rate="3/1h",
                                          evidence={"sender": "@t:hs", "content": {"body": "buy now"}}))
    assert case.id == 1 and case.in_force(4999) and not case.in_force(5000)
    assert case.evidence["content"]["body"] == "buy now" and case.rate == "3/1h"
    assert [c.id for c in await store.cases.unended()] == [1]
    assert await store.cases.end(1, ended_at=2000, actor="@mod:hs", how="lifted", reason="appeal")
    assert not await store.cases.end(1, ended_at=3000, actor="@other:hs", how="expired", reason="again")
    ended = await store.cases.get(1)
    assert ended.end.how == "lifted" and ended.end.actor == "@mod:hs" and not ended.in_force(1500)
    assert await store.cases.unended() == []
    actions = [r[0] for r in await store.db.fetchall("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["case.restrict", "case.lifted"]
    assert (await verify(store.db.conn)).ok


async def test_warnings_are_never_in_force_and_history_is_per_target(store):
    await store.cases.open(NewCase("@a:hs", "warn", "@mod:hs", "rude", 1))
    await store.cases.open(NewCase("@b:hs", "suspend", "ladder", "ladder", 2, expires_at=None, caused_by=(1,)))
    assert not (await store.cases.get(1)).in_force(2)
    assert [c.target for c in await store.cases.history("@b:hs")] == ["@b:hs"]
    assert (await store.cases.get(2)).caused_by == (1,)
    assert [c.id for c in await store.cases.recent(10)] == [2, 1]


async def test_closure_code_is_single_use_and_expires(store):
    request = ClosureRequest("ABC123", "@t:hs", "@mod:hs", "abuse", True, None, (), 0, 120_000, None)
    await store.cases.add_closure_request(request)
    assert await store.cases.take_closure_request("ABC123", 120_000) is None  # expired
    await store.cases.add_closure_request(ClosureRequest("DEF456", "@t:hs", "@mod:hs", "abuse", True, None, (), 0, 120_000, None))
    taken = await store.cases.take_closure_request("DEF456", 60_000)
    assert taken.target == "@t:hs" and taken.erase and taken.used_at == 60_000
    assert await store.cases.take_closure_request("DEF456", 60_001) is None  # used


async def test_later_migrations_upgrade_a_version_one_database(tmp_path):
    import sqlite3

    from bot.store import Store
    from bot.store.migrations import LATEST_VERSION, MIGRATIONS

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(MIGRATIONS[0].sql)
        conn.execute("INSERT INTO kv VALUES ('sync_token', 's1')")
        conn.execute("PRAGMA user_version = 1")
    store = await Store.open(path)
    try:
        assert await store.db.schema_version() == LATEST_VERSION
        assert await store.get("sync_token") == "s1"
        assert await store.cases.recent() == []
    finally:
        await store.close()


async def test_withdrawn_cases_are_the_lifted_and_the_granted_on_appeal(store):
    for kind in ("warn", "warn", "restrict", "restrict", "warn"):
        await store.cases.open(NewCase("@t:hs", kind, "@mod:hs", "spam", 1000))
    await store.cases.open(NewCase("@other:hs", "restrict", "@mod:hs", "spam", 1000))
    await store.cases.end(3, ended_at=2000, actor="@mod:hs", how="lifted", reason="mistake")
    await store.cases.end(4, ended_at=2000, actor="@bot:hs", how="expired", reason="expired")  # served: counts
    await store.cases.end(6, ended_at=2000, actor="@mod:hs", how="lifted", reason="mistake")
    granted = await store.appeals.add(case_id=2, appellant="@t:hs", text="not me", now=1500)
    await store.appeals.decide(granted.id, by="@mod:hs", decision="granted", reason="fair", now=1600)
    denied = await store.appeals.add(case_id=5, appellant="@t:hs", text="not me", now=1500)
    await store.appeals.decide(denied.id, by="@mod:hs", decision="denied", reason="no", now=1600)
    assert await store.cases.withdrawn("@t:hs") == {2, 3}
