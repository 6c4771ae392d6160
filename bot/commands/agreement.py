"""The end user's commands: !agree, !rules, !status, !help."""

from __future__ import annotations

from bot.agreement import Outcome
from bot.commands.context import Context, would
from bot.commands.identity import status_line
from bot.commands.registry import Command


def _role(ctx: Context) -> str:
    state = ctx.services.state
    return ctx.t("role.bot" if ctx.sender == state.bot_user_id else "role.moderator")


async def agree(ctx: Context) -> str:
    outcome = await ctx.services.agreements.accept(ctx.sender, ctx.event_id, ctx.room_id, "command")
    return await describe_outcome(ctx, outcome)


async def preview_agree(ctx: Context) -> str:
    # AgreementService.accept's own order: exempt, already agreed, then the record.
    state, t = ctx.services.state, ctx.t
    if state.is_exempt(ctx.sender):
        return would(ctx, t("dry.nothing", why=t("agree.exempt", role=_role(ctx))))
    if state.has_agreed(ctx.sender):
        latest = await ctx.services.store.agreements.latest_for(ctx.sender)
        why = t("agree.already", version=latest.version, time=t.time(latest.accepted_at))
        return would(ctx, t("dry.nothing", why=why))
    return would(ctx, t("dry.agree", version=state.agreement_version), t("dry.agree_effects"))


async def describe_outcome(ctx: Context, outcome: Outcome) -> str:
    if outcome is Outcome.EXEMPT:
        return ctx.t("agree.exempt", role=_role(ctx))
    latest = await ctx.services.store.agreements.latest_for(ctx.sender)
    key = "agree.confirmed" if outcome is Outcome.CONFIRMED else "agree.already"
    return ctx.t(key, version=latest.version, time=ctx.t.time(latest.accepted_at))


async def rules(ctx: Context) -> None:
    # Sent as an agreement message of its own, so a ✅ reaction to it accepts too.
    await ctx.services.onboarding.send_agreement(ctx.sender, ctx.room_id, reply_to=ctx.event_id)
    return None


async def preview_rules(ctx: Context) -> str:
    return would(ctx, ctx.t("dry.rules", version=ctx.services.state.agreement_version))


async def status(ctx: Context) -> str:
    state = ctx.services.state
    if state.is_exempt(ctx.sender):
        return ctx.t("status.exempt", role=_role(ctx))
    latest = await ctx.services.store.agreements.latest_for(ctx.sender)
    if latest is None:
        lines = [ctx.t("status.not_agreed", version=state.agreement_version)]
    elif latest.version != state.agreement_version:
        lines = [ctx.t("status.outdated", old=latest.version, version=state.agreement_version)]
    else:
        lines = [ctx.t("status.agreed", version=latest.version, time=ctx.t.time(latest.accepted_at))]
    mutes = await ctx.services.store.rooms.mutes_of(ctx.sender)
    if mutes:
        lines.append(ctx.t("status.muted", count=len(mutes)))
    identity = await status_line(ctx)
    if identity is not None:
        lines.append(identity)
    return "\n".join(lines)


async def help_(ctx: Context) -> str:
    is_moderator = ctx.services.state.is_exempt(ctx.sender)
    lines = [ctx.t("help.header")]
    for command in ctx.services.registry.commands:
        if command.moderator_only and not is_moderator:
            continue
        names = " / ".join(f"!{alias}" for alias in command.aliases)
        usage = command.usage() + (f" ({names})" if names else "")
        lines.append(ctx.t("help.line", usage=usage, summary=ctx.t(command.summary_key)))
    lines.append(ctx.t("help.dry_run"))
    lines.append(ctx.t("help.footer"))
    return "\n".join(lines)


COMMANDS = [
    Command("agree", ("同意",), "cmd.agree.summary", agree, preview=preview_agree),
    Command("rules", ("规则",), "cmd.rules.summary", rules, preview=preview_rules),
    Command("status", ("状态",), "cmd.status.summary", status),
    Command("help", ("帮助",), "cmd.help.summary", help_),
]
