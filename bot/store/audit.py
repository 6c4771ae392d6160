"""The append-only audit log. Each row carries the hash of the one before, so editing, deleting
or inserting a row by hand breaks the chain at that row and ``verify`` names it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def evidence_hash(evidence: Any) -> str | None:
    """What the audit log keeps of copied message content: enough to prove it, nothing to read."""
    if evidence is None:
        return None
    return hashlib.sha256(canonical_json(evidence).encode("utf-8")).hexdigest()


def row_hash(prev_hash: str, row_id: int, created_at: int, actor: str, action: str, target: str, details: str) -> str:
    payload = canonical_json([row_id, created_at, actor, action, target, details])
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


async def append(
    conn: aiosqlite.Connection, *, now_ms: int, actor: str, action: str, target: str, details: dict[str, Any]
) -> int:
    """Append one record; call inside the transaction that makes the change it records."""
    async with conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1") as cur:
        last = await cur.fetchone()
    row_id = 1 if last is None else last[0] + 1
    prev = GENESIS if last is None else last[1]
    body = canonical_json(details)
    digest = row_hash(prev, row_id, now_ms, actor, action, target, body)
    await conn.execute(
        "INSERT INTO audit_log (id, created_at, actor, action, target, details, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, now_ms, actor, action, target, body, prev, digest),
    )
    return row_id


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    bad_row: int | None = None
    problem: str = ""


async def verify(conn: aiosqlite.Connection) -> VerifyResult:
    prev_hash, expected_id, checked = GENESIS, 1, 0
    async with conn.execute(
        "SELECT id, created_at, actor, action, target, details, prev_hash, hash FROM audit_log ORDER BY id"
    ) as cur:
        async for row_id, created_at, actor, action, target, details, stored_prev, stored_hash in cur:
            if row_id != expected_id:
                return VerifyResult(False, checked, expected_id, f"row {expected_id} is missing (next is {row_id})")
            if stored_prev != prev_hash:
                return VerifyResult(False, checked, row_id, f"row {row_id} does not follow row {row_id - 1}")
            if row_hash(prev_hash, row_id, created_at, actor, action, target, details) != stored_hash:
                return VerifyResult(False, checked, row_id, f"row {row_id} was altered")
            prev_hash, expected_id, checked = stored_hash, expected_id + 1, checked + 1
    return VerifyResult(True, checked)
