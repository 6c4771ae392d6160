"""Who may do what in a room, read from its state events: power levels, creators, membership.

Pure functions over the ``/state`` list (dicts with ``type``, ``state_key``, ``sender``,
``content``), so the rules are tested without a homeserver.
"""

from __future__ import annotations

import math
from typing import Any

# Room versions whose creators have unlimited power and are not listed in ``users`` (MSC4289).
_CREATOR_POWER_VERSIONS = frozenset({"org.matrix.hydra.11"})
_FIRST_NUMBERED_CREATOR_POWER_VERSION = 12


def level(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def level_needed_to_post(power_levels: dict[str, Any]) -> int:
    events = power_levels.get("events") or {}
    return level(events.get("m.room.message", power_levels.get("events_default", 0)))


def user_level(power_levels: dict[str, Any], user_id: str) -> int:
    users = power_levels.get("users") or {}
    return level(users.get(user_id, power_levels.get("users_default", 0)))


def _find(state: list[dict[str, Any]], event_type: str, state_key: str = "") -> dict[str, Any] | None:
    for event in state:
        if event.get("type") == event_type and event.get("state_key") == state_key:
            return event
    return None


def _content(event: dict[str, Any] | None) -> dict[str, Any]:
    content = event.get("content") if event is not None else None
    return content if isinstance(content, dict) else {}


def creators_have_unlimited_power(room_version: str) -> bool:
    if room_version in _CREATOR_POWER_VERSIONS:
        return True
    return room_version.isdigit() and int(room_version) >= _FIRST_NUMBERED_CREATOR_POWER_VERSION


def membership(state: list[dict[str, Any]], user_id: str) -> str | None:
    """``join``, ``invite``, ``leave`` … of ``user_id`` in the room, None if never a member."""
    value = _content(_find(state, "m.room.member", user_id)).get("membership")
    return value if isinstance(value, str) else None


def join_rule(state: list[dict[str, Any]]) -> str:
    value = _content(_find(state, "m.room.join_rules")).get("join_rule")
    return value if isinstance(value, str) else "invite"


def state_power(state: list[dict[str, Any]], user_id: str) -> tuple[float, int]:
    """(the user's power level, the level needed to set state in general: ``state_default``).

    A creator of a room version 12 room has unlimited power (``math.inf``): it is never listed in
    ``users``. Without a power-levels event the creator has 100, everyone else 0, and state needs 0
    (the specification's defaults).
    """
    create = _find(state, "m.room.create")
    create_content = _content(create)
    creators = {create.get("sender")} if create is not None else set()
    extra = create_content.get("additional_creators")
    if isinstance(extra, list):
        creators |= {c for c in extra if isinstance(c, str)}
    version = str(create_content.get("room_version", "1"))
    if user_id in creators and creators_have_unlimited_power(version):
        return math.inf, 0
    power_event = _find(state, "m.room.power_levels")
    if power_event is None:
        return (100 if user_id in creators else 0), 0
    levels = _content(power_event)
    return user_level(levels, user_id), level(levels.get("state_default", 50), 50)
