"""``python -m bot identity reveal <user> --reason <text>``: the only way to read kept attributes.

The access is an audit record (who, from the OS account of the real user ID; whose; why), committed before anything is
decrypted or shown: a reveal that prints nothing because it failed half-way is still on record,
and one that printed is never missing from it.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Any

from bot.identity.keys import IdentityKeys
from bot.store import Store


def has_visible_text(text: str) -> bool:
    """Whether ``text`` shows anything: a reason of zero-width spaces, Hangul fillers or braille
    blanks passes a strip() but tells the audit log's reader nothing."""
    from bot.policy.normalize import fold_light  # the rules' folding: it drops every invisible

    return bool(fold_light(text))


def os_actor() -> str:
    """Who runs the command, for the audit record: the OS account of the real user ID (not $USER
    or $LOGNAME, which the caller sets at will). Under sudo the real user is root; the invoking
    user sudo names in $SUDO_USER is added, marked as what it is: a claim of the environment."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container's arbitrary uid)
        name = f"uid={os.getuid()}"
    claimed = os.environ.get("SUDO_USER")
    return f"cli:{name}" + (f" (SUDO_USER={claimed}, claimed)" if claimed and os.getuid() == 0 else "")


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
    if not has_visible_text(reason):
        raise ValueError("a reveal needs a reason a reader can see")
    records = [r for r in await store.identity.history(user_id) if r.attributes is not None]
    await store.identity.record_reveal(user_id=user_id, actor=actor, reason=reason.strip(), now_ms=now_ms)
    if not records:
        raise RevealError(f"no attributes are kept for {user_id}")
    return [Revealed(r.id, r.verifier, r.method, r.verified_at, keys.decrypt(user_id, r.attributes))
            for r in records if r.attributes is not None]
