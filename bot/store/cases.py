"""Cases (sanctions) and their ends: append-only records; what is in force is derived."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.store import audit
from bot.store.db import Database

_CASE_COLUMNS = (
    "c.id, c.target, c.kind, c.actor, c.reason, c.evidence, c.created_at, c.expires_at, c.rate, c.options,"
    " c.caused_by, e.ended_at, e.actor, e.how, e.reason"
)
_FROM = " FROM cases c LEFT JOIN case_ends e ON e.case_id = c.id"


@dataclass(frozen=True)
class CaseEnd:
    ended_at: int
    actor: str
    how: str  # 'lifted' or 'expired'
    reason: str


@dataclass(frozen=True)
class Case:
    id: int
    target: str
    kind: str
    actor: str
    reason: str
    evidence: dict[str, Any] | None
    created_at: int
    expires_at: int | None
    rate: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    caused_by: tuple[int, ...] = ()
    end: CaseEnd | None = None

    def in_force(self, now: int) -> bool:
        return self.kind != "warn" and self.end is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class NewCase:
    target: str
    kind: str
    actor: str
    reason: str
    created_at: int
    expires_at: int | None = None
    evidence: dict[str, Any] | None = None
    rate: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    caused_by: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClosureRequest:
    code: str
    target: str
    requested_by: str
    reason: str
    erase: bool
    evidence: dict[str, Any] | None
    caused_by: tuple[int, ...]
    created_at: int
    expires_at: int
    used_at: int | None
    report_id: int | None = None  # the report this closure resolves, if any
    blacklist: bool = False  # confirmed, the closure also blacklists the account's verified subject


def _case(row: Any) -> Case:
    end = None if row[11] is None else CaseEnd(row[11], row[12], row[13], row[14])
    return Case(
        id=row[0], target=row[1], kind=row[2], actor=row[3], reason=row[4],
        evidence=None if row[5] is None else json.loads(row[5]), created_at=row[6], expires_at=row[7],
        rate=row[8], options=json.loads(row[9]), caused_by=tuple(json.loads(row[10])), end=end,
    )


class CaseRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def open(self, new: NewCase) -> Case:
        """Record a new case and its audit row in one transaction."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO cases (target, kind, actor, reason, evidence, created_at, expires_at, rate, options, caused_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.target, new.kind, new.actor, new.reason,
                    None if new.evidence is None else audit.canonical_json(new.evidence),
                    new.created_at, new.expires_at, new.rate,
                    audit.canonical_json(new.options), json.dumps(list(new.caused_by)),
                ),
            )
            case_id = cur.lastrowid
            await audit.append(
                conn, now_ms=new.created_at, actor=new.actor, action=f"case.{new.kind}", target=new.target,
                details={
                    "case": case_id, "reason": new.reason, "expires_at": new.expires_at, "rate": new.rate,
                    # The hash, not the content: evidence is purged after the retention period,
                    # and the chained audit row must outlive it unchanged.
                    "evidence_sha256": audit.evidence_hash(new.evidence),
                    "options": new.options, "caused_by": list(new.caused_by),
                },
            )
        case = await self.get(case_id)
        assert case is not None
        return case

    async def end(self, case_id: int, *, ended_at: int, actor: str, how: str, reason: str) -> bool:
        """End a case once; False if it had already ended."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO case_ends (case_id, ended_at, actor, how, reason) VALUES (?, ?, ?, ?, ?)",
                (case_id, ended_at, actor, how, reason),
            )
            if cur.rowcount == 0:
                return False
            target = await (await conn.execute("SELECT target FROM cases WHERE id = ?", (case_id,))).fetchone()
            await audit.append(
                conn, now_ms=ended_at, actor=actor, action=f"case.{how}", target=target[0],
                details={"case": case_id, "reason": reason},
            )
        return True

    async def get(self, case_id: int) -> Case | None:
        row = await self._db.fetchone("SELECT " + _CASE_COLUMNS + _FROM + " WHERE c.id = ?", (case_id,))
        return None if row is None else _case(row)

    async def history(self, target: str) -> list[Case]:
        rows = await self._db.fetchall("SELECT " + _CASE_COLUMNS + _FROM + " WHERE c.target = ? ORDER BY c.id", (target,))
        return [_case(r) for r in rows]

    async def withdrawn(self, target: str) -> set[int]:
        """The cases of ``target`` that were lifted or whose appeal was granted: they stand as
        records, but must not count against the account (the escalation ladder skips them)."""
        rows = await self._db.fetchall(
            "SELECT c.id FROM cases c LEFT JOIN case_ends e ON e.case_id = c.id WHERE c.target = ? AND ("
            " e.how = 'lifted' OR EXISTS (SELECT 1 FROM appeals a WHERE a.case_id = c.id AND a.decision = 'granted'))",
            (target,),
        )
        return {r[0] for r in rows}

    async def recent(self, limit: int = 20) -> list[Case]:
        rows = await self._db.fetchall("SELECT " + _CASE_COLUMNS + _FROM + " ORDER BY c.id DESC LIMIT ?", (limit,))
        return [_case(r) for r in rows]

    async def unended(self) -> list[Case]:
        """Measures with no end record (some may be overdue: the caller ends those)."""
        rows = await self._db.fetchall(
            "SELECT " + _CASE_COLUMNS + _FROM + " WHERE e.case_id IS NULL AND c.kind != 'warn' ORDER BY c.id"
        )
        return [_case(r) for r in rows]

    async def add_closure_request(self, request: ClosureRequest) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO closure_requests"
                " (code, target, requested_by, reason, erase, evidence, caused_by, created_at, expires_at, report_id,"
                " blacklist) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.code, request.target, request.requested_by, request.reason, int(request.erase),
                    None if request.evidence is None else audit.canonical_json(request.evidence),
                    json.dumps(list(request.caused_by)), request.created_at, request.expires_at, request.report_id,
                    int(request.blacklist),
                ),
            )
            details = {"reason": request.reason, "erase": request.erase, "caused_by": list(request.caused_by),
                       **({"blacklist": True} if request.blacklist else {})}
            await audit.append(
                conn, now_ms=request.created_at, actor=request.requested_by, action="case.close_requested",
                target=request.target, details=details,
            )

    async def take_closure_request(self, code: str, now: int) -> ClosureRequest | None:
        """The unused, unexpired request with this code, marked used; None otherwise."""
        async with self._db.transaction() as conn:
            row = await (await conn.execute(
                "SELECT code, target, requested_by, reason, erase, evidence, caused_by, created_at, expires_at, used_at,"
                " report_id, blacklist FROM closure_requests WHERE code = ? AND used_at IS NULL AND expires_at > ?",
                (code, now),
            )).fetchone()
            if row is None:
                return None
            await conn.execute("UPDATE closure_requests SET used_at = ? WHERE code = ?", (now, code))
        return ClosureRequest(
            row[0], row[1], row[2], row[3], bool(row[4]), None if row[5] is None else json.loads(row[5]),
            tuple(json.loads(row[6])), row[7], row[8], now, row[10], bool(row[11]),
        )
