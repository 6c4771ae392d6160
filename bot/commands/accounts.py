"""Public accounts: !apply, !application, !channel and !whois for everyone; review for moderators."""

from __future__ import annotations

from bot.commands.context import Context
from bot.commands.registry import Command, Param, ParamKind, moderator_command
from bot.i18n import Refusal
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


async def approve(ctx: Context) -> str:
    filing = await ctx.services.accounts.approve(ctx.args["application"], ctx.sender, ctx.args.get("note", ""))
    return ctx.t("account.approved", application=ctx.args["application"], filing=filing.filing_number, user=filing.owner)


async def reject(ctx: Context) -> str:
    await ctx.services.accounts.reject(ctx.args["application"], ctx.sender, ctx.args["reason"])
    return ctx.t("account.rejected", application=ctx.args["application"])


async def revoke(ctx: Context) -> str:
    revoked = await ctx.services.accounts.revoke(ctx.args["user"], ctx.sender, ctx.args["reason"])
    return ctx.t("account.revoked", user=ctx.args["user"], filings=", ".join(f.filing_number for f in revoked))


async def channel(ctx: Context) -> str:
    action, room = ctx.args["action"], ctx.args["room"]
    accounts = ctx.services.accounts
    if action in ("add", "添加"):
        return ctx.t("channel.added", room=await accounts.add_channel(ctx.sender, room))
    return ctx.t("channel.removed", room=await accounts.remove_channel(ctx.sender, room))


async def whois(ctx: Context) -> str:
    return ctx.services.accounts.whois(ctx.args["user"])


async def reload_rules(ctx: Context) -> str:
    rules = ctx.services.news.reload()
    news_rules = len({*rules.keyword_rules.values(), *(r for r, _ in rules.regex_rules), *rules.domain_rules.values()})
    return ctx.t("rules.reloaded", news=news_rules, sources=len(rules.source_domains))



COMMANDS = [
    Command("apply", ("申请",), "cmd.apply.summary", apply, params=(KIND, TEXT)),
    Command("application", ("申请状态",), "cmd.application.summary", application_status),
    Command("channel", ("频道",), "cmd.channel.summary", channel, params=(
        Param("action", ParamKind.CHOICE, choices=("add", "remove", "添加", "移除")),
        Param("room", ParamKind.WORD),
    )),
    Command("whois", ("查询",), "cmd.whois.summary", whois, params=(USER,)),
    moderator_command("applications", "申请列表", applications, ()),
    moderator_command("approve", "通过", approve, (APPLICATION, Param("note", ParamKind.TEXT, required=False))),
    moderator_command("reject", "拒绝", reject, (APPLICATION, Param("reason", ParamKind.TEXT))),
    moderator_command("revoke", "撤销", revoke, (USER, Param("reason", ParamKind.TEXT))),
    moderator_command("reload", "重新加载", reload_rules, ()),
]
