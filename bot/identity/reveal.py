"""``python -m bot identity reveal <user> --reason <text>``: the only way to read kept attributes.

The access is an audit record (who, from the OS user; whose; why), committed before anything is
decrypted or shown: a reveal that prints nothing because it failed half-way is still on record,
and one that printed is never missing from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.identity.keys import IdentityKeys
from bot.store import Store


class RevealError(Exception):
    """Nothing to reveal, or nothing readable; the message says which."""


@dataclass(frozen=True)
class Revealed:
    record_id: int
    verifier: str
    method: str | None
    verified_at: int | None
    attributes: dict[str, Any]


async def reveal(store: Store, keys: IdentityKeys, *, user_id: str, reason: str, actor: str,
                 now_ms: int) -> list[Revealed]:
    """The kept attributes of every verification of ``user_id`` that has some, oldest first,
    after the audit record of this access is committed."""
    if not reason.strip():
        raise ValueError("a reveal needs a reason")
    records = [r for r in await store.identity.history(user_id) if r.attributes is not None]
    await store.identity.record_reveal(user_id=user_id, actor=actor, reason=reason.strip(), now_ms=now_ms)
    if not records:
        raise RevealError(f"no attributes are kept for {user_id}")
    return [Revealed(r.id, r.verifier, r.method, r.verified_at, keys.decrypt(user_id, r.attributes))
            for r in records if r.attributes is not None]
