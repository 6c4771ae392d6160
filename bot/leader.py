"""Which bot process acts: a PostgreSQL session advisory lock on a connection of its own.

With PostgreSQL several bot processes may run on one database; exactly one is active (syncs, runs
commands, carries out effects), the others are hot standbys whose gates answer from the active's
state (bot.standby). The active one is the holder of ``pg_advisory_lock(ACTIVE_LOCK)`` taken on a
dedicated connection, not the store's: the store reconnects silently after a lost connection,
which would drop the lock without anybody noticing. Here a lost connection *is* lost leadership:
the heartbeat notices it within ``2 × heartbeat_seconds`` and the process stops acting at once.
The other way round, a holder that falls silent (frozen, cut off) loses its session, and the
lock, after three heartbeats without a word (``idle_session_timeout``).

A new holder waits ``takeover_grace`` before it acts: PostgreSQL frees the lock the moment it sees
the old connection gone, while the old process may need up to two heartbeats to notice; waiting
them out means two actives never overlap. With SQLite there is one process and no standby.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Awaitable, Callable

import asyncpg

from bot.store.pg import ACTIVE_LOCK, APPLICATION_NAME, EPOCH_KEY, SESSION_SETTINGS, WRITER_LOCK

log = logging.getLogger(__name__)

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


async def _connect(dsn: str) -> asyncpg.Connection:
    # Named as the store's connections are: a new active ends every session of the old one's.
    return await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": APPLICATION_NAME})


class NotHolding(Exception):
    """The lock was lost before the takeover could claim its epoch."""


def instance_name() -> str:
    """How /health and the kv advertisement name this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """The active bot's lock: ``acquire`` waits for it, ``hold`` returns when it is lost."""

    def __init__(self, dsn: str, *, poll_seconds: float = 1.0, heartbeat_seconds: float = 1.0,
                 connect: Connect = _connect) -> None:
        self._dsn = dsn
        self._connect = connect
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.held = False

    @property
    def takeover_grace(self) -> float:
        # The old holder's heartbeat: one interval until the next check, one for its timeout.
        return 2 * self.heartbeat_seconds + 0.2

    async def try_acquire(self) -> bool:
        """One attempt: True if this process now holds the lock (a connection failure is False)."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect(self._dsn)
            held = bool(await asyncio.wait_for(
                self._conn.fetchval("SELECT pg_try_advisory_lock($1)", ACTIVE_LOCK), self.poll_seconds * 5))
            if held:
                await self._end_when_silent(self._conn)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot ask PostgreSQL for the active bot's lock: %s: %s", type(exc).__name__, exc)
            await self._drop()
            return False
        if held:
            self.held = True
            self._lost = asyncio.Event()
            self._conn.add_termination_listener(lambda conn: self._lose("the lock's connection was closed"))
            # From the first moment: the session must never look silent to the server.
            self._heartbeat_task = asyncio.ensure_future(self._heartbeat())
        return held

    async def _end_when_silent(self, conn: asyncpg.Connection) -> None:
        """A process that stops without closing its socket (frozen, or cut off by the network)
        would hold the lock for as long as the server keeps its session: the server ends a
        session that sends nothing for three heartbeats (PostgreSQL 14+), and the lock with it."""
        try:
            await conn.execute(f"SET idle_session_timeout = {int(self.heartbeat_seconds * 3000)}")
        except asyncpg.UndefinedObjectError:
            log.warning("PostgreSQL before 14 has no idle_session_timeout: an active bot that freezes keeps "
                        "the lock until the server drops its connection (tcp_keepalives_*)")

    async def end_sessions_of(self, instance: str) -> int:
        """End every session of another bot process (``instance``, its application_name's tail):
        the old active's, frozen perhaps inside a write transaction that holds the writer lock,
        which would keep this one from writing for as long as it stays frozen. Returns how many."""
        conn = await self._connect(self._dsn)
        try:
            return len(await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND application_name <> $2 AND pid <> pg_backend_pid()",
                f"rulesbot {instance}", APPLICATION_NAME))
        finally:
            await conn.close()

    async def claim_epoch(self) -> int:
        """The fencing token of this takeover: the leadership epoch, one more than the last, written
        under the writer lock while this process still holds the active lock (checked in the same
        transaction). The store's write transactions check it (``PgConnection.epoch``), so whatever
        the old active still tries to commit after this is refused."""
        assert self._conn is not None, "claim_epoch() needs the lock"
        holder = self._conn.get_server_pid()
        # A connection of its own: the lock's carries the heartbeat, and asyncpg runs one
        # statement at a time; the writer lock may take a moment.
        conn = await self._connect(self._dsn)
        try:
            await conn.execute(f"SET lock_timeout = {SESSION_SETTINGS['lock_timeout']}")
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
                holding = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = $1 AND classid = $2 AND objid = $3 AND objsubid = 1)",
                    holder, ACTIVE_LOCK >> 32, ACTIVE_LOCK & 0xFFFFFFFF)
                if not holding or not self.held:
                    raise NotHolding("the active bot's lock was lost before the takeover")
                return int(await conn.fetchval(
                    "INSERT INTO kv (key, value) VALUES ($1, '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = (kv.value::bigint + 1)::text RETURNING value", EPOCH_KEY))
        finally:
            await conn.close()

    async def acquire(self) -> None:
        """Wait until this process holds the lock, asking every ``poll_seconds``."""
        while not await self.try_acquire():
            await asyncio.sleep(self.poll_seconds)

    async def hold(self) -> None:
        """Return as soon as the lock is lost: the connection closed or broken, or the server not
        answering a heartbeat within ``heartbeat_seconds``."""
        assert self.held or self._lost.is_set(), "hold() needs the lock"
        await self._lost.wait()
        await self._drop()

    async def _heartbeat(self) -> None:
        # Whatever ends this loop ends leadership: a heartbeat that died of an error nobody
        # foresaw (asyncpg's InternalClientError after the event loop was blocked for seconds)
        # once left ``held`` True for ever, and the process acted next to the new active.
        why = "the heartbeat stopped"
        try:
            while self.held:
                await asyncio.sleep(self.heartbeat_seconds)
                conn = self._conn
                if conn is None or conn.is_closed():
                    why = "the lock's connection is closed"
                    return
                try:
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self.heartbeat_seconds)
                except Exception as exc:
                    why = f"the lock's connection failed a heartbeat ({type(exc).__name__}: {exc})"
                    return
        finally:
            # Cancelled by release() or _drop(): held is False already and this changes nothing.
            self._lose(why)

    def _lose(self, why: str) -> None:
        if self.held:
            log.error("lost the active bot's lock: %s; acting stops now", why)
        self.held = False
        self._lost.set()

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drop(self) -> None:
        await self._stop_heartbeat()
        conn, self._conn = self._conn, None
        self.held = False
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no goodbye: the server may be the thing that is gone

    async def release(self) -> None:
        """A clean stop: the lock goes to a standby at once (closing the session frees it)."""
        self.held = False
        await self._stop_heartbeat()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

