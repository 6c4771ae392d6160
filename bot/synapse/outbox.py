"""Reports from the module to the bot, sent in batches in the background (``POST
/replica/v1/reports``): agreement prompts, posts counted against rate caps, texts seen in news
scope (by fingerprint), rooms noted for private news, scope changes, publications and new rooms.

Nothing a user waits for goes through here. Items carry an ``id`` and the bot applies each once,
so a batch whose answer was lost is simply sent again. While the bot is down items wait, up to
``LIMIT`` items and ``BYTES_LIMIT`` bytes of JSON (the oldest go first, counted in ``dropped``).
A batch holds at most ``BATCH`` items and ``BATCH_BYTES`` bytes, under the gate's 1 MiB body
limit; should the bot still answer 413, the batch is halved, and an item too large by itself is
dropped (logged, counted in ``rejected``): kept, it would hold back every report after it.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from bot.synapse.replica import Fetch, Sleep

log = logging.getLogger(__name__)

REPORTS_PATH = "/replica/v1/reports"
BATCH = 500
BATCH_BYTES = 512 * 1024  # half the gate's MAX_BODY: room for the envelope and a smaller limit
LIMIT = 100_000
BYTES_LIMIT = 32 * 1024 * 1024


def encoded_size(item: dict[str, Any]) -> int:
    """Bytes of ``item`` in a batch, as bot.synapse.module sends it (UTF-8, not \\u escapes)."""
    return len(json.dumps(item, ensure_ascii=False).encode()) + 1  # the comma


class Outbox:
    def __init__(self, fetch: Fetch, sleep: Sleep, interval: float) -> None:
        self._fetch = fetch
        self._sleep = sleep
        self.interval = interval
        self.pending: deque[dict[str, Any]] = deque()
        self._sizes: deque[int] = deque()  # encoded_size of each pending item, in step
        self.pending_bytes = 0
        self.sent = 0
        self.dropped = 0  # over LIMIT or BYTES_LIMIT while the bot was away
        self.rejected = 0  # refused by the bot (400, or 413 for an item alone)
        self._stopped = False
        self._failing = False

    def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            size = encoded_size(item)
            self.pending.append(item)
            self._sizes.append(size)
            self.pending_bytes += size
            while len(self.pending) > LIMIT or self.pending_bytes > BYTES_LIMIT:
                self._pop()
                self.dropped += 1

    def _pop(self) -> dict[str, Any]:
        self.pending_bytes -= self._sizes.popleft()
        return self.pending.popleft()

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

    def _batch_length(self) -> int:
        """How many of the oldest items make the next batch: BATCH and BATCH_BYTES, at least one."""
        count, size = 0, 0
        for item_size in self._sizes:
            if count == BATCH or (count and size + item_size > BATCH_BYTES):
                break
            count, size = count + 1, size + item_size
        return count

    async def flush(self) -> None:
        cap = BATCH  # items per batch, lowered for the rest of this flush by a 413
        while self.pending:
            length = min(cap, self._batch_length())
            batch = [self.pending[i] for i in range(length)]
            first_size = self._sizes[0]
            status, body = await self._fetch("POST", REPORTS_PATH, body={"items": batch}, timeout=10.0)
            if status == 413 and length > 1:
                # The bot's body limit is below BATCH_BYTES: the same items in halves.
                cap = length // 2
                continue
            if status == 413:
                log.error("rules module: the bot refused a %s report of %d bytes as too large; dropped",
                          batch[0].get("kind"), first_size)
                self.rejected += 1
            elif status == 400:
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
                self._pop()
            if self._failing:
                log.info("rules module: reports reach the bot again")
                self._failing = False
