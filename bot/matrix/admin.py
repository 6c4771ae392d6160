"""Synapse's admin API, for what the client-server API cannot do: lift the bot's own rate limit,
suspend and deactivate accounts. Used only when ``homeserver.admin_token`` is configured."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.matrix.client import MatrixError

log = logging.getLogger(__name__)


class AdminApi:
    def __init__(self, base_url: str, token: str) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=aiohttp.ClientTimeout(total=60))
        try:
            async with self._session.request(method, self._base + path, json=body) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = {}
                if resp.status != 200:
                    raise MatrixError(f"admin API {method} {path}", errcode=str(data.get("errcode") or f"HTTP {resp.status}"),
                                      status=resp.status)
                return data
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # A timeout is a network error like the others: callers handle MatrixError, and the
            # supervisor (bot.supervise) retries the loop either way.
            raise MatrixError(f"admin API {method} {path}", errcode=type(exc).__name__) from exc

    async def lift_ratelimit(self, user_id: str) -> None:
        await self._call("POST", f"/_synapse/admin/v1/users/{quote(user_id)}/override_ratelimit",
                         {"messages_per_second": 0, "burst_count": 0})

    async def suspend(self, user_id: str, suspended: bool) -> None:
        await self._call("PUT", f"/_synapse/admin/v1/suspend/{quote(user_id)}", {"suspend": suspended})

    async def deactivate(self, user_id: str, erase: bool) -> None:
        await self._call("POST", f"/_synapse/admin/v1/deactivate/{quote(user_id)}", {"erase": erase})

    async def unlist_room(self, room_id: str) -> None:
        """Take a room out of the directory (Synapse lets a server admin change any room's listing)."""
        await self._call("PUT", f"/_matrix/client/v3/directory/list/room/{quote(room_id)}", {"visibility": "private"})

    async def make_room_admin(self, room_id: str, user_id: str) -> None:
        """Give ``user_id`` the creator's power in the room (it is invited if it is not in it)."""
        await self._call("POST", f"/_synapse/admin/v1/rooms/{quote(room_id)}/make_room_admin", {"user_id": user_id})

    async def delete_alias(self, alias: str) -> None:
        """Remove an alias from the directory (server admins may delete any); gone already is done."""
        try:
            await self._call("DELETE", f"/_matrix/client/v3/directory/room/{quote(alias)}", None)
        except MatrixError as exc:
            if exc.errcode != "M_NOT_FOUND":
                raise

    async def event_reports(self, offset: int, limit: int = 100) -> list[dict[str, Any]]:
        """Reports made with Matrix's report button, oldest first, from ``offset``."""
        data = await self._call("GET", f"/_synapse/admin/v1/event_reports?from={offset}&limit={limit}&dir=f", None)
        return list(data.get("event_reports") or [])

    async def event_report(self, report_id: int) -> dict[str, Any]:
        return await self._call("GET", f"/_synapse/admin/v1/event_reports/{report_id}", None)

    # --- identity (issue 9) ---
    async def user_record(self, user_id: str) -> dict[str, Any] | None:
        """The admin API's user record (external_ids, deactivated, consent_version …); None when
        the homeserver has no such account."""
        try:
            return await self._call("GET", f"/_synapse/admin/v2/users/{quote(user_id)}", None)
        except MatrixError as exc:
            if exc.status == 404:
                return None
            raise
    # --- end identity ---
