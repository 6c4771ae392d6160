"""The management room: where the bot tells moderators what happened and what needs them."""

from __future__ import annotations

import logging

from bot.matrix.client import Matrix, MatrixError, txn_id

log = logging.getLogger(__name__)


class ManagementRoom:
    def __init__(self, matrix: Matrix) -> None:
        self._matrix = matrix
        self.room_id: str | None = None  # set once the configured room is resolved and joined

    async def post(self, text: str, key: str) -> None:
        """Post a notice; ``key`` names what it is about, so a replay after a crash posts it once."""
        if self.room_id is None:
            log.info("no management room (yet): %s", text)
            return
        try:
            await self._matrix.send_notice(self.room_id, text, txn=txn_id("management", key))
        except MatrixError as exc:
            log.warning("could not post to the management room: %s", exc)
