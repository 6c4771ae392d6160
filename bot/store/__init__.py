"""The store is the truth: SQLite, migrated on open; memory is a write-through copy of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.store.accounts import AccountRepo, AlreadyPending, Application, Filing
from bot.store import audit
from bot.store.agreements import Acceptance, AgreementRepo, Prompt
from bot.store.cases import Case, CaseRepo, ClosureRequest, NewCase
from bot.store.db import Database, DatabaseTooNew
from bot.store.effects import Effect, EffectRepo, Unit
from bot.store.identity import IdentityRepo  # issue 9: real-name verification
from bot.store.reports import AlreadyOpen, Appeal, AppealRepo, Report, ReportRepo
from bot.store.rooms import Mute, RoomRepo


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.agreements = AgreementRepo(db)
        self.rooms = RoomRepo(db)
        self.cases = CaseRepo(db)
        self.reports = ReportRepo(db)
        self.appeals = AppealRepo(db)
        self.accounts = AccountRepo(db)
        self.effects = EffectRepo(db)
        self.identity = IdentityRepo(db)  # issue 9: real-name verification
        # `async with store.unit(event_id) as unit:` — one transaction for what an event causes.
        self.unit = self.effects.unit

    @classmethod
    async def open(cls, path: str | Path, audit_head_file: str | Path | None = None) -> "Store":
        return cls(await Database.open(path, audit_head_file))

    async def close(self) -> None:
        await self.db.close()

    async def get(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else row["value"]

    async def put(self, key: str, value: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    async def record(self, *, now_ms: int, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        """An audit record of its own (a refused attempt, a label change)."""
        async with self.db.transaction() as conn:
            await audit.append(conn, now_ms=now_ms, actor=actor, action=action, target=target, details=details)

    async def delete(self, key: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM kv WHERE key = ?", (key,))


__all__ = ["AlreadyPending", "Application", "Filing", "AlreadyOpen", "Appeal", "Report", "Acceptance", "Case", "ClosureRequest", "Database", "DatabaseTooNew", "Effect", "EffectRepo", "Mute", "NewCase", "Prompt", "Store", "Unit"]
