"""The body of each antispam callback, checked and turned into a policy Action.

``synapse-http-antispam`` posts the callback's arguments as JSON fields. Each gated callback has a
small parser that checks exactly the fields it uses; a body that lacks one is a ``SchemaError``
(400 ``M_INVALID_PARAM``), never a crash.
"""

from __future__ import annotations

from typing import Any, Callable

from bot.policy import Action, ActionKind
from bot.policy.state import OPEN_JOIN_RULES
from bot.policy.text import event_text


class SchemaError(ValueError):
    pass


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise SchemaError(f"field {key!r} must be a non-empty string")
    return value


def _event(body: dict[str, Any]) -> Action:
    event = body.get("event")
    if not isinstance(event, dict):
        raise SchemaError("field 'event' must be an object")
    body, quotes = event_text(event.get("type"), event.get("content"))
    return Action(
        ActionKind.SEND_EVENT, _str(event, "sender"), room_id=_str(event, "room_id"), event_type=_str(event, "type"),
        body=body, quotes_reply=quotes, opens_room=opening_of(event) is not None,
    )


def _invite(body: dict[str, Any]) -> Action:
    return Action(ActionKind.INVITE, _str(body, "inviter"), room_id=_str(body, "room_id"), target_user_id=_str(body, "invitee"))


def _threepid_invite(body: dict[str, Any]) -> Action:
    _str(body, "medium")
    _str(body, "address")
    return Action(ActionKind.INVITE, _str(body, "inviter"), room_id=_str(body, "room_id"))


def _create_room(body: dict[str, Any]) -> Action:
    return Action(ActionKind.CREATE_ROOM, _str(body, "user_id"))


def _publish_room(body: dict[str, Any]) -> Action:
    return Action(ActionKind.PUBLISH_ROOM, _str(body, "user_id"), room_id=_str(body, "room_id"))


def _join_room(body: dict[str, Any]) -> Action:
    if not isinstance(body.get("is_invited"), bool):
        raise SchemaError("field 'is_invited' must be a boolean")
    return Action(ActionKind.JOIN_ROOM, _str(body, "user"), room_id=_str(body, "room"))


def _login(body: dict[str, Any]) -> Action:
    return Action(ActionKind.LOGIN, _str(body, "user_id"))


GATED: dict[str, Callable[[dict[str, Any]], Action]] = {
    "check_event_for_spam": _event,
    "user_may_invite": _invite,
    "user_may_send_3pid_invite": _threepid_invite,
    "user_may_create_room": _create_room,
    "user_may_publish_room": _publish_room,
    "user_may_join_room": _join_room,
    "check_login_for_spam": _login,
}

# State that decides who can read a room: (event type, content key).
SCOPE_STATE = {"m.room.join_rules": "join_rule", "m.room.history_visibility": "history_visibility"}


def scope_setting(event: Any) -> tuple[str, str] | None:
    """(event type, value) of a join-rule or history-visibility state event ("" if it names none), else None."""
    if not isinstance(event, dict) or event.get("state_key") != "":
        return None
    key = SCOPE_STATE.get(event.get("type"))  # type: ignore[arg-type]
    if key is None:
        return None
    content = event.get("content")
    value = content.get(key) if isinstance(content, dict) else None
    return event["type"], value if isinstance(value, str) else ""


def opening_of(event: Any) -> tuple[str, str] | None:
    """The setting if the event opens a room to the public (an open join rule, world-readable history)."""
    setting = scope_setting(event)
    if setting is None:
        return None
    kind, value = setting
    opens = value in OPEN_JOIN_RULES if kind == "m.room.join_rules" else value == "world_readable"
    return setting if opens else None


# Callbacks the module can send that the rules have nothing to say about. synapse-http-antispam
# 0.5.1 turns any 2xx into NOT_SPAM, which Synapse 1.163 reads as "allow" for each of these:
# - user_may_create_room_alias, federated_user_may_invite: `res is NOT_SPAM` -> allowed;
# - accept_make_join: not a callback Synapse 1.163 knows (register_spam_checker_callbacks has no
#   such parameter, so a module config that enables it, or omits enabled_callbacks, stops Synapse
#   from starting); answered "allow" for Synapse versions that do call it.
PASSTHROUGH = frozenset({"accept_make_join", "user_may_create_room_alias", "federated_user_may_invite"})

# check_username_for_spam is different: Synapse hides a user from directory search when the callback
# returns anything truthy, and the module returns NOT_SPAM (a non-empty string) for a 2xx and an
# (errcode, dict) tuple otherwise; both are truthy. No answer of the gate can keep users visible,
# so the shipped module config leaves the callback out, and the gate answers 200 (the answer the
# module logs nothing about) and says loudly that the operator enabled it.
USERNAME_CALLBACK = "check_username_for_spam"
