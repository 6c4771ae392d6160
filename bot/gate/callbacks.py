"""The body of each antispam callback, checked and turned into a policy Action.

``synapse-http-antispam`` posts the callback's arguments as JSON fields. Each gated callback has a
small parser that checks exactly the fields it uses; a body that lacks one is a ``SchemaError``
(400 ``M_INVALID_PARAM``), never a crash.
"""

from __future__ import annotations

from typing import Any, Callable

from bot.policy import Action, ActionKind
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
        body=body, quotes_reply=quotes,
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

# Callbacks the module can send that the rules have nothing to say about: answered "allow", so an
# operator who leaves out `enabled_callbacks` does not block joins over federation by accident.
PASSTHROUGH = frozenset(
    {"accept_make_join", "user_may_create_room_alias", "check_username_for_spam", "federated_user_may_invite"}
)
