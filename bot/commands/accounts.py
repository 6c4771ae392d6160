"""Public accounts: !apply, !application, !channel and !whois for everyone; review for moderators.

The commands that change the register or the rules have a `--dry-run` preview: the service's
checks, then what would be recorded and who would be told, reading only."""

from __future__ import annotations

from bot.commands.context import Context, would
from bot.commands.identity import whois_line
from bot.commands.registry import Command, Param, ParamKind, moderator_command
from bot.config import load_news_rules
from bot.i18n import Refusal
from bot.matrix.client import MatrixError
from bot.policy.news import NewsRules, RulesError
from bot.store import Application

KIND = Param("kind", ParamKind.CHOICE, choices=("public", "news", "公众账号", "新闻"))
TEXT = Param("text", ParamKind.TEXT)
APPLICATION = Param("application", ParamKind.CASE)
USER = Param("user", ParamKind.USER_ID)
TIER_WORDS = {"publisher": "publisher", "reposter": "reposter", "发布": "publisher", "转载": "reposter"}


async def apply(ctx: Context) -> str:
    """!apply public <category> <name…> | !apply news publisher|reposter <licence-number>."""
    words = ctx.args["text"].split()
    accounts = ctx.services.accounts
    if ctx.args["kind"] in ("public", "公众账号"):
        if len(words) < 2:
            raise Refusal("account.apply_usage")
        application = await accounts.apply_public(ctx.sender, words[0], " ".join(words[1:]))
    else:
        if len(words) != 2 or words[0].casefold() not in TIER_WORDS:
            raise Refusal("account.apply_usage")
        application = await accounts.apply_news(ctx.sender, TIER_WORDS[words[0].casefold()], words[1])
    return ctx.t("account.applied", application=application.id)


async def preview_apply(ctx: Context) -> str:
    # The checks of PublicAccounts.apply_public / apply_news, with their answers.
    words, t = ctx.args["text"].split(), ctx.t
    account = ctx.services.state.public_accounts.get(ctx.sender)
    if ctx.args["kind"] in ("public", "公众账号"):
        if len(words) < 2:
            raise Refusal("account.apply_usage")
        kind, category = "public", ctx.services.accounts.category_of(words[0])
        if account is not None:
            raise Refusal("account.already_public", name=account.name, filing=account.filing_number)
        summary = t("account.summary_public", category=ctx.services.accounts.category_name(category),
                    name=" ".join(words[1:]))
    else:
        if len(words) != 2 or words[0].casefold() not in TIER_WORDS:
            raise Refusal("account.apply_usage")
        kind, tier = "news", TIER_WORDS[words[0].casefold()]
        if account is None:
            raise Refusal("account.needs_public")
        if account.tier == tier or account.tier == "publisher":
            raise Refusal("account.already_tier", tier=t(f"tier.{account.tier}"))
        summary = t("account.summary_news", tier=t(f"tier.{tier}"), licence=words[1])
    refusal = ctx.services.accounts.verification_refusal(ctx.sender, kind)
    if refusal is not None:
        raise refusal
    mine = await ctx.services.store.accounts.applications_of(ctx.sender)
    if any(a.kind == kind and a.decided_at is None for a in mine):
        raise Refusal("account.pending", kind=kind)
    return would(ctx, t("dry.apply", summary=summary), t("dry.apply_show"))


def _line(ctx: Context, application: Application) -> str:
    status = ctx.t(f"account.status_{application.decision or 'pending'}", note=application.note or "")
    return ctx.t("account.application_line", application=application.id,
                 summary=ctx.services.accounts.summary(application), status=status)


async def application_status(ctx: Context) -> str:
    applications = await ctx.services.store.accounts.applications_of(ctx.sender)
    if not applications:
        return ctx.t("account.no_application")
    return "\n".join(_line(ctx, a) for a in applications)


async def applications(ctx: Context) -> str:
    pending = await ctx.services.store.accounts.pending()
    if not pending:
        return ctx.t("account.none_pending")
    lines = [ctx.t("account.pending_header", count=len(pending))]
    lines += [f"{_line(ctx, a)} — {a.applicant}" for a in pending]
    return "\n".join(lines)


async def _pending(ctx: Context) -> Application:
    """The undecided application a review names; the service's refusals otherwise."""
    application_id = ctx.args["application"]
    application = await ctx.services.store.accounts.application(application_id)
    if application is None:
        raise Refusal("account.no_such", application=application_id)
    if application.decided_at is not None:
        raise Refusal("account.already_decided", application=application_id)
    return application


async def approve(ctx: Context) -> str:
    filing = await ctx.services.accounts.approve(ctx.args["application"], ctx.sender, ctx.args.get("note", ""))
    return ctx.t("account.approved", application=ctx.args["application"], filing=filing.filing_number, user=filing.owner)


async def preview_approve(ctx: Context) -> str:
    application, t = await _pending(ctx), ctx.t
    accounts, store = ctx.services.accounts, ctx.services.store
    refusal = accounts.approval_refusal(application)
    if refusal is not None:
        raise refusal
    category = application.category or ""
    if application.kind == "news":
        account = ctx.services.state.public_accounts.get(application.applicant)
        if account is None:
            raise Refusal("account.needs_public")
        category = account.category
    number = accounts.filing_number(category, await store.accounts.next_sequence(), ctx.services.clock())
    steps = [t("dry.approve", application=application.id, filing=number, user=application.applicant,
               summary=accounts.summary(application))]
    if application.kind == "news":
        steps.append(t("dry.relabel", user=application.applicant))
    steps.append(t("dry.tell", user=application.applicant))
    return would(ctx, *steps)


async def reject(ctx: Context) -> str:
    await ctx.services.accounts.reject(ctx.args["application"], ctx.sender, ctx.args["reason"])
    return ctx.t("account.rejected", application=ctx.args["application"])


async def preview_reject(ctx: Context) -> str:
    application = await _pending(ctx)
    return would(ctx, ctx.t("dry.reject", application=application.id, reason=ctx.args["reason"]),
                 ctx.t("dry.tell", user=application.applicant))


async def revoke(ctx: Context) -> str:
    revoked = await ctx.services.accounts.revoke(ctx.args["user"], ctx.sender, ctx.args["reason"])
    return ctx.t("account.revoked", user=ctx.args["user"], filings=", ".join(f.filing_number for f in revoked))


async def preview_revoke(ctx: Context) -> str:
    user = ctx.args["user"]
    filings = await ctx.services.store.accounts.active_filings(user)
    if not filings:
        raise Refusal("account.not_public", user=user)
    numbers = ", ".join(f.filing_number for f in filings)
    return would(ctx, ctx.t("dry.revoke", user=user, filings=numbers, reason=ctx.args["reason"]),
                 ctx.t("dry.relabel", user=user), ctx.t("dry.tell", user=user))


async def channel(ctx: Context) -> str:
    action, room = ctx.args["action"], ctx.args["room"]
    accounts = ctx.services.accounts
    if action in ("add", "添加"):
        return ctx.t("channel.added", room=await accounts.add_channel(ctx.sender, room))
    return ctx.t("channel.removed", room=await accounts.remove_channel(ctx.sender, room))


async def preview_channel(ctx: Context) -> str:
    """The checks of PublicAccounts.add_channel / remove_channel, in their order; reads only."""
    action, room, owner = ctx.args["action"], ctx.args["room"], ctx.sender
    services = ctx.services
    adding = action in ("add", "添加")
    owner_refusal = services.accounts.owner_refusal(owner) if adding else None
    if owner_refusal is not None:
        raise owner_refusal
    try:
        room_id = await services.matrix.resolve(room)
    except MatrixError:
        raise Refusal("channel.unknown_room", room=room) from None
    if not adding:
        if (await services.store.accounts.channels(owner)).get(room_id) != owner:
            raise Refusal("channel.not_yours", room=room)
        return would(ctx, ctx.t("dry.channel_remove", room=room_id), ctx.t("dry.relabel", user=owner))
    refusal = services.accounts.channel_refusal(owner, room_id, room)
    if refusal is not None:
        raise refusal
    await services.accounts.check_room(owner, room, room_id)  # reads the room's state only
    return would(ctx, ctx.t("dry.channel_add", room=room_id), ctx.t("dry.relabel", user=owner))


async def whois(ctx: Context) -> str:
    answer = ctx.services.accounts.whois(ctx.args["user"])
    verified = whois_line(ctx, ctx.args["user"])
    return answer if verified is None else f"{answer}\n{verified}"


def _counts(rules: NewsRules) -> tuple[int, int]:
    """How many news rules (a rule matched several ways counts once) and repost sources."""
    news = len({*rules.keyword_rules.values(), *(r for r, _ in rules.regex_rules), *rules.domain_rules.values()})
    return news, len(rules.source_domains)


async def reload_rules(ctx: Context) -> str:
    news, sources = _counts(ctx.services.news.reload())
    return ctx.t("rules.reloaded", news=news, sources=sources)


async def preview_reload(ctx: Context) -> str:
    path = ctx.services.rules_path
    if path is None:
        return would(ctx, ctx.t("dry.reload_unread"))
    try:  # the file read and compiled as !reload would, but not put in force
        news, sources = _counts(load_news_rules(path))
    except RulesError as exc:
        raise Refusal("rules.invalid", error=str(exc)) from None
    old_news, old_sources = _counts(ctx.services.state.news_rules)
    return would(ctx, ctx.t("dry.reload", news=news, sources=sources, old_news=old_news, old_sources=old_sources))



COMMANDS = [
    Command("apply", ("申请",), "cmd.apply.summary", apply, params=(KIND, TEXT), preview=preview_apply),
    Command("application", ("申请状态",), "cmd.application.summary", application_status),
    Command("channel", ("频道",), "cmd.channel.summary", channel, params=(
        Param("action", ParamKind.CHOICE, choices=("add", "remove", "添加", "移除")),
        Param("room", ParamKind.WORD),
    ), preview=preview_channel),
    Command("whois", ("查询",), "cmd.whois.summary", whois, params=(USER,)),
    moderator_command("applications", "申请列表", applications, ()),
    moderator_command("approve", "通过", approve, (APPLICATION, Param("note", ParamKind.TEXT, required=False)),
                      preview=preview_approve),
    moderator_command("reject", "拒绝", reject, (APPLICATION, Param("reason", ParamKind.TEXT)),
                      preview=preview_reject),
    moderator_command("revoke", "撤销", revoke, (USER, Param("reason", ParamKind.TEXT)), preview=preview_revoke),
    moderator_command("reload", "重新加载", reload_rules, (), preview=preview_reload),
]
