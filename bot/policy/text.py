"""What a rule judges of an event: every piece of text a client would show, as one string.

One pipeline for the gate and room mode: ``event_text`` extracts, the news rules normalise and
match. A new event type or field is one change here, not a branch in each rule.
"""

from __future__ import annotations

from typing import Any

from bot.policy.news import message_text


def event_text(event_type: str | None, content: Any) -> tuple[str | None, bool]:
    """The text an event shows to people (None if none), and whether it is a reply that quotes."""
    return message_text(content)
