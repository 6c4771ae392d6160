"""Reports, appeals, statistics and exports: !report and !appeal for everyone; the rest for moderators."""

from __future__ import annotations

import io

from bot.commands.context import Context
from bot.commands.registry import Command, Param, ParamKind, UnknownCommand, UsageError, moderator_command
from bot.commands.sanctions import SANCTION_KINDS, impose_from
from bot.export import KINDS, ExportError, export, parse_date
from bot.i18n import Refusal
from bot.reports import MATRIX_TO_EVENT

TEXT = Param("text", ParamKind.TEXT)
REPORT = Param("report", ParamKind.CASE)
APPEAL = Param("appeal", ParamKind.CASE)
REASON = Param("reason", ParamKind.TEXT)


async def report(ctx: Context) -> str:
    words = ctx.args["text"].split(maxsplit=1)
    link = MATRIX_TO_EVENT.match(words[0]) if words else None
    if link is not None:
        room_id, event_id = link.group(1), link.group(2)
        reason = words[1] if len(words) > 1 else ""
    elif ctx.reply_to is not None:
        room_id, event_id, reason = ctx.room_id, ctx.reply_to, ctx.args["text"]
    else:
        raise Refusal("report.how")
    if not reason.strip():
        raise Refusal("report.how")
    filed = await ctx.services.reports.report(reporter=ctx.sender, room_id=room_id, event_id=event_id, reason=reason)
    return ctx.t("report.thanks", report=filed.id)


async def list_reports(ctx: Context) -> str:
    reports = await ctx.services.store.reports.open()
    if not reports:
        return ctx.t("reports.none")
    return "\n\n".join([ctx.t("reports.header", count=len(reports)), *(ctx.services.reports.describe(r) for r in reports)])


async def resolve(ctx: Context) -> str:
    """!resolve <report> dismiss <reason…>, or !resolve <report> <sanction command…>."""
    report_id = ctx.args["report"]
    rest = ctx.args["text"].strip()
    verb, _, reason = rest.partition(" ")
    reports = ctx.services.reports
    if verb.casefold() in ("dismiss", "驳回"):
        if not reason.strip():
            raise UsageError(ctx.services.registry.find("resolve"))
        await reports.dismiss(report_id, ctx.sender, reason.strip())
        return ctx.t("report.dismissed", report=report_id)
    target = await reports.get_open(report_id)
    try:
        invocation = ctx.services.registry.parse("!" + rest)
    except UnknownCommand:
        invocation = None
    if invocation is None or invocation.command.name not in SANCTION_KINDS:
        raise Refusal("report.resolve_how", report=report_id)
    outcome = await impose_from(ctx, invocation, evidence=target.snapshot, report_id=report_id)
    return outcome


async def stats(ctx: Context) -> str:
    return await ctx.services.reports.stats()


async def appeal(ctx: Context) -> str:
    filed = await ctx.services.reports.appeal(ctx.sender, ctx.args["case"], ctx.args["text"])
    return ctx.t("appeal.thanks", appeal=filed.id, case=filed.case_id)


async def list_appeals(ctx: Context) -> str:
    appeals = await ctx.services.store.appeals.open()
    if not appeals:
        return ctx.t("appeals.none")
    lines = [ctx.t("appeals.header", count=len(appeals))]
    lines += [ctx.t("appeal.announce", appeal=a.id, case=a.case_id, user=a.appellant, text=a.text[:300]) for a in appeals]
    return "\n\n".join(lines)


async def grant(ctx: Context) -> str:
    decided = await ctx.services.reports.decide(ctx.args["appeal"], ctx.sender, True, ctx.args["reason"])
    return ctx.t("appeal.granted", appeal=decided.id, case=decided.case_id)


async def deny(ctx: Context) -> str:
    decided = await ctx.services.reports.decide(ctx.args["appeal"], ctx.sender, False, ctx.args["reason"])
    return ctx.t("appeal.denied", appeal=decided.id, case=decided.case_id)


async def export_records(ctx: Context) -> str | None:
    kind = ctx.args["kind"]
    since_text = ctx.args.get("since")
    try:
        since = None if since_text is None else parse_date(since_text)
    except ExportError:
        raise Refusal("export.bad_date", date=since_text) from None
    data, rows = await export(ctx.services.store, kind=kind, fmt="csv", since=since, bom=True, actor=ctx.sender,
                              now=ctx.services.clock())
    filename = f"{kind}-{since_text or 'all'}.csv"
    await ctx.services.matrix.send_file(ctx.room_id, io.BytesIO(data), len(data), filename, "text/csv")
    return ctx.t("export.done", kind=kind, rows=rows, file=filename)



COMMANDS = [
    Command("report", ("举报",), "cmd.report.summary", report, params=(TEXT,)),
    Command("appeal", ("申诉",), "cmd.appeal.summary", appeal, params=(Param("case", ParamKind.CASE), TEXT)),
    moderator_command("reports", "举报列表", list_reports, ()),
    moderator_command("resolve", "处理", resolve, (REPORT, TEXT)),
    moderator_command("stats", "统计", stats, ()),
    moderator_command("appeals", "申诉列表", list_appeals, ()),
    moderator_command("grant", "批准", grant, (APPEAL, REASON)),
    moderator_command("deny", "驳回申诉", deny, (APPEAL, REASON)),
    moderator_command("export", "导出", export_records, (
        Param("kind", ParamKind.CHOICE, choices=KINDS),
        Param("since", ParamKind.WORD, required=False),
    )),
]
