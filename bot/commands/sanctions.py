"""The moderators' commands (article 8): !warn, !restrict, !suspend, !close, !confirm, !lift,
!case, !history, !cases. Moderators only, and only in the management room or a moderator's
direct chat with the bot; the dispatcher checks both before a handler runs."""

from __future__ import annotations

from typing import Any

from bot.commands.context import Context
from bot.commands.registry import Invocation, Param, ParamKind, moderator_command
from bot.i18n import Refusal
from bot.policy.sanctions import SanctionKind, format_duration
from bot.reports import snapshot_of
from bot.sanctions import Request, describe_case

USER = Param("user", ParamKind.USER_ID)
DURATION = Param("duration", ParamKind.DURATION)
REASON = Param("reason", ParamKind.TEXT)
CASE = Param("case", ParamKind.CASE)
RATE = Param("rate", ParamKind.RATE)
DRY_RUN = "dry-run"
SANCTION_KINDS = {kind.value: kind for kind in SanctionKind}


async def evidence_of(ctx: Context) -> dict[str, Any] | None:
    """The message this command replies to, copied: the original may be redacted later."""
    if ctx.reply_to is None:
        return None
    try:
        event = await ctx.services.matrix.get_event(ctx.room_id, ctx.reply_to)
    except Exception:  # noqa: BLE001 — any failure means the same thing to the moderator
        raise Refusal("sanction.evidence_unavailable") from None
    return snapshot_of(event, ctx.room_id)


def _summary(ctx: Context, request: Request) -> str:
    t = ctx.t
    parts = [t(f"kind.{request.kind}"), request.target]
    if request.kind in (SanctionKind.RESTRICT, SanctionKind.SUSPEND):
        parts.append(t("sanction.for", duration=format_duration(request.duration_ms)))
    if request.rate is not None:
        parts.append(t("case.rate", rate=str(request.rate)))
    if request.erase:
        parts.append(t("sanction.erase"))
    if request.evidence is not None:
        parts.append(t("sanction.with_evidence"))
    return " ".join(parts)


async def impose_from(
    ctx: Context, invocation: Invocation, *, evidence: dict[str, Any] | None, report_id: int | None = None
) -> str:
    """Carry out a parsed sanction command; also the second half of `!resolve <report> <command…>`,
    which passes the report's copy of the message as evidence and links the case to the report."""
    args, flags = invocation.args, invocation.flags
    sanctions = ctx.services.sanctions
    kind = SANCTION_KINDS[invocation.command.name]
    request = Request(
        target=args["user"], kind=kind, actor=ctx.sender, reason=args["reason"],
        duration_ms=args.get("duration"), rate=args.get("rate"), evidence=evidence, erase="erase" in flags,
    )
    sanctions.check_target(request.target)
    if DRY_RUN in flags:
        return ctx.t("sanction.dry_run", summary=_summary(ctx, request), reason=request.reason)
    if kind is SanctionKind.CLOSE:
        closure = await sanctions.request_closure(request, report_id=report_id)
        return ctx.t("sanction.close_confirm", summary=_summary(ctx, request), code=closure.code,
                     reason=request.reason)
    case = await sanctions.impose(request)
    if report_id is not None:
        await ctx.services.reports.link(report_id, ctx.sender, case)
    return ctx.t("sanction.imposed", case=case.id, summary=_summary(ctx, request))


async def sanction(ctx: Context) -> str:
    """!warn, !restrict, !suspend and !close: the message replied to, if any, is the evidence."""
    invocation = Invocation(ctx.services.registry.find(ctx.command), ctx.args, ctx.flags)
    return await impose_from(ctx, invocation, evidence=await evidence_of(ctx))


async def confirm(ctx: Context) -> str:
    case, closure = await ctx.services.sanctions.confirm_closure(ctx.args["code"], ctx.sender)
    if closure.report_id is not None:
        await ctx.services.reports.link(closure.report_id, ctx.sender, case)
    return ctx.t("sanction.imposed", case=case.id, summary=f"{ctx.t('kind.close')} {case.target}")


async def lift(ctx: Context) -> str:
    case_id = ctx.args["case"]
    if DRY_RUN in ctx.flags:
        case = await ctx.services.store.cases.get(case_id)
        if case is None:
            raise Refusal("sanction.no_such_case", case=case_id)
        return ctx.t("sanction.dry_run", summary=f"{ctx.t('how.lifted')} #{case_id} ({case.target})",
                     reason=ctx.args["reason"])
    case = await ctx.services.sanctions.lift(case_id, ctx.sender, ctx.args["reason"])
    return ctx.t("sanction.lifted", case=case.id, user=case.target)


async def show_case(ctx: Context) -> str:
    case = await ctx.services.store.cases.get(ctx.args["case"])
    if case is None:
        raise Refusal("sanction.no_such_case", case=ctx.args["case"])
    return describe_case(ctx.t, case, ctx.services.clock())


async def history(ctx: Context) -> str:
    user = ctx.args["user"]
    cases = await ctx.services.store.cases.history(user)
    if not cases:
        return ctx.t("history.none", user=user)
    now = ctx.services.clock()
    return "\n\n".join([ctx.t("history.header", user=user, count=len(cases)),
                        *(describe_case(ctx.t, c, now) for c in cases)])


async def list_cases(ctx: Context) -> str:
    now = ctx.services.clock()
    if ctx.args.get("filter"):
        cases = [c for c in await ctx.services.store.cases.unended() if c.in_force(now)]
        header = "cases.header_active"
    else:
        cases = await ctx.services.store.cases.recent(20)
        header = "cases.header_recent"
    if not cases:
        return ctx.t("cases.none")
    lines = [ctx.t(header, count=len(cases))]
    for case in cases:
        lines.append(ctx.t("cases.line", case=case.id, kind=ctx.t(f"kind.{case.kind}"), user=case.target,
                           time=ctx.t.time(case.created_at), reason=case.reason[:80]))
    return "\n".join(lines)



COMMANDS = [
    moderator_command("warn", "警告", sanction, (USER, REASON), flags=(DRY_RUN,)),
    moderator_command("restrict", "限制", sanction, (USER, DURATION, REASON), options=(RATE,), flags=(DRY_RUN,)),
    moderator_command("suspend", "暂停", sanction, (USER, DURATION, REASON), flags=(DRY_RUN,)),
    moderator_command("close", "关闭", sanction, (USER, REASON), flags=("erase", DRY_RUN)),
    moderator_command("confirm", "确认", confirm, (Param("code", ParamKind.WORD),)),
    moderator_command("lift", "解除", lift, (CASE, REASON), flags=(DRY_RUN,)),
    moderator_command("case", "案件", show_case, (CASE,)),
    moderator_command("history", "记录", history, (USER,)),
    moderator_command("cases", "案件列表", list_cases, (Param("filter", ParamKind.CHOICE, required=False, choices=("active", "生效")),)),
]
