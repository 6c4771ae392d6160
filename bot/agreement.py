"""The agreement document, and accepting it: the one flow behind both `!agree` and a ✅ reaction."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from bot.config import Settings
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.store import Acceptance, Store

ACCEPT_REACTIONS = frozenset({"✅", "✔", "☑"})


def is_accept_reaction(key: object) -> bool:
    # Clients differ on the emoji variation selector (U+FE0F); compare without it.
    return isinstance(key, str) and key.replace("\ufe0f", "").strip() in ACCEPT_REACTIONS


@dataclass(frozen=True)
class AgreementDocument:
    version: str
    text: str
    sha256: str

    @classmethod
    def load(cls, path: Path, version: str) -> "AgreementDocument":
        text = path.read_text(encoding="utf-8").strip()
        return cls(version=version, text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())

    def render(self, t: Translator, settings: Settings) -> str:
        """The agreement message: intro, the text, how to accept, and the operator's declaration."""
        parts = [t("agreement.intro", version=self.version), self.text, t("agreement.how_to_accept")]
        if settings.service.name or settings.service.licence:
            parts.append(t("agreement.operator", name=settings.service.name or "-", licence=settings.service.licence or "-"))
        return "\n\n".join(parts)


class Outcome(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY = "already"
    EXEMPT = "exempt"


class AgreementService:
    def __init__(
        self,
        store: Store,
        state: PolicyState,
        document: AgreementDocument,
        clock: Callable[[], int],
        on_accepted: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._store = store
        self._state = state
        self.document = document
        self._clock = clock
        self._on_accepted = on_accepted

    async def accept(self, user_id: str, event_id: str, room_id: str, method: str,
                     accepted_at: int | None = None) -> Outcome:
        """Record an acceptance and its effects (the unmutes room mode journals) in one
        transaction, the caller's if one is open; memory follows at once, undone on rollback.
        ``accepted_at``: when it was accepted, if before now (at registration)."""
        if self._state.is_exempt(user_id):
            return Outcome.EXEMPT
        if self._state.has_agreed(user_id):
            return Outcome.ALREADY
        now = self._clock()
        async with self._store.unit():
            await self._store.agreements.record_acceptance(
                Acceptance(
                    user_id=user_id,
                    version=self.document.version,
                    text_sha256=self.document.sha256,
                    accepted_at=now if accepted_at is None else accepted_at,
                    event_id=event_id,
                    room_id=room_id,
                    method=method,
                ),
                recorded_at=None if accepted_at is None else now,
            )
            previous = self._state.accepted.get(user_id)
            self._state.record_acceptance(user_id, self.document.version)
            self._store.db.on_rollback(lambda: _restore(self._state.accepted, user_id, previous))
            await self._on_accepted(user_id, f"agreed-{event_id}")
        return Outcome.CONFIRMED

    # --- consent at registration (bot.consent) ---
    async def took_effect(self) -> int:
        """When this document (its version and its text) took effect: the first start of the bot
        with it, recorded in kv then. Keyed by the text's hash too, so a text changed under the
        same version string takes effect anew."""
        key = f"agreement.took_effect/{self.document.version}/{self.document.sha256}"
        recorded = await self._store.get(key)
        if recorded is not None:
            return int(recorded)
        now = self._clock()
        await self._store.put(key, str(now))
        return now

    async def accept_at_registration(self, user_id: str, version: str, accepted_at: int | None) -> bool | None:
        """Synapse records that ``user_id`` accepted ``version`` (its user_consent): recorded once,
        with method ``registration`` and a key of its own in place of an event ID (there is no
        event). True if recorded now; False if it was already (or the account is exempt); None
        if it does not count: another version, or no time, or a time before this document
        took effect (Synapse's consent form stores any version string its ``v`` field sends, so
        a version set before the bot published it is not an acceptance of it)."""
        if version != self.document.version or accepted_at is None or accepted_at < await self.took_effect():
            return None
        outcome = await self.accept(user_id, registration_key(user_id, version), "", "registration", accepted_at)
        return outcome is Outcome.CONFIRMED


def registration_key(user_id: str, version: str) -> str:
    """The unique key an acceptance at registration is recorded under (the column holds event IDs,
    which start with $, so it cannot collide with one)."""
    return f"consent:{user_id}:{version}"


def _restore(accepted: dict[str, str], user_id: str, previous: str | None) -> None:
    if previous is None:
        accepted.pop(user_id, None)
    else:
        accepted[user_id] = previous
