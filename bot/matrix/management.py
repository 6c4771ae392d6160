"""The management room: where the bot tells moderators what happened and what needs them."""

from __future__ import annotations

import logging

from bot.matrix.client import txn_id
from bot.store.effects import EffectRepo

log = logging.getLogger(__name__)

# The target of every management-room effect: posts reach the room in the order they were made.
TARGET = "management"


class ManagementRoom:
    def __init__(self, journal: EffectRepo) -> None:
        self._journal = journal
        self.room_id: str | None = None  # set once the configured room is resolved and joined

    async def post(self, text: str, key: str) -> None:
        """Record a post in the effects journal (in the caller's transaction, if one is open);
        ``key`` names what it is about, so a replay after a crash posts it once."""
        await self._journal.add("management", TARGET, {"text": text, "txn": txn_id("management", key)},
                                f"management/{key}")

    async def post_record(self, kind: str, record_id: int, key: str) -> None:
        """Record a post of a case or report, rendered when it is sent: it quotes evidence, which
        must not outlive the retention purge in the journal (only the reference is kept here)."""
        await self._journal.add("management", TARGET,
                                {"render": kind, "id": record_id, "txn": txn_id("management", key)},
                                f"management/{key}")
