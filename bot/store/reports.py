"""Reports of messages (article 5) and appeals against cases. Each is written once when it arrives
and once when it is decided, both with an audit record."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from bot.store import audit
from bot.store.db import Database

_REPORT_COLUMNS = (
    "id, event_id, room_id, sender, snapshot, snapshot_purged_at, created_at, resolved_at, resolved_by,"
    " resolution, resolution_reason, case_id"
)


@dataclass(frozen=True)
class Reporter:
    reporter: str
    reason: str
    reported_at: int
    source: str


@dataclass(frozen=True)
class Report:
    id: int
    event_id: str
    room_id: str
    sender: str
    snapshot: dict[str, Any] | None
    snapshot_purged_at: int | None
    created_at: int
    resolved_at: int | None
    resolved_by: str | None
    resolution: str | None
    resolution_reason: str | None
    case_id: int | None
    reporters: tuple[Reporter, ...] = ()


@dataclass(frozen=True)
class Appeal:
    id: int
    case_id: int
    appellant: str
    text: str
    created_at: int
    decided_at: int | None
    decided_by: str | None
    decision: str | None
    decision_reason: str | None


class AlreadyOpen(Exception):
    """An appeal is already open for this case."""


class ReportRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, *, event_id: str, room_id: str, sender: str, snapshot: dict[str, Any] | None,
        reporter: str, reason: str, now: int, source: str,
    ) -> tuple[Report, bool]:
        """Record a report; reports of the same event merge. Returns (report, is_new_report)."""
        async with self._db.transaction() as conn:
            row = await (await conn.execute("SELECT id FROM reports WHERE event_id = ?", (event_id,))).fetchone()
            new = row is None
            if new:
                cur = await conn.execute(
                    "INSERT INTO reports (event_id, room_id, sender, snapshot, created_at) VALUES (?, ?, ?, ?, ?)",
                    (event_id, room_id, sender, None if snapshot is None else audit.canonical_json(snapshot), now),
                )
                report_id = cur.lastrowid
            else:
                report_id = row[0]
            cur = await conn.execute(
                "INSERT OR IGNORE INTO report_reporters (report_id, reporter, reason, reported_at, source)"
                " VALUES (?, ?, ?, ?, ?)",
                (report_id, reporter, reason, now, source),
            )
            if cur.rowcount:
                await audit.append(
                    conn, now_ms=now, actor=reporter, action="report.add", target=sender,
                    details={"report": report_id, "event_id": event_id, "room_id": room_id, "reason": reason,
                             "source": source, "evidence_sha256": audit.evidence_hash(snapshot)},
                )
        report = await self.get(report_id)
        assert report is not None
        return report, new

    async def get(self, report_id: int) -> Report | None:
        row = await self._db.fetchone(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id = ?", (report_id,))
        if row is None:
            return None
        reporters = await self._db.fetchall(
            "SELECT reporter, reason, reported_at, source FROM report_reporters WHERE report_id = ? ORDER BY reported_at",
            (report_id,),
        )
        return _report(row, tuple(Reporter(*r) for r in reporters))

    async def open(self) -> list[Report]:
        rows = await self._db.fetchall(f"SELECT id FROM reports WHERE resolved_at IS NULL ORDER BY created_at, id")
        return [r for r in [await self.get(row[0]) for row in rows] if r is not None]

    async def resolve(
        self, report_id: int, *, by: str, resolution: str, reason: str, now: int, case_id: int | None = None
    ) -> bool:
        """Decide a report once; False if it was already decided (or does not exist)."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE reports SET resolved_at = ?, resolved_by = ?, resolution = ?, resolution_reason = ?, case_id = ?"
                " WHERE id = ? AND resolved_at IS NULL",
                (now, by, resolution, reason, case_id, report_id),
            )
            if cur.rowcount == 0:
                return False
            await audit.append(
                conn, now_ms=now, actor=by, action=f"report.{resolution}", target=f"report:{report_id}",
                details={"report": report_id, "reason": reason, "case": case_id},
            )
        return True

    async def resolution_times(self, since: int) -> list[int]:
        rows = await self._db.fetchall(
            "SELECT resolved_at - created_at FROM reports WHERE resolved_at IS NOT NULL AND resolved_at >= ?", (since,)
        )
        return sorted(r[0] for r in rows)


class AppealRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, *, case_id: int, appellant: str, text: str, now: int) -> Appeal:
        try:
            async with self._db.transaction() as conn:
                cur = await conn.execute(
                    "INSERT INTO appeals (case_id, appellant, text, created_at) VALUES (?, ?, ?, ?)",
                    (case_id, appellant, text, now),
                )
                appeal_id = cur.lastrowid
                await audit.append(conn, now_ms=now, actor=appellant, action="appeal.add", target=appellant,
                                   details={"appeal": appeal_id, "case": case_id})
        except sqlite3.IntegrityError:
            raise AlreadyOpen(case_id) from None
        appeal = await self.get(appeal_id)
        assert appeal is not None
        return appeal

    async def get(self, appeal_id: int) -> Appeal | None:
        row = await self._db.fetchone("SELECT * FROM appeals WHERE id = ?", (appeal_id,))
        return None if row is None else Appeal(*row)

    async def open(self) -> list[Appeal]:
        return [Appeal(*r) for r in await self._db.fetchall("SELECT * FROM appeals WHERE decided_at IS NULL ORDER BY id")]

    async def decide(self, appeal_id: int, *, by: str, decision: str, reason: str, now: int) -> bool:
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE appeals SET decided_at = ?, decided_by = ?, decision = ?, decision_reason = ?"
                " WHERE id = ? AND decided_at IS NULL",
                (now, by, decision, reason, appeal_id),
            )
            if cur.rowcount == 0:
                return False
            await audit.append(conn, now_ms=now, actor=by, action=f"appeal.{decision}", target=f"appeal:{appeal_id}",
                               details={"appeal": appeal_id, "reason": reason})
        return True


def _report(row: Any, reporters: tuple[Reporter, ...]) -> Report:
    values = list(row)
    values[4] = None if values[4] is None else json.loads(values[4])
    return Report(*values, reporters=reporters)
