"""decide(): the one question both the gate and room mode ask.

Rules, in order (the first that applies wins):
1. The bot and the configured moderators are never gated.
2. The gate judges only local users; remote senders are room mode's business.
3. Joining a room and logging in are always allowed: a new account must be able to read and to
   reach its direct chat with the bot. A login of an account that has not agreed asks for a prompt.
4. An account that accepted the current agreement version may act.
5. An account that has not may still talk to the bot in its direct chat (that is where it agrees).
6. Everything else is refused until the account agrees; the refusal asks for a prompt.
"""

from __future__ import annotations

from bot.policy.model import ALLOW, ALLOW_AND_PROMPT, Action, ActionKind, Decision, Reason, Source
from bot.policy.state import PolicyState

_ALWAYS_ALLOWED = frozenset({ActionKind.JOIN_ROOM, ActionKind.LOGIN})


def decide(action: Action, state: PolicyState) -> Decision:
    user = action.user_id
    if state.is_exempt(user):
        return ALLOW
    if action.source is Source.GATE and not state.is_local(user):
        return ALLOW
    agreed = state.has_agreed(user)
    if action.kind in _ALWAYS_ALLOWED:
        return ALLOW if agreed or action.kind is ActionKind.JOIN_ROOM else ALLOW_AND_PROMPT
    if agreed:
        return ALLOW
    if action.kind is ActionKind.SEND_EVENT and state.is_dm_of(action.room_id, user):
        return ALLOW
    previous = state.accepted.get(user)
    return Decision(
        allowed=False,
        reason=Reason.NOT_AGREED if previous is None else Reason.AGREEMENT_OUTDATED,
        params={"action": action.kind.value, "version": state.agreement_version, "bot": state.bot_user_id},
        prompt_agreement=True,
    )
