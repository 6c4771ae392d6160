"""Room mode: enforcement after the fact in protected rooms, with the room's own tools.

Used where the gate cannot see the sender (remote users, or ``gate.enabled: false``): the same
policy core decides. A refused post is redacted. If the refusal stops all posting (no agreement,
a restriction, a suspension) the sender is muted by power level; a closed account is banned;
a post over a rate cap is only redacted. What counts as a post is what shows text, through the
one pipeline (``event_text``): messages, edits (judged on their new content; the edit is what is
redacted), and state events such as a topic or a name (redacting one takes its text off the room).

``apply(user)`` makes every protected room match what the core says now, and runs whenever that
may have changed: an agreement, a new case, a case that ends. Unmuting puts the previous level
back, and removes the entry the bot added, so ``m.room.power_levels`` does not grow with every
member.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Callable

from bot.i18n import Translator
from bot.matrix.client import Matrix, MatrixError, txn_id
from bot.matrix.onboarding import Onboarding
from bot.matrix.powers import level as _level
from bot.matrix.powers import level_needed_to_post, user_level
from bot.policy import Action, ActionKind, Decision, PolicyState, Reason, Source, decide
from bot.policy.model import MUTING_REASONS
from bot.policy.text import event_text
from bot.store import Mute, Store

log = logging.getLogger(__name__)

# Membership is not a post: joins are judged when they are made (the gate's user_may_join_room),
# and redacting a newcomer's member event would only strip its display name.
_NOT_POSTS = frozenset({"m.room.redaction", "m.room.member"})


class RoomMode:
    def __init__(
        self,
        matrix: Matrix,
        store: Store,
        state: PolicyState,
        onboarding: Onboarding,
        t: Translator,
        clock: Callable[[], int],
        members: Callable[[str], set[str]],
    ) -> None:
        self._matrix = matrix
        self._store = store
        self._state = state
        self._onboarding = onboarding
        self._t = t
        self._clock = clock
        self._members = members
        self.protected: set[str] = set()
        # Power levels are read-modify-write: one edit per room at a time.
        self._room_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _decide(self, room_id: str, user_id: str, event_type: str = "m.room.message",
                text: tuple[str | None, bool] = (None, False)) -> Decision:
        body, quotes = text
        action = Action(ActionKind.SEND_EVENT, user_id, source=Source.ROOM, room_id=room_id, event_type=event_type,
                        body=body, quotes_reply=quotes)
        return decide(action, self._state, self._clock())

    async def on_event(self, room_id: str, event: dict[str, Any], room_name: str) -> None:
        event_type = event.get("type")
        if room_id not in self.protected or event_type in _NOT_POSTS or not isinstance(event_type, str):
            return
        sender = event["sender"]
        content = event.get("content") if isinstance(event.get("content"), dict) else {}
        # The whole content, so the pipeline sees every field a client shows (an edit's
        # m.new_content, a topic, a caption); redacting the event undoes exactly what it showed.
        text = event_text(event_type, content)
        if "state_key" in event and text[0] is None:
            return  # state that shows no text (power levels, join rules …) is not a post
        decision = self._decide(room_id, sender, event_type, text)
        if decision.allowed:
            if decision.count_post:
                self._state.note_post(sender, self._clock())
            body = text[0]
            if body and self._state.in_news_scope(room_id):
                self._state.remember_text(body, sender, self._clock())
            return
        event_id = event["event_id"]
        try:
            await self._matrix.redact(room_id, event_id, self._t.refusal(decision.message_key, decision.params),
                                      txn=txn_id("redact", event_id))
        except MatrixError as exc:
            log.warning("could not redact %s in %s: %s", event_id, room_id, exc)
        changed = await self._enforce(room_id, sender, decision)
        if decision.reason is Reason.NEWS_TIER_MISSING:
            # Redacted, not muted: the account may post anything else. Tell it why.
            self._onboarding.request(sender, (self._t.refusal(decision.message_key, decision.params), event_id))
        if decision.prompt_agreement:
            note = None
            if changed:
                text = self._t("roommode.redacted", room=room_name, version=self._state.agreement_version)
                note = (text, event_id)
            self._onboarding.request(sender, note)

    async def apply(self, user_id: str) -> None:
        """Bring every protected room in line with what the core says about ``user_id`` now."""
        muted_in = {mute.room_id: mute for mute in await self._store.rooms.mutes_of(user_id)}
        for room_id in sorted(self.protected):
            decision = self._decide(room_id, user_id)
            if room_id not in muted_in and user_id not in self._members(room_id) and decision.reason is not Reason.CLOSED:
                continue  # not there and not muted: nothing to line up (a ban needs no membership)
            if decision.allowed or decision.reason is Reason.RATE_LIMITED:
                if room_id in muted_in:
                    await self._unmute(muted_in[room_id])
            else:
                await self._enforce(room_id, user_id, decision)

    async def _enforce(self, room_id: str, user_id: str, decision: Decision) -> bool:
        if decision.reason is Reason.CLOSED:
            return await self._ban(room_id, user_id, decision)
        if decision.reason in MUTING_REASONS:
            return await self._mute(room_id, user_id, str(decision.reason))
        return False

    async def _ban(self, room_id: str, user_id: str, decision: Decision) -> bool:
        try:
            await self._matrix.ban(room_id, user_id, self._t.refusal(decision.message_key, decision.params))
        except MatrixError as exc:
            log.warning("could not ban %s from %s: %s", user_id, room_id, exc)
            return False
        log.info("banned %s from %s (case %s)", user_id, room_id, decision.params.get("case"))
        return True

    async def unban_everywhere(self, user_id: str) -> None:
        """A closure was lifted: let the account back into the protected rooms."""
        for room_id in sorted(self.protected):
            try:
                await self._matrix.unban(room_id, user_id)
            except MatrixError as exc:
                log.info("unbanning %s in %s: %s", user_id, room_id, exc)

    async def _mute(self, room_id: str, user_id: str, reason: str) -> bool:
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
                reason=reason,
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
            log.info("muted %s in %s (%s)", user_id, room_id, reason)
            return True

    async def _unmute(self, mute: Mute) -> None:
        async with self._room_locks[mute.room_id]:
            restored: int | None = None
            try:
                levels = await self._matrix.power_levels(mute.room_id)
                users = dict(levels.get("users") or {})
                # Put back only what the bot itself set: a moderator's later change wins.
                if mute.user_id in users and _level(users[mute.user_id]) == mute.muted_level:
                    if mute.previous_level is None:
                        del users[mute.user_id]
                    else:
                        users[mute.user_id] = mute.previous_level
                    restored = mute.previous_level
                    await self._matrix.set_power_levels(mute.room_id, {**levels, "users": users})
            except MatrixError as exc:
                log.warning("could not restore %s's power level in %s: %s", mute.user_id, mute.room_id, exc)
                return
            await self._store.rooms.remove_mute(
                mute, actor=self._state.bot_user_id, now_ms=self._clock(), restored_level=restored
            )
