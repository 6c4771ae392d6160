"""The append-only audit log. Each row carries the hash of the one before, so editing, deleting
or inserting a row by hand breaks the chain at that row and ``verify`` names it.

A chain checked from its first row cannot tell that its newest rows were cut off: what is left is
still a valid chain. So the head (the newest row's id and hash) is also kept outside the rows it
covers: in the ``kv`` table (same transaction as the append), in an append-only head file written
after each commit (see ``HeadFile``), and wherever the operator copies ``python -m bot audit head``
to. ``verify`` checks the chain against every head it is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import aiosqlite

GENESIS = "0" * 64
HEAD_KEY = "audit.head"


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


@dataclass(frozen=True)
class Head:
    """The newest row of the chain: what an operator keeps elsewhere to prove nothing was cut off."""

    row_id: int
    hash: str
    created_at: int | None = None

    def token(self) -> str:
        """``<id>:<hash>``, the form ``audit verify --head`` takes."""
        return f"{self.row_id}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> "Head":
        """``<id>:<hash>`` → Head; ValueError with a readable message otherwise."""
        row_id, sep, digest = text.strip().partition(":")
        digest = digest.strip().lower()
        if not sep or not row_id.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{text!r} is not a head like 42:<64 hex digits> (as `audit head` prints it)")
        return cls(int(row_id), digest)


# Heads appended in a transaction that has not committed yet, per connection: the head file may
# only learn of a row once the row is durable, or a rollback would leave the file ahead of the
# chain and every later verify would report rows "removed" that never existed.
_pending: "weakref.WeakKeyDictionary[aiosqlite.Connection, Head]" = weakref.WeakKeyDictionary()


def take_pending(conn: aiosqlite.Connection) -> Head | None:
    """The head appended by the transaction that just ended (and forget it)."""
    return _pending.pop(conn, None)


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
    head = Head(row_id, digest, now_ms)
    await conn.execute(
        "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
        (HEAD_KEY, canonical_json({"id": row_id, "hash": digest, "created_at": now_ms})),
    )
    _pending[conn] = head
    return row_id


async def stored_head(conn: aiosqlite.Connection) -> Head | None:
    """The head the database keeps beside the rows (None before the first append that kept one)."""
    async with conn.execute("SELECT value FROM kv WHERE key = ?", (HEAD_KEY,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return Head(int(value["id"]), str(value["hash"]), value.get("created_at"))


class HeadFile:
    """An append-only text file of heads, one ``<id> <hash> <created_at>`` line per committed
    transaction that appended to the log. It lives outside the database, so deleting rows (and
    the ``kv`` head with them) still leaves the file naming rows that are gone. Put it on another
    file system or make it append-only (``chattr +a``) to make it harder to cut as well."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, head: Head) -> None:
        """Append one line and fsync it (blocking: run it in a thread)."""
        line = f"{head.row_id} {head.hash} {head.created_at if head.created_at is not None else ''}\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = line.encode("ascii")
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line torn by an earlier short write: end it, or this head would be glued to
                # it ("1" + "13 …" reads as row 113) and verify would report rows removed.
                data = b"\n" + data
            while data:
                # os.write may write less than asked (a full disk): write the rest, or raise.
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # The new directory entry must survive a power cut too, not only the line.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def read(self) -> list[Head] | None:
        """Every head in the file, oldest first; None when there is no file. A torn line (a crash
        or a full disk mid-write; the next write ends it) is skipped: it was never a promise."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return None
        heads = []
        for line in text.splitlines():
            parts = line.split()
            if 2 <= len(parts) <= 3 and parts[0].isdigit() and _is_hash(parts[1]):
                created = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
                heads.append(Head(int(parts[0]), parts[1], created))
        return heads


def _is_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def default_head_file(database_path: str | Path) -> Path:
    """``bot.db`` → ``bot.db.audit-head``: next to the database unless configured elsewhere."""
    path = Path(database_path)
    return path.with_name(path.name + ".audit-head")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    bad_row: int | None = None
    problem: str = ""
    head: Head | None = None  # the newest row, when the chain is intact


async def verify(conn: aiosqlite.Connection, heads: Iterable[tuple[str, Head]] = ()) -> VerifyResult:
    """Check the chain row by row, then against each ``(where it was kept, head)``: a head beyond
    the last row means the newest rows were removed; a head whose hash differs from its row means
    the chain was rewritten after it was kept."""
    heads = list(heads)
    wanted = {head.row_id for _, head in heads}
    prev_hash, expected_id, checked = GENESIS, 1, 0
    hashes: dict[int, str] = {0: GENESIS}  # only the rows a head names: the log may be long
    last_created: int | None = None
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
            if row_id in wanted:
                hashes[row_id] = stored_hash
            prev_hash, expected_id, checked, last_created = stored_hash, expected_id + 1, checked + 1, created_at
    last_id = expected_id - 1
    beyond = [(source, head) for source, head in heads if head.row_id > last_id]
    if beyond:
        source, head = max(beyond, key=lambda item: item[1].row_id)  # the furthest witness tells the most
        if head.row_id == last_id + 1:
            problem = f"row {head.row_id} was removed ({source} records it)"
        else:
            problem = f"rows {last_id + 1}..{head.row_id} were removed ({source} records row {head.row_id})"
        return VerifyResult(False, checked, last_id + 1, problem)
    for source, head in heads:
        if hashes[head.row_id] != head.hash:
            return VerifyResult(False, head.row_id - 1, head.row_id,
                                f"row {head.row_id} does not match the head kept in {source}: the chain was rewritten")
    return VerifyResult(True, checked, head=Head(last_id, prev_hash, last_created))
