"""Test helpers for the effects journal: an executor over fakes, carrying out what is due."""

from __future__ import annotations

from typing import Any

from bot.effects import Executor
from bot.i18n import Translator


def executor(store: Any, matrix: Any, *, admin: Any = None, dm_rooms: dict[str, str] | None = None,
             management_room: str | None = "!mgmt", clock: Any = lambda: 1000, lang: str = "en") -> Executor:
    """An executor whose DMs are ``!dm-<user>`` unless ``dm_rooms`` says otherwise."""
    rooms = dm_rooms if dm_rooms is not None else {}

    async def dm_room(user_id: str) -> str:
        return rooms.get(user_id, f"!dm-{user_id}")

    return Executor(store, matrix, Translator(lang), admin=admin, dm_room=dm_room,
                    management_room=lambda: management_room, management_configured=management_room is not None,
                    bot_user_id="@bot:hs", clock=clock)
