"""The bot's Matrix connection: login that reuses one device, and the few calls the bot makes,
each turning an error response into an exception and retrying rate limits as the server asks."""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Any

from nio import AsyncClient, AsyncClientConfig, ErrorResponse, LoginResponse, RoomPreset, RoomVisibility, WhoamiResponse
from nio.api import MessageDirection

from bot.config import Settings
from bot.store import Store

log = logging.getLogger(__name__)

DEVICE_NAME = "rules-bot"


class MatrixError(Exception):
    """A Matrix call failed; ``errcode`` is the server's code (``M_FORBIDDEN`` …) when there is one."""

    def __init__(self, what: str, response: ErrorResponse | None = None, errcode: str | None = None,
                 status: int | None = None) -> None:
        self.errcode = errcode or (response.status_code if response is not None else None)
        # The HTTP status when known: Synapse answers M_UNKNOWN both to a bad request (400) and to
        # its own internal errors (500), and only the second is worth trying again.
        transport = getattr(response, "transport_response", None)
        self.status = status if status is not None else getattr(transport, "status", None)
        super().__init__(f"{what}: {response if response is not None else errcode}")


def _check(what: str, response: Any) -> Any:
    if isinstance(response, ErrorResponse):
        raise MatrixError(what, response)
    return response


# A send's transaction ID, kept in its content: the homeserver forgets transaction IDs (Synapse
# within the hour and at a restart), the room does not.
EFFECT_FIELD = "im.rulesbot.effect"


def txn_id(*parts: str) -> str:
    """A transaction ID derived from what the send is for, so a retry after a crash is deduplicated
    by the homeserver (same device, same ID → same event) instead of posting twice."""
    return "rb-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def notice_content(body: str, reply_to: str | None = None) -> dict[str, Any]:
    """An ``m.notice`` whose HTML form is the escaped body: user text never becomes markup."""
    content: dict[str, Any] = {
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": html.escape(body).replace("\n", "<br/>"),
    }
    if reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def client_config() -> AsyncClientConfig:
    # nio sleeps for retry_after_ms on M_LIMIT_EXCEEDED and retries; bound it so one stuck call
    # cannot hold a worker forever. No encryption: the bot's rooms are unencrypted by design.
    return AsyncClientConfig(
        max_limit_exceeded=20,
        max_timeouts=6,
        store_sync_tokens=False,
        encryption_enabled=False,
        request_timeout=60,
    )


class Matrix:
    """Thin wrapper over nio's AsyncClient for the calls the bot makes."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def send_notice(self, room_id: str, body: str, *, txn: str, reply_to: str | None = None) -> str:
        content = {**notice_content(body, reply_to), EFFECT_FIELD: txn}
        response = await self.client.room_send(room_id, "m.room.message", content, tx_id=txn)
        return _check(f"send to {room_id}", response).event_id

    async def find_sent(self, room_id: str, txn: str, *, pages: int = 2, limit: int = 100) -> str | None:
        """The event the bot sent with ``txn`` (in its ``EFFECT_FIELD``) among its latest messages in
        the room, or None: how a retried send knows an earlier attempt went out after all."""
        start: str | None = None
        only_mine = {"senders": [self.user_id], "types": ["m.room.message"]}
        for _ in range(pages):
            response = _check(f"read the messages of {room_id}", await self.client.room_messages(
                room_id, start=start, direction=MessageDirection.back, limit=limit, message_filter=only_mine))
            for event in response.chunk:
                source = getattr(event, "source", None) or {}
                content = source.get("content") or {}
                if source.get("sender") == self.user_id and content.get(EFFECT_FIELD) == txn:
                    return str(source.get("event_id"))
            if not response.chunk or not response.end:
                return None
            start = response.end
        return None

    async def send_file(self, room_id: str, data: Any, size: int, filename: str, mimetype: str, *,
                        txn: str | None = None) -> str:
        """Upload ``data`` (a file object) and post it as an ``m.file`` message (with ``txn``, a
        retry is the same event however often the upload was repeated)."""
        upload, _ = await self.client.upload(data, content_type=mimetype, filename=filename, filesize=size)
        uri = _check(f"upload {filename}", upload).content_uri
        content = {"msgtype": "m.file", "body": filename, "url": uri, "info": {"mimetype": mimetype, "size": size}}
        if txn is not None:
            content[EFFECT_FIELD] = txn
        response = await self.client.room_send(room_id, "m.room.message", content, tx_id=txn or txn_id("file", uri))
        return _check(f"send {filename} to {room_id}", response).event_id

    async def redact(self, room_id: str, event_id: str, reason: str, *, txn: str) -> None:
        _check(f"redact {event_id}", await self.client.room_redact(room_id, event_id, reason=reason, tx_id=txn))

    async def power_levels(self, room_id: str) -> dict[str, Any]:
        return await self.state_content(room_id, "m.room.power_levels")

    async def set_power_levels(self, room_id: str, content: dict[str, Any]) -> None:
        await self.put_state(room_id, "m.room.power_levels", content, "")

    async def state_content(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        response = await self.client.room_get_state_event(room_id, event_type, state_key)
        return dict(_check(f"read {event_type} in {room_id}", response).content)

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """Every current state event of a room (the bot must be able to see it: MatrixError if not)."""
        response = _check(f"read the state of {room_id}", await self.client.room_get_state(room_id))
        return [event for event in response.events if isinstance(event, dict)]

    async def directory_visibility(self, room_id: str) -> str:
        """``public`` if the room is listed in the server's room directory, else ``private``."""
        response = _check(f"read the directory visibility of {room_id}", await self.client.room_get_visibility(room_id))
        return str(getattr(response, "visibility", "private"))

    async def put_state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str) -> None:
        response = await self.client.room_put_state(room_id, event_type, content, state_key=state_key)
        _check(f"set {event_type} in {room_id}", response)

    async def create_dm(self, user_id: str, power_levels: dict[str, Any] | None = None) -> str:
        """A new direct chat with ``user_id``; ``power_levels`` overrides keys of the room's power levels."""
        response = await self.client.room_create(
            visibility=RoomVisibility.private,
            is_direct=True,
            invite=[user_id],
            # private_chat, not trusted_private_chat: in room version 12 the latter would make the
            # user a second creator with unlimited power over the bot's room.
            preset=RoomPreset.private_chat,
            power_level_override=power_levels,
        )
        return _check(f"create a direct chat with {user_id}", response).room_id

    async def join(self, room: str) -> str:
        return _check(f"join {room}", await self.client.join(room)).room_id

    async def leave(self, room_id: str) -> None:
        _check(f"leave {room_id}", await self.client.room_leave(room_id))

    async def get_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        response = await self.client.room_get_event(room_id, event_id)
        return dict(_check(f"read {event_id}", response).event.source)

    async def ban(self, room_id: str, user_id: str, reason: str) -> None:
        _check(f"ban {user_id} from {room_id}", await self.client.room_ban(room_id, user_id, reason=reason))

    async def unban(self, room_id: str, user_id: str) -> None:
        _check(f"unban {user_id} in {room_id}", await self.client.room_unban(room_id, user_id))

    async def resolve(self, room: str) -> str:
        if room.startswith("!"):
            return room
        return _check(f"resolve {room}", await self.client.room_resolve_alias(room)).room_id


async def connect(client: AsyncClient, settings: Settings, store: Store) -> None:
    """Log ``client`` in, reusing the same device and token on every later start.

    A configured access token is used as it is. Otherwise the token from the previous run is
    restored; only if the homeserver no longer accepts it does the bot log in with the password.
    """
    hs = settings.homeserver
    if hs.access_token is not None:
        client.access_token = hs.access_token.get_secret_value()
        who = await client.whoami()
        if not isinstance(who, WhoamiResponse):
            raise MatrixError("homeserver.access_token was not accepted", who)
        client.restore_login(hs.user_id, who.device_id or "", client.access_token)
        return
    token, device = await store.get("access_token"), await store.get("device_id")
    if token and device:
        client.restore_login(hs.user_id, device, token)
        who = await client.whoami()
        if isinstance(who, WhoamiResponse):
            return
        if who.status_code != "M_UNKNOWN_TOKEN":
            raise MatrixError("checking the saved access token", who)
        log.warning("the saved access token is no longer valid; logging in again")
    assert hs.password is not None  # the config model requires one of the two
    if device:
        client.device_id = device  # log in again on the same device: no pile of stale devices
    response = await client.login(hs.password.get_secret_value(), device_name=DEVICE_NAME)
    if not isinstance(response, LoginResponse):
        raise MatrixError("login with homeserver.password failed", response)
    await store.put("access_token", response.access_token)
    await store.put("device_id", response.device_id)
