"""What the module decides, without Synapse: each callback's arguments turned into the gate's
Action, the core's ``decide()``, the translated refusal, and what the bot must hear afterwards.

Pure apart from the clock it is given, so the unit tests drive it with plain dictionaries. The
Actions are built by the gate's own parsers (bot.gate.callbacks), from the same JSON shape
``synapse-http-antispam`` posts, so the two shells cannot read a callback differently.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from bot.gate.callbacks import GATED, SCOPE_STATE, opening_of
from bot.i18n import Translator
from bot.policy import ALLOW, Action, ActionKind, Decision, PolicyState, Reason, decide
from bot.policy.decide import news_verdict
from bot.policy.news import fingerprint
from bot.policy.text import event_text

# A new room's initial state that people read, judged as if its creator had sent it.
INITIAL_TEXT = ("m.room.name", "m.room.topic", "m.room.canonical_alias")
# Stands for the room ``createRoom`` is about to make (it has no ID yet), so decide() can be asked
# whether that room is in news scope. '#' cannot start a real room ID.
NEW_ROOM = "#new-room"


@dataclass
class Verdict:
    """The module's answer: ``message`` is None to allow, else the refusal shown to the user.
    ``reports`` are items for the bot's ``/replica/v1/reports``."""

    message: str | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    decision: Decision = ALLOW

    @property
    def allowed(self) -> bool:
        return self.message is None


def report(kind: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """One intake item; ``id`` makes the bot apply it once however often a batch is retried."""
    return {"id": f"{kind}:{key}" if key is not None else f"{kind}:{secrets.token_hex(8)}", "kind": kind, **fields}


class Judge:
    def __init__(self, translate: Translator) -> None:
        self._t = translate
        # Refusal texts depend only on the reason and a few parameters: render each once.
        self._messages: dict[tuple[str | None, tuple[tuple[str, str], ...]], str] = {}

    # -- messages ------------------------------------------------------------------------------

    def refusal(self, decision: Decision) -> str:
        key = (decision.message_key, tuple(sorted(decision.params.items())))
        message = self._messages.get(key)
        if message is None:
            if len(self._messages) > 10_000:  # parameters are few; this only guards against surprises
                self._messages.clear()
            message = self._messages[key] = self._t.refusal(decision.message_key or "", decision.params)
        return message

    def unavailable(self, kind: ActionKind) -> str:
        """The refusal of a callback that fails closed while the replica cannot decide."""
        return self._t("synapse.unavailable", what=self._t(f"action.{kind.value}"))

    # -- callbacks -----------------------------------------------------------------------------

    def event(self, state: PolicyState, event: Mapping[str, Any], now: int) -> tuple[Action, Decision]:
        """check_event_for_spam: the event as Synapse holds it (``event_id`` included)."""
        action = GATED["check_event_for_spam"]({"event": dict(event)})
        return action, decide(action, state, now)

    def after_event(self, state: PolicyState, action: Action, decision: Decision, event: Mapping[str, Any],
                    now: int, *, counted_by_bot: bool = False) -> list[dict[str, Any]]:
        """What an allowed or refused event leaves behind, as the gate leaves it: applied to the
        replica at once (its next decision must see it) and returned as reports for the bot."""
        user, room_id = action.user_id, action.room_id
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        items: list[dict[str, Any]] = []
        if decision.prompt_agreement:
            items.append(report("prompt", None, user_id=user))
        elif decision.count_post:
            # Counted here too (by event ID, so the bot's own record arriving later changes
            # nothing): the replica's next fallback decision must see this post.
            state.note_post(user, now, event_id)
            if not counted_by_bot:
                items.append(report("post", event_id, user_id=user, event_id=event_id, ts=now))
        if not decision.allowed:
            return items
        if action.body and room_id is not None:
            # In scope the identical-repost memory, out of scope the private-news note: here at once,
            # and in the bot (which applies the same text the way its gate does).
            # Out of scope only the probe's finding is sent (the bot's gate notes the same).
            if state.in_news_scope(room_id):
                state.remember_text(action.body, user, now)
                # Its fingerprint is all the bot keeps of a text: a report waiting in the outbox
                # costs ~150 bytes however long the post was.
                items.append(report("text", event_id, user_id=user, room_id=room_id,
                                    fingerprint=fingerprint(action.body), ts=now))
            else:
                rule = private_news_rule(state, action, now)
                if rule is not None:
                    state.private_news[room_id] = rule
                    items.append(report("private_news", room_id, room_id=room_id, rule=rule))
        if room_id is not None and action.event_type in SCOPE_STATE:
            setting = opening_of(dict(event))
            if setting is not None:
                # Only widening, as in the gate: Synapse's auth rules may still refuse the event.
                kind, value = setting
                if kind == "m.room.join_rules":
                    state.note_join_rule(room_id, value, narrow=False)
                else:
                    state.note_history_visibility(room_id, value, narrow=False)
            items.append(report("scope", event_id, room_id=room_id, event=dict(event)))
        return items

    def invite(self, state: PolicyState, inviter: str, invitee: str, room_id: str, now: int) -> Decision:
        return decide(GATED["user_may_invite"]({"inviter": inviter, "invitee": invitee, "room_id": room_id}),
                      state, now)

    def threepid_invite(self, state: PolicyState, inviter: str, medium: str, address: str, room_id: str,
                        now: int) -> Decision:
        body = {"inviter": inviter, "medium": medium, "address": address, "room_id": room_id}
        return decide(GATED["user_may_send_3pid_invite"](body), state, now)

    def join(self, state: PolicyState, user: str, room_id: str, is_invited: bool, now: int) -> Decision:
        return decide(GATED["user_may_join_room"]({"user": user, "room": room_id, "is_invited": is_invited}),
                      state, now)

    def publish(self, state: PolicyState, user: str, room_id: str, now: int) -> Decision:
        return decide(GATED["user_may_publish_room"]({"user_id": user, "room_id": room_id}), state, now)

    def login(self, state: PolicyState, user: str, now: int) -> Decision:
        return decide(GATED["check_login_for_spam"]({"user_id": user}), state, now)

    def create_room(self, state: PolicyState, user: str, room_config: Mapping[str, Any], now: int) -> Decision:
        """user_may_create_room with the request's body, which the HTTP module never passes on.

        The account must be allowed to create rooms; a room created ``visibility: public`` is
        published, so it needs what ``user_may_publish_room`` needs (Synapse lists it without
        asking that callback); its initial name, topic, address and encryption are judged as if the
        creator sent them, in scope if the room will be public or listed. The first refusal wins.
        """
        decision = decide(GATED["user_may_create_room"]({"user_id": user}), state, now)
        if not decision.allowed:
            return decision
        if room_config.get("visibility") == "public":
            published = decide(Action(ActionKind.PUBLISH_ROOM, user, room_id=NEW_ROOM), state, now)
            if not published.allowed:
                return published
        events = initial_events(room_config)
        # A shallow copy, the replica itself untouched: without the account's measures (creating
        # the room was judged against them above, and a posting restriction does not stop room
        # creation, nor clear a new room's name in the bot's directory guard), and with the new
        # room as its only open room when the room will be in scope.
        judged = copy.copy(state)
        judged.sanctions = {}
        if opens(room_config):
            judged.open_rooms = {NEW_ROOM}
        for event in events:
            kind = event["type"]
            if kind in INITIAL_TEXT or kind == "m.room.encryption":
                body, _ = event_text(kind, event.get("content"))
                action = Action(ActionKind.SEND_EVENT, user, room_id=NEW_ROOM, event_type=kind, body=body or None)
                verdict = decide(action, judged, now)
                if not verdict.allowed:
                    return Decision(allowed=False, reason=verdict.reason,
                                    params={**verdict.params, "action": ActionKind.CREATE_ROOM.value})
        return ALLOW


def opens(room_config: Mapping[str, Any]) -> bool:
    """The room createRoom makes is in news scope from the start: listed, an open join rule, or
    world-readable history."""
    return room_config.get("visibility") == "public" or any(opening_of(e) for e in initial_events(room_config))


def new_room_news(state: PolicyState, user: str, room_config: Mapping[str, Any], now: int) -> tuple[str, str] | None:
    """(rule, text) when the initial name, topic or address of a room created out of scope is
    news its creator could not post in scope: the room may then not be opened (PRIVATE_NEWS), as
    the bot's directory guard notes it for the gate."""
    if opens(room_config):
        return None  # in scope: judged by create_room
    events = initial_events(room_config)
    for event in events:
        if event["type"] in INITIAL_TEXT:
            body, _ = event_text(event["type"], event.get("content"))
            if body:
                action = Action(ActionKind.SEND_EVENT, user, room_id=NEW_ROOM, event_type=event["type"], body=body)
                verdict = news_verdict(action, state, now)
                if not verdict.allowed:
                    return verdict.params.get("rule", ""), body
    return None


def new_room_scope(room_config: Mapping[str, Any]) -> dict[str, Any]:
    """What createRoom's body sets of the new room's scope, for the bot's ``new_room`` report:
    its join rule (initial_state wins over the preset, as in Synapse), its history visibility
    when set, and whether it is listed (``visibility: public``)."""
    scope: dict[str, Any] = {"listed": room_config.get("visibility") == "public"}
    for event in initial_events(room_config):
        content = event["content"]
        if event["type"] == "m.room.join_rules" and isinstance(content.get("join_rule"), str):
            scope["join_rule"] = content["join_rule"]
        elif event["type"] == "m.room.history_visibility" and isinstance(content.get("history_visibility"), str):
            scope["history_visibility"] = content["history_visibility"]
    return scope


def initial_events(room_config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The state events ``createRoom`` will send from its body: ``name``, ``topic``,
    ``room_alias_name`` and ``initial_state`` (which Synapse applies after the preset, so it wins),
    and the join rule the preset implies."""
    events: list[dict[str, Any]] = []
    preset = room_config.get("preset")
    if preset is None:
        preset = "public_chat" if room_config.get("visibility") == "public" else "private_chat"
    events.append({"type": "m.room.join_rules", "state_key": "",
                   "content": {"join_rule": "public" if preset == "public_chat" else "invite"}})
    for event in room_config.get("initial_state") or []:
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            events.append({"type": event["type"], "state_key": event.get("state_key", ""),
                           "content": event.get("content") if isinstance(event.get("content"), dict) else {}})
    if isinstance(room_config.get("name"), str):
        events.append({"type": "m.room.name", "state_key": "", "content": {"name": room_config["name"]}})
    if isinstance(room_config.get("topic"), str):
        events.append({"type": "m.room.topic", "state_key": "", "content": {"topic": room_config["topic"]}})
    if isinstance(room_config.get("room_alias_name"), str):
        events.append({"type": "m.room.canonical_alias", "state_key": "",
                       "content": {"alias": room_config["room_alias_name"]}})
    return events


def private_news_rule(state: PolicyState, action: Action, now: int) -> str | None:
    """The news rule a post out of scope matches, when its sender lacks the tier in scope: the room
    then may not be opened (decide's PRIVATE_NEWS), as the gate notes it. Never for the direct chat
    with the bot, which only its account and the bot are in."""
    assert action.room_id is not None
    if action.room_id in state.private_news or action.room_id in state.dm_user_by_room:
        return None
    probe = Action(ActionKind.SEND_EVENT, action.user_id, room_id=action.room_id, event_type=action.event_type,
                   body=action.body, quotes_reply=action.quotes_reply)
    verdict = news_verdict(probe, state, now)
    return None if verdict.allowed else verdict.params.get("rule", "")


# --- registration (identity.registration) ---
def registration_refusal(state: PolicyState, auth_provider_id: str | None,
                         request_info: Any) -> str | None:
    """Why check_registration_for_spam refuses a registration (for Synapse's log: the client only
    sees Synapse's 429), or None to allow. Under ``sso_only`` a client may register only through
    one of the providers; a registration with no client request behind it (Synapse passes no user
    agent for the admin API and shared-secret registration) is an admin's, never refused."""
    providers = state.registration_only_through
    if providers is None or auth_provider_id in providers:
        return None
    if not request_info:
        return None
    through = f"through {auth_provider_id!r}" if auth_provider_id else "with a password"
    return (f"registration {through} refused: identity.registration is 'sso_only' "
            f"(allowed: {', '.join(sorted(providers))})")
# --- end registration ---


def has_rate_cap(state: PolicyState, user: str, now: int) -> bool:
    """The account has a posting rate cap in force: the only decision that needs state shared
    exactly across processes (the count of its recent posts)."""
    active = state.sanctions.get(user)
    return active is not None and any(
        m.rate is not None and m.in_force(now) for m in active.measures.values()
    )


def is_rate_decision(decision: Decision) -> bool:
    return decision.count_post or decision.reason is Reason.RATE_LIMITED
