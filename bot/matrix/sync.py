"""The sync loop: handle a batch, then save its token; back off on errors; never stop by accident.

nio's own ``sync_forever`` saves the token before the callbacks run and dies on a callback's
exception, so the bot runs this loop instead. The first sync of each process asks for full state
(nio keeps no room state across restarts). On a fresh database the backlog is not handled as
commands: the first batch only sets up rooms and invites.

No gaps: a room whose timeline comes back ``limited`` (more events than the filter's limit since
the last sync: the bot was down or slow) is back-filled with ``/messages``, backwards from the
timeline's ``prev_batch`` to the previous sync's position, up to ``gap_limit`` events per room per
gap, never past the bot's own join (a join from another membership or none; a display-name or
avatar change is join -> join and is read past). The recovered events go to the router first, oldest first,
then the batch's own timeline. Events beyond the bound are counted (``rulesbot_sync_gap_events_dropped_total``),
not handled.

Stopping: ``drain`` lets the batch in hand finish and its token be saved (within a grace period)
before the task is cancelled, so a SIGTERM never cuts a batch in half.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from nio import AsyncClient, MessageDirection, RoomMessagesResponse, SyncResponse

from bot.gate.metrics import SyncGaps
from bot.store import Store

log = logging.getLogger(__name__)

SYNC_TOKEN_KEY = "sync_token"
# When (ms, the bot's clock) the last batch was handled and its token saved: what a later batch
# holds from before then arrived late or was read back from a gap (bot.matrix.roommode judges
# such posts at their own time, not earlier than this).
SYNC_AT_KEY = "sync_token_saved_at"
TIMELINE_LIMIT = 200
GAP_LIMIT = 1000  # events fetched back per room per gap
PAGE = 100  # events per /messages request


def sync_filter(timeline_limit: int = TIMELINE_LIMIT) -> dict[str, Any]:
    return {
        "room": {
            "timeline": {"limit": timeline_limit},
            "state": {"lazy_load_members": False},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        },
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }


SYNC_FILTER = sync_filter()

BatchHandler = Callable[[SyncResponse, bool], Awaitable[None]]


class Health(Protocol):
    """What the loop reports to its supervisor (bot.supervise.LoopStatus)."""

    def ok(self) -> None: ...
    def failed(self, exc: BaseException) -> None: ...


class _Unwatched:
    def ok(self) -> None:
        pass

    def failed(self, exc: BaseException) -> None:
        pass


class SyncFailed(Exception):
    """The homeserver answered a sync with an error (nio's SyncError), as the supervisor records it."""


class GapError(Exception):
    """A gap could not be read back yet (network, 429, 5xx): the batch is fetched again later."""


class SyncLoop:
    def __init__(
        self,
        client: AsyncClient,
        store: Store,
        handle: BatchHandler,
        timeout_ms: int = 30_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeline_limit: int = TIMELINE_LIMIT,
        gap_limit: int = GAP_LIMIT,
        gaps: SyncGaps | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock or (lambda: int(time.time() * 1000))
        # When the batch before the one in hand was saved (None: not known yet).
        self.saved_at: int | None = None
        self._sleep = sleep
        self._store = store
        self._handle = handle
        self._timeout_ms = timeout_ms
        self._filter = sync_filter(timeline_limit)
        self._gap_limit = gap_limit
        self.gaps = gaps if gaps is not None else SyncGaps()
        self.synced = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, health: Health = _Unwatched()) -> None:
        since = await self._store.get(SYNC_TOKEN_KEY)
        saved_at = await self._store.get(SYNC_AT_KEY)
        self.saved_at = int(saved_at) if saved_at is not None and saved_at.isdigit() else None
        live = since is not None
        first, backoff = True, 1.0
        while not self._stopping:
            try:
                response = await self._client.sync(
                    timeout=0 if first else self._timeout_ms,
                    since=since,
                    full_state=first or None,
                    sync_filter=self._filter,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors, timeouts: the loop must survive them
                response = exc
            if not isinstance(response, SyncResponse):
                health.failed(response if isinstance(response, BaseException) else SyncFailed(str(response)))
                log.warning("sync failed (%s); retrying in %.0f s", response, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            # From here to the saved token the batch is in hand: `drain` waits for it.
            self._idle.clear()
            try:
                if live and since is not None:
                    await self._fill_gaps(response, since)
                await self._handle(response, live)
                saved = self._clock()
                async with self._store.db.transaction():
                    await self._store.put(SYNC_TOKEN_KEY, response.next_batch)
                    await self._store.put(SYNC_AT_KEY, str(saved))
                self.saved_at = saved
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Events are isolated one by one, so this is the store, a gap not readable yet, or
                # a bug: keep the old token and fetch the batch again later. Handlers are
                # idempotent by event ID.
                health.failed(exc)
                log.exception("handling a sync batch failed; retrying it in %.0f s", backoff)
                self._idle.set()
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            finally:
                self._idle.set()
            health.ok()
            backoff = 1.0
            if first:
                log.info("first sync complete; handling events from now on")
            since, first, live = response.next_batch, False, True
            self.synced.set()

    async def drain(self, grace_s: float) -> bool:
        """Stop taking new batches; wait (up to ``grace_s``) for the one in hand to be handled and
        its token saved. True if nothing was left half done."""
        self._stopping = True
        if self._idle.is_set():
            return True
        log.info("waiting up to %.0f s for the sync batch in hand", grace_s)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except asyncio.TimeoutError:
            log.warning("the sync batch in hand did not finish within %.0f s; it is fetched again at the next start", grace_s)
            return False
        return True

    # -- gaps ------------------------------------------------------------------------------------

    async def _fill_gaps(self, response: SyncResponse, since: str) -> None:
        for room_id, info in response.rooms.join.items():
            timeline = info.timeline
            if not timeline.limited or not timeline.prev_batch:
                continue
            recovered = await self._read_gap(room_id, timeline.prev_batch, since)
            if recovered:
                timeline.events = [*recovered, *timeline.events]

    async def _read_gap(self, room_id: str, prev_batch: str, since: str) -> list[Any]:
        """The events between the previous sync and the timeline, oldest first, at most gap_limit."""
        newest_first: list[Any] = []
        dropped = 0
        token: str | None = prev_batch
        joined_here = False
        while token is not None and not joined_here:
            room = self._gap_limit - len(newest_first)
            # One more than room is left for: an event past the bound shows the gap was cut.
            page = await self._client.room_messages(
                room_id, start=token, end=since, direction=MessageDirection.back, limit=min(PAGE, room + 1),
            )
            if not isinstance(page, RoomMessagesResponse):
                errcode = getattr(page, "status_code", None)
                if errcode in (None, "M_LIMIT_EXCEEDED", "M_UNKNOWN"):
                    raise GapError(f"reading back {room_id}: {page}")
                log.warning("cannot read back the gap in %s (%s); its events are lost", room_id, errcode)
                self.gaps.gaps += 1
                self.gaps.truncated += 1
                return self._oldest_first(newest_first)
            for event in page.chunk:
                if self._is_own_join(event):
                    joined_here = True  # anything older happened before the bot was in the room
                    break
                if len(newest_first) < self._gap_limit:
                    newest_first.append(event)
                else:
                    dropped += 1
            if dropped or not page.chunk or page.end is None or page.end == token:
                break
            token = page.end
        self.gaps.gaps += 1
        self.gaps.recovered += len(newest_first)
        if dropped:
            self.gaps.truncated += 1
            self.gaps.dropped += dropped
            log.warning("gap in %s longer than %d events: the %d newest are handled, older ones are not",
                        room_id, self._gap_limit, len(newest_first))
        else:
            log.info("gap in %s: %d event(s) read back", room_id, len(newest_first))
        return self._oldest_first(newest_first)

    def _is_own_join(self, event: Any) -> bool:
        source = getattr(event, "source", None)
        if not isinstance(source, dict) or source.get("type") != "m.room.member":
            return False
        if source.get("state_key") != self._client.user_id:
            return False
        # nio moves a member event's content out of ``source`` into attributes.
        membership = getattr(event, "membership", None) or (source.get("content") or {}).get("membership")
        if membership != "join":
            return False
        # A display name or avatar change is join -> join too (Synapse sends one into every room):
        # only a join from another membership, or from none, is where the bot came in.
        unsigned = source.get("unsigned") if isinstance(source.get("unsigned"), dict) else {}
        prev = unsigned.get("prev_content", source.get("prev_content"))
        if isinstance(prev, dict):
            return prev.get("membership") != "join"
        # No previous content: the bot's first member event in the room is a join (no state is
        # replaced). If it replaces one whose content was not given, keep reading: the gap's bound
        # still applies, and what lies beyond it is counted as dropped.
        return "replaces_state" not in unsigned

    @staticmethod
    def _oldest_first(newest_first: list[Any]) -> list[Any]:
        return newest_first[::-1]
