"""Public accounts (article 7): applications, the filing register, and each account's channels."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.store import audit
from bot.store.db import Database


@dataclass(frozen=True)
class Application:
    id: int
    applicant: str
    kind: str
    category: str | None
    name: str | None
    tier: str | None
    licence: str | None
    created_at: int
    decided_at: int | None
    decided_by: str | None
    decision: str | None
    note: str | None


@dataclass(frozen=True)
class Filing:
    id: int
    filing_number: str
    owner: str
    category: str
    name: str
    tier: str | None
    licence: str | None
    reviewer: str
    approved_at: int
    application_id: int
    revoked_at: int | None
    revoked_by: str | None
    revoke_reason: str | None


class AlreadyPending(Exception):
    """The applicant already has an application of this kind waiting for review."""


class AccountRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply(self, *, applicant: str, kind: str, now: int, category: str | None = None,
                    name: str | None = None, tier: str | None = None, licence: str | None = None) -> Application:
        try:
            async with self._db.transaction() as conn:
                cur = await conn.execute(
                    "INSERT INTO applications (applicant, kind, category, name, tier, licence, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (applicant, kind, category, name, tier, licence, now),
                )
                await audit.append(conn, now_ms=now, actor=applicant, action=f"application.{kind}", target=applicant,
                                   details={"application": cur.lastrowid, "category": category, "name": name,
                                            "tier": tier, "licence": licence})
                application_id = cur.lastrowid
        except sqlite3.IntegrityError:
            raise AlreadyPending(kind) from None
        application = await self.application(application_id)
        assert application is not None
        return application

    async def application(self, application_id: int) -> Application | None:
        row = await self._db.fetchone("SELECT * FROM applications WHERE id = ?", (application_id,))
        return None if row is None else Application(*row)

    async def applications_of(self, applicant: str) -> list[Application]:
        rows = await self._db.fetchall("SELECT * FROM applications WHERE applicant = ? ORDER BY id", (applicant,))
        return [Application(*r) for r in rows]

    async def pending(self) -> list[Application]:
        rows = await self._db.fetchall("SELECT * FROM applications WHERE decided_at IS NULL ORDER BY created_at, id")
        return [Application(*r) for r in rows]

    async def reject(self, application_id: int, *, by: str, reason: str, now: int) -> bool:
        return await self._decide(application_id, by=by, decision="rejected", note=reason, now=now)

    async def approve(self, application: Application, *, by: str, note: str, now: int, filing_number: str,
                      category: str, name: str) -> Filing | None:
        """Decide the application and enter the filing, in one transaction; None if already decided."""
        async with self._db.transaction() as conn:
            if not await self._mark(conn, application.id, by=by, decision="approved", note=note, now=now):
                return None
            cur = await conn.execute(
                "INSERT INTO filings (filing_number, owner, category, name, tier, licence, reviewer, approved_at,"
                " application_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (filing_number, application.applicant, category, name, application.tier, application.licence, by, now,
                 application.id),
            )
            await audit.append(conn, now_ms=now, actor=by, action="filing.add", target=application.applicant,
                               details={"filing": cur.lastrowid, "filing_number": filing_number, "category": category,
                                        "tier": application.tier, "application": application.id})
            filing_id = cur.lastrowid
        return await self.filing(filing_id)

    async def _decide(self, application_id: int, *, by: str, decision: str, note: str, now: int) -> bool:
        async with self._db.transaction() as conn:
            return await self._mark(conn, application_id, by=by, decision=decision, note=note, now=now)

    @staticmethod
    async def _mark(conn, application_id: int, *, by: str, decision: str, note: str, now: int) -> bool:  # type: ignore[no-untyped-def]
        cur = await conn.execute(
            "UPDATE applications SET decided_at = ?, decided_by = ?, decision = ?, note = ?"
            " WHERE id = ? AND decided_at IS NULL",
            (now, by, decision, note, application_id),
        )
        if cur.rowcount == 0:
            return False
        await audit.append(conn, now_ms=now, actor=by, action=f"application.{decision}",
                           target=f"application:{application_id}", details={"note": note})
        return True

    async def filing(self, filing_id: int) -> Filing | None:
        row = await self._db.fetchone("SELECT * FROM filings WHERE id = ?", (filing_id,))
        return None if row is None else Filing(*row)

    async def active_filings(self, owner: str | None = None) -> list[Filing]:
        sql, params = "SELECT * FROM filings WHERE revoked_at IS NULL", ()
        if owner is not None:
            sql, params = sql + " AND owner = ?", (owner,)
        return [Filing(*r) for r in await self._db.fetchall(sql + " ORDER BY id", params)]

    async def next_sequence(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM filings")
        return int(row[0]) + 1

    async def revoke_all(self, owner: str, *, by: str, reason: str, now: int) -> list[Filing]:
        """Revoke every filing in force of ``owner`` (the public account and its news tier)."""
        revoked = await self.active_filings(owner)
        if not revoked:
            return []
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE filings SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE owner = ? AND revoked_at IS NULL",
                (now, by, reason, owner),
            )
            await audit.append(conn, now_ms=now, actor=by, action="filing.revoke", target=owner,
                               details={"filings": [f.filing_number for f in revoked], "reason": reason})
        return revoked

    async def channels(self, owner: str | None = None) -> dict[str, str]:
        """room -> owner."""
        sql, params = "SELECT room_id, owner FROM channels", ()
        if owner is not None:
            sql, params = sql + " WHERE owner = ?", (owner,)
        return {r[0]: r[1] for r in await self._db.fetchall(sql, params)}

    async def add_channel(self, owner: str, room_id: str, now: int) -> bool:
        async with self._db.transaction() as conn:
            cur = await conn.execute("INSERT OR IGNORE INTO channels (room_id, owner, added_at) VALUES (?, ?, ?)",
                                     (room_id, owner, now))
            if cur.rowcount:
                await audit.append(conn, now_ms=now, actor=owner, action="channel.add", target=owner,
                                   details={"room_id": room_id})
            return bool(cur.rowcount)

    async def remove_channel(self, owner: str, room_id: str, now: int) -> bool:
        async with self._db.transaction() as conn:
            cur = await conn.execute("DELETE FROM channels WHERE room_id = ? AND owner = ?", (room_id, owner))
            if cur.rowcount:
                await audit.append(conn, now_ms=now, actor=owner, action="channel.remove", target=owner,
                                   details={"room_id": room_id})
            return bool(cur.rowcount)
