"""The active bot's lock (bot.leader) on a real PostgreSQL: one holder among several processes'
connections, and a lost connection is lost leadership at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest
from pydantic import ValidationError

import bot.service as service_module
from bot.config import Settings
from bot.leader import Leadership
from bot.store.pg import ACTIVE_LOCK


@pytest.fixture
async def dsn(pg_cluster):
    return await pg_cluster.fresh()


async def test_of_two_processes_one_holds_the_lock_and_the_other_gets_it_when_released(dsn) -> None:
    first, second = Leadership(dsn, poll_seconds=0.05), Leadership(dsn, poll_seconds=0.05)
    try:
        assert await first.try_acquire() is True
        assert await second.try_acquire() is False
        waiting = asyncio.ensure_future(second.acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the standby must not get the lock while the active holds it"
        await first.release()
        await asyncio.wait_for(waiting, 2)
        assert second.held and not first.held
        assert await first.try_acquire() is False
    finally:
        await first.release()
        await second.release()


async def test_a_lost_connection_ends_leadership_at_once_and_the_standby_takes_the_lock(dsn) -> None:
    active, standby = Leadership(dsn, heartbeat_seconds=0.2), Leadership(dsn, poll_seconds=0.05)
    admin = await asyncpg.connect(dsn)
    try:
        assert await active.try_acquire()
        holding = asyncio.ensure_future(active.hold())
        taking = asyncio.ensure_future(standby.acquire())
        await asyncio.sleep(0.3)
        assert not holding.done() and not taking.done()
        # The server drops the active's session (a network cut, a restart, an operator).
        pid = await admin.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                                   ACTIVE_LOCK & 0xFFFFFFFF)
        assert pid is not None
        cut = time.monotonic()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(holding, 2)
        assert not active.held
        assert time.monotonic() - cut < 2 * active.heartbeat_seconds + 0.3
        await asyncio.wait_for(taking, 2)
        assert standby.held
    finally:
        await admin.close()
        await active.release()
        await standby.release()


async def test_a_server_that_stops_answering_ends_leadership_after_one_heartbeat(dsn) -> None:
    active = Leadership(dsn, heartbeat_seconds=0.2)
    try:
        assert await active.try_acquire()
        assert active._conn is not None
        backend = active._conn.get_server_pid()
        # The session's server process frozen: no answer, no closed socket (a hung host).
        os.kill(backend, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await asyncio.wait_for(active.hold(), 2)
            assert not active.held
            assert time.monotonic() - started < 2 * active.heartbeat_seconds + 0.3
        finally:
            os.kill(backend, signal.SIGCONT)
    finally:
        await active.release()


async def test_an_unreachable_database_is_no_lock_not_an_error() -> None:
    leadership = Leadership("postgresql://nobody@/nothing?host=/nonexistent-socket-dir", poll_seconds=0.01)
    assert await leadership.try_acquire() is False
    assert not leadership.held


async def test_the_new_holder_waits_out_the_old_holders_heartbeat() -> None:
    leadership = Leadership("postgresql://unused", heartbeat_seconds=1.5)
    assert leadership.takeover_grace > 2 * 1.5


def settings(**overrides) -> Settings:
    return Settings(homeserver={"url": "http://hs.test", "user_id": "@bot:hs.test", "password": "p"},
                    gate={"token": "t" * 16, **overrides.pop("gate", {})}, **overrides)


def test_the_advertised_gate_url_defaults_to_listen_and_must_be_http() -> None:
    assert settings(gate={"listen": "10.0.0.5:9000"}).gate.advertised == "http://10.0.0.5:9000"
    assert settings(gate={"advertise_url": "https://bot-a.internal:8765/"}).gate.advertised == \
        "https://bot-a.internal:8765"
    with pytest.raises(ValidationError, match="advertise_url") as refused:
        settings(gate={"advertise_url": "bot-a.internal:8765"})
    assert "is not an http:// or https:// URL" in str(refused.value)
    with pytest.raises(ValidationError, match="ha.poll_seconds"):
        settings(ha={"poll_seconds": 0})


async def test_with_sqlite_a_configured_standby_is_refused_by_name_at_start(monkeypatch, caplog, tmp_path) -> None:
    class Stopped(Exception):
        pass

    class NoService:
        def __init__(self, settings) -> None:
            pass

        async def start(self, early=None) -> None:
            raise Stopped()

        async def stop(self) -> None:
            pass

        def reload_rules(self) -> None:
            pass

    monkeypatch.setattr(service_module, "Service", NoService)
    with pytest.raises(Stopped):
        await service_module.run(settings(ha={"poll_seconds": 2}, database={"path": tmp_path / "bot.db"}))
    assert "with SQLite there is no standby: this process is the only bot" in caplog.text
    caplog.clear()
    with pytest.raises(Stopped):
        await service_module.run(settings(database={"path": tmp_path / "bot.db"}))
    assert "no standby" not in caplog.text


async def test_a_holder_that_falls_silent_loses_the_lock_to_the_standby(dsn) -> None:
    # A frozen active: it took the lock, then sends nothing (no heartbeat, socket still open).
    frozen, standby = Leadership(dsn, heartbeat_seconds=0.2), Leadership(dsn, poll_seconds=0.05)
    try:
        assert await frozen.try_acquire()
        frozen._heartbeat_task.cancel()  # the process freezes: its heartbeat stops with it
        assert await standby.try_acquire() is False
        started = time.monotonic()
        await asyncio.wait_for(standby.acquire(), 3)
        assert time.monotonic() - started < 3 * frozen.heartbeat_seconds + 0.5
    finally:
        await frozen.release()
        await standby.release()


async def test_the_lock_is_kept_alive_from_the_moment_it_is_taken(dsn) -> None:
    # The takeover waits and loads before it watches the lock (hold): the session must not
    # look silent meanwhile, or the server ends it and the lock with it.
    active, standby = Leadership(dsn, heartbeat_seconds=0.2), Leadership(dsn)
    try:
        assert await active.try_acquire()
        await asyncio.sleep(8 * active.heartbeat_seconds)
        assert active.held
        assert await standby.try_acquire() is False
    finally:
        await active.release()
        await standby.release()


async def test_a_heartbeat_that_dies_of_an_unforeseen_error_ends_leadership(dsn) -> None:
    # Review 11, break 1: after the event loop was blocked for seconds, the heartbeat died of
    # asyncpg's InternalClientError ("cannot switch to state 12"), which nothing caught: held stayed
    # True and hold() never returned, so the process acted next to the new active.
    active = Leadership(dsn, heartbeat_seconds=0.1)
    try:
        assert await active.try_acquire()

        class Confused:
            """The lock's connection as asyncpg left it: each statement fails with that error."""

            def __init__(self, conn) -> None:
                self.conn = conn

            def __getattr__(self, name):
                return getattr(self.conn, name)

            async def fetchval(self, *args, **kwargs):
                raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")

        active._conn = Confused(active._conn)
        await asyncio.wait_for(active.hold(), 2)
        assert not active.held
    finally:
        await active.release()


async def _store(dsn, tmp_path, name):
    from bot.store import Store
    return await Store.open(dsn, tmp_path / f"{name}.audit-head")


async def test_after_a_takeover_the_old_active_s_writes_are_refused_and_the_new_one_s_commit(dsn, tmp_path) -> None:
    # Review 11, break 1: the old active, frozen past its lock's session, resumes and commits
    # through its store's own connection unless each write transaction checks the epoch.
    from bot.store.pg import NotActive
    from bot.store.db import store_unavailable
    old, new = Leadership(dsn, heartbeat_seconds=0.2), Leadership(dsn, poll_seconds=0.05)
    old_store, new_store = await _store(dsn, tmp_path, "old"), await _store(dsn, tmp_path, "new")
    try:
        assert await old.try_acquire()
        old_store.db.conn.epoch = await old.claim_epoch()
        await old_store.put("written", "by the first active")
        # The old active freezes: its lock's session ends, the standby takes the lock and its epoch.
        old._heartbeat_task.cancel()
        old._conn.terminate()
        await asyncio.wait_for(new.acquire(), 3)
        new_store.db.conn.epoch = await new.claim_epoch()
        assert new_store.db.conn.epoch == old_store.db.conn.epoch + 1
        with pytest.raises(NotActive) as refused:
            await old_store.put("written", "by the old active after the takeover")
        assert "this process is no longer the active bot, its write is refused" in str(refused.value)
        assert "another bot process took over" in str(refused.value)
        assert store_unavailable(refused.value)  # the sync batch in hand fails and is left to the new one
        await new_store.put("written", "by the new active")
        assert await new_store.get("written") == "by the new active"
        # The refused transaction was rolled back: the old store's connection goes on (reads).
        assert await old_store.get("written") == "by the new active"
    finally:
        await old.release()
        await new.release()
        await old_store.close()
        await new_store.close()


async def test_the_epoch_is_not_claimed_once_the_lock_is_lost(dsn) -> None:
    from bot.leader import NotHolding
    active = Leadership(dsn, heartbeat_seconds=0.2)
    try:
        assert await active.try_acquire()
        active._heartbeat_task.cancel()
        active._conn.terminate()
        # It has not noticed yet (held is True), but its session no longer holds the lock.
        active._conn = await asyncpg.connect(dsn)
        active.held = True
        with pytest.raises(NotHolding, match="lost before the takeover"):
            await active.claim_epoch()
    finally:
        await active.release()


async def test_the_old_active_frozen_inside_a_write_transaction_does_not_hold_the_new_one_back(dsn, tmp_path) -> None:
    # Review 11, break 2: the old active frozen (SIGSTOP) inside a write transaction kept the
    # writer lock, and the new active's writes waited for as long as it stayed frozen.
    from bot.store.pg import WRITER_LOCK
    frozen = await asyncpg.connect(dsn, server_settings={"application_name": "rulesbot 4242-0ld0act1"})
    bystander = await asyncpg.connect(dsn, server_settings={"application_name": "rulesbot 4343-standby1"})
    new = Leadership(dsn)
    store = await _store(dsn, tmp_path, "new")
    try:
        await frozen.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})")
        assert await new.try_acquire()
        assert await new.end_sessions_of("4242-0ld0act1") == 1
        started = time.monotonic()
        store.db.conn.epoch = await asyncio.wait_for(new.claim_epoch(), 5)
        await store.put("written", "by the new active")
        assert time.monotonic() - started < 2
        assert frozen.is_closed() or not await _alive(frozen)
        assert await bystander.fetchval("SELECT 1") == 1  # another bot's sessions are left alone
    finally:
        frozen.terminate()
        await bystander.close()
        await new.release()
        await store.close()


async def _alive(conn) -> bool:
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False


async def test_the_store_s_sessions_give_up_a_stuck_transaction_and_a_lock_wait(dsn, tmp_path) -> None:
    # Review 11, break 2: the server ends a session idle inside a transaction (its writer lock
    # with it), and a writer waits for a lock a bounded time, then the store is unavailable for now.
    from bot.store.pg import APPLICATION_NAME, INSTANCE
    store = await _store(dsn, tmp_path, "one")
    try:
        raw = store.db.conn.raw
        assert await raw.fetchval("SHOW idle_in_transaction_session_timeout") == "30s"
        assert await raw.fetchval("SHOW lock_timeout") == "20s"
        assert await raw.fetchval("SHOW application_name") == APPLICATION_NAME == f"rulesbot {INSTANCE}"
    finally:
        await store.close()
