"""The moderators' commands (article 8): !warn, !restrict, !suspend, !close, !confirm, !lift,
!case, !history, !cases. Moderators only, and only in the management room or a moderator's
direct chat with the bot; the dispatcher checks both before a handler runs.

Each command that changes something has a preview for `--dry-run`: it makes the same checks as
the service (so a dry run is refused where the real command would be) and lists the records and
effects the command would make, reading only."""

from __future__ import annotations

from typing import Any

from bot.commands.context import Context, would
from bot.commands.identity import history_entries, names_a_subject, service
from bot.commands.registry import Invocation, Param, ParamKind, moderator_command
from bot.i18n import Refusal
from bot.policy.sanctions import SanctionKind, format_duration
from bot.reports import snapshot_of
from bot.sanctions import CLOSE_CONFIRM_MS, Request, describe_case
from bot.store import Case, ClosureRequest

USER = Param("user", ParamKind.USER_ID)
DURATION = Param("duration", ParamKind.DURATION)
REASON = Param("reason", ParamKind.TEXT)
CASE = Param("case", ParamKind.CASE)
RATE = Param("rate", ParamKind.RATE)
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
    if request.blacklist:
        parts.append(t("sanction.blacklist"))
    if request.evidence is not None:
        parts.append(t("sanction.with_evidence"))
    return " ".join(parts)


def _request(ctx: Context, invocation: Invocation, evidence: dict[str, Any] | None) -> Request:
    args = invocation.args
    return Request(
        target=args["user"], kind=SANCTION_KINDS[invocation.command.name], actor=ctx.sender, reason=args["reason"],
        duration_ms=args.get("duration"), rate=args.get("rate"), evidence=evidence, erase="erase" in invocation.flags,
        blacklist="blacklist" in invocation.flags,
    )


async def impose_from(
    ctx: Context, invocation: Invocation, *, evidence: dict[str, Any] | None, report_id: int | None = None
) -> str:
    """Carry out a parsed sanction command; also the second half of `!resolve <report> <command…>`,
    which passes the report's copy of the message as evidence and links the case to the report."""
    sanctions = ctx.services.sanctions
    request = _request(ctx, invocation, evidence)
    kind = request.kind
    sanctions.check_target(request.target)
    if kind is SanctionKind.CLOSE:
        closure = await sanctions.request_closure(request, report_id=report_id)
        answer = ctx.t("sanction.close_confirm", summary=_summary(ctx, request), code=closure.code,
                       reason=request.reason)
        if request.blacklist:
            # Said now, so the moderator knows before confirming whether there is anyone to blacklist.
            subject = await names_a_subject(ctx, request.target)
            answer += "\n" + ctx.t("sanction.blacklist_pending" if subject else "sanction.blacklist_nothing",
                                   user=request.target)
        return answer
    case = await sanctions.impose(request)
    if report_id is not None:
        await ctx.services.reports.link(report_id, ctx.sender, case)
    return ctx.t("sanction.imposed", case=case.id, summary=_summary(ctx, request))


async def preview_from(
    ctx: Context, invocation: Invocation, *, evidence: dict[str, Any] | None, report_id: int | None = None
) -> str:
    """What ``impose_from`` would do, after the same checks; nothing is recorded or sent."""
    request = _request(ctx, invocation, evidence)
    ctx.services.sanctions.check_target(request.target)
    blacklist = await _blacklist_step(ctx, request.target) if request.blacklist else None
    return would(ctx, *sanction_steps(ctx, request, report_id, blacklist))


async def _blacklist_step(ctx: Context, user: str) -> str:
    """What a confirmed `--blacklist` closure would put on the identity blacklist."""
    return ctx.t("dry.blacklist" if await names_a_subject(ctx, user) else "dry.blacklist_nothing", user=user)


def sanction_steps(ctx: Context, request: Request, report_id: int | None, blacklist: str | None = None) -> list[str]:
    """What imposing ``request`` would record and do, in the order the service does it
    (``blacklist``: a closure's step for the identity blacklist, if it asks for one)."""
    t, user = ctx.t, request.target
    if request.kind is SanctionKind.CLOSE:
        steps = [t("dry.closure_request", summary=_summary(ctx, request), reason=request.reason,
                   minutes=CLOSE_CONFIRM_MS // 60_000)]
        steps += _close_effects(ctx, user, request.erase)
        if blacklist is not None:
            steps.append(blacklist)
        if report_id is not None:
            steps.append(t("dry.report_link_later", report=report_id))
        return steps
    steps = [t("dry.case_open", summary=_summary(ctx, request), reason=request.reason)]
    if request.kind is not SanctionKind.WARN:
        duration = request.duration_ms
        if duration is None:
            until = t("sanction.permanent")
        else:
            until = t("dry.until", time=t.time(ctx.services.clock() + duration))
        steps.append(t(f"dry.effect_{request.kind.value}", user=user, until=until))
        if request.kind is SanctionKind.SUSPEND and ctx.services.state.is_local(user):
            steps.append(t("dry.admin_suspend"))
    steps += [t("dry.notice", user=user), t("dry.announce")]
    if report_id is not None:
        steps.append(t("dry.report_link", report=report_id))
    steps.append(t("dry.ladder"))
    return steps


def _close_effects(ctx: Context, user: str, erase: bool) -> list[str]:
    steps = [ctx.t("dry.close_effects", user=user)]
    if erase:
        steps.append(ctx.t("dry.erase"))
    return steps


async def sanction(ctx: Context) -> str:
    """!warn, !restrict, !suspend and !close: the message replied to, if any, is the evidence."""
    invocation = Invocation(ctx.services.registry.find(ctx.command), ctx.args, ctx.flags)
    return await impose_from(ctx, invocation, evidence=await evidence_of(ctx))


async def preview_sanction(ctx: Context) -> str:
    invocation = Invocation(ctx.services.registry.find(ctx.command), ctx.args, ctx.flags)
    return await preview_from(ctx, invocation, evidence=await evidence_of(ctx))


async def confirm(ctx: Context) -> str:
    case, closure = await ctx.services.sanctions.confirm_closure(ctx.args["code"], ctx.sender)
    if closure.report_id is not None:
        await ctx.services.reports.link(closure.report_id, ctx.sender, case)
    answer = ctx.t("sanction.imposed", case=case.id, summary=f"{ctx.t('kind.close')} {case.target}")
    if closure.blacklist:
        # In the closure's own unit: the case and the blacklist entry commit together or not at all.
        listed = await service(ctx).blacklist(case.target, case_id=case.id, actor=ctx.sender)
        answer += "\n" + ctx.t("sanction.blacklisted" if listed.identities else "sanction.blacklist_none",
                               user=case.target)
        if listed.revoked:  # review 9 #3: the same person's other accounts lost their verification
            answer += "\n" + ctx.t("sanction.blacklist_siblings", users=", ".join(listed.revoked))
    return answer


async def _pending_closure(ctx: Context, code: str) -> ClosureRequest | None:
    """The request ``!confirm code`` would take, read without marking it used (the repository's
    ``take_closure_request`` marks it in the same step, which a dry run must not)."""
    row = await ctx.services.store.db.fetchone(
        "SELECT target, requested_by, reason, erase, report_id, blacklist FROM closure_requests"
        " WHERE code = ? AND used_at IS NULL AND expires_at > ?",
        (code, ctx.services.clock()),
    )
    if row is None:
        return None
    return ClosureRequest(code, row[0], row[1], row[2], bool(row[3]), None, (), 0, 0, None, row[4], bool(row[5]))


async def preview_confirm(ctx: Context) -> str:
    code = ctx.args["code"].strip().upper()
    closure = await _pending_closure(ctx, code)
    if closure is None:
        raise Refusal("sanction.no_such_code", code=ctx.args["code"])
    t, user = ctx.t, closure.target
    steps = [t("dry.code_used", code=code),
             t("dry.case_confirm", user=user, requester=closure.requested_by, reason=closure.reason)]
    steps += _close_effects(ctx, user, closure.erase)
    if closure.blacklist:
        steps.append(await _blacklist_step(ctx, user))
    steps.append(t("dry.announce"))
    if closure.report_id is not None:
        steps.append(t("dry.report_link", report=closure.report_id))
    return would(ctx, *steps)


async def lift(ctx: Context) -> str:
    case = await ctx.services.sanctions.lift(ctx.args["case"], ctx.sender, ctx.args["reason"])
    return ctx.t("sanction.lifted", case=case.id, user=case.target)


async def liftable(ctx: Context, case_id: int) -> Case:
    """The case ``Sanctions.lift`` would end; its refusals, word for word, when there is none."""
    case = await ctx.services.store.cases.get(case_id)
    if case is None:
        raise Refusal("sanction.no_such_case", case=case_id)
    if case.kind == "warn":
        raise Refusal("sanction.warning_not_liftable", case=case_id)
    if case.end is not None or not case.in_force(ctx.services.clock()):
        raise Refusal("sanction.already_ended", case=case_id)
    return case


async def lift_steps(ctx: Context, case: Case, reason: str) -> list[str]:
    """What ending ``case`` early would record and undo."""
    t, user = ctx.t, case.target
    steps = [
        t("dry.case_end", case=case.id, kind=t(f"kind.{case.kind}"), user=user, reason=reason),
        t(f"dry.end_{case.kind}", user=user),
    ]
    # review 9 #12: a closure's identity blacklist entries are lifted with it
    listed = await ctx.services.store.identity.blacklisted_by_case(case.id) if case.kind == "close" else []
    if listed:
        steps.append(t("dry.blacklist_lift", case=case.id, users=", ".join(listed)))
    return [*steps, t("dry.tell", user=user), t("dry.announce_end")]


async def preview_lift(ctx: Context) -> str:
    case = await liftable(ctx, ctx.args["case"])
    return would(ctx, *await lift_steps(ctx, case, ctx.args["reason"]))


async def show_case(ctx: Context) -> str:
    case = await ctx.services.store.cases.get(ctx.args["case"])
    if case is None:
        raise Refusal("sanction.no_such_case", case=ctx.args["case"])
    return describe_case(ctx.t, case, ctx.services.clock())


async def history(ctx: Context) -> str:
    """An account's cases and, among them in time order, its real-name verifications and revocations."""
    user = ctx.args["user"]
    cases = await ctx.services.store.cases.history(user)
    now = ctx.services.clock()
    identity = await history_entries(ctx, user)
    if not identity:
        if not cases:
            return ctx.t("history.none", user=user)
        return "\n\n".join([ctx.t("history.header", user=user, count=len(cases)),
                            *(describe_case(ctx.t, c, now) for c in cases)])
    timeline = sorted([*((c.created_at, describe_case(ctx.t, c, now)) for c in cases), *identity], key=lambda e: e[0])
    return "\n\n".join([ctx.t("history.identity_header", user=user, count=len(timeline)),
                        *(line for _, line in timeline)])


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
    moderator_command("warn", "警告", sanction, (USER, REASON), preview=preview_sanction),
    moderator_command("restrict", "限制", sanction, (USER, DURATION, REASON), options=(RATE,),
                      preview=preview_sanction),
    moderator_command("suspend", "暂停", sanction, (USER, DURATION, REASON), preview=preview_sanction),
    moderator_command("close", "关闭", sanction, (USER, REASON), flags=("erase", "blacklist"),
                      preview=preview_sanction),
    moderator_command("confirm", "确认", confirm, (Param("code", ParamKind.WORD),), preview=preview_confirm),
    moderator_command("lift", "解除", lift, (CASE, REASON), preview=preview_lift),
    moderator_command("case", "案件", show_case, (CASE,)),
    moderator_command("history", "记录", history, (USER,)),
    moderator_command("cases", "案件列表", list_cases, (Param("filter", ParamKind.CHOICE, required=False, choices=("active", "生效")),)),
]
