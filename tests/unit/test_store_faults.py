"""When the store fails under a unit of work: a locked database loses no command, a COMMIT that
fails undoes memory like any rollback, memory never says what the store does not, and the audit
head file survives a short write."""

import asyncio
import os
import sqlite3
import threading

import pytest

from bot.router import Router
from bot.sanctions import Request
from bot.policy.sanctions import Measure, SanctionKind
from bot.store.audit import HeadFile, default_head_file, verify
from tests.unit.test_accounts import OWNER, FakeMatrix as AccountsMatrix, accounts_with, room_state
from tests.unit.test_effects import BOB, MOD, T0, World


@pytest.mark.sqlite_only  # SQLite's file lock; PostgreSQL's writer lock: test_effects.py
async def test_a_lock_that_clears_before_the_reply_still_fails_the_batch_and_commits_nothing_of_the_event(
        store, tmp_path):
    world = World(store)
    await store.db.conn.execute("PRAGMA busy_timeout=300")
    holder = sqlite3.connect(tmp_path / "bot.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # a backup or an sqlite3 shell, for longer than the busy timeout
    release = threading.Timer(0.45, lambda: (holder.execute("ROLLBACK"), holder.close()))
    # Timed from the command's first BEGIN, not from here: on a loaded machine the command may
    # reach its first write only after a timer started now had already lifted the lock.
    execute = store.db.conn.execute

    def begin_starts_the_clock(sql, *args, **kwargs):
        if sql == "BEGIN IMMEDIATE" and not release.is_alive() and not release.finished.is_set():
            release.start()
        return execute(sql, *args, **kwargs)

    store.db.conn.execute = begin_starts_the_clock
    try:
        # The command's first write times out; by the reply's BEGIN the lock is gone.
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
    finally:
        store.db.conn.execute = execute
        if release.is_alive():
            release.join()
    assert not await store.effects.handled("$warn", "command")
    assert await store.effects.listed(kind="notice") == []  # no "something went wrong" either
    # The sync loop keeps its token and fetches the batch again: now the warning is recorded.
    await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
    assert [c.kind for c in await store.cases.history(BOB)] == ["warn"]
    assert await store.effects.handled("$warn", "command")


class _FailingOnboarding:
    """The effects insert fails after the service changed memory (disk full, I/O error)."""

    async def tell(self, *args):
        raise sqlite3.OperationalError("database or disk is full")


async def _approved(store, owner=OWNER):
    application = await store.accounts.apply(applicant=owner, kind="public", category="enterprise", name="ACME", now=T0)
    await store.accounts.approve(application, by=MOD, note="", now=T0, filing_number="F-1", category="enterprise",
                                 name="ACME")


async def test_a_rolled_back_revoke_or_approval_leaves_memory_as_the_store_says(store):
    await _approved(store)
    accounts, state, _ = accounts_with(store, None)
    accounts._onboarding = _FailingOnboarding()
    before = state.public_accounts[OWNER]
    with pytest.raises(sqlite3.OperationalError):
        async with store.unit("$revoke", kind="command"):
            async with store.db.transaction():  # the command's savepoint, as Dispatcher._run has it
                await accounts.revoke(OWNER, MOD, "abuse")
    assert [f.filing_number for f in await store.accounts.active_filings(OWNER)] == ["F-1"]
    assert state.public_accounts[OWNER] is before

    application = await store.accounts.apply(applicant="@new:hs", kind="public", category="enterprise", name="New",
                                             now=T0)
    with pytest.raises(sqlite3.OperationalError):
        async with store.unit():
            await accounts.approve(application.id, MOD, "")
    assert await store.accounts.active_filings("@new:hs") == []
    assert "@new:hs" not in state.public_accounts


async def test_a_rolled_back_channel_change_leaves_memory_as_the_store_says(store):
    matrix = AccountsMatrix({"!news:hs": room_state()})
    accounts, state, changed = accounts_with(store, matrix)

    async def fails(user):
        raise sqlite3.OperationalError("disk I/O error")

    accounts.on_changed = fails
    with pytest.raises(sqlite3.OperationalError):
        async with store.unit():
            await accounts.add_channel(OWNER, "!news:hs")
    assert await store.accounts.channels(OWNER) == {}
    assert "!news:hs" not in state.channels

    await store.accounts.add_channel(OWNER, "!news:hs", T0)
    state.channels["!news:hs"] = OWNER
    with pytest.raises(sqlite3.OperationalError):
        async with store.unit():
            await accounts.remove_channel(OWNER, "!news:hs")
    assert await store.accounts.channels(OWNER) == {"!news:hs": OWNER}
    assert state.channels["!news:hs"] == OWNER


def _failing_commit(conn):
    """The next COMMIT fails as SQLite fails one on a disk I/O error: rolled back, then raised."""
    real_execute = conn.execute
    armed = [True]

    def execute(sql, *args):
        if sql == "COMMIT" and armed[0]:
            armed[0] = False

            async def boom():
                await real_execute("ROLLBACK")
                raise sqlite3.OperationalError("disk I/O error")
            return boom()
        return real_execute(sql, *args)
    return execute


async def test_a_failed_commit_undoes_memory_like_a_rollback(store, monkeypatch):
    world = World(store)
    monkeypatch.setattr(store.db.conn, "execute", _failing_commit(store.db.conn))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await world.sanctions.impose(Request(target=BOB, kind=SanctionKind.SUSPEND, actor=MOD, reason="spam",
                                             duration_ms=60_000))
    assert await store.cases.history(BOB) == []
    assert BOB not in world.state.sanctions
    # The connection is usable and not left inside a transaction.
    assert not store.db.conn.in_transaction
    await world.sanctions.impose(Request(target=BOB, kind=SanctionKind.SUSPEND, actor=MOD, reason="spam",
                                         duration_ms=60_000))
    assert len(await store.cases.history(BOB)) == 1


async def test_a_commit_that_stays_open_after_failing_is_rolled_back(store, monkeypatch):
    real_execute = store.db.conn.execute
    armed = [True]

    def execute(sql, *args):
        if sql == "COMMIT" and armed[0]:
            armed[0] = False

            async def busy():
                raise sqlite3.OperationalError("database is locked")  # SQLite keeps the transaction open
            return busy()
        return real_execute(sql, *args)

    monkeypatch.setattr(store.db.conn, "execute", execute)
    undone = []
    with pytest.raises(sqlite3.OperationalError):
        async with store.db.transaction():
            await store.record(now_ms=T0, actor=MOD, action="x", target="t", details={})
            store.db.on_rollback(lambda: undone.append(True))
    assert undone == [True]
    assert not store.db.conn.in_transaction
    assert await store.db.fetchall("SELECT id FROM audit_log") == []


async def test_a_measure_whose_case_is_missing_or_ended_is_dropped_instead_of_due_forever(store):
    world = World(store)
    world.state.add_measure(BOB, Measure(case_id=99, kind=SanctionKind.SUSPEND, expires_at=T0 + 1))
    case = await world.sanctions.impose(Request(target="@carol:hs", kind=SanctionKind.RESTRICT, actor=MOD,
                                                reason="x", duration_ms=60_000))
    await store.cases.end(case.id, ended_at=T0, actor=MOD, how="lifted", reason="x")  # memory not told
    world.now = T0 + 120_000
    await world.sanctions.expire_due()
    assert BOB not in world.state.sanctions and "@carol:hs" not in world.state.sanctions
    assert await world.sanctions.expire_due() > 0  # nothing is due any more: the loop sleeps


async def test_a_short_head_file_write_is_completed(store, tmp_path, monkeypatch):
    real_write = os.write

    def one_byte(fd, data):
        return real_write(fd, data[:1])

    await store.record(now_ms=1000, actor=MOD, action="x", target="t", details={})
    monkeypatch.setattr(os, "write", one_byte)
    await store.record(now_ms=2000, actor=MOD, action="x", target="t", details={})
    monkeypatch.setattr(os, "write", real_write)
    heads = HeadFile(default_head_file(tmp_path / "bot.db")).read()
    assert [h.row_id for h in heads] == [1, 2]
    assert (await verify(store.db.conn, [("file", h) for h in heads])).ok


async def test_a_line_torn_by_a_full_disk_is_ended_by_the_next_write_and_skipped(store, tmp_path, monkeypatch):
    real_write = os.write
    calls = []

    def full(fd, data):
        calls.append(data)
        if len(calls) == 1:
            return real_write(fd, data[:1])  # what fitted
        raise OSError(28, "No space left on device")

    for n in range(11):
        await store.record(now_ms=1000 + n, actor=MOD, action="x", target="t", details={})
    monkeypatch.setattr(os, "write", full)
    await store.record(now_ms=2000, actor=MOD, action="x", target="t", details={})  # row 12: "1" only
    monkeypatch.setattr(os, "write", real_write)
    await store.record(now_ms=3000, actor=MOD, action="x", target="t", details={})  # row 13
    heads = HeadFile(default_head_file(tmp_path / "bot.db")).read()
    assert [h.row_id for h in heads][-2:] == [11, 13]  # not row 113
    result = await verify(store.db.conn, [("file", h) for h in heads])
    assert result.ok, result.problem


def test_a_torn_line_in_the_middle_of_the_head_file_is_no_head(tmp_path):
    path = tmp_path / "heads"
    path.write_text(f"1 {'a' * 64} 5\n2 {'b' * 30}\n3 {'c' * 64} 7\n")
    assert [h.row_id for h in HeadFile(path).read()] == [1, 3]


async def test_a_cancel_during_a_commit_that_went_through_keeps_memory_and_still_cancels(store, monkeypatch):
    real_execute = store.db.conn.execute

    def execute(sql, *args):
        if sql != "COMMIT":
            return real_execute(sql, *args)

        async def committed_then_cancelled():
            await real_execute(sql, *args)
            raise asyncio.CancelledError  # the cancel arrives while the worker thread commits
        return committed_then_cancelled()

    monkeypatch.setattr(store.db.conn, "execute", execute)
    undone, done = [], []
    with pytest.raises(asyncio.CancelledError):
        async with store.db.transaction():
            await store.record(now_ms=T0, actor=MOD, action="x", target="t", details={})
            store.db.on_rollback(lambda: undone.append(True))
            store.db.after_commit(lambda: done.append(True))
    assert (undone, done) == ([], [True])
    monkeypatch.setattr(store.db.conn, "execute", real_execute)
    assert len(await store.db.fetchall("SELECT id FROM audit_log")) == 1
