"""Events handled once, and the journal of effects: intents committed with what causes them.

A feature service decides, then records in ONE transaction the record (a case, a mute, an
acceptance), the effects it implies (a notice, a redaction, an admin call …) and, when an event
caused it, that the event was handled:

    async with store.unit(event_id, kind="command") as unit:
        if unit.replayed:
            return                      # a replayed sync batch changes nothing
        case = await store.cases.open(...)      # repositories join the open transaction
        await unit.effect("notice", room_id, {"room": room_id, "text": ...}, key=f"reply/{event_id}")

The idempotency key is derived from the cause (``reply/<event id>``, ``case-7/admin``), so adding
the same effect twice keeps one row, and the transaction ID a send uses is derived from it: a
send retried after a crash is deduplicated by the homeserver. ``bot.effects.Executor`` carries
the rows out.
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from bot.store import audit
from bot.store.db import Database

PENDING, DONE, FAILED = "pending", "done", "failed"
_COLUMNS = ("id, idempotency_key, kind, target, payload, status, attempts, next_attempt_at, last_error, created_at,"
            " done_at")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Effect:
    id: int
    key: str
    kind: str
    target: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: int
    last_error: str | None
    created_at: int
    done_at: int | None


def _effect(row: Any) -> Effect:
    return Effect(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7], row[8], row[9], row[10])


class Unit:
    """One unit of work: what ``effect`` adds commits with everything else written inside it."""

    def __init__(self, repo: "EffectRepo", event_id: str | None, replayed: bool, now_ms: int) -> None:
        self._repo = repo
        self.event_id = event_id
        self.replayed = replayed
        self.now_ms = now_ms

    async def effect(self, kind: str, target: str, payload: dict[str, Any], key: str) -> bool:
        """Add an intent; False if one with this key exists already (it is not added twice)."""
        return await self._repo.add(kind, target, payload, key, now_ms=self.now_ms)


class EffectRepo:
    def __init__(self, db: Database, clock: Callable[[], int] = wall_clock_ms) -> None:
        self._db = db
        self.clock = clock
        # The executor's wake-up: called after a transaction that added effects commits.
        self.on_added: Callable[[], None] | None = None

    @asynccontextmanager
    async def unit(self, event_id: str | None = None, *, kind: str = "event", now_ms: int | None = None
                   ) -> AsyncIterator[Unit]:
        """A transaction that, when ``event_id`` is given, also records the event as handled; the
        unit says ``replayed`` if it had been handled before (then the caller does nothing)."""
        now = self.clock() if now_ms is None else now_ms
        # Deferred: the write lock is taken at the first write, not while the caller still reads.
        # The events of a sync batch are handled one after another, and the mark's primary key
        # refuses a second one, so checking before the lock is taken is safe.
        async with self._db.transaction(deferred=True):
            replayed = event_id is not None and await self.handled(event_id, kind)
            unit = Unit(self, event_id, replayed, now)
            yield unit
            if event_id is not None and not replayed:
                async with self._db.transaction() as conn:
                    await conn.execute("INSERT INTO handled_events (event_id, kind, handled_at) VALUES (?, ?, ?)",
                                       (event_id, kind, now))

    async def handled(self, event_id: str, kind: str = "event") -> bool:
        row = await self._db.fetchone("SELECT 1 FROM handled_events WHERE event_id = ? AND kind = ?", (event_id, kind))
        return row is not None

    async def add(self, kind: str, target: str, payload: dict[str, Any], key: str, *,
                  now_ms: int | None = None) -> bool:
        """Add an intent in the caller's transaction (or one of its own); False if the key exists."""
        now = self.clock() if now_ms is None else now_ms
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO effects (idempotency_key, kind, target, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, kind, target, audit.canonical_json(payload), now),
            )
            added = cur.rowcount == 1
        if added:
            self._db.after_commit(self._notify)
        return added

    def _notify(self) -> None:
        if self.on_added is not None:
            self.on_added()

    async def due(self, now_ms: int, limit: int = 50) -> list[Effect]:
        """The oldest pending effect of each target, if its time has come, oldest first: a later
        effect of a target waits for the earlier ones (the closure notice before the deactivation)."""
        rows = await self._db.fetchall(
            "SELECT " + _COLUMNS + " FROM effects e WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND id = (SELECT MIN(id) FROM effects f WHERE f.status = 'pending' AND f.target = e.target)"
            " ORDER BY id LIMIT ?",
            (now_ms, limit),
        )
        return [_effect(r) for r in rows]

    async def count_pending(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM effects WHERE status = 'pending'")
        return 0 if row is None else int(row[0])

    async def next_attempt_at(self) -> int | None:
        """When the next effect falls due: the earliest among each target's oldest pending effect
        (those ``due`` hands out); a later one of a target waits behind its head, whatever its own time."""
        row = await self._db.fetchone(
            "SELECT MIN(next_attempt_at) FROM effects e WHERE status = 'pending'"
            " AND id = (SELECT MIN(id) FROM effects f WHERE f.status = 'pending' AND f.target = e.target)")
        return None if row is None or row[0] is None else int(row[0])

    async def begin_attempt(self, effect_id: int) -> None:
        """Count an attempt before its call is made: a retry then knows a call may have gone out
        (a crash between the call and the mark leaves no other trace)."""
        async with self._db.transaction() as conn:
            await conn.execute("UPDATE effects SET attempts = attempts + 1 WHERE id = ?", (effect_id,))

    async def mark_done(self, effect_id: int, now_ms: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("UPDATE effects SET status = 'done', done_at = ? WHERE id = ?", (now_ms, effect_id))

    async def retry_later(self, effect_id: int, at_ms: int, error: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE effects SET next_attempt_at = ?, last_error = ? WHERE id = ?",
                (at_ms, error[:500], effect_id),
            )

    async def mark_failed(self, effect_id: int, now_ms: int, error: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE effects SET status = 'failed', done_at = ?, last_error = ?"
                " WHERE id = ?",
                (now_ms, error[:500], effect_id),
            )

    async def get(self, key: str) -> Effect | None:
        row = await self._db.fetchone("SELECT " + _COLUMNS + " FROM effects WHERE idempotency_key = ?", (key,))
        return None if row is None else _effect(row)

    async def listed(self, *, kind: str | None = None, status: str | None = None) -> list[Effect]:
        sql, params = "SELECT " + _COLUMNS + " FROM effects WHERE 1 = 1", []
        if kind is not None:
            sql, params = sql + " AND kind = ?", [*params, kind]
        if status is not None:
            sql, params = sql + " AND status = ?", [*params, status]
        return [_effect(r) for r in await self._db.fetchall(sql + " ORDER BY id", tuple(params))]

    async def pending_for(self, kind: str, target: str, room: str) -> bool:
        """Whether an effect of ``kind`` for ``target`` in ``room`` is still to be carried out."""
        row = await self._db.fetchone(
            "SELECT 1 FROM effects WHERE status = 'pending' AND kind = ? AND target = ?"
            " AND json_extract(payload, '$.room') = ?",
            (kind, target, room),
        )
        return row is not None

    async def prune(self, before_ms: int) -> int:
        """Forget handled events and finished effects older than ``before_ms`` (a replay only ever
        reaches back to the last saved sync token, hours at most)."""
        async with self._db.transaction() as conn:
            a = await conn.execute("DELETE FROM handled_events WHERE handled_at < ?", (before_ms,))
            b = await conn.execute("DELETE FROM effects WHERE status != 'pending' AND done_at < ?", (before_ms,))
        return a.rowcount + b.rowcount
