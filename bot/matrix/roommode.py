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
from typing import Any, Awaitable, Callable, Sequence

from bot.i18n import Translator
from bot.matrix.client import Matrix, txn_id
from bot.matrix.management import ManagementRoom
from bot.matrix.onboarding import Onboarding
from bot.policy import Action, ActionKind, Decision, PolicyState, Reason, Source, decide
from bot.policy.decide import news_verdict
from bot.policy.model import MUTING_REASONS
from bot.policy.text import event_text
from bot.store import Store

log = logging.getLogger(__name__)

# How far back a post may be judged at its own time when the sync loop has not said since when it
# has been behind (no batch saved yet): see ``RoomMode.posted_at``.
LATE_BOUND_MS = 24 * 3600 * 1000

# Membership is not a post: joins are judged when they are made (the gate's user_may_join_room);
# only the text a member event shows is judged, by the news rules (``on_member``).
_NOT_POSTS = frozenset({"m.room.redaction", "m.room.member"})


# What a cleared initial state event becomes (an empty name or topic is no name or topic).
_CLEARED: dict[str, dict[str, Any]] = {"m.room.name": {"name": ""}, "m.room.topic": {"topic": ""},
                                       "m.room.canonical_alias": {}}


def member_text(content: dict[str, Any]) -> str | None:
    """The text a member event shows: the display name, and the reason of a leave, kick, ban or
    knock ("X left: <reason>"). The avatar is an image, out of the text rules' reach."""
    pieces = [v.strip() for v in (content.get("displayname"), content.get("reason")) if isinstance(v, str) and v.strip()]
    return "\n".join(pieces) or None


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
        # New rooms the bot joins to clear a refused initial name or topic (it accepts their invites).
        self.joining: set[str] = set()
        # When the sync loop saved its last batch (bot.matrix.sync.SyncLoop.saved_at): the bot has
        # been behind since then at most. None: not known.
        self.synced_at: Callable[[], int | None] = lambda: None
        # --- consent at registration (bot.consent) ---
        # Asked before a post is refused for want of the agreement: True if the account accepted
        # it at registration (now recorded), so its first post is not redacted nor the account
        # muted and told to agree. Set by the service.
        self.consent: Callable[[str], Awaitable[bool]] | None = None

    def _decide(self, room_id: str, user_id: str, event_type: str = "m.room.message",
                text: tuple[str | None, bool] = (None, False), at: int | None = None) -> Decision:
        body, quotes = text
        action = Action(ActionKind.SEND_EVENT, user_id, source=Source.ROOM, room_id=room_id, event_type=event_type,
                        body=body, quotes_reply=quotes)
        return decide(action, self._state, self._clock() if at is None else at)

    def posted_at(self, event: dict[str, Any]) -> int:
        """The time a post is judged and counted at: its ``origin_server_ts``, so that posts read
        back from a gap (or arriving late) are spaced as they were made, not all at once now.

        The sender's server sets that time, and a remote one could forge it (far in the past, to
        slip past a rate cap): it is taken no later than now and no earlier than the last batch
        the sync loop saved before this one (the bot has been behind since then at most), or
        ``LATE_BOUND_MS`` ago while that is not known. A late event from before then counts as
        posted then."""
        now = self._clock()
        floor = self.synced_at()
        if floor is None or floor > now:
            floor = now - LATE_BOUND_MS
        ts = event.get("origin_server_ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            return now
        return min(now, max(ts, floor))

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
        if self._state.is_counted(sender, event.get("event_id")):
            return  # allowed and counted already: a replayed batch, or a gap read back over
        at = self.posted_at(event)
        decision = self._decide(room_id, sender, event_type, text, at)
        if not decision.allowed and decision.prompt_agreement and self.consent is not None \
                and await self.consent(sender):
            decision = self._decide(room_id, sender, event_type, text, at)
        if decision.allowed:
            if decision.count_post:
                self._state.note_post(sender, at, event.get("event_id"))
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
                # Journaled with the violation (after its note: one target, in order), not only
                # queued in memory: a crash before the queue got to it must not lose the prompt.
                await unit.effect("onboard", sender, {}, f"onboard/{event_id}")

    async def on_member(self, room_id: str, event: dict[str, Any], room_name: str) -> None:
        """Judge the text a member event shows (its ``displayname`` and ``reason``) by the news rules.

        Synapse sends no membership event through check_event_for_spam, so in every room the bot
        is in and that is in news scope this is the only look: protected rooms, and in server mode
        the other rooms in scope where the bot may redact. A refused one is redacted (that strips
        the display name and reason and keeps the membership) and the sender told why; nothing
        else (no mute: the membership itself is judged when it is made, by user_may_join_room)."""
        sender = event.get("sender")
        content = event.get("content")
        if not isinstance(sender, str) or not isinstance(content, dict) or self._state.is_exempt(sender):
            return
        if room_id not in self.protected and not (self._state.in_news_scope(room_id) and self._may_redact(room_id)):
            return
        text = member_text(content)
        if text is None:
            return
        action = Action(ActionKind.SEND_EVENT, sender, source=Source.ROOM, room_id=room_id,
                        event_type="m.room.member", body=text)
        verdict = news_verdict(action, self._state, self._clock())
        if verdict.allowed:
            return
        event_id = event["event_id"]
        message = self._t.refusal(verdict.message_key, {**verdict.params, "action": "member_event"})
        async with self._store.unit(event_id, kind="roommode") as unit:
            if unit.replayed:
                return
            await unit.effect("redact", sender, {"room": room_id, "event_id": event_id, "reason": message,
                                                 "txn": txn_id("redact", event_id)}, f"redact/{event_id}")
            await unit.effect("dm", sender, {"text": message}, f"note/{event_id}")
        log.info("redacted the member event %s of %s in %s (%s): its display name or reason reads as news",
                 event_id, sender, room_name, verdict.params.get("rule"))

    async def clear_initial_text(self, room_id: str, creator: str, refused: dict[str, Decision],
                                 error: str | None, aliases: Sequence[str] = ()) -> None:
        """A new room's initial name, topic or alias was refused (bot.directory). Journaled in one
        transaction, for the room in this order: the bot is made the room's admin and joins
        (``room_admin``), the refused aliases are removed, the name, topic and alias are cleared;
        then the creator is told why in its direct chat and the management room what was done.
        Those last two require the earlier ones: if the bot could not be made admin or join, only
        the management room is told (in the words of ``directory.text_kept_mgmt``), so that a
        moderator clears them; likewise when ``error`` says it cannot be tried at all."""
        first = next(iter(refused.values()))
        why = self._t.refusal(first.message_key, {**first.params, "action": "room_text"})
        fields = ", ".join(self._t(f"field.{kind}") for kind in refused)
        management = ManagementRoom(self._store.effects)
        key = f"initial-text/{room_id}"
        if error is not None:
            await management.post(self._t("directory.text_kept_mgmt", room=room_id, user=creator, fields=fields,
                                          why=why, error=error), key)
            return
        self.joining.add(room_id)  # make_room_admin invites the bot to a room that is not public
        admin_key = f"{key}/admin"
        kept = {"key": "directory.text_kept_mgmt", "params": {"room": room_id, "user": creator, "fields": fields,
                                                              "why": why}}
        effects = self._store.effects
        async with self._store.unit():
            await effects.add("room_admin", room_id, {"room": room_id, "failed_notice": kept}, admin_key)
            for alias in aliases:  # server admins may delete any alias
                await effects.add("alias_delete", room_id, {"room": room_id, "alias": alias, "requires": [admin_key]},
                                  f"{key}/alias/{alias}")
            cleared = [f"{key}/{kind}" for kind in refused]
            for kind, state_key in zip(refused, cleared):
                await effects.add("state", room_id, {"room": room_id, "type": kind, "content": _CLEARED[kind],
                                                     "state_key": "", "requires": [admin_key]}, state_key)
            done = [admin_key, *cleared]
            await effects.add("dm", room_id, {"user": creator, "text": self._t("directory.text_cleared", room=room_id,
                                                                               why=why), "requires": done}, f"{key}/dm")
            # For the room, not the management room's queue: after what it reports, and only if done.
            await effects.add("management", room_id, {
                "text": self._t("directory.text_cleared_mgmt", room=room_id, user=creator, fields=fields, why=why),
                "txn": txn_id("management", key), "requires": done}, f"management/{key}")

    def _may_redact(self, room_id: str) -> bool:
        room = self._matrix.client.rooms.get(room_id)
        levels = getattr(room, "power_levels", None)
        return levels is not None and bool(levels.can_user_redact(self._state.bot_user_id))

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
