"""Evidence retention: copied message content goes after its time; the records stay."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import audit
from bot.store.db import Database


@dataclass(frozen=True)
class Purged:
    cases: list[int]
    reports: list[int]


async def purge_evidence(db: Database, *, cutoff: int, now: int, actor: str, days: int) -> Purged:
    """Null the evidence of cases and reports created before ``cutoff``, with one audit record."""
    async with db.transaction() as conn:
        cases = [r[0] for r in await (await conn.execute(
            "SELECT id FROM cases WHERE evidence IS NOT NULL AND created_at < ? ORDER BY id", (cutoff,))).fetchall()]
        reports = [r[0] for r in await (await conn.execute(
            "SELECT id FROM reports WHERE snapshot IS NOT NULL AND created_at < ? ORDER BY id", (cutoff,))).fetchall()]
        if cases or reports:
            await conn.execute("UPDATE cases SET evidence = NULL, evidence_purged_at = ?"
                               " WHERE evidence IS NOT NULL AND created_at < ?", (now, cutoff))
            await conn.execute("UPDATE reports SET snapshot = NULL, snapshot_purged_at = ?"
                               " WHERE snapshot IS NOT NULL AND created_at < ?", (now, cutoff))
            await audit.append(conn, now_ms=now, actor=actor, action="evidence.purge", target="records",
                               details={"cases": cases, "reports": reports, "older_than_days": days})
    return Purged(cases, reports)
