"""The moderators' commands (article 8): !warn, !restrict, !suspend, !close, !confirm, !lift,
!case, !history, !cases. Moderators only, and only in the management room or a moderator's
direct chat with the bot; the dispatcher checks both before a handler runs."""

from __future__ import annotations

from typing import Any

from bot.commands.context import Context
from bot.commands.registry import Command, Param, ParamKind
from bot.i18n import Refusal
from bot.policy.sanctions import SanctionKind, format_duration
from bot.sanctions import Request, describe_case

USER = Param("user", ParamKind.USER_ID)
DURATION = Param("duration", ParamKind.DURATION)
REASON = Param("reason", ParamKind.TEXT)
CASE = Param("case", ParamKind.CASE)
RATE = Param("rate", ParamKind.RATE)
DRY_RUN = "dry-run"
EVIDENCE_FIELDS = ("event_id", "room_id", "sender", "type", "content", "origin_server_ts")


async def evidence_of(ctx: Context) -> dict[str, Any] | None:
    """The message this command replies to, copied: the original may be redacted later."""
    if ctx.reply_to is None:
        return None
    try:
        event = await ctx.services.matrix.get_event(ctx.room_id, ctx.reply_to)
    except Exception:  # noqa: BLE001 — any failure means the same thing to the moderator
        raise Refusal("sanction.evidence_unavailable") from None
    snapshot = {key: event.get(key) for key in EVIDENCE_FIELDS}
    snapshot["room_id"] = snapshot["room_id"] or ctx.room_id
    return snapshot


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


async def _impose(ctx: Context, kind: SanctionKind) -> str:
    sanctions = ctx.services.sanctions
    request = Request(
        target=ctx.args["user"], kind=kind, actor=ctx.sender, reason=ctx.args["reason"],
        duration_ms=ctx.args.get("duration"), rate=ctx.args.get("rate"), evidence=await evidence_of(ctx),
        erase="erase" in ctx.flags,
    )
    sanctions.check_target(request.target)
    if DRY_RUN in ctx.flags:
        return ctx.t("sanction.dry_run", summary=_summary(ctx, request), reason=request.reason)
    if kind is SanctionKind.CLOSE:
        closure = await sanctions.request_closure(request)
        return ctx.t("sanction.close_confirm", summary=_summary(ctx, request), code=closure.code,
                     reason=request.reason)
    case = await sanctions.impose(request)
    return ctx.t("sanction.imposed", case=case.id, summary=_summary(ctx, request))


async def warn(ctx: Context) -> str:
    return await _impose(ctx, SanctionKind.WARN)


async def restrict(ctx: Context) -> str:
    return await _impose(ctx, SanctionKind.RESTRICT)


async def suspend(ctx: Context) -> str:
    return await _impose(ctx, SanctionKind.SUSPEND)


async def close(ctx: Context) -> str:
    return await _impose(ctx, SanctionKind.CLOSE)


async def confirm(ctx: Context) -> str:
    case = await ctx.services.sanctions.confirm_closure(ctx.args["code"], ctx.sender)
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


def _moderator(name: str, alias: str, run, params, **kwargs) -> Command:  # type: ignore[no-untyped-def]
    return Command(name, (alias,), f"cmd.{name}.summary", run, params=params, moderator_only=True, **kwargs)


COMMANDS = [
    _moderator("warn", "警告", warn, (USER, REASON), flags=(DRY_RUN,)),
    _moderator("restrict", "限制", restrict, (USER, DURATION, REASON), options=(RATE,), flags=(DRY_RUN,)),
    _moderator("suspend", "暂停", suspend, (USER, DURATION, REASON), flags=(DRY_RUN,)),
    _moderator("close", "关闭", close, (USER, REASON), flags=("erase", DRY_RUN)),
    _moderator("confirm", "确认", confirm, (Param("code", ParamKind.WORD),)),
    _moderator("lift", "解除", lift, (CASE, REASON), flags=(DRY_RUN,)),
    _moderator("case", "案件", show_case, (CASE,)),
    _moderator("history", "记录", history, (USER,)),
    _moderator("cases", "案件列表", list_cases, (Param("filter", ParamKind.CHOICE, required=False, choices=("active", "生效")),)),
]
