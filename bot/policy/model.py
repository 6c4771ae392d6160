"""The vocabulary of the policy core: what someone tries to do, and the answer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


class ActionKind(enum.StrEnum):
    SEND_EVENT = "send_event"
    INVITE = "invite"
    CREATE_ROOM = "create_room"
    PUBLISH_ROOM = "publish_room"
    JOIN_ROOM = "join_room"
    LOGIN = "login"


class Source(enum.StrEnum):
    """Who asks: the gate sees only the local homeserver's users; room mode sees every sender."""

    GATE = "gate"
    ROOM = "room"


class Reason(enum.StrEnum):
    NOT_AGREED = "not_agreed"
    AGREEMENT_OUTDATED = "agreement_outdated"
    RESTRICTED = "restricted"
    RATE_LIMITED = "rate_limited"
    SUSPENDED = "suspended"
    CLOSED = "closed"
    NOT_PUBLIC_ACCOUNT = "not_public_account"
    NEWS_TIER_MISSING = "news_tier_missing"
    ENCRYPTION_IN_SCOPE = "encryption_in_scope"  # the gate cannot read encrypted posts where news rules apply
    DM_PRIVATE = "dm_private"  # a direct chat with the bot is for its account and the bot only
    PRIVATE_NEWS = "private_news"  # opening a room whose private history holds news without the tier
    NOT_VERIFIED = "not_verified"  # identity.required_for names this, and the account is not verified (issue 9)


# Not frozen: a frozen dataclass pays object.__setattr__ per field, and the gate builds one Action
# per request. Treat it as immutable all the same.
@dataclass(slots=True)
class Action:
    kind: ActionKind
    user_id: str
    source: Source = Source.GATE
    room_id: str | None = None
    event_type: str | None = None
    target_user_id: str | None = None
    body: str | None = None  # the text of a message, for the news rules
    quotes_reply: bool = False  # a reply that quotes the message it answers
    # The event opens the room to the public: an open join rule, or world-readable history.
    opens_room: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow, or deny with a reason code and the parameters its message needs.

    ``prompt_agreement`` asks the caller to make sure the user has been sent the current agreement;
    ``count_post`` to count the allowed post against the account's rate cap.
    """

    allowed: bool
    reason: Reason | None = None
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prompt_agreement: bool = False
    count_post: bool = False

    @property
    def message_key(self) -> str | None:
        return None if self.reason is None else f"deny.{self.reason}"


ALLOW = Decision(allowed=True)
ALLOW_AND_PROMPT = Decision(allowed=True, prompt_agreement=True)
ALLOW_AND_COUNT = Decision(allowed=True, count_post=True)

# Refusals that stop all posting, so room mode mutes for them; a rate cap only redacts the excess.
MUTING_REASONS = frozenset({Reason.NOT_AGREED, Reason.AGREEMENT_OUTDATED, Reason.RESTRICTED, Reason.SUSPENDED})
