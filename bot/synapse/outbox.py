"""Reports from the module to the bot, sent in batches in the background (``POST
/replica/v1/reports``): agreement prompts, posts counted against rate caps, texts seen in news
scope, rooms noted for private news, scope changes, publications and new rooms.

Nothing a user waits for goes through here. Items carry an ``id`` and the bot applies each once,
so a batch whose answer was lost is simply sent again. While the bot is down items wait, up to
``LIMIT`` (the oldest go first, counted in ``dropped``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from bot.synapse.replica import Fetch, Sleep

log = logging.getLogger(__name__)

REPORTS_PATH = "/replica/v1/reports"
BATCH = 500
LIMIT = 100_000


class Outbox:
    def __init__(self, fetch: Fetch, sleep: Sleep, interval: float) -> None:
        self._fetch = fetch
        self._sleep = sleep
        self.interval = interval
        self.pending: deque[dict[str, Any]] = deque()
        self.sent = 0
        self.dropped = 0  # over LIMIT while the bot was away
        self.rejected = 0  # refused by the bot (400)
        self._stopped = False
        self._failing = False

    def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if len(self.pending) >= LIMIT:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(item)

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        while not self._stopped:
            await self._sleep(self.interval)
            try:
                await self.flush()
            except Exception as exc:  # the bot is down: keep the items, try at the next tick
                if not self._failing:
                    log.warning("rules module: reports to the bot failed (%s); %d waiting", exc, len(self.pending))
                self._failing = True

    async def flush(self) -> None:
        while self.pending:
            batch = [self.pending[i] for i in range(min(BATCH, len(self.pending)))]
            status, body = await self._fetch("POST", REPORTS_PATH, body={"items": batch}, timeout=10.0)
            if status == 400:
                # The bot refuses the batch as it is: sending it again can never succeed, and
                # keeping it would hold back every report after it. Logged, counted, dropped.
                log.error("rules module: the bot refused %d reports (%s); dropped", len(batch), body)
                self.rejected += len(batch)
            elif status // 100 != 2:
                raise RuntimeError(f"reports answered {status}: {body!r:.200}")
            else:
                self.sent += len(batch)
            # Items may have been dropped from the front meanwhile (LIMIT): remove what was sent.
            sent = {id(item) for item in batch}
            while self.pending and id(self.pending[0]) in sent:
                self.pending.popleft()
            if self._failing:
                log.info("rules module: reports reach the bot again")
                self._failing = False
