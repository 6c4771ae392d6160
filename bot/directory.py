"""Keeps the room directory to approved public accounts, on the path Synapse does not ask about.

``createRoom`` with ``visibility: public`` stores the room as listed before its first event is sent,
checks only ``room_list_publication_rules``, never calls ``user_may_publish_room``, and
synapse-http-antispam posts ``user_may_create_room`` with the user ID alone (no ``room_config``).
None of the new room's initial events reach ``check_event_for_spam`` either: they go straight to
``handle_new_client_event``. So the gate cannot refuse such a room; it can only say who is
creating one, and the bot takes it out of the directory once it exists.

How: when the gate allows ``user_may_create_room`` for an account that may not publish, the guard
polls that account's rooms (admin API) for a few seconds; a room it created that is listed is
unlisted with ``PUT /directory/list/room`` as a server admin (Synapse lets admins change any
room's listing), with retries. The news-scope refresh passes the admin room list every minute as
a sweep, which also catches rooms created while the bot was down. Without an admin token none of
this is possible: the bot warns at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

from bot.policy import PolicyState

log = logging.getLogger(__name__)

# Delays between looks at a creating account's rooms (s): createRoom takes tens to hundreds of
# milliseconds; the total covers a slow homeserver.
POLL_DELAYS = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.4, 0.8, 1.6, 3.2)
UNLIST_RETRIES = (0.1, 0.5, 2.0, 5.0, 15.0)


class DirectoryGuard:
    def __init__(self, state: PolicyState, url: str, admin_token: str | None,
                 spawn: Callable[[Awaitable[None], str], object]) -> None:
        self._state = state
        self._url = url.rstrip("/")
        self._token = admin_token
        self._spawn = spawn
        self._session: aiohttp.ClientSession | None = None
        self._watching: dict[str, int] = {}  # user -> creations not yet followed up
        self._checked: dict[str, set[str]] = {}  # user -> rooms already looked at
        self.unlisted: list[tuple[str, float]] = []  # (room, seconds from the gate's answer), for tests and logs

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def warn_if_disabled(self) -> None:
        if not self.enabled:
            log.warning(
                "no homeserver.admin_token: a room created with visibility 'public' by an account that "
                "is not an approved public account stays in the room directory (Synapse does not ask "
                "the gate on that path); set admin_token so the bot can unlist it"
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the gate's signal ---------------------------------------------------------------------

    def room_creation(self, user_id: str) -> None:
        """The gate allowed ``user_id`` (who may not publish) to create a room: watch for it."""
        if not self.enabled:
            return
        self._watching[user_id] = self._watching.get(user_id, 0) + 1
        if self._watching[user_id] == 1:
            self._spawn(self._watch(user_id), f"directory-watch-{user_id}")

    async def _watch(self, user_id: str) -> None:
        # Polls the whole schedule: which of the account's rooms is the new one cannot be told
        # apart from an older one cheaply, and one request a poll costs little. Another creation
        # meanwhile starts the schedule again.
        try:
            step, asked, started = 0, self._watching[user_id], time.monotonic()
            while step < len(POLL_DELAYS):
                await asyncio.sleep(POLL_DELAYS[step])
                step += 1
                if self._watching[user_id] != asked:
                    step, asked, started = 0, self._watching[user_id], time.monotonic()
                try:
                    await self._look(user_id, started)
                except (aiohttp.ClientError, asyncio.TimeoutError, LookupError) as exc:
                    log.warning("looking at the rooms of %s failed (%s); trying again", user_id, exc)
        except Exception:
            log.exception("watching the rooms %s creates failed", user_id)
        finally:
            self._watching.pop(user_id, None)

    async def _look(self, user_id: str, started: float) -> None:
        """Check the account's rooms not looked at yet."""
        data = await self._get(f"/_synapse/admin/v1/users/{quote(user_id)}/joined_rooms")
        rooms = set(data.get("joined_rooms") or [])
        checked = self._checked.setdefault(user_id, set())
        for room_id in rooms - checked:
            if await self._listed(room_id) and await self._creator(room_id) == user_id:
                await self._unlist(room_id, user_id, started)
            checked.add(room_id)

    # -- the periodic sweep --------------------------------------------------------------------

    def sweep(self, rooms: list[dict[str, Any]]) -> None:
        """Given the admin room list: unlist listed rooms whose local creator may not publish."""
        if not self.enabled:
            return
        for room in rooms:
            room_id, creator = room.get("room_id"), room.get("creator")
            if room.get("public") and isinstance(room_id, str) and isinstance(creator, str) and self.unwanted(room_id, creator):
                self._spawn(self._unlist(room_id, creator, None), f"directory-unlist-{room_id}")

    def unwanted(self, room_id: str, creator: str) -> bool:
        """A listed room that no one entitled to publish has published."""
        state = self._state
        return (state.is_local(creator) and not state.is_exempt(creator) and creator not in state.public_accounts
                and room_id not in state.channels)

    # -- Synapse -------------------------------------------------------------------------------

    async def _unlist(self, room_id: str, creator: str, started: float | None) -> None:
        if not self.unwanted(room_id, creator):
            return
        for delay in (0.0, *UNLIST_RETRIES):
            await asyncio.sleep(delay)
            try:
                await self._call("PUT", f"/_matrix/client/v3/directory/list/room/{quote(room_id)}", {"visibility": "private"})
            except (aiohttp.ClientError, asyncio.TimeoutError, LookupError) as exc:
                log.warning("unlisting %s failed (%s); retrying", room_id, exc)
                continue
            self._state.listed_rooms.discard(room_id)
            took = 0.0 if started is None else time.monotonic() - started
            self.unlisted.append((room_id, took))
            log.info("took %s out of the room directory: created public by %s, who is not an approved public "
                     "account (%.0f ms after the gate's answer)", room_id, creator, took * 1000)
            return
        log.error("could not take %s out of the room directory; the next sweep tries again", room_id)

    async def _listed(self, room_id: str) -> bool:
        data = await self._get(f"/_matrix/client/v3/directory/list/room/{quote(room_id)}")
        return data.get("visibility") == "public"

    async def _creator(self, room_id: str) -> str | None:
        data = await self._get(f"/_synapse/admin/v1/rooms/{quote(room_id)}")
        creator = data.get("creator")
        return creator if isinstance(creator, str) else None

    async def _get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path, None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"}, timeout=aiohttp.ClientTimeout(total=10),
            )
        async with self._session.request(method, self._url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(data, dict):
                raise LookupError(f"{method} {path}: HTTP {resp.status} {str(data)[:200]}")
            return data
