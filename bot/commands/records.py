"""Reports, appeals, statistics and exports: !report and !appeal for everyone; the rest for moderators.

A dry run (`--dry-run`) of each command here that records something makes the same checks and
reads (the reported message, the report, the appeal, the rows an export holds) and answers what
would be recorded and sent."""

from __future__ import annotations

from bot.commands.context import Context, would
from bot.commands.registry import (
    Command, Invocation, Param, ParamKind, UnknownCommand, UsageError, moderator_command,
)
from bot.commands.sanctions import SANCTION_KINDS, impose_from, liftable, lift_steps, preview_from
from bot.export import KINDS, ExportError, collect, export, parse_date, stage_file
from bot.i18n import Refusal
from bot.matrix.client import MatrixError
from bot.reports import MATRIX_TO_EVENT, snapshot_of
from bot.store import Appeal, Report

TEXT = Param("text", ParamKind.TEXT)
REPORT = Param("report", ParamKind.CASE)
APPEAL = Param("appeal", ParamKind.CASE)
REASON = Param("reason", ParamKind.TEXT)


def _reported(ctx: Context) -> tuple[str, str, str]:
    """The room, event and reason a `!report` names: by its matrix.to link, or as a reply."""
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
    return room_id, event_id, reason


async def report(ctx: Context) -> str:
    room_id, event_id, reason = _reported(ctx)
    filed = await ctx.services.reports.report(reporter=ctx.sender, room_id=room_id, event_id=event_id, reason=reason)
    return ctx.t("report.thanks", report=filed.id)


async def preview_report(ctx: Context) -> str:
    room_id, event_id, _ = _reported(ctx)
    matrix = ctx.services.matrix
    try:  # the same reads as Reports.report, and its refusal when the message cannot be seen
        room_id = await matrix.resolve(room_id)
        snapshot = snapshot_of(await matrix.get_event(room_id, event_id), room_id)
    except MatrixError:
        raise Refusal("report.cannot_see") from None
    sender = str(snapshot.get("sender") or "?")
    return would(ctx, ctx.t("dry.report_file", sender=sender, room=room_id), ctx.t("dry.report_show"))


async def list_reports(ctx: Context) -> str:
    reports = await ctx.services.store.reports.open()
    if not reports:
        return ctx.t("reports.none")
    return "\n\n".join([ctx.t("reports.header", count=len(reports)), *(ctx.services.reports.describe(r) for r in reports)])


def _resolution(ctx: Context) -> tuple[str | None, Invocation | None]:
    """What `!resolve` asks: (dismissal reason, None) or (None, the sanction command)."""
    rest = ctx.args["action"].strip()
    verb, _, reason = rest.partition(" ")
    if verb.casefold() in ("dismiss", "驳回"):
        if not reason.strip():
            raise UsageError(ctx.services.registry.find("resolve"))
        return reason.strip(), None
    try:
        invocation = ctx.services.registry.parse("!" + rest)
    except UnknownCommand:
        invocation = None
    if invocation is None or invocation.command.name not in SANCTION_KINDS:
        raise Refusal("report.resolve_how", report=ctx.args["report"])
    return None, invocation


async def resolve(ctx: Context) -> str:
    """!resolve <report> dismiss <reason…>, or !resolve <report> <sanction command…>."""
    report_id = ctx.args["report"]
    reason, invocation = _resolution(ctx)
    reports = ctx.services.reports
    if invocation is None:
        await reports.dismiss(report_id, ctx.sender, str(reason))
        return ctx.t("report.dismissed", report=report_id)
    target = await reports.get_open(report_id)
    return await impose_from(ctx, invocation, evidence=target.snapshot, report_id=report_id)


async def preview_resolve(ctx: Context) -> str:
    report_id = ctx.args["report"]
    reason, invocation = _resolution(ctx)
    target: Report = await ctx.services.reports.get_open(report_id)
    if invocation is None:
        return would(ctx, ctx.t("dry.report_dismiss", report=report_id, reason=reason), ctx.t("dry.tell_reporters"))
    return await preview_from(ctx, invocation, evidence=target.snapshot, report_id=report_id)


async def stats(ctx: Context) -> str:
    return await ctx.services.reports.stats()


async def appeal(ctx: Context) -> str:
    filed = await ctx.services.reports.appeal(ctx.sender, ctx.args["case"], ctx.args["text"])
    return ctx.t("appeal.thanks", appeal=filed.id, case=filed.case_id)


async def preview_appeal(ctx: Context) -> str:
    # The checks of Reports.appeal, with its answers: a case that is not yours reads as missing.
    case_id, store = ctx.args["case"], ctx.services.store
    case = await store.cases.get(case_id)
    if case is None or case.target != ctx.sender:
        raise Refusal("appeal.not_yours", case=case_id)
    if case.kind != "warn" and not case.in_force(ctx.services.clock()):
        raise Refusal("appeal.not_in_force", case=case_id)
    if any(a.case_id == case_id for a in await store.appeals.open()):
        raise Refusal("appeal.already_open", case=case_id)
    return would(ctx, ctx.t("dry.appeal_file", case=case_id), ctx.t("dry.appeal_show"))


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


async def _undecided(ctx: Context) -> Appeal:
    appeal_id = ctx.args["appeal"]
    appeal = await ctx.services.store.appeals.get(appeal_id)
    if appeal is None:
        raise Refusal("appeal.no_such", appeal=appeal_id)
    if appeal.decided_at is not None:
        raise Refusal("appeal.already_decided", appeal=appeal_id)
    return appeal


async def _preview_decision(ctx: Context, granted: bool) -> str:
    appeal, reason = await _undecided(ctx), ctx.args["reason"]
    steps: list[str] = []
    case = await ctx.services.store.cases.get(appeal.case_id)
    if granted and case is not None and case.in_force(ctx.services.clock()):
        steps += await lift_steps(ctx, await liftable(ctx, case.id), reason)
    decision = ctx.t("dry.decision_granted" if granted else "dry.decision_denied")
    steps += [ctx.t("dry.appeal_decide", appeal=appeal.id, case=appeal.case_id, decision=decision, reason=reason),
              ctx.t("dry.tell", user=appeal.appellant)]
    return would(ctx, *steps)


async def preview_grant(ctx: Context) -> str:
    return await _preview_decision(ctx, True)


async def preview_deny(ctx: Context) -> str:
    return await _preview_decision(ctx, False)


def _since(ctx: Context) -> int | None:
    since_text = ctx.args.get("since")
    try:
        return None if since_text is None else parse_date(since_text)
    except ExportError:
        raise Refusal("export.bad_date", date=since_text) from None


def _filename(ctx: Context) -> str:
    return f"{ctx.args['kind']}-{ctx.args.get('since') or 'all'}.csv"


async def export_records(ctx: Context) -> str | None:
    kind = ctx.args["kind"]
    data, rows = await export(ctx.services.store, kind=kind, fmt="csv", since=_since(ctx), bom=True,
                              actor=ctx.sender, now=ctx.services.clock())
    filename = _filename(ctx)
    # Journaled with the audit row: the records leave the server only if the export is recorded,
    # and once; the executor sends the file before the reply (same room, so in this order).
    key = f"export/{ctx.event_id}"
    path, digest = await stage_file(ctx.services.store, key, data)
    await ctx.services.store.effects.add(
        "file", ctx.room_id, {"room": ctx.room_id, "path": path, "sha256": digest, "filename": filename,
                              "mimetype": "text/csv"}, key, now_ms=ctx.services.clock())
    return ctx.t("export.done", kind=kind, rows=rows, file=filename)


async def preview_export(ctx: Context) -> str:
    kind = ctx.args["kind"]
    _, rows = await collect(ctx.services.store, kind, _since(ctx))
    return would(ctx, ctx.t("dry.export_file", file=_filename(ctx), rows=len(rows), kind=kind),
                 ctx.t("dry.export_audit"))



COMMANDS = [
    Command("report", ("举报",), "cmd.report.summary", report, params=(TEXT,), preview=preview_report),
    Command("appeal", ("申诉",), "cmd.appeal.summary", appeal, params=(Param("case", ParamKind.CASE), TEXT),
            preview=preview_appeal),
    moderator_command("reports", "举报列表", list_reports, ()),
    moderator_command("resolve", "处理", resolve, (REPORT, Param("action", ParamKind.COMMAND)),
                      preview=preview_resolve),
    moderator_command("stats", "统计", stats, ()),
    moderator_command("appeals", "申诉列表", list_appeals, ()),
    moderator_command("grant", "批准", grant, (APPEAL, REASON), preview=preview_grant),
    moderator_command("deny", "驳回申诉", deny, (APPEAL, REASON), preview=preview_deny),
    moderator_command("export", "导出", export_records, (
        Param("kind", ParamKind.CHOICE, choices=KINDS),
        Param("since", ParamKind.WORD, required=False),
    ), preview=preview_export),
]
