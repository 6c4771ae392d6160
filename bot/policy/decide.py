"""decide(): the one question both the gate and room mode ask.

Verdicts compose: every rule that applies is asked, and a refusal from any of them wins over an
allow from the others, whatever the order the measures were added in. Nothing that allows stops
the others from being asked: a rate cap that lets a post through still leaves the agreement, the
news rules and every other measure to have their say.

1. The bot and the configured moderators are never gated.
2. The gate judges only local users; remote senders are room mode's business.
3. Measures in force (see ``_sanctions``): the strictest refusal among them wins (closure,
   suspension, restriction, rate cap; then the longest). Only a closure reaches the account's
   clean direct chat with the bot and its own redactions. A rate cap that allows asks the caller
   to count the post, and only if the final answer is allow.
4. A direct chat with the bot is for its account and the bot: nobody else may be invited to it
   or join it.
5. Joining a room and logging in are otherwise allowed: a new account must be able to read and to
   reach its direct chat with the bot. A login of an account that has not agreed asks for a prompt.
6. An account that accepted the current agreement version may act, subject to 8 and 9.
7. An account that has not may still talk to the bot in its direct chat while that chat is clean
   (only the account and the bot in it); everything else is refused and asks for a prompt.
8. Publishing a room to the directory needs an approved public account (article 7 ¶1).
9. In scope (published and public rooms, channels, protected rooms), a message the news rules
   recognise as current-affairs news needs a tier: an original needs ``publisher``, a repost
   ``reposter`` or ``publisher`` (article 7 ¶2).
10. In scope, only a ``publisher`` may enable encryption or send encrypted events: the news rules
    cannot read them (see ``_encryption``). Private rooms and DMs are untouched.
11. A room whose history holds news posted out of scope by an account without the tier
    (``state.private_news``, noted by the gate) may not be opened: no open join rule, no
    world-readable history, no publication. New joiners would read that history.
12. Real names (article 6 ¶1, ``state.identity_required_for``): a local account that is not
    verified may not post, invite or create rooms where those are listed (its clean DM with the
    bot and its own reason-less redactions stay open); where ``public_account`` or ``news`` is
    listed, an approved public account that is not verified (any more) has no publication or news
    tier: every rule above reads the account through ``public_account``, so there is no path
    around it, and so do its labels, channels and invites outside decide() (bot.labels,
    bot.accounts, bot.router). ``identity_refusal`` is the same rule for applications and
    approvals. Remote accounts are other providers' users: ``required_for`` applies to local
    accounts only, in room mode as well as at the gate. A remote sender is held to the
    agreement, the measures and the news rules like anyone, but not to a verification it could
    not make here (``Identity.verify`` refuses a remote account as ``unknown_user``); whoever
    must be verified to post needs an account of this server.

A redaction is spared by the measures short of closure only when it carries no free-text
``reason``: clients show the reason in place of the deleted message, so a redaction with one is
a post like any other.
"""

from __future__ import annotations

from bot.policy.model import ALLOW, ALLOW_AND_COUNT, ALLOW_AND_PROMPT, Action, ActionKind, Decision, Reason, Source
from bot.policy.sanctions import ActiveSanctions, Measure, SanctionKind, strictness
from bot.policy.state import PolicyState, PublicAccount

_ALWAYS_ALLOWED = frozenset({ActionKind.JOIN_ROOM, ActionKind.LOGIN})
_CORRECTIVE_EVENTS = frozenset({"m.room.redaction"})
# Turning encryption on, and what an encrypted room carries: both hide text from the news rules.
ENCRYPTION_EVENTS = frozenset({"m.room.encryption", "m.room.encrypted"})
# Which measure's refusal the account is told about when several refuse: the strictest.
_REFUSAL_RANK = {Reason.RATE_LIMITED: 1, Reason.RESTRICTED: 2, Reason.SUSPENDED: 3, Reason.CLOSED: 4}


def decide(action: Action, state: PolicyState, now: int) -> Decision:
    """Allow or refuse ``action``; ``now`` (ms) decides which timed measures are still in force."""
    user = action.user_id
    if state.is_exempt(user):
        return ALLOW
    if action.source is Source.GATE and not state.is_local(user):
        return ALLOW
    capped = False
    active = state.sanctions.get(user)
    if active is not None:
        verdict = _sanctions(action, state, active, now)
        if verdict is not None:
            if not verdict.allowed:
                return verdict
            capped = True
    verdict = _rules(action, state, now)
    # Count the post against the cap only when it is really going to be posted.
    return ALLOW_AND_COUNT if capped and verdict.allowed else verdict


def _rules(action: Action, state: PolicyState, now: int) -> Decision:
    """Everything but the measures: the DM's privacy, the agreement, publication, the news rules."""
    user = action.user_id
    kind = action.kind
    if kind is ActionKind.INVITE or kind is ActionKind.JOIN_ROOM:
        owner = state.dm_user_by_room.get(action.room_id) if action.room_id is not None else None
        if owner is not None and (kind is ActionKind.INVITE or owner != user):
            return Decision(
                allowed=False, reason=Reason.DM_PRIVATE, params={"action": kind.value, "bot": state.bot_user_id}
            )
    agreed = state.has_agreed(user)
    if kind in _ALWAYS_ALLOWED:
        return ALLOW if agreed or kind is ActionKind.JOIN_ROOM else ALLOW_AND_PROMPT
    if agreed:
        if state.identity_required_for:
            unverified = _identity(action, state)
            if unverified is not None:
                return unverified
        if kind is ActionKind.PUBLISH_ROOM and public_account(state, user) is None:
            return Decision(
                allowed=False, reason=Reason.NOT_PUBLIC_ACCOUNT,
                params={"action": kind.value, "bot": state.bot_user_id},
            )
        if ((action.opens_room or kind is ActionKind.PUBLISH_ROOM) and action.room_id is not None
                and action.room_id in state.private_news):
            return Decision(allowed=False, reason=Reason.PRIVATE_NEWS,
                            params={"action": kind.value, "rule": state.private_news[action.room_id]})
        if action.event_type in ENCRYPTION_EVENTS and state.in_news_scope(action.room_id):
            return _encryption(action, state)
        if kind is ActionKind.SEND_EVENT and action.body and state.in_news_scope(action.room_id):
            return _news(action, state, now)
        return ALLOW
    if kind is ActionKind.SEND_EVENT and state.in_clean_dm(action.room_id, user):
        return ALLOW
    previous = state.accepted.get(user)
    return Decision(
        allowed=False,
        reason=Reason.NOT_AGREED if previous is None else Reason.AGREEMENT_OUTDATED,
        params={"action": kind.value, "version": state.agreement_version, "bot": state.bot_user_id},
        prompt_agreement=True,
    )


def _sanctions(action: Action, state: PolicyState, active: ActiveSanctions, now: int) -> Decision | None:
    """What the measures in force say together.

    The strictest refusal among them (by ``_REFUSAL_RANK``, then the latest time a capped post is
    possible again, then ``strictness``), so the answer never depends on the order of
    ``active.measures``; ``ALLOW_AND_COUNT`` when the only measures with something to say are
    rate caps and each lets the post through; None when no measure has anything to say.
    """
    kind = action.kind
    posting = kind is ActionKind.SEND_EVENT
    # Reading stays possible, and so do the clean DM with the bot (to appeal, to agree) and
    # cleaning up one's own posts: only a closure takes those away.
    spared = kind in _ALWAYS_ALLOWED or (
        posting and ((action.event_type in _CORRECTIVE_EVENTS and not action.body)
                     or state.in_clean_dm(action.room_id, action.user_id))
    )
    best: tuple[object, ...] | None = None
    chosen: tuple[Reason, Measure, int] | None = None
    capped = False
    for measure in active.measures.values():
        if measure.kind is SanctionKind.WARN or not measure.in_force(now):
            continue
        next_ms = 0
        if measure.kind is SanctionKind.CLOSE:
            reason = Reason.CLOSED
        elif spared:
            continue
        elif measure.kind is SanctionKind.SUSPEND:
            reason = Reason.SUSPENDED
        elif not posting:
            continue  # a posting restriction does not touch invites or room creation
        elif measure.rate is None:
            reason = Reason.RESTRICTED
        else:
            window_start = now - measure.rate.period_ms
            recent = [t for t in active.recent_posts if t > window_start]
            if len(recent) < measure.rate.count:
                capped = True
                continue
            reason = Reason.RATE_LIMITED
            # Possible again once enough of the posts in the window have left it.
            next_ms = recent[len(recent) - measure.rate.count] + measure.rate.period_ms
        key = (_REFUSAL_RANK[reason], next_ms, strictness(measure))
        if best is None or key > best:
            best, chosen = key, (reason, measure, next_ms)
    if chosen is not None:
        reason, measure, next_ms = chosen
        if reason is Reason.RATE_LIMITED:
            assert measure.rate is not None
            return _refuse(reason, action, measure, rate=str(measure.rate), next_ms=str(next_ms))
        return _refuse(reason, action, measure)
    return ALLOW_AND_COUNT if capped else None


def _refuse(reason: Reason, action: Action, measure: Measure, **extra: str) -> Decision:
    until = "" if measure.expires_at is None else str(measure.expires_at)
    # A redaction refused for its reason: the message says to delete without one.
    what = "redaction_reason" if action.event_type in _CORRECTIVE_EVENTS and action.body else action.kind.value
    return Decision(
        allowed=False,
        reason=reason,
        params={"action": what, "case": str(measure.case_id), "until_ms": until, **extra},
    )


def _encryption(action: Action, state: PolicyState) -> Decision:
    """Rule 10: the news rules cannot read what they cannot decrypt, so where they apply only a
    ``publisher`` (whose posts the rules allow whatever they say) may encrypt: turning encryption
    on, or posting encrypted events in a room that was encrypted before it became public. A
    ``reposter`` may not: telling its reposts from originals needs the text."""
    account = public_account(state, action.user_id)
    if account is not None and account.tier == "publisher":
        return ALLOW
    return Decision(allowed=False, reason=Reason.ENCRYPTION_IN_SCOPE,
                    params={"action": action.kind.value, "bot": state.bot_user_id})


def news_verdict(action: Action, state: PolicyState, now: int) -> Decision:
    """What the news rules alone say of a post, as if the room were in scope (rule 9)."""
    if not action.body:
        return ALLOW
    return _news(action, state, now)


def _news(action: Action, state: PolicyState, now: int) -> Decision:
    assert action.body is not None
    match = state.news_rules.classify(action.body, quotes_a_reply=action.quotes_reply)
    if match is None:
        return ALLOW
    account = public_account(state, action.user_id)
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


# --- identity (issue 9) ---------------------------------------------------------------------------
_PURPOSE_OF_KIND = {ActionKind.SEND_EVENT: "post", ActionKind.INVITE: "invite", ActionKind.CREATE_ROOM: "create_room"}


def _identity(action: Action, state: PolicyState) -> Decision | None:
    """Rule 12 for posts, invites and room creation: None when it has nothing against ``action``."""
    purpose = _PURPOSE_OF_KIND.get(action.kind)
    user = action.user_id
    if purpose is None or purpose not in state.identity_required_for or user in state.verified:
        return None
    if not state.is_local(user):
        return None  # another provider's user, which cannot verify here: required_for is for local accounts
    if action.kind is ActionKind.SEND_EVENT and (
        state.in_clean_dm(action.room_id, user) or (action.event_type in _CORRECTIVE_EVENTS and not action.body)
    ):
        return None  # the account can still ask the bot how to verify, and delete its own posts
    return _not_verified(action.kind.value, state)


def public_account(state: PolicyState, user_id: str, *, verified: bool | None = None) -> PublicAccount | None:
    """The public account as its privileges stand: none while ``public_account`` needs a
    verification the owner lacks, no news tier while ``news`` does. Exempt accounts (the bot,
    moderators) need none, as in ``identity_refusal``. ``verified`` stands for memory while a
    verification or revocation is being recorded (memory follows only after its commit)."""
    account = state.public_accounts.get(user_id)
    if verified is None:
        verified = user_id in state.verified
    if account is None or not state.identity_required_for or verified or state.is_exempt(user_id):
        return account
    if "public_account" in state.identity_required_for:
        return None
    if account.tier is not None and "news" in state.identity_required_for:
        return PublicAccount(account.category, account.name, account.filing_number)
    return account


def identity_refusal(state: PolicyState, user_id: str, purpose: str) -> Decision | None:
    """Whether ``user_id`` may apply for (or be approved as) ``purpose`` (``public_account`` or
    ``news``) as far as real names go: a refusal that says how to verify, or None."""
    if purpose not in state.identity_required_for or user_id in state.verified or state.is_exempt(user_id):
        return None
    return _not_verified(purpose, state)


def _not_verified(what: str, state: PolicyState) -> Decision:
    return Decision(allowed=False, reason=Reason.NOT_VERIFIED,
                    params={"action": what, "how": state.identity_instructions, "bot": state.bot_user_id})
# --- end identity ---------------------------------------------------------------------------------
