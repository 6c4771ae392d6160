"""Graduated sanctions (article 8): cases, their effects, expiry, and the escalation ladder.

Every measure is a case committed in one transaction with the effects it implies (the admin
call, the room-mode mutes or bans, the notice to the account, the post to the management room),
as rows of the effects journal; memory follows at once (so the gate enforces it), and the one
executor (``bot.effects``) carries the effects out. This service never calls Matrix. Ending a
case is a record of its own, with its effects. Timed measures end by themselves, across restarts
too: overdue ones end at start-up, and their unmutes and announcements wait in the journal until
the executor runs (after the rooms are known).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from bot.config import Settings
from bot.i18n import Refusal, Translator
from bot.matrix.admin import AdminApi
from bot.matrix.client import Matrix
from bot.matrix.management import ManagementRoom
from bot.matrix.onboarding import Onboarding
from bot.matrix.roommode import RoomMode
from bot.policy import PolicyState
from bot.policy.sanctions import CaseFact, LadderRule, Measure, Rate, SanctionKind, ladder_step, parse_duration
from bot.store import Case, ClosureRequest, NewCase, Store

log = logging.getLogger(__name__)

LADDER_ACTOR = "ladder"
CLOSE_CONFIRM_MS = 2 * 60_000
# Wake at least this often: a clock that jumps (suspend, NTP) must not postpone an expiry long.
MAX_SLEEP_S = 60.0


@dataclass(frozen=True)
class Request:
    """A measure a moderator (or the ladder) asks for."""

    target: str
    kind: SanctionKind
    actor: str
    reason: str
    duration_ms: int | None = None  # None: permanent (or not timed, for warnings and closures)
    rate: Rate | None = None
    evidence: dict[str, Any] | None = None
    caused_by: tuple[int, ...] = ()
    erase: bool = False
    # A closure that also puts the account's verified subject on the identity blacklist (issue 9).
    blacklist: bool = False


def ladder_rules(settings: Settings) -> list[LadderRule]:
    return [
        LadderRule(
            after=step.after,
            of=SanctionKind(step.of),
            within_ms=parse_duration(step.within) or 0,
            then=SanctionKind(step.then),
            duration_ms=None if step.duration is None else parse_duration(step.duration),
        )
        for step in settings.sanctions.ladder
    ]


class Sanctions:
    def __init__(
        self,
        store: Store,
        state: PolicyState,
        matrix: Matrix,
        room_mode: RoomMode,
        onboarding: Onboarding,
        admin: AdminApi | None,
        management: ManagementRoom,
        t: Translator,
        settings: Settings,
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._management = management
        self._state = state
        self._matrix = matrix
        self._room_mode = room_mode
        self._onboarding = onboarding
        self._admin = admin
        self._t = t
        self._clock = clock
        self._rules = ladder_rules(settings)
        self._proposal_ms = parse_duration(settings.sanctions.proposal_valid_for) or CLOSE_CONFIRM_MS
        self._wake = asyncio.Event()

    # -- start-up and expiry -------------------------------------------------------------------

    async def load(self) -> None:
        """Put the measures in force into memory; end the ones that expired while the bot was down."""
        now = self._clock()
        for case in await self._store.cases.unended():
            if case.expires_at is not None and case.expires_at <= now:
                await self._end(case, how="expired", actor=self._state.bot_user_id, reason="expired")
            else:
                self._state.add_measure(case.target, _measure(case))

    @property
    def wake(self) -> asyncio.Event:
        """Set when a measure with an end is added: the expiry pass runs again at once."""
        return self._wake

    async def expire_due(self) -> float:
        """End every measure that is due; return the seconds until the next one (at most
        MAX_SLEEP_S). Run under the supervisor (bot.supervise), which retries a pass that raises;
        one measure that cannot be ended does not hold back the others."""
        now = self._clock()
        due, upcoming = [], []
        for user, active in self._state.sanctions.items():
            for measure in active.measures.values():
                if measure.expires_at is None:
                    continue
                (due if measure.expires_at <= now else upcoming).append((user, measure))
        error: Exception | None = None
        for user, measure in due:
            try:
                case = await self._store.cases.get(measure.case_id)
                if case is None or case.end is not None:
                    # Memory ran ahead of the store (a case that was never stored, or one already
                    # ended): nothing is left to end, and kept, the measure would come due again
                    # on every pass and the loop would spin.
                    log.warning("dropping measure of case %d for %s from memory: the case is %s",
                                measure.case_id, user, "missing" if case is None else "already ended")
                    self._state.end_measure(user, measure.case_id)
                    continue
                await self._end(case, how="expired", actor=self._state.bot_user_id, reason="expired")
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        if due:
            return 0.0
        wait = MAX_SLEEP_S
        if upcoming:
            wait = min(wait, max(0.0, (min(m.expires_at for _, m in upcoming) - now) / 1000))  # type: ignore[type-var]
        return wait

    # -- measures ------------------------------------------------------------------------------

    def check_target(self, target: str) -> None:
        if target == self._state.bot_user_id:
            raise Refusal("sanction.not_the_bot")
        if target in self._state.moderators:
            raise Refusal("sanction.not_a_moderator", user=target)

    async def impose(self, request: Request) -> Case:
        """Open a case with its effects, in one transaction (the caller's, if one is open); may
        set off a ladder step."""
        self.check_target(request.target)
        now = self._clock()
        expires = None if request.duration_ms is None or request.kind is SanctionKind.WARN else now + request.duration_ms
        async with self._store.unit(now_ms=now):
            case = await self._store.cases.open(
                NewCase(
                    target=request.target, kind=request.kind.value, actor=request.actor, reason=request.reason,
                    created_at=now, expires_at=expires, evidence=request.evidence,
                    rate=None if request.rate is None else str(request.rate),
                    options={**({"erase": True} if request.erase else {}),
                             **({"blacklist": True} if request.blacklist else {})},
                    caused_by=request.caused_by,
                )
            )
            if request.kind is not SanctionKind.WARN:
                # Memory now, since room mode decides from it inside this unit; undone on rollback.
                self._state.add_measure(case.target, _measure(case))
                self._store.db.on_rollback(lambda: self._state.end_measure(case.target, case.id))
                self._store.db.after_commit(self._wake.set)
            await self._carry_out(case)
            await self._announce(case)
            await self._climb_ladder(case)
        return case

    async def lift(self, case_id: int, actor: str, reason: str) -> Case:
        case = await self._store.cases.get(case_id)
        if case is None:
            raise Refusal("sanction.no_such_case", case=case_id)
        if case.kind == "warn":
            raise Refusal("sanction.warning_not_liftable", case=case_id)
        if case.end is not None or not case.in_force(self._clock()):
            raise Refusal("sanction.already_ended", case=case_id)
        await self._end(case, how="lifted", actor=actor, reason=reason)
        ended = await self._store.cases.get(case_id)
        assert ended is not None
        return ended

    async def request_closure(
        self, request: Request, valid_ms: int = CLOSE_CONFIRM_MS, report_id: int | None = None
    ) -> ClosureRequest:
        self.check_target(request.target)
        now = self._clock()
        closure = ClosureRequest(
            code=secrets.token_hex(3).upper(), target=request.target, requested_by=request.actor,
            reason=request.reason, erase=request.erase, evidence=request.evidence, caused_by=request.caused_by,
            created_at=now, expires_at=now + valid_ms, used_at=None, report_id=report_id, blacklist=request.blacklist,
        )
        await self._store.cases.add_closure_request(closure)
        return closure

    async def confirm_closure(self, code: str, actor: str) -> tuple[Case, ClosureRequest]:
        async with self._store.unit():  # the code is used up only together with the closure
            closure = await self._store.cases.take_closure_request(code.strip().upper(), self._clock())
            if closure is None:
                raise Refusal("sanction.no_such_code", code=code)
            case = await self.impose(
                Request(
                    target=closure.target, kind=SanctionKind.CLOSE, actor=actor, reason=closure.reason,
                    evidence=closure.evidence, caused_by=closure.caused_by, erase=closure.erase,
                    blacklist=closure.blacklist,
                )
            )
        return case, closure

    # -- effects (journaled; the executor carries them out) ---------------------------------------

    async def _carry_out(self, case: Case) -> None:
        local = self._state.is_local(case.target)
        cause = f"case-{case.id}"
        if case.kind == "suspend" and local and self._admin is not None:
            await self._effect("admin", case.target, {"op": "suspend", "case": case.id}, f"{cause}/suspend")
        if case.kind == "close":
            # Tell the account first: after deactivation it can no longer read anything. Effects of
            # one account are carried out in the order they were recorded.
            await self._tell(case.target, self._target_notice(case), f"{cause}/notice")
            if local and self._admin is not None:
                await self._effect("admin", case.target,
                                   {"op": "deactivate", "erase": bool(case.options.get("erase")), "case": case.id},
                                   f"{cause}/deactivate")
        await self._room_mode.apply(case.target, cause)

    async def _end(self, case: Case, *, how: str, actor: str, reason: str) -> None:
        cause = f"end-{case.id}"
        async with self._store.unit():
            if not await self._store.cases.end(case.id, ended_at=self._clock(), actor=actor, how=how, reason=reason):
                return
            measure = self._state.end_measure(case.target, case.id)
            if measure is not None:
                self._store.db.on_rollback(lambda: self._state.add_measure(case.target, measure))
            active = self._state.sanctions.get(case.target)
            still_suspended = active is not None and any(
                m.kind is SanctionKind.SUSPEND for m in active.measures.values())
            local = self._state.is_local(case.target)
            if case.kind == "suspend" and not still_suspended and self._admin is not None and local:
                await self._effect("admin", case.target, {"op": "unsuspend", "case": case.id}, f"{cause}/unsuspend")
            if case.kind == "close":
                await self._room_mode.unban_everywhere(case.target, cause)
                await self._lift_blacklist(case, actor, reason)
            await self._room_mode.apply(case.target, cause)
            key = "sanction.ended_expired" if how == "expired" else "sanction.ended_lifted"
            await self._tell(case.target, self._t(key, case=case.id, kind=self._t(f"kind.{case.kind}"), reason=reason),
                             f"{cause}/notice")
            await self._management.post(
                self._t("sanction.announce_end", case=case.id, user=case.target, kind=self._t(f"kind.{case.kind}"),
                        how=self._t(f"how.{how}"), actor=actor, reason=reason),
                f"end-{case.id}",
            )

    # --- review 9 #12: a closure's identity blacklist entries end with it --------------------------

    async def _lift_blacklist(self, case: Case, actor: str, reason: str) -> None:
        """In the ending's unit: the entries `!close --blacklist` made are lifted (audited), so a
        person whose closure was lifted (an upheld appeal) can verify again; the moderators are told."""
        accounts = await self._store.identity.lift_blacklist(case_id=case.id, actor=actor, reason=reason,
                                                             now_ms=self._clock())
        if accounts:
            await self._management.post(self._t("sanction.blacklist_lifted", case=case.id, users=", ".join(accounts)),
                                        f"end-{case.id}/blacklist")

    # --- end review 9 #12 ----------------------------------------------------------------------------

    async def _effect(self, kind: str, target: str, payload: dict[str, Any], key: str) -> None:
        await self._store.effects.add(kind, target, payload, key, now_ms=self._clock())

    async def _climb_ladder(self, case: Case) -> None:
        withdrawn = await self._store.cases.withdrawn(case.target)
        history = [
            CaseFact(c.id, SanctionKind(c.kind), c.created_at, c.caused_by, withdrawn=c.id in withdrawn)
            for c in await self._store.cases.history(case.target)
        ]
        step = ladder_step(self._rules, history, SanctionKind(case.kind), self._clock())
        if step is None:
            return
        causes = ", ".join(f"#{c}" for c in step.caused_by)
        reason = self._t("ladder.reason", count=len(step.caused_by), kind=self._t(f"kind.{step.rule.of}"), cases=causes)
        request = Request(
            target=case.target, kind=step.rule.then, actor=LADDER_ACTOR, reason=reason,
            duration_ms=step.rule.duration_ms, caused_by=step.caused_by,
        )
        if step.rule.then is SanctionKind.CLOSE:
            closure = await self.request_closure(request, self._proposal_ms)
            await self._management.post(
                self._t("ladder.propose_close", user=case.target, cases=causes, code=closure.code,
                        until=self._t.time(closure.expires_at)),
                f"propose-{closure.code}",
            )
            return
        await self.impose(request)

    # -- telling people ------------------------------------------------------------------------

    def _target_notice(self, case: Case) -> str:
        until = self._t.time(case.expires_at) if case.expires_at else self._t("sanction.permanent")
        lines = [self._t(f"notice.{case.kind}", case=case.id, until=until, rate=case.rate or "")]
        lines.append(self._t("notice.reason", reason=case.reason))
        lines.append(self._t("notice.appeal", case=case.id))
        return "\n".join(lines)

    async def _announce(self, case: Case) -> None:
        if case.kind != "close":  # a closure told the account before the deactivation
            await self._tell(case.target, self._target_notice(case), f"case-{case.id}/notice")
        await self._management.post_record("case", case.id, f"case-{case.id}")

    async def _tell(self, user_id: str, text: str, key: str) -> None:
        """A notice in the account's direct chat, journaled with the record it is about."""
        await self._effect("dm", user_id, {"text": text}, key)


def _measure(case: Case) -> Measure:
    return Measure(
        case_id=case.id,
        kind=SanctionKind(case.kind),
        expires_at=case.expires_at,
        rate=None if case.rate is None else Rate.parse(case.rate),
    )


def describe_case(t: Translator, case: Case, now: int | None = None) -> str:
    """One case as moderators read it (in !case, !history and the management room)."""
    until = t.time(case.expires_at) if case.expires_at else t("sanction.permanent")
    parts = [
        t("case.line", case=case.id, kind=t(f"kind.{case.kind}"), user=case.target, actor=case.actor,
          time=t.time(case.created_at)),
        t("case.reason", reason=case.reason),
    ]
    if case.kind != "warn":
        parts.append(t("case.until", until=until))
    if case.rate:
        parts.append(t("case.rate", rate=case.rate))
    if case.caused_by:
        parts.append(t("case.caused_by", cases=", ".join(f"#{c}" for c in case.caused_by)))
    if case.evidence:
        body = (case.evidence.get("content") or {}).get("body")
        parts.append(t("case.evidence", sender=case.evidence.get("sender", "?"), body=str(body)[:300] if body else "-"))
    if case.end is not None:
        parts.append(t("case.ended", how=t(f"how.{case.end.how}"), time=t.time(case.end.ended_at), actor=case.end.actor,
                       reason=case.end.reason))
    elif now is not None and case.in_force(now):
        parts.append(t("case.in_force"))
    return "\n".join(parts)
