"""Room mode: enforcement after the fact in protected rooms, with the room's own tools.

Used where the gate cannot see the sender (remote users, or ``gate.enabled: false``): the same
policy core decides. A refused post is redacted. If the refusal stops all posting (no agreement,
a restriction, a suspension) the sender is muted by power level; a closed account is banned;
a post over a rate cap is only redacted. What counts as a post is what shows text, through the
one pipeline (``event_text``): messages, edits (judged on their new content; the edit is what is
redacted), and state events such as a topic or a name (redacting one takes its text off the room).

``apply(user)`` makes every protected room match what the core says now, and runs whenever that
may have changed: an agreement, a new case, a case that ends. Nothing here calls Matrix to act:
the redactions, mutes, unmutes and bans are rows of the effects journal, committed with what
caused them, and the executor (``bot.effects``) carries them out. Unmuting puts the previous
level back, and removes the entry the bot added, so ``m.room.power_levels`` does not grow with
every member.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from bot.i18n import Translator
from bot.matrix.client import Matrix, txn_id
from bot.matrix.onboarding import Onboarding
from bot.policy import Action, ActionKind, Decision, PolicyState, Reason, Source, decide
from bot.policy.model import MUTING_REASONS
from bot.policy.text import event_text
from bot.store import Store

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
        # The redaction, the mute or ban and the notes are journaled with the event marked handled:
        # a replayed sync batch finds it and does nothing twice.
        async with self._store.unit(event_id, kind="roommode") as unit:
            if unit.replayed:
                return
            await unit.effect("redact", sender, {
                "room": room_id, "event_id": event_id, "reason": self._t.refusal(decision.message_key, decision.params),
                "txn": txn_id("redact", event_id),
            }, f"redact/{event_id}")
            changed = await self._enforce(room_id, sender, decision, f"event-{event_id}")
            if decision.reason is Reason.NEWS_TIER_MISSING:
                # Redacted, not muted: the account may post anything else. Tell it why.
                await unit.effect("dm", sender, {"text": self._t.refusal(decision.message_key, decision.params)},
                                  f"note/{event_id}")
            if decision.prompt_agreement and changed:
                text_ = self._t("roommode.redacted", room=room_name, version=self._state.agreement_version)
                await unit.effect("dm", sender, {"text": text_}, f"note/{event_id}")
        if decision.prompt_agreement:
            self._onboarding.request(sender)

    async def apply(self, user_id: str, cause: str | None = None) -> None:
        """Bring every protected room in line with what the core says about ``user_id`` now: the
        mutes, unmutes and bans are journaled (in the caller's transaction), keyed by ``cause``.

        Rooms where the account is recorded as muted count even before the protected rooms are
        known (at start-up, a measure that expired while the bot was down lifts its mutes)."""
        cause = cause or f"apply-{user_id}-{self._clock()}"
        muted_in = {mute.room_id: mute for mute in await self._store.rooms.mutes_of(user_id)}
        for room_id in sorted(self.protected | set(muted_in)):
            decision = self._decide(room_id, user_id)
            if room_id not in muted_in and user_id not in self._members(room_id) and decision.reason is not Reason.CLOSED:
                if not await self._store.effects.pending_for("mute", user_id, room_id):
                    continue  # not there and not muted: nothing to line up (a ban needs no membership)
            if decision.allowed or decision.reason is Reason.RATE_LIMITED:
                if room_id in muted_in or await self._store.effects.pending_for("mute", user_id, room_id):
                    await self._store.effects.add("unmute", user_id, {"room": room_id}, f"{cause}/unmute/{room_id}")
            else:
                await self._enforce(room_id, user_id, decision, cause)

    async def _enforce(self, room_id: str, user_id: str, decision: Decision, cause: str) -> bool:
        """Journal the ban or mute the decision asks for; True if the account will be changed."""
        if decision.reason is Reason.CLOSED:
            return await self._store.effects.add(
                "ban", user_id, {"room": room_id, "reason": self._t.refusal(decision.message_key, decision.params)},
                f"{cause}/ban/{room_id}")
        if decision.reason in MUTING_REASONS:
            if await self._store.rooms.mute_in(room_id, user_id) is not None:
                return False
            return await self._store.effects.add(
                "mute", user_id, {"room": room_id, "reason": str(decision.reason)}, f"{cause}/mute/{room_id}")
        return False

    async def unban_everywhere(self, user_id: str, cause: str) -> None:
        """A closure was lifted: let the account back into the protected rooms (journaled)."""
        for room_id in sorted(self.protected):
            await self._store.effects.add("unban", user_id, {"room": room_id}, f"{cause}/unban/{room_id}")
