"""Exports of the records for the competent authority (article 8): CSV or JSON Lines.

Every export is itself an audit record (who, what, when). Times are ISO 8601 in UTC. CSV can
start with a UTF-8 byte-order mark so spreadsheet programs read Chinese text correctly.

CSV is made for spreadsheets, and a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return as a formula ("CSV injection", OWASP). Any text cell that starts
so gets a single quote in front (``'=HYPERLINK(…)``), the OWASP advice: the spreadsheet shows the
text instead of running it. Numbers from numeric columns (a negative id or count) stay numbers.
JSON Lines is data, not a spreadsheet: it keeps every value exactly as recorded.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
from pathlib import Path
from datetime import datetime, timezone
from typing import Any

from bot.i18n import representable_ms
from bot.store import Store, audit

KINDS = ("agreements", "cases", "filings", "reports", "appeals", "audit", "verifications")
FORMATS = ("csv", "jsonl")

# kind -> (SQL selecting the columns in order, the time column that --since/--until filter on)
_QUERIES: dict[str, tuple[str, str]] = {
    "agreements": (
        "SELECT id, user_id, version, text_sha256, accepted_at, event_id, room_id, method"
        " FROM agreement_acceptances", "accepted_at",
    ),
    "cases": (
        "SELECT c.id, c.target, c.kind, c.actor, c.reason, c.created_at, c.expires_at, c.rate, c.caused_by,"
        " c.evidence, c.evidence_purged_at, e.ended_at, e.actor AS ended_by, e.how AS end_how, e.reason AS end_reason"
        " FROM cases c LEFT JOIN case_ends e ON e.case_id = c.id", "c.created_at",
    ),
    "reports": (
        "SELECT r.id, r.event_id, r.room_id, r.sender, r.created_at,"
        " (SELECT json_group_array(json_object('reporter', reporter, 'reason', reason, 'reported_at', reported_at,"
        "  'source', source)) FROM report_reporters WHERE report_id = r.id) AS reporters,"
        " r.snapshot AS evidence, r.snapshot_purged_at AS evidence_purged_at, r.resolved_at, r.resolved_by,"
        " r.resolution, r.resolution_reason, r.case_id FROM reports r", "r.created_at",
    ),
    "filings": (
        "SELECT f.id, f.filing_number, f.owner, f.category, f.name, f.tier, f.licence,"
        " (SELECT json_group_array(room_id) FROM channels c WHERE c.owner = f.owner) AS channels,"
        " f.reviewer, f.approved_at, f.application_id, f.revoked_at, f.revoked_by, f.revoke_reason FROM filings f",
        "f.approved_at",
    ),
    "appeals": (
        "SELECT id, case_id, appellant, text, created_at, decided_at, decided_by, decision, decision_reason"
        " FROM appeals", "created_at",
    ),
    "audit": ("SELECT id, created_at, actor, action, target, details, prev_hash, hash FROM audit_log", "created_at"),
    # issue 9: who was verified, how, when; never the subject's index nor the kept attributes
    "verifications": (
        "SELECT id, user_id, kind, verifier, method, level, verified_at, recorded_at, actor, note,"
        " CASE WHEN attributes IS NULL THEN 0 ELSE 1 END AS attributes_kept FROM identity_records", "recorded_at",
    ),
}
_TIME_COLUMNS = {"accepted_at", "created_at", "expires_at", "ended_at", "resolved_at", "decided_at",
                 "evidence_purged_at", "approved_at", "revoked_at", "verified_at", "recorded_at"}
_JSON_COLUMNS = {"caused_by", "evidence", "reporters", "details", "channels"}


class ExportError(ValueError):
    pass


def parse_date(text: str) -> int:
    """``2026-11-28`` or an ISO 8601 time → ms since the epoch (UTC unless the text says otherwise)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{text!r} is not a date like 2026-11-28 or 2026-11-28T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(representable_ms(ms) / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def collect(store: Store, kind: str, since: int | None = None, until: int | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    if kind not in _QUERIES:
        raise ExportError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    sql, time_column = _QUERIES[kind]
    conditions, params = [], []
    if since is not None:
        conditions.append(f"{time_column} >= ?")
        params.append(since)
    if until is not None:
        conditions.append(f"{time_column} < ?")
        params.append(until)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY 1"
    async with store.db.conn.execute(sql, tuple(params)) as cur:
        columns = [d[0] for d in cur.description]
        rows = [dict(zip(columns, row)) for row in await cur.fetchall()]
    for row in rows:
        for column in columns:
            if column in _TIME_COLUMNS:
                row[column] = iso(row[column])
            elif column in _JSON_COLUMNS and isinstance(row[column], str):
                row[column] = json.loads(row[column])
    return columns, rows


def encode(columns: list[str], rows: list[dict[str, Any]], fmt: str, bom: bool = False) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if fmt != "csv":
        raise ExportError(f"unknown format {fmt!r}; choose csv or jsonl")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else _cell(row[c]) for c in columns])
    return ("\ufeff" if bom else "").encode("utf-8") + out.getvalue().encode("utf-8")


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if isinstance(value, (int, float)):
        return str(value)  # a real number, negative or not, is no formula
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return neutralise(text)


def neutralise(text: str) -> str:
    """Text a spreadsheet would run as a formula, made inert with a leading single quote."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


async def export(
    store: Store, *, kind: str, fmt: str, actor: str, now: int, since: int | None = None, until: int | None = None,
    bom: bool = False,
) -> tuple[bytes, int]:
    """The encoded export and its row count; the export itself is recorded in the audit log."""
    columns, rows = await collect(store, kind, since, until)
    data = encode(columns, rows, fmt, bom)
    async with store.db.transaction() as conn:
        await audit.append(conn, now_ms=now, actor=actor, action="records.export", target=kind,
                           details={"format": fmt, "since": iso(since), "until": iso(until), "rows": len(rows)})
    return data, len(rows)


EXPORTS_FOLDER = "exports"


async def stage_file(store: Store, key: str, data: bytes) -> tuple[str, str]:
    """Write an export for the executor to send (a ``file`` effect) and return (path, sha256).

    The file is 0600 in ``exports/`` next to the database, named after the effect's key (a replay
    writes the same file again); it is removed if the unit rolls back, and by the executor once sent.
    """
    folder = await store.db.files_folder()
    if folder is None:
        raise ExportError("the database has no folder to hold an export")
    path = folder / EXPORTS_FOLDER / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".bin")
    await asyncio.to_thread(_write_private, path, data)
    store.db.on_rollback(lambda: path.unlink(missing_ok=True))
    return str(path), hashlib.sha256(data).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
