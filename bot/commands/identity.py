"""Real names in chat (article 6 ¶1, issue 9): !verify and !unverify, and the identity lines of
!status, !whois and !history.

`!verify` alone is anyone's: it asks the homeserver whether the account's single sign-on verifies
it (bot.identity does nothing when no provider is configured) and says how to verify here.
`!verify <user> <method> <note…>` records a moderator's manual check after an out-of-band look at
the person's papers; `!unverify <user> <reason…>` revokes. A manual check names no subject: the
person's ID never reaches chat, where it would be kept in the room's history in clear.

Nothing here shows a subject or its index: only verifier, method, level and dates.
"""

from __future__ import annotations

import re
import unicodedata

from bot.commands.context import Context, would
from bot.commands.registry import Command, Param, ParamKind, moderator_command
from bot.i18n import Refusal
from bot.identity.service import Identity, Verification, VerifyOutcome
from bot.matrix.client import MatrixError

USER = Param("user", ParamKind.USER_ID)
# A manual check's assurance level unless the moderator gives one (`--level high`).
MANUAL_LEVEL = "manual"


def service(ctx: Context) -> Identity:
    identity = ctx.services.identity
    if identity is None:  # wired in every running bot; only a test without it gets here
        raise RuntimeError("the identity service is not wired")
    return identity


def describe(ctx: Context, key: str, verification: Verification, **params: object) -> str:
    """A verification as people may read it: verifier, method, level, date; never the subject."""
    return ctx.t(key, verifier=ctx.t(f"identity.verifier.{verification.verifier}"), method=verification.method,
                 level=verification.level, time=ctx.t.time(verification.verified_at or verification.recorded_at),
                 **params)


# -- !verify alone: anyone --------------------------------------------------------------------------

def _sso_result(ctx: Context, outcome: VerifyOutcome | None, current: Verification | None) -> str | None:
    """What the single sign-on check changed, in a line; None when it changed nothing."""
    if outcome is None:
        return None
    if outcome.recorded and current is not None:
        return ctx.t("identity.sso_verified", method=current.method, level=current.level)
    if not outcome.recorded and outcome.refusal is None:  # the external ID is gone: check_sso revoked
        return ctx.t("identity.sso_revoked")
    if outcome.refusal in ("blacklisted", "too_many_accounts", "held"):
        return ctx.t(f"identity.self_refused.{outcome.refusal}")
    return None  # nothing else reaches an account's own check (it is local and asks once)


async def _verify_self(ctx: Context) -> str:
    identity, lines = service(ctx), []
    try:
        outcome = await identity.check_sso(ctx.sender)
    except MatrixError:
        outcome = None
        lines.append(ctx.t("identity.sso_unavailable"))
    current = await identity.current(ctx.sender)
    sso = _sso_result(ctx, outcome, current)
    if sso is not None:
        lines.append(sso)
    if current is not None:
        lines.append(describe(ctx, "identity.you_are_verified", current))
    else:
        lines += [ctx.t("identity.you_are_not_verified"), identity.how_to_verify(ctx.t.language)]
    return "\n".join(lines)


# -- !verify <user> <method> <note…>: moderators ----------------------------------------------------

# review 9 #15: what a moderator types is kept in clear (the audit log, exports, !history). A run of
# six digits or more (any script's digits), or fifteen across spaces, dashes, dots or slashes, is
# an ID card, passport or phone number far more often than anything a check needs to say;
# invisible characters between the digits do not hide it.
_DIGIT_RUN = re.compile(r"\d{6,}")
_SEPARATED_DIGITS = re.compile(r"\d(?:[\s\-./]*\d){14,}")


def holds_a_number(text: str) -> bool:
    """Whether ``text`` holds an ID-like run of digits."""
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return bool(_DIGIT_RUN.search(visible) or _SEPARATED_DIGITS.search(visible))


def _no_numbers(ctx: Context, **fields: str) -> None:
    """Refuse (naming the field) before anything is recorded when one holds an ID-like number."""
    for field, text in fields.items():
        if holds_a_number(text):
            raise Refusal("identity.holds_a_number", field=ctx.t(f"identity.field.{field}"))


def _manual(ctx: Context) -> tuple[str, str, str, str]:
    """The user, method, level and note of a manual verification; its usage if one is missing."""
    args = ctx.args
    if "method" not in args or not args.get("note", "").strip():
        raise Refusal("identity.verify_usage")
    level, note = args.get("level") or MANUAL_LEVEL, args["note"].strip()
    _no_numbers(ctx, method=args["method"], level=level, note=note)
    return args["user"], args["method"], level, note


async def _known(ctx: Context, user: str) -> None:
    """Refused unless ``user`` is an account of this homeserver that exists."""
    try:
        known = await service(ctx).known_user(user)
    except MatrixError:
        raise Refusal("identity.admin_unavailable", user=user) from None
    if not known:
        raise Refusal("identity.unknown_user", user=user)


def _already_verified(ctx: Context, user: str, current: Verification) -> Refusal:
    return Refusal("identity.already_verified", user=user, verifier=ctx.t(f"identity.verifier.{current.verifier}"),
                   method=current.method, level=current.level,
                   time=ctx.t.time(current.verified_at or current.recorded_at))


async def _verifiable(ctx: Context, user: str) -> None:
    """The refusals a manual verification meets before anything is recorded, in their order."""
    await _known(ctx, user)
    current = await service(ctx).current(user)
    if current is not None:
        raise _already_verified(ctx, user, current)


def _not_recorded(ctx: Context, user: str, outcome: VerifyOutcome) -> str:
    """Returned, not raised: a refusal the service audited (and told the moderators of) stays."""
    code = outcome.refusal or "unknown"
    if code in ("blacklisted", "too_many_accounts", "unknown_user"):
        return ctx.t(f"identity.refused.{code}", user=user)
    return ctx.t("identity.refused.other", user=user, code=code)


async def verify(ctx: Context) -> str:
    if "user" not in ctx.args:
        return await _verify_self(ctx)
    if "method" not in ctx.args:
        return await _recheck(ctx, ctx.args["user"])
    user, method, level, note = _manual(ctx)
    await _verifiable(ctx, user)
    now = ctx.services.clock()
    outcome = await service(ctx).verify(user_id=user, verifier="manual", method=method, level=level, subject=None,
                                        verified_at_ms=now, actor=ctx.sender, note=note)
    if not outcome.recorded:
        return _not_recorded(ctx, user, outcome)
    return ctx.t("identity.verified", user=user, method=method, level=level, time=ctx.t.time(now))


# -- !verify <user>: a moderator asks single sign-on again (review 9 #9) -------------------------------

async def _recheckable(ctx: Context, user: str) -> None:
    """The refusals a moderator's re-check meets before the homeserver is asked, in their order."""
    await _known(ctx, user)
    if not service(ctx).verifies_by_sso:
        raise Refusal("identity.recheck_no_sso", user=user)
    current = await service(ctx).current(user)
    if current is not None and current.verifier != "sso":
        raise _already_verified(ctx, user, current)


async def _recheck(ctx: Context, user: str) -> str:
    """Single sign-on asked again for ``user``, past a moderator's revocation, which a
    verification it records ends (the moderator is its actor)."""
    await _recheckable(ctx, user)
    identity = service(ctx)
    try:
        outcome = await identity.check_sso(user, moderator=ctx.sender)
    except MatrixError:
        raise Refusal("identity.admin_unavailable", user=user) from None
    current = await identity.current(user)
    if outcome is None:
        if current is not None:  # verified by this very sign-in already: nothing changed
            raise _already_verified(ctx, user, current)
        return ctx.t("identity.recheck_nothing", user=user)
    if outcome.recorded and current is not None:
        return ctx.t("identity.recheck_verified", user=user, method=current.method, level=current.level)
    if outcome.refusal is None:
        return ctx.t("identity.recheck_ended", user=user)
    return _not_recorded(ctx, user, outcome)


async def preview_verify(ctx: Context) -> str:
    if "user" not in ctx.args:
        return would(ctx, ctx.t("dry.verify_self"))
    if "method" not in ctx.args:
        await _recheckable(ctx, ctx.args["user"])
        return would(ctx, ctx.t("dry.verify_recheck", user=ctx.args["user"]))
    user, method, level, note = _manual(ctx)
    await _verifiable(ctx, user)
    return would(ctx, ctx.t("dry.verify", user=user, method=method, level=level, note=note))


# -- !unverify <user> <reason…>: moderators ---------------------------------------------------------

async def _revocable(ctx: Context) -> Verification:
    user = ctx.args["user"]
    current = await service(ctx).current(user)
    if current is None:
        raise Refusal("identity.not_verified", user=user)
    return current


async def unverify(ctx: Context) -> str:
    user, reason = ctx.args["user"], ctx.args["reason"]
    _no_numbers(ctx, reason=reason)
    current = await _revocable(ctx)
    if not await service(ctx).unverify(user_id=user, actor=ctx.sender, reason=reason):
        raise Refusal("identity.not_verified", user=user)
    answer = ctx.t("identity.unverified", user=user, verifier=ctx.t(f"identity.verifier.{current.verifier}"),
                   reason=reason)
    if current.verifier == "sso":  # review 9 #9: say that it sticks, and how it ends
        answer += " " + ctx.t("identity.unverified_held", user=user)
    return answer


async def preview_unverify(ctx: Context) -> str:
    _no_numbers(ctx, reason=ctx.args["reason"])
    current = await _revocable(ctx)
    return would(ctx, ctx.t("dry.unverify", user=ctx.args["user"], reason=ctx.args["reason"],
                            verifier=ctx.t(f"identity.verifier.{current.verifier}")))


# -- what other commands say about it -----------------------------------------------------------------

async def status_line(ctx: Context) -> str | None:
    """!status's line about the sender's real-name verification."""
    if ctx.services.identity is None:
        return None
    current = await ctx.services.identity.current(ctx.sender)
    if current is None:
        return ctx.t("status.identity_unverified")
    return describe(ctx, "status.identity_verified", current)


def whois_line(ctx: Context, user: str) -> str | None:
    """!whois's line for a public account: verified or not, nothing more."""
    identity = ctx.services.identity
    if identity is None or user not in ctx.services.state.public_accounts:
        return None
    return ctx.t("whois.verified" if identity.is_verified(user) else "whois.not_verified")


async def history_entries(ctx: Context, user: str) -> list[tuple[int, str]]:
    """(time, line) of each verification and revocation of ``user``, for !history's timeline."""
    if ctx.services.identity is None:
        return []
    entries, t = [], ctx.t
    for record in await ctx.services.identity.history(user):
        time = t.time(record.recorded_at)
        if record.kind == "verified":
            note = t("history.identity_note", note=record.note) if record.note else ""
            line = t("history.identity_verified", time=time, verifier=t(f"identity.verifier.{record.verifier}"),
                     method=record.method, level=record.level, actor=record.actor, note=note)
        else:
            line = t("history.identity_revoked", time=time, actor=record.actor, reason=record.note or "")
        entries.append((record.recorded_at, line))
    return entries


async def names_a_subject(ctx: Context, user: str) -> bool:
    """Whether ``user`` has a verification that names a subject (assertion or SSO, even revoked
    since): what ``Identity.blacklist`` would put on the blacklist. A manual check names none."""
    if ctx.services.identity is None:
        return False
    return any(r.kind == "verified" and r.verifier != "manual" for r in await ctx.services.identity.history(user))


COMMANDS = [
    Command("verify", ("实名认证",), "cmd.verify.summary", verify,
            params=(Param("user", ParamKind.USER_ID, required=False), Param("method", ParamKind.WORD, required=False),
                    Param("note", ParamKind.TEXT, required=False)),
            options=(Param("level", ParamKind.WORD),), moderator_only_with_args=True, preview=preview_verify),
    moderator_command("unverify", "取消实名", unverify, (USER, Param("reason", ParamKind.TEXT)),
                      preview=preview_unverify),
]
