"""decide(): the one question both the gate and room mode ask.

Rules, in order (the first that applies wins):
1. The bot and the configured moderators are never gated.
2. The gate judges only local users; remote senders are room mode's business.
   Measures in force come next, strongest first (closure, suspension, restriction): see
   ``_sanction``. Each leaves the account its direct chat with the bot and its own redactions.
3. Joining a room and logging in are always allowed: a new account must be able to read and to
   reach its direct chat with the bot. A login of an account that has not agreed asks for a prompt.
4. An account that accepted the current agreement version may act.
5. An account that has not may still talk to the bot in its direct chat (that is where it agrees).
6. Everything else is refused until the account agrees; the refusal asks for a prompt.
7. Publishing a room to the directory needs an approved public account (article 7 ¶1).
8. In scope (published and public rooms, channels, protected rooms), a message the news rules
   recognise as current-affairs news needs a tier: an original needs ``publisher``, a repost
   ``reposter`` or ``publisher`` (article 7 ¶2).
"""

from __future__ import annotations

from bot.policy.model import ALLOW, ALLOW_AND_COUNT, ALLOW_AND_PROMPT, Action, ActionKind, Decision, Reason, Source
from bot.policy.sanctions import ActiveSanctions, Measure, SanctionKind
from bot.policy.state import PolicyState

_ALWAYS_ALLOWED = frozenset({ActionKind.JOIN_ROOM, ActionKind.LOGIN})
_CORRECTIVE_EVENTS = frozenset({"m.room.redaction"})


def decide(action: Action, state: PolicyState, now: int) -> Decision:
    """Allow or refuse ``action``; ``now`` (ms) decides which timed measures are still in force."""
    user = action.user_id
    if state.is_exempt(user):
        return ALLOW
    if action.source is Source.GATE and not state.is_local(user):
        return ALLOW
    active = state.sanctions.get(user)
    if active is not None:
        for measure in active.strongest(now):
            verdict = _sanction(measure, action, state, active, now)
            if verdict is not None:
                return verdict
    agreed = state.has_agreed(user)
    if action.kind in _ALWAYS_ALLOWED:
        return ALLOW if agreed or action.kind is ActionKind.JOIN_ROOM else ALLOW_AND_PROMPT
    if agreed:
        if action.kind is ActionKind.PUBLISH_ROOM and user not in state.public_accounts:
            return Decision(
                allowed=False, reason=Reason.NOT_PUBLIC_ACCOUNT,
                params={"action": action.kind.value, "bot": state.bot_user_id},
            )
        if action.kind is ActionKind.SEND_EVENT and action.body and state.in_news_scope(action.room_id):
            return _news(action, state, now)
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


def _refuse(reason: Reason, action: Action, measure: Measure, **extra: str) -> Decision:
    until = "" if measure.expires_at is None else str(measure.expires_at)
    return Decision(
        allowed=False,
        reason=reason,
        params={"action": action.kind.value, "case": str(measure.case_id), "until_ms": until, **extra},
    )


def _sanction(measure: Measure, action: Action, state: PolicyState, active: ActiveSanctions, now: int) -> Decision | None:
    """The verdict of one measure, or None when it has nothing to say about this action."""
    if measure.kind is SanctionKind.CLOSE:
        return _refuse(Reason.CLOSED, action, measure)
    kind = action.kind
    if kind in _ALWAYS_ALLOWED:
        return None  # reading stays possible under suspension and restriction
    posting = kind is ActionKind.SEND_EVENT
    if posting and (state.is_dm_of(action.room_id, action.user_id) or action.event_type in _CORRECTIVE_EVENTS):
        return None  # the DM with the bot (to appeal, to agree) and cleaning up one's own posts
    if measure.kind is SanctionKind.SUSPEND:
        return _refuse(Reason.SUSPENDED, action, measure)
    if not posting:
        return None  # a posting restriction does not touch invites or room creation
    if measure.rate is None:
        return _refuse(Reason.RESTRICTED, action, measure)
    window_start = now - measure.rate.period_ms
    recent = [t for t in active.recent_posts if t > window_start]
    if len(recent) < measure.rate.count:
        return ALLOW_AND_COUNT
    return _refuse(Reason.RATE_LIMITED, action, measure, rate=str(measure.rate), next_ms=str(recent[0] + measure.rate.period_ms))


def _news(action: Action, state: PolicyState, now: int) -> Decision:
    assert action.body is not None
    match = state.news_rules.classify(action.body, quotes_a_reply=action.quotes_reply)
    if match is None:
        return ALLOW
    account = state.public_accounts.get(action.user_id)
    tier = None if account is None else account.tier
    # Hashing the text to look for an identical earlier post costs something on the gate's hot
    # path: only do it when the answer can change the verdict.
    repost = match.repost or (tier != "publisher" and state.seen_from_other(action.body, action.user_id, now))
    if tier == "publisher" or (repost and tier == "reposter"):
        return ALLOW
    return Decision(
        allowed=False,
        reason=Reason.NEWS_TIER_MISSING,
        params={"action": action.kind.value, "rule": match.rule_id,
                "tier": "reposter" if repost else "publisher", "bot": state.bot_user_id},
    )
