"""Evidence retention: copied message content goes after its time; the records stay.

Every column that holds a copy of someone's message is listed in ``EVIDENCE_COLUMNS``; the purge
empties them all in one transaction with one audit record. What is deliberately not here: the
audit log (it keeps only a sha256 of each piece of evidence), and text people wrote to the
moderators themselves as part of a record (a report's reason, an appeal, a moderator's reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.store import audit
from bot.store.db import Database

# table -> (key column, content column, "purged at" column or None, created-at column)
EVIDENCE_COLUMNS: dict[str, tuple[str, str, str | None, str]] = {
    "cases": ("id", "evidence", "evidence_purged_at", "created_at"),
    "reports": ("id", "snapshot", "snapshot_purged_at", "created_at"),
    # A proposed closure carries the evidence it would give the case; kept whether or not it was
    # confirmed, so it must go with the rest.
    "closure_requests": ("code", "evidence", None, "created_at"),
}


@dataclass(frozen=True)
class Purged:
    cases: list[int]
    reports: list[int]
    closure_requests: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.cases) + len(self.reports) + len(self.closure_requests)


async def purge_evidence(db: Database, *, cutoff: int, now: int, actor: str, days: int) -> Purged:
    """Null every copy of message content created before ``cutoff``, with one audit record."""
    found: dict[str, list] = {}
    async with db.transaction() as conn:
        for table, (key, content, purged_at, created_at) in EVIDENCE_COLUMNS.items():
            where = f" WHERE {content} IS NOT NULL AND {created_at} < ?"
            async with conn.execute(f"SELECT {key} FROM {table}{where} ORDER BY {key}", (cutoff,)) as cur:
                found[table] = [r[0] for r in await cur.fetchall()]
            if found[table]:
                stamp = "" if purged_at is None else f", {purged_at} = ?"
                await conn.execute(f"UPDATE {table} SET {content} = NULL{stamp}{where}",
                                   ((now,) if purged_at else ()) + (cutoff,))
        if any(found.values()):
            await audit.append(conn, now_ms=now, actor=actor, action="evidence.purge", target="records",
                               details={**found, "older_than_days": days})
    return Purged(found["cases"], found["reports"], found["closure_requests"])
