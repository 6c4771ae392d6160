"""Routes each event of a sync batch to the part of the bot that cares, one failure at a time.

Every event is handled in its own try/except: one bad event is logged and the rest of the batch
still runs, so the sync token after it can be saved. The exception is a store that cannot commit
(locked, disk full): then the batch fails, its token is not saved and it is fetched again; what
was already handled is skipped by event ID, and nothing is lost.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Awaitable, Callable

from nio import SyncResponse

from bot.agreement import Outcome, is_accept_reaction
from bot.commands.agreement import describe_outcome
from bot.commands.context import Context, Services
from bot.commands.dispatch import Dispatcher
from bot.gate.callbacks import scope_setting
from bot.matrix.client import Matrix, MatrixError, txn_id
from bot.matrix.management import ManagementRoom
from bot.matrix.roommode import RoomMode
from bot.policy.decide import public_account
from bot.store.db import store_unavailable

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self,
        matrix: Matrix,
        services: Services,
        dispatcher: Dispatcher,
        room_mode: RoomMode,
        room_name: Callable[[str], str],
        members: Callable[[str], set[str]],
        management: ManagementRoom,
    ) -> None:
        self._matrix = matrix
        self._services = services
        self._store = services.store
        self._state = services.state
        self._onboarding = services.onboarding
        self._agreements = services.agreements
        self._t = services.t
        self._dispatcher = dispatcher
        self._room_mode = room_mode
        self._room_name = room_name
        self._members = members
        self._management = management
        # Called after the bot joins a room by invite: a configured alias may only now exist.
        self.on_joined: Callable[[], Awaitable[Any]] | None = None

    async def handle_batch(self, response: SyncResponse, live: bool) -> None:
        for room_id, info in response.rooms.invite.items():
            # nio moves a member event's content out of ``source``: put it back for the check.
            invite_state = [{**e.source, "content": getattr(e, "content", e.source.get("content"))}
                            for e in info.invite_state if isinstance(getattr(e, "source", None), dict)]
            await self._isolated(f"the invite to {room_id}", self._on_invite(room_id, invite_state))
        for room_id in response.rooms.leave:
            await self._isolated(f"leaving {room_id}", self._on_bot_left(room_id))
        if not live:
            return
        for room_id, info in response.rooms.join.items():
            for event in info.timeline.events:
                source = getattr(event, "source", None)
                if isinstance(source, dict) and "event_id" in source and "sender" in source:
                    await self._isolated(f"event {source['event_id']}", self.on_event(room_id, source))

    @staticmethod
    async def _isolated(what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except sqlite3.OperationalError as exc:
            if store_unavailable(exc):
                raise  # the store, not the event: the whole batch is tried again
            log.exception("handling %s failed", what)  # a bug (bad SQL): isolated like any other
        except Exception:
            log.exception("handling %s failed", what)

    async def on_event(self, room_id: str, event: dict[str, Any]) -> None:
        setting = scope_setting(event)
        if setting is not None:
            # The stored event: news scope follows it both ways now (the gate only widens, since
            # Synapse's auth rules may refuse an event the gate allowed). Remote senders too.
            kind_, value = setting
            if kind_ == "m.room.join_rules":
                self._state.note_join_rule(room_id, value)
            else:
                self._state.note_history_visibility(room_id, value)
        sender = event["sender"]
        if sender == self._state.bot_user_id:
            return
        kind = event.get("type")
        if kind == "m.room.member":
            await self._on_membership(room_id, event)
            # Display names and reasons: no callback of the gate ever sees them.
            await self._room_mode.on_member(room_id, event, self._room_name(room_id))
            return
        if kind == "m.room.message":
            moderator_place = room_id == self._management.room_id or (
                sender in self._state.moderators and self._members(room_id) == {sender, self._state.bot_user_id}
            )
            own_room = moderator_place or self._state.is_dm_of(room_id, sender)
            await self._dispatcher.handle(room_id, event, answer_unknown=own_room, moderator_place=moderator_place)
        elif kind == "m.reaction":
            await self._on_reaction(room_id, event)
        # After commands: an `!agree` posted in a protected room counts before enforcement looks.
        await self._room_mode.on_event(room_id, event, self._room_name(room_id))

    async def _on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        relation = (event.get("content") or {}).get("m.relates_to") or {}
        if relation.get("rel_type") != "m.annotation" or not is_accept_reaction(relation.get("key")):
            return
        target = relation.get("event_id")
        prompt = await self._store.agreements.prompt_by_event(target) if isinstance(target, str) else None
        sender = event["sender"]
        if prompt is None or prompt.user_id != sender:
            return
        # The acceptance, its effects and the answer commit with the reaction marked handled.
        async with self._store.unit(event["event_id"], kind="reaction") as unit:
            if unit.replayed:
                return
            if prompt.version != self._state.agreement_version:
                text = self._t("agree.stale_reaction", version=self._state.agreement_version)
            else:
                outcome = await self._agreements.accept(sender, event["event_id"], room_id, "reaction")
                ctx = Context(sender, room_id, event["event_id"], {}, frozenset(), self._services)
                text = await describe_outcome(ctx, outcome)
                if outcome is Outcome.ALREADY:
                    return  # a second ✅ needs no answer
            await unit.effect("notice", room_id, {"room": room_id, "text": text, "reply_to": target,
                                                  "txn": txn_id("reply", event["event_id"])}, f"reply/{event['event_id']}")

    async def _on_membership(self, room_id: str, event: dict[str, Any]) -> None:
        membership = (event.get("content") or {}).get("membership")
        user_id = event.get("state_key")
        owner = self._state.dm_user_by_room.get(room_id)
        if owner is None or not isinstance(user_id, str):
            return
        # A third party in a DM ends its exemption at once (in memory, before any await), and the
        # bot leaves: what it tells the account there (cases, appeals) is not for others to read.
        # The account gets a new DM with only the two of them.
        third_party = self._state.note_dm_member(room_id, user_id, membership)
        if not third_party and not (membership in ("leave", "ban") and user_id == owner):
            return
        await self._forget_dm(room_id)
        try:
            await self._matrix.leave(room_id)
        except MatrixError as exc:
            log.info("leaving the abandoned direct chat %s: %s", room_id, exc)
        if third_party:
            log.info("%s joined or was invited to the direct chat %s of %s; opening a new one", user_id, room_id, owner)
            self._onboarding.request(owner, (self._t("dm.reopened"), f"dm-reopened-{room_id}"))

    async def _on_bot_left(self, room_id: str) -> None:
        if room_id in self._state.dm_user_by_room:
            await self._forget_dm(room_id)

    async def _forget_dm(self, room_id: str) -> None:
        await self._store.rooms.forget_dm_room(room_id)
        user_id = self._state.forget_dm_room(room_id)
        if user_id is not None:
            self._onboarding.forget(user_id)
            log.info("%s left their direct chat %s; the next request opens a new one", user_id, room_id)

    async def _on_invite(self, room_id: str, invite_state: list[dict[str, Any]]) -> None:
        inviter = invite_sender(invite_state, self._state.bot_user_id)
        wanted = (room_id in self._room_mode.protected or room_id == self._management.room_id
                  or room_id in self._room_mode.joining)
        # Moderators bring the bot into rooms; public accounts into their channels (for labels),
        # while they may hold channels (public_account: not one whose owner must be verified and
        # is not). Only local ones: their invites are made by our own server, never relayed.
        local = inviter is not None and inviter.endswith(":" + self._state.server_name)
        if wanted or (local and inviter is not None and (
                inviter in self._state.moderators or public_account(self._state, inviter) is not None)):
            log.info("accepting the invite of %s to %s", inviter, room_id)
            await self._matrix.join(room_id)
            if self.on_joined is not None:
                await self.on_joined()
        else:
            log.info("declining the invite of %s to %s (not a protected room; not from a moderator or public account)",
                     inviter, room_id)
            await self._matrix.leave(room_id)


def invite_sender(invite_state: list[dict[str, Any]], bot_user_id: str) -> str | None:
    """Who really invited the bot: the sender of the invite event itself, or None.

    Everything in ``invite_state`` but its last event is stripped state that the inviting server
    chose, so a remote server can put a member event there claiming any sender. Synapse (1.163,
    MSC4319) appends the bot's own invite event after that state; its sender is checked (a
    remote server may only send invites from its own users), so only that event counts.
    """
    if not invite_state:
        return None
    last = invite_state[-1]
    content = last.get("content")
    if (last.get("type") != "m.room.member" or last.get("state_key") != bot_user_id
            or not isinstance(content, dict) or content.get("membership") != "invite"):
        return None
    sender = last.get("sender")
    return sender if isinstance(sender, str) else None
