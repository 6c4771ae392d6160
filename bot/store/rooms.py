"""The bot's direct chats with users, and the power-level mutes room mode applied."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import audit
from bot.store.db import Database


@dataclass(frozen=True)
class Mute:
    room_id: str
    user_id: str
    previous_level: int | None
    muted_level: int
    reason: str
    muted_at: int


class RoomRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def dm_rooms(self) -> dict[str, str]:
        rows = await self._db.fetchall("SELECT user_id, room_id FROM dm_rooms")
        return {row["user_id"]: row["room_id"] for row in rows}

    async def set_dm_room(self, user_id: str, room_id: str, now_ms: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO dm_rooms (user_id, room_id, created_at) VALUES (?, ?, ?)",
                (user_id, room_id, now_ms),
            )

    async def forget_dm_room(self, room_id: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM dm_rooms WHERE room_id = ?", (room_id,))

    async def record_mute(self, mute: Mute, actor: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO room_mutes"
                " (room_id, user_id, previous_level, muted_level, reason, muted_at) VALUES (?, ?, ?, ?, ?, ?)",
                (mute.room_id, mute.user_id, mute.previous_level, mute.muted_level, mute.reason, mute.muted_at),
            )
            await audit.append(
                conn,
                now_ms=mute.muted_at,
                actor=actor,
                action="room.mute",
                target=mute.user_id,
                details={
                    "room_id": mute.room_id,
                    "previous_level": mute.previous_level,
                    "muted_level": mute.muted_level,
                    "reason": mute.reason,
                },
            )

    async def mutes_of(self, user_id: str, reason: str | None = None) -> list[Mute]:
        sql = "SELECT room_id, user_id, previous_level, muted_level, reason, muted_at FROM room_mutes WHERE user_id = ?"
        params: tuple = (user_id,)
        if reason is not None:
            sql += " AND reason = ?"
            params += (reason,)
        return [Mute(*row) for row in await self._db.fetchall(sql, params)]

    async def mute_in(self, room_id: str, user_id: str) -> Mute | None:
        row = await self._db.fetchone(
            "SELECT room_id, user_id, previous_level, muted_level, reason, muted_at FROM room_mutes"
            " WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return None if row is None else Mute(*row)

    async def remove_mute(self, mute: Mute, actor: str, now_ms: int, restored_level: int | None) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM room_mutes WHERE room_id = ? AND user_id = ?", (mute.room_id, mute.user_id))
            await audit.append(
                conn,
                now_ms=now_ms,
                actor=actor,
                action="room.unmute",
                target=mute.user_id,
                details={"room_id": mute.room_id, "restored_level": restored_level, "reason": mute.reason},
            )
