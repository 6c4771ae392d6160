"""Acceptances of the agreement, and the agreement messages sent to each user."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import audit
from bot.store.db import Database


@dataclass(frozen=True)
class Acceptance:
    user_id: str
    version: str
    text_sha256: str
    accepted_at: int
    event_id: str
    room_id: str
    method: str


@dataclass(frozen=True)
class Prompt:
    user_id: str
    version: str
    event_id: str
    room_id: str
    sent_at: int


class AgreementRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_acceptance(self, acceptance: Acceptance, recorded_at: int | None = None) -> bool:
        """Commit an acceptance and its audit record together.

        Returns False when the event was already recorded: replaying a sync batch after a crash
        must not record the same acceptance twice. ``recorded_at``: the audit row's time when it is
        not the acceptance's (an agreement accepted at registration is recorded later).
        """
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO agreement_acceptances"
                " (user_id, version, text_sha256, accepted_at, event_id, room_id, method)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    acceptance.user_id,
                    acceptance.version,
                    acceptance.text_sha256,
                    acceptance.accepted_at,
                    acceptance.event_id,
                    acceptance.room_id,
                    acceptance.method,
                ),
            )
            if cur.rowcount == 0:
                return False
            await audit.append(
                conn,
                now_ms=acceptance.accepted_at if recorded_at is None else recorded_at,
                actor=acceptance.user_id,
                action="agreement.accept",
                target=acceptance.user_id,
                details={
                    "version": acceptance.version,
                    "text_sha256": acceptance.text_sha256,
                    "event_id": acceptance.event_id,
                    "room_id": acceptance.room_id,
                    "method": acceptance.method,
                    **({} if recorded_at is None else {"accepted_at": acceptance.accepted_at}),
                },
            )
        return True

    async def latest_versions(self) -> dict[str, str]:
        """user -> version of that user's newest acceptance (to build the in-memory state)."""
        # One scan in row order, the newest row of each user written last: read while the gate
        # waits at start-up, so cheaper than a correlated MAX(id) per row.
        rows = await self._db.fetchall("SELECT user_id, version FROM agreement_acceptances ORDER BY id")
        return {row[0]: row[1] for row in rows}

    async def latest_for(self, user_id: str) -> Acceptance | None:
        row = await self._db.fetchone(
            "SELECT user_id, version, text_sha256, accepted_at, event_id, room_id, method"
            " FROM agreement_acceptances WHERE user_id = ? ORDER BY id DESC LIMIT 1",
            (user_id,),
        )
        return None if row is None else Acceptance(*row)

    async def record_prompt(self, prompt: Prompt) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO agreement_prompts (user_id, version, event_id, room_id, sent_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (prompt.user_id, prompt.version, prompt.event_id, prompt.room_id, prompt.sent_at),
            )

    async def prompt_for(self, user_id: str, version: str) -> Prompt | None:
        row = await self._db.fetchone(
            "SELECT user_id, version, event_id, room_id, sent_at FROM agreement_prompts"
            " WHERE user_id = ? AND version = ? ORDER BY sent_at DESC LIMIT 1",
            (user_id, version),
        )
        return None if row is None else Prompt(*row)

    async def prompt_by_event(self, event_id: str) -> Prompt | None:
        row = await self._db.fetchone(
            "SELECT user_id, version, event_id, room_id, sent_at FROM agreement_prompts WHERE event_id = ?",
            (event_id,),
        )
        return None if row is None else Prompt(*row)

    async def users_to_ask_again(self, version: str) -> list[str]:
        """Users who accepted or were shown some version, but have not accepted ``version``."""
        rows = await self._db.fetchall(
            "SELECT user_id FROM (SELECT user_id FROM agreement_acceptances"
            "                     UNION SELECT user_id FROM agreement_prompts) AS known"  # PostgreSQL wants the alias
            " WHERE user_id NOT IN (SELECT user_id FROM agreement_acceptances WHERE version = ?)"
            " ORDER BY user_id",
            (version,),
        )
        return [row["user_id"] for row in rows]
