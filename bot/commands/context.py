"""What a command handler receives: who asked, where, its arguments, and the narrow services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.i18n import Translator

if TYPE_CHECKING:
    from bot.agreement import AgreementService
    from bot.commands.registry import Registry
    from bot.matrix.onboarding import Onboarding
    from bot.policy import PolicyState
    from bot.store import Store


class UserError(Exception):
    """An error meant for the person who gave the command; ``str()`` is the message shown."""


@dataclass(frozen=True)
class Services:
    t: Translator
    state: "PolicyState"
    store: "Store"
    agreements: "AgreementService"
    onboarding: "Onboarding"
    registry: "Registry"


@dataclass(frozen=True)
class Context:
    sender: str
    room_id: str
    event_id: str
    args: dict[str, str]
    flags: frozenset[str]
    services: Services

    @property
    def t(self) -> Translator:
        return self.services.t
