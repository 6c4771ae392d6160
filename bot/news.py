"""The news rules at run time: loading and reloading them, and keeping the set of rooms they apply in.

Scope (article 7 ¶2 applies to publishing to the public): rooms published in the directory, rooms
anyone can join (join rule public, restricted or knock_restricted), rooms anyone can read
(history visibility world_readable), public accounts' channels and protected rooms; direct chats
and invite-only rooms only if the rules file says so. With an admin token the bot reads Synapse's room list, which
knows every room's join rule; without one, the public directory and the rooms the bot is in.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import aiohttp

from bot.config import Settings, load_news_rules
from bot.i18n import Refusal
from bot.matrix.client import Matrix
from bot.policy import PolicyState
from bot.policy.news import NewsRules, RulesError
from bot.policy.state import OPEN_JOIN_RULES

log = logging.getLogger(__name__)

SCOPE_EVERY_S = 60.0  # the scope refresh's period (bot.supervise runs it)


class News:
    def __init__(self, state: PolicyState, matrix: Matrix, settings: Settings, admin_token: str | None,
                 protected: Callable[[], set[str]]) -> None:
        self._state = state
        self._matrix = matrix
        self._path = settings.rules_path()
        self._url = settings.homeserver.url
        self._admin_token = admin_token
        self._protected = protected
        # Given the admin room list at each refresh (the directory guard's sweep).
        self.on_rooms: Callable[[list[dict[str, Any]]], None] | None = None

    def load(self) -> NewsRules:
        """Load the rules into the state; RulesError (the old rules stay) if the file is not valid."""
        rules = load_news_rules(self._path)
        self._state.news_rules = rules
        log.info("news rules loaded from %s", self._path)
        return rules

    def reload(self) -> NewsRules:
        try:
            return self.load()
        except RulesError as exc:
            log.error("news rules not reloaded, the previous ones stay: %s", exc)
            raise Refusal("rules.invalid", error=str(exc)) from None

    async def refresh_scope(self) -> None:
        """Rebuild the scope from the homeserver: the safety net behind the instant updates.

        The gate and the sync move rooms in and out of ``open_rooms`` and ``listed_rooms`` the
        moment they change; a change made while this refresh awaits the homeserver is newer than
        what it read, so it is kept.
        """
        state = self._state
        rules = state.news_rules
        open_before, listed_before = set(state.open_rooms), set(state.listed_rooms)
        readable_before = set(state.readable_rooms)
        scope = set(self._protected())
        opened: set[str] = set()
        listed: set[str] = set()
        readable: set[str] = set()
        for room_id, room in self._matrix.client.rooms.items():
            if room.join_rule in OPEN_JOIN_RULES:
                opened.add(room_id)
            if room.history_visibility == "world_readable":
                readable.add(room_id)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            if self._admin_token is not None:
                rooms = await self._pages(session, "/_synapse/admin/v1/rooms", "rooms", self._admin_token)
                for room in rooms:
                    members = int(room.get("joined_members") or 0)
                    if room.get("public"):
                        listed.add(room["room_id"])
                    if room.get("join_rules") in OPEN_JOIN_RULES:
                        opened.add(room["room_id"])
                    if room.get("history_visibility") == "world_readable":
                        readable.add(room["room_id"])
                    if (rules.invite_only and members > 2) or (rules.direct_chats and members <= 2):
                        scope.add(room["room_id"])
                if self.on_rooms is not None:
                    self.on_rooms(rooms)
            token = self._matrix.client.access_token
            for room in await self._pages(session, "/_matrix/client/v3/publicRooms", "chunk", token):
                listed.add(room["room_id"])
        state.news_scope = scope
        state.open_rooms = _merge(opened, open_before, state.open_rooms)
        state.listed_rooms = _merge(listed, listed_before, state.listed_rooms)
        state.readable_rooms = _merge(readable, readable_before, state.readable_rooms)

    async def _pages(self, session: aiohttp.ClientSession, path: str, key: str, token: str) -> list[dict[str, Any]]:
        rooms: list[dict[str, Any]] = []
        since: str | None = None
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(1000):  # a bound, not a limit anyone reaches: 500 rooms a page
            params: dict[str, str] = {"limit": "500"}
            if since is not None:
                params["since" if "publicRooms" in path else "from"] = since
            async with session.get(self._url + path, params=params, headers=headers) as resp:
                if resp.status != 200:
                    log.warning("listing rooms (%s) failed: HTTP %d", path, resp.status)
                    return rooms
                data = await resp.json()
            rooms += data.get(key) or []
            # publicRooms pages with a token, the admin room list with an offset; both call it next_batch.
            since = None if data.get("next_batch") in (None, "") else str(data["next_batch"])
            if since is None:
                return rooms
        return rooms


def _merge(read: set[str], before: set[str], now: set[str]) -> set[str]:
    """What the homeserver said, except rooms that changed in memory while it was being asked."""
    return (read - (before - now)) | (now - before)
