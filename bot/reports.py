"""Reports (article 5) and appeals (article 8).

Anyone reports a message with ``!report`` (as a reply, or with its matrix.to link) or with their
client's report button (taken in through the admin API). Reports of one event merge, keeping
every reporter. Moderators see each report with its evidence in the management room and resolve
it by dismissing it or with a sanction, which links the case; reporters learn the outcome, but
not who decided. A sanctioned account appeals its case once at a time; granting ends the case.
"""

from __future__ import annotations

import logging
import re
import statistics
from typing import Any, Callable

from bot.config import Settings
from bot.i18n import Refusal, Translator
from bot.matrix.admin import AdminApi
from bot.matrix.client import Matrix, MatrixError
from bot.matrix.management import ManagementRoom
from bot.matrix.onboarding import Onboarding
from bot.sanctions import Sanctions
from bot.store import AlreadyOpen, Appeal, Case, Report, Store
from bot.store.retention import purge_evidence

log = logging.getLogger(__name__)

ADMIN_CURSOR_KEY = "admin_event_reports_offset"
DAY_MS = 24 * 3600 * 1000
RETENTION_EVERY_S = 6 * 3600.0  # how often old evidence is purged
# https://matrix.to/#/!room:server/$event?via=… (also with an alias instead of the room ID)
MATRIX_TO_EVENT = re.compile(r"^https://matrix\.to/#/([!#][^/?\s]+)/(\$[^?\s]+)")
EVIDENCE_FIELDS = ("event_id", "room_id", "sender", "type", "content", "origin_server_ts")


def snapshot_of(event: dict[str, Any], room_id: str) -> dict[str, Any]:
    snapshot = {key: event.get(key) for key in EVIDENCE_FIELDS}
    snapshot["room_id"] = snapshot["room_id"] or room_id
    return snapshot


class Reports:
    def __init__(
        self,
        store: Store,
        matrix: Matrix,
        sanctions: Sanctions,
        onboarding: Onboarding,
        admin: AdminApi | None,
        management: ManagementRoom,
        t: Translator,
        settings: Settings,
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._sanctions = sanctions
        self._onboarding = onboarding
        self._admin = admin
        self._t = t
        self._clock = clock
        self._poll_seconds = settings.records.report_poll_seconds
        self._evidence_days = settings.records.evidence_days
        self._bot_user_id = settings.homeserver.user_id
        self._management = management

    # -- reports -------------------------------------------------------------------------------

    async def report(self, *, reporter: str, room_id: str, event_id: str, reason: str, source: str = "command",
                     event: dict[str, Any] | None = None) -> Report:
        if event is None:
            try:
                room_id = await self._matrix.resolve(room_id)
                event = await self._matrix.get_event(room_id, event_id)
            except MatrixError:
                raise Refusal("report.cannot_see") from None
        snapshot = snapshot_of(event, room_id)
        # The report and its post to the management room (a journaled effect) commit together.
        async with self._store.unit():
            report, new = await self._store.reports.add(
                event_id=event_id, room_id=room_id, sender=str(snapshot.get("sender") or "?"), snapshot=snapshot,
                reporter=reporter, reason=reason, now=self._clock(), source=source,
            )
            if new:
                await self._management.post_record("report", report.id, f"report-{report.id}")
            else:
                await self._management.post(
                    self._t("report.merged", report=report.id, reporter=reporter, reason=reason,
                            count=len(report.reporters)),
                    f"report-{report.id}-{reporter}",
                )
        return report

    def describe(self, report: Report) -> str:
        return describe_report(self._t, report)

    async def get_open(self, report_id: int) -> Report:
        report = await self._store.reports.get(report_id)
        if report is None:
            raise Refusal("report.no_such", report=report_id)
        if report.resolved_at is not None:
            raise Refusal("report.already_resolved", report=report_id)
        return report

    async def dismiss(self, report_id: int, moderator: str, reason: str) -> None:
        await self.get_open(report_id)
        await self._close(report_id, moderator, "dismissed", reason, None)

    async def link(self, report_id: int, moderator: str, case: Case) -> None:
        await self._close(report_id, moderator, "actioned", case.reason, case.id)

    async def _close(self, report_id: int, moderator: str, resolution: str, reason: str, case_id: int | None) -> None:
        if not await self._store.reports.resolve(report_id, by=moderator, resolution=resolution, reason=reason,
                                                 now=self._clock(), case_id=case_id):
            raise Refusal("report.already_resolved", report=report_id)
        report = await self._store.reports.get(report_id)
        assert report is not None
        # Reporters learn the outcome, never who decided it.
        text = self._t(f"report.outcome_{resolution}", report=report_id, reason=reason)
        for reporter in report.reporters:
            if reporter.source == "command":
                await self._onboarding.tell(reporter.reporter, text, f"report-outcome-{report_id}")

    @property
    def poll_seconds(self) -> float | None:
        """How often to take in the homeserver's reports; None without an admin token."""
        return None if self._admin is None else self._poll_seconds

    async def take_homeserver_reports(self) -> None:
        """Take in reports made with clients' report buttons (Synapse's admin API). Run every
        ``records.report_poll_seconds`` under the supervisor (bot.supervise)."""
        assert self._admin is not None
        offset = int(await self._store.get(ADMIN_CURSOR_KEY) or 0)
        while True:
            page = await self._admin.event_reports(offset)
            if not page:
                return
            for item in page:
                details = await self._admin.event_report(int(item["id"]))
                event = details.get("event_json") or {"event_id": item.get("event_id"), "sender": item.get("sender")}
                try:
                    await self.report(
                        reporter=str(item.get("user_id")), room_id=str(item.get("room_id")),
                        event_id=str(item.get("event_id")), reason=str(item.get("reason") or "-"),
                        source="homeserver", event=event,
                    )
                except Exception:
                    log.exception("taking in homeserver report %s failed", item.get("id"))
                offset += 1
                await self._store.put(ADMIN_CURSOR_KEY, str(offset))

    async def stats(self) -> str:
        now = self._clock()
        times = await self._store.reports.resolution_times(now - 30 * DAY_MS)
        open_count = len(await self._store.reports.open())
        if times:
            median = self._t.span(int(statistics.median(times)))
            p90 = self._t.span(times[min(len(times) - 1, int(len(times) * 0.9))])
        else:
            median = p90 = "-"
        counts = await self._store.db.fetchall(
            "SELECT kind, COUNT(*) FROM cases WHERE created_at >= ? GROUP BY kind ORDER BY kind", (now - 30 * DAY_MS,)
        )
        in_force = sum(1 for c in await self._store.cases.unended() if c.in_force(now))
        by_kind = ", ".join(f"{self._t(f'kind.{k}')}: {n}" for k, n in counts) or "-"
        return self._t("stats.text", open=open_count, resolved=len(times), median=median, p90=p90,
                       by_kind=by_kind, in_force=in_force)

    # -- appeals -------------------------------------------------------------------------------

    async def appeal(self, appellant: str, case_id: int, text: str) -> Appeal:
        case = await self._store.cases.get(case_id)
        # The same answer whether the case does not exist or is someone else's: nothing leaks.
        if case is None or case.target != appellant:
            raise Refusal("appeal.not_yours", case=case_id)
        if case.kind != "warn" and not case.in_force(self._clock()):
            raise Refusal("appeal.not_in_force", case=case_id)
        try:
            appeal = await self._store.appeals.add(case_id=case_id, appellant=appellant, text=text, now=self._clock())
        except AlreadyOpen:
            raise Refusal("appeal.already_open", case=case_id) from None
        await self._management.post(
            self._t("appeal.announce", appeal=appeal.id, case=case_id, user=appellant, text=text[:500]),
            f"appeal-{appeal.id}",
        )
        return appeal

    async def decide(self, appeal_id: int, moderator: str, granted: bool, reason: str) -> Appeal:
        appeal = await self._store.appeals.get(appeal_id)
        if appeal is None:
            raise Refusal("appeal.no_such", appeal=appeal_id)
        if appeal.decided_at is not None:
            raise Refusal("appeal.already_decided", appeal=appeal_id)
        case = await self._store.cases.get(appeal.case_id)
        assert case is not None
        if granted and case.in_force(self._clock()):
            await self._sanctions.lift(case.id, moderator, reason)
        decision = "granted" if granted else "denied"
        if not await self._store.appeals.decide(appeal_id, by=moderator, decision=decision, reason=reason,
                                                now=self._clock()):
            raise Refusal("appeal.already_decided", appeal=appeal_id)
        await self._onboarding.tell(
            appeal.appellant,
            self._t(f"appeal.outcome_{decision}", appeal=appeal_id, case=case.id, reason=reason), f"appeal-{appeal_id}",
        )
        decided = await self._store.appeals.get(appeal_id)
        assert decided is not None
        return decided

    # -- retention -----------------------------------------------------------------------------

    async def purge_evidence(self) -> int:
        """Remove copied message content older than ``records.evidence_days``; record the purge."""
        now = self._clock()
        purged = await purge_evidence(self._store.db, cutoff=now - self._evidence_days * DAY_MS, now=now,
                                      actor=self._bot_user_id, days=self._evidence_days)
        if purged.total:
            log.info("purged evidence of %d case(s), %d report(s) and %d closure request(s)",
                     len(purged.cases), len(purged.reports), len(purged.closure_requests))
        return purged.total


def describe_report(t: Translator, report: Report) -> str:
    """A report as moderators read it (in !reports and the management room)."""
    body = (report.snapshot or {}).get("content", {}).get("body") if report.snapshot else None
    lines = [
        t("report.line", report=report.id, sender=report.sender, room=report.room_id,
          time=t.time(report.created_at)),
        t("report.evidence", body=str(body)[:500] if body else
          t("report.purged" if report.snapshot_purged_at is not None else "report.no_text")),
    ]
    lines += [t("report.by", reporter=r.reporter, reason=r.reason) for r in report.reporters]
    if report.resolved_at is not None:
        lines.append(t("report.resolved", how=t(f"resolution.{report.resolution}"), time=t.time(report.resolved_at),
                       reason=report.resolution_reason or ""))
    else:
        lines.append(t("report.how_to_act", report=report.id, sender=report.sender))
    return "\n".join(lines)
