"""Room mode: enforcement after the fact in protected rooms, with the room's own tools.

Used where the gate cannot see the sender (remote users, or ``gate.enabled: false``): the same
policy core decides; a refused event is redacted, the sender is muted by power level, and asked
to agree in its DM. On agreement the previous power level is put back and the entry the bot
added is removed, so ``m.room.power_levels`` does not grow with every member.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Callable

from bot.i18n import Translator
from bot.matrix.client import Matrix, MatrixError, txn_id
from bot.matrix.onboarding import Onboarding
from bot.policy import Action, ActionKind, PolicyState, Source, decide
from bot.store import Mute, Store

log = logging.getLogger(__name__)

MUTE_REASON_AGREEMENT = "agreement"
_NOT_POSTS = frozenset({"m.room.redaction"})


def _level(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def level_needed_to_post(power_levels: dict[str, Any]) -> int:
    events = power_levels.get("events") or {}
    return _level(events.get("m.room.message", power_levels.get("events_default", 0)))


def user_level(power_levels: dict[str, Any], user_id: str) -> int:
    users = power_levels.get("users") or {}
    return _level(users.get(user_id, power_levels.get("users_default", 0)))


class RoomMode:
    def __init__(
        self,
        matrix: Matrix,
        store: Store,
        state: PolicyState,
        onboarding: Onboarding,
        t: Translator,
        clock: Callable[[], int],
    ) -> None:
        self._matrix = matrix
        self._store = store
        self._state = state
        self._onboarding = onboarding
        self._t = t
        self._clock = clock
        self.protected: set[str] = set()
        # Power levels are read-modify-write: one edit per room at a time.
        self._room_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def on_event(self, room_id: str, event: dict[str, Any], room_name: str) -> None:
        if room_id not in self.protected or "state_key" in event or event.get("type") in _NOT_POSTS:
            return
        sender = event["sender"]
        action = Action(ActionKind.SEND_EVENT, sender, source=Source.ROOM, room_id=room_id, event_type=event.get("type"))
        decision = decide(action, self._state)
        if decision.allowed:
            return
        event_id = event["event_id"]
        reason = self._t.refusal(decision.message_key, decision.params)
        try:
            await self._matrix.redact(room_id, event_id, reason, txn=txn_id("redact", event_id))
        except MatrixError as exc:
            log.warning("could not redact %s in %s: %s", event_id, room_id, exc)
        newly_muted = await self.mute(room_id, sender)
        note = None
        if newly_muted:
            text = self._t("roommode.redacted", room=room_name, version=self._state.agreement_version)
            note = (text, event_id)
        self._onboarding.request(sender, note)

    async def mute(self, room_id: str, user_id: str) -> bool:
        """Lower the user's power level below what posting needs; False if nothing was changed."""
        async with self._room_locks[room_id]:
            if await self._store.rooms.mute_in(room_id, user_id) is not None:
                return False
            levels = await self._matrix.power_levels(room_id)
            needed = level_needed_to_post(levels)
            if user_level(levels, user_id) < needed:
                return False
            users = dict(levels.get("users") or {})
            previous = users.get(user_id)
            mute = Mute(
                room_id=room_id,
                user_id=user_id,
                previous_level=None if previous is None else _level(previous),
                muted_level=needed - 1,
                reason=MUTE_REASON_AGREEMENT,
                muted_at=self._clock(),
            )
            # The store first: if the bot dies right after the change, the record to undo it exists.
            await self._store.rooms.record_mute(mute, actor=self._state.bot_user_id)
            users[user_id] = mute.muted_level
            try:
                await self._matrix.set_power_levels(room_id, {**levels, "users": users})
            except MatrixError as exc:
                log.warning("could not mute %s in %s (is the bot's power level high enough?): %s", user_id, room_id, exc)
                await self._store.rooms.remove_mute(
                    mute, actor=self._state.bot_user_id, now_ms=self._clock(), restored_level=mute.previous_level
                )
                return False
            log.info("muted %s in %s until they agree", user_id, room_id)
            return True

    async def restore(self, user_id: str) -> None:
        """Undo this bot's agreement mutes of ``user_id``, in every room."""
        for mute in await self._store.rooms.mutes_of(user_id, MUTE_REASON_AGREEMENT):
            async with self._room_locks[mute.room_id]:
                restored: int | None = None
                try:
                    levels = await self._matrix.power_levels(mute.room_id)
                    users = dict(levels.get("users") or {})
                    # Put back only what the bot itself set: a moderator's later change wins.
                    if user_id in users and _level(users[user_id]) == mute.muted_level:
                        if mute.previous_level is None:
                            del users[user_id]
                        else:
                            users[user_id] = mute.previous_level
                        restored = mute.previous_level
                        await self._matrix.set_power_levels(mute.room_id, {**levels, "users": users})
                except MatrixError as exc:
                    log.warning("could not restore %s's power level in %s: %s", user_id, mute.room_id, exc)
                    continue
                await self._store.rooms.remove_mute(
                    mute, actor=self._state.bot_user_id, now_ms=self._clock(), restored_level=restored
                )
