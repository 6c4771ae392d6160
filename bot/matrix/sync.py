"""The sync loop: handle a batch, then save its token; back off on errors; never stop by accident.

nio's own ``sync_forever`` saves the token before the callbacks run and dies on a callback's
exception, so the bot runs this loop instead. The first sync of each process asks for full state
(nio keeps no room state across restarts). On a fresh database the backlog is not handled as
commands: the first batch only sets up rooms and invites.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from nio import AsyncClient, SyncResponse

from bot.store import Store

log = logging.getLogger(__name__)

SYNC_TOKEN_KEY = "sync_token"
SYNC_FILTER = {
    "room": {
        "timeline": {"limit": 200},
        "state": {"lazy_load_members": False},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}

BatchHandler = Callable[[SyncResponse, bool], Awaitable[None]]


class SyncLoop:
    def __init__(
        self,
        client: AsyncClient,
        store: Store,
        handle: BatchHandler,
        timeout_ms: int = 30_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._store = store
        self._handle = handle
        self._timeout_ms = timeout_ms
        self.synced = asyncio.Event()

    async def run(self) -> None:
        since = await self._store.get(SYNC_TOKEN_KEY)
        live = since is not None
        first, backoff = True, 1.0
        while True:
            try:
                response = await self._client.sync(
                    timeout=0 if first else self._timeout_ms,
                    since=since,
                    full_state=first or None,
                    sync_filter=SYNC_FILTER,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors, timeouts: the loop must survive them
                response = exc
            if not isinstance(response, SyncResponse):
                log.warning("sync failed (%s); retrying in %.0f s", response, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            try:
                await self._handle(response, live)
                await self._store.put(SYNC_TOKEN_KEY, response.next_batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Events are isolated one by one, so this is the store or a bug: keep the old
                # token and fetch the batch again later. Handlers are idempotent by event ID.
                log.exception("handling a sync batch failed; retrying it in %.0f s", backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            if first:
                log.info("first sync complete; handling events from now on")
            since, first, live = response.next_batch, False, True
            self.synced.set()
