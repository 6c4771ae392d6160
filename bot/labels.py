"""Labels (article 7 ¶3): accounts allowed to publish or repost news carry a visible label.

Where users see it: a state event ``im.rulesbot.label`` in each of the account's channels and in
the protected rooms, machine-readable for clients and other bots; and the channels' topic begins
with the tier's tag. The state key is ``user:<user ID>``: Matrix's authorisation rules refuse a
state key that starts with ``@`` unless it is the sender's own ID, so the bare user ID cannot be
used; the content repeats ``user_id``. Removing a label empties the state event (state
cannot be deleted in Matrix) and takes the tag off the topics. Each change is recorded, with its
state changes as journaled effects (``bot.effects`` re-reads a topic before it retags it).

The label shows the account as its privileges stand (``bot.policy.decide.public_account``): where
``identity.required_for`` lists ``public_account`` or ``news``, an owner who is not verified (any
more) shows no tier, so a verification recorded or revoked refreshes the label too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from bot.config import Settings
from bot.i18n import Translator
from bot.matrix.client import Matrix
from bot.matrix.management import ManagementRoom
from bot.policy import PolicyState
from bot.policy.decide import public_account
from bot.store import Store

log = logging.getLogger(__name__)

LABEL_EVENT = "im.rulesbot.label"


def label_state_key(user_id: str) -> str:
    return f"user:{user_id}"


class Labels:
    def __init__(self, store: Store, state: PolicyState, matrix: Matrix, management: ManagementRoom, t: Translator,
                 settings: Settings, clock: Callable[[], int], protected: Callable[[], set[str]]) -> None:
        self._store = store
        self._state = state
        self._matrix = matrix
        self._management = management
        self._clock = clock
        self._protected = protected
        self.tags = {tier: settings.public_accounts.labels.get(tier) or t(f"label.{tier}") for tier in ("publisher", "reposter")}

    def _channels(self, user_id: str) -> list[str]:
        return sorted(room for room, owner in self._state.channels.items() if owner == user_id)

    async def on_verification(self, user_id: str, verified: bool) -> None:
        """A verification of ``user_id`` is being recorded (``verified``) or revoked, in the open
        transaction: refresh the label with it if that changes what the account may do. Memory
        says ``verified`` only after the commit, hence the argument."""
        if public_account(self._state, user_id, verified=verified) != public_account(self._state, user_id):
            await self.refresh(user_id, verified=verified)

    async def refresh(self, user_id: str, *, verified: bool | None = None) -> None:
        """Make the label match the register and the owner's verification: shown with the tier
        the account holds now, or removed."""
        account = public_account(self._state, user_id, verified=verified)
        tier = None if account is None else account.tier
        content: dict[str, Any] = {}
        if account is not None and tier is not None:
            content = {"user_id": user_id, "tier": tier, "category": account.category, "filing_number": account.news_filing_number,
                       "public_account_filing_number": account.filing_number, "since": self._clock()}
        channels = self._channels(user_id)
        rooms = sorted({*channels, *self._protected()})
        # The tier is in the key: a label set and taken off within one millisecond (a verification
        # and its revocation) are two changes, not one the journal would drop as a repeat.
        cause = f"label-{user_id}-{self._clock()}-{tier if content else 'none'}"
        # The record and the state changes it implies commit together, as journaled effects; one
        # that fails for good is told to the management room by the executor.
        async with self._store.unit():
            for room_id in rooms:
                await self._store.effects.add("state", user_id, {
                    "room": room_id, "type": LABEL_EVENT, "state_key": label_state_key(user_id), "content": content,
                }, f"{cause}/label/{room_id}")
                if room_id in channels:
                    await self._store.effects.add("topic_tag", user_id, {"room": room_id, "tier": tier, "tags": self.tags},
                                                  f"{cause}/topic/{room_id}")
            await self._store.record(now_ms=self._clock(), actor=self._state.bot_user_id,
                                     action="label.set" if content else "label.remove", target=user_id,
                                     details={"tier": tier, "rooms": rooms})



def retagged(topic: str, tier: str | None, tags: dict[str, str]) -> str:
    """``topic`` with the tier's tag in front (or none, without a tier), other tags taken off."""
    bare = topic
    for tag in tags.values():
        if bare.startswith(tag):
            bare = bare[len(tag):].lstrip()
    return bare if tier is None else f"{tags[tier]} {bare}".rstrip()
