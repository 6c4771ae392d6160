"""Real-name verification records: append-only rows, the blacklist, the used assertions.

Nothing here ever sees a subject in clear: callers pass its blind index (bot.identity.keys).
Audit details name the verifier, method and level, never the index either, since the audit log
is exported as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import audit
from bot.store.db import Database

_COLUMNS = "id, user_id, kind, verifier, method, level, verified_at, recorded_at, actor, subject_index, attributes, note"


@dataclass(frozen=True)
class IdentityRecord:
    id: int
    user_id: str
    kind: str  # 'verified' or 'revoked'
    verifier: str
    method: str | None
    level: str | None
    verified_at: int | None
    recorded_at: int
    actor: str
    subject_index: str | None
    attributes: bytes | None
    note: str | None


@dataclass(frozen=True)
class SpentAssertion:
    signature: str | None  # None: spent before the signature was kept (migration 11)
    outcome: str | None  # VERIFIED or the refusal's reason (bot.identity.service)


@dataclass(frozen=True)
class BlacklistEntry:
    subject_index: str
    user_id: str
    case_id: int | None
    actor: str
    created_at: int
    id: int = 0  # review 9 #11: a refused account is told and audited once per entry


class IdentityRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_verification(
        self, *, user_id: str, verifier: str, method: str, level: str, verified_at: int, recorded_at: int,
        actor: str, subject_index: str | None, attributes: bytes | None, note: str | None,
        assertion_key: str | None = None, assertion_expires_at: int | None = None,
        assertion_signature: str | None = None,
    ) -> int | None:
        """Commit a verification with its audit record; None when ``assertion_key`` was used
        already (a replay: nothing is recorded). The assertion is marked used in the same
        transaction, so a verification and its replay protection exist together or not at all."""
        async with self._db.transaction() as conn:
            if assertion_key is not None:
                assert assertion_expires_at is not None
                if not await self.spend_assertion(assertion_key, now_ms=recorded_at, expires_at=assertion_expires_at,
                                                  signature=assertion_signature, outcome=VERIFIED):
                    return None
            cur = await conn.execute(
                "INSERT INTO identity_records (user_id, kind, verifier, method, level, verified_at, recorded_at,"
                " actor, subject_index, attributes, note) VALUES (?, 'verified', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, verifier, method, level, verified_at, recorded_at, actor, subject_index, attributes, note),
            )
            record_id = cur.lastrowid
            assert record_id is not None
            await audit.append(
                conn, now_ms=recorded_at, actor=actor, action="identity.verify", target=user_id,
                details={"record": record_id, "verifier": verifier, "method": method, "level": level,
                         "verified_at": verified_at, "attributes_kept": attributes is not None,
                         **({} if note is None else {"note": note})},
            )
        return record_id

    async def record_revocation(self, *, user_id: str, verifier: str, actor: str, reason: str, now_ms: int) -> int:
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO identity_records (user_id, kind, verifier, recorded_at, actor, note)"
                " VALUES (?, 'revoked', ?, ?, ?, ?)",
                (user_id, verifier, now_ms, actor, reason),
            )
            record_id = cur.lastrowid
            assert record_id is not None
            await audit.append(conn, now_ms=now_ms, actor=actor, action="identity.unverify", target=user_id,
                               details={"record": record_id, "verifier": verifier, "reason": reason})
        return record_id

    async def is_assertion_used(self, assertion_key: str) -> bool:
        row = await self._db.fetchone("SELECT 1 FROM identity_assertions WHERE assertion_key = ?", (assertion_key,))
        return row is not None

    async def spent_assertion(self, assertion_key: str) -> SpentAssertion | None:
        """How a used assertion was answered (None: it is not used), so that the same request sent
        again gets the same answer."""
        row = await self._db.fetchone(
            "SELECT signature, outcome FROM identity_assertions WHERE assertion_key = ?", (assertion_key,))
        return None if row is None else SpentAssertion(row[0], row[1])

    async def current(self, user_id: str) -> IdentityRecord | None:
        """The account's verification in force: its newest row, if that is not a revocation."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM identity_records WHERE user_id = ? ORDER BY id DESC LIMIT 1", (user_id,)
        )
        return None if row is None or row["kind"] != "verified" else IdentityRecord(*row)

    async def history(self, user_id: str) -> list[IdentityRecord]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM identity_records WHERE user_id = ? ORDER BY id",
                                       (user_id,))
        return [IdentityRecord(*row) for row in rows]

    async def verified_levels(self) -> dict[str, str]:
        """user -> level of every account verified now, for the in-memory state at start-up.

        One scan in row order (the newest row of each account comes last), as the agreements'
        start-up read does: cheaper than a correlated MAX(id) per account while the gate waits."""
        current: dict[str, str] = {}
        for user_id, kind, level in await self._db.fetchall("SELECT user_id, kind, level FROM identity_records ORDER BY id"):
            if kind == "verified":
                current[user_id] = level
            else:
                current.pop(user_id, None)
        return current

    async def accounts_with_subject(self, subject_index: str) -> set[str]:
        """The accounts verified now with this subject: any verification of the account's current
        chain (since its last revocation) counts, not only the newest. An eID verification
        followed by an SSO one still holds the eID's slot (review 9 #4)."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT r.user_id FROM identity_records r WHERE r.subject_index = ? AND r.kind = 'verified'"
            " AND NOT EXISTS (SELECT 1 FROM identity_records later WHERE later.user_id = r.user_id"
            " AND later.kind = 'revoked' AND later.id > r.id)",
            (subject_index,),
        )
        return {row[0] for row in rows}

    async def blacklisted(self, subject_index: str) -> BlacklistEntry | None:
        """The oldest blacklist entry in force (not lifted) for this subject."""
        row = await self._db.fetchone(
            "SELECT subject_index, user_id, case_id, actor, created_at, id FROM identity_blacklist"
            " WHERE subject_index = ? AND lifted_at IS NULL ORDER BY id LIMIT 1",
            (subject_index,),
        )
        return None if row is None else BlacklistEntry(*row)

    async def add_to_blacklist(self, *, subject_indexes: list[str], user_id: str, case_id: int | None, actor: str,
                               now_ms: int) -> None:
        """One entry per subject the account was verified with, one audit record for them all."""
        async with self._db.transaction() as conn:
            for subject_index in subject_indexes:
                await conn.execute(
                    "INSERT INTO identity_blacklist (subject_index, user_id, case_id, actor, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (subject_index, user_id, case_id, actor, now_ms),
                )
            await audit.append(conn, now_ms=now_ms, actor=actor, action="identity.blacklist", target=user_id,
                               details={"case": case_id, "identities": len(subject_indexes)})

    # --- review 9 #1, #9, #11, #12: every subject of an account, moderators' holds, lifting -----------

    async def subject_indexes(self, user_id: str) -> list[str]:
        """Every subject index the account was ever verified with, oldest first (revoked ones too:
        a closure often comes after a revocation, and a person's eID stays theirs after an SSO)."""
        rows = await self._db.fetchall(
            "SELECT subject_index FROM identity_records WHERE user_id = ? AND kind = 'verified'"
            " AND subject_index IS NOT NULL ORDER BY id",
            (user_id,),
        )
        return list(dict.fromkeys(row[0] for row in rows))

    async def held_by_moderator(self, user_id: str) -> bool:
        """Whether the account's newest row is a moderator's revocation (verifier 'manual'): single
        sign-on must not undo it; only a moderator's own verification ends it."""
        row = await self._db.fetchone(
            "SELECT kind, verifier FROM identity_records WHERE user_id = ? ORDER BY id DESC LIMIT 1", (user_id,)
        )
        return row is not None and (row[0], row[1]) == ("revoked", "manual")

    async def refused_by_entry(self, user_id: str, entry_id: int) -> bool:
        """Whether a refusal of ``user_id`` by this blacklist entry is audited already."""
        row = await self._db.fetchone(
            "SELECT 1 FROM audit_log WHERE target = ? AND action = 'identity.refused'"
            " AND CAST(json_extract(details, '$.blacklist') AS INTEGER) = ? LIMIT 1",
            (user_id, entry_id),
        )
        return row is not None

    async def blacklisted_by_case(self, case_id: int) -> list[str]:
        """The accounts whose identities this case's blacklist entries in force list."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT user_id FROM identity_blacklist WHERE case_id = ? AND lifted_at IS NULL ORDER BY user_id",
            (case_id,),
        )
        return [row[0] for row in rows]

    async def sso_refusal_audited(self, user_id: str, reason: str) -> bool:
        """Whether single sign-on's refusal of ``user_id`` for ``reason`` is audited already since
        the account's last verification or revocation."""
        row = await self._db.fetchone(
            "SELECT 1 FROM audit_log WHERE target = ? AND action = 'identity.refused'"
            " AND json_extract(details, '$.verifier') = 'sso' AND json_extract(details, '$.reason') = ?"
            " AND id > COALESCE((SELECT MAX(id) FROM audit_log WHERE target = ?"
            " AND action IN ('identity.verify', 'identity.unverify')), 0) LIMIT 1",
            (user_id, reason, user_id),
        )
        return row is not None

    async def lift_blacklist(self, *, case_id: int, actor: str, reason: str, now_ms: int) -> list[str]:
        """End the blacklist entries of a closure case (kept, marked lifted), each account's with an
        audit record; the accounts whose identities may verify again."""
        async with self._db.transaction() as conn:
            async with conn.execute(
                "SELECT user_id, COUNT(*) FROM identity_blacklist WHERE case_id = ? AND lifted_at IS NULL"
                " GROUP BY user_id ORDER BY user_id",
                (case_id,),
            ) as cur:
                lifted = [(row[0], row[1]) for row in await cur.fetchall()]
            if not lifted:
                return []
            await conn.execute(
                "UPDATE identity_blacklist SET lifted_at = ?, lifted_by = ? WHERE case_id = ? AND lifted_at IS NULL",
                (now_ms, actor, case_id),
            )
            for user_id, entries in lifted:
                await audit.append(conn, now_ms=now_ms, actor=actor, action="identity.blacklist_lift", target=user_id,
                                   details={"case": case_id, "identities": entries, "reason": reason})
        return [user_id for user_id, _ in lifted]

    # --- end review 9 #1, #9, #11, #12 ---------------------------------------------------------------

    async def record_refusal(self, *, user_id: str, verifier: str, reason: str, actor: str, now_ms: int,
                             blacklist_entry: int | None = None) -> None:
        """A verification refused by policy (blacklist, too many accounts): the attempt is audited,
        a blacklisted one with the entry that refused it (``refused_by_entry`` finds it again)."""
        details: dict[str, object] = {"verifier": verifier, "reason": reason}
        if blacklist_entry is not None:
            details["blacklist"] = blacklist_entry
        await self._store_record(now_ms, actor, "identity.refused", user_id, details)

    async def record_reveal(self, *, user_id: str, actor: str, reason: str, now_ms: int) -> None:
        """``identity reveal`` is an audit record, committed before anything is shown."""
        await self._store_record(now_ms, actor, "identity.reveal", user_id, {"reason": reason})

    async def _store_record(self, now_ms: int, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        async with self._db.transaction() as conn:
            await audit.append(conn, now_ms=now_ms, actor=actor, action=action, target=target, details=details)

    # --- review 9 #2 and #10 (key fingerprint, spent assertions) ---------------------------------

    async def has_keyed_records(self) -> bool:
        """Whether anything was recorded under an identity key: a subject's index, kept attributes
        or a blacklist entry. A new key would read none of them."""
        row = await self._db.fetchone(
            "SELECT 1 FROM identity_records WHERE subject_index IS NOT NULL OR attributes IS NOT NULL"
            " UNION ALL SELECT 1 FROM identity_blacklist LIMIT 1"
        )
        return row is not None

    async def key_fingerprint(self, fingerprint: str) -> str:
        """The fingerprint of the key this database's records are written under: ``fingerprint``
        when none was recorded yet (the first start wins a race between two starters)."""
        async with self._db.transaction() as conn:
            await conn.execute("INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)", (KEY_FINGERPRINT, fingerprint))
            async with conn.execute("SELECT value FROM kv WHERE key = ?", (KEY_FINGERPRINT,)) as cur:
                row = await cur.fetchone()
        return row[0]

    async def spend_assertion(self, assertion_key: str, *, now_ms: int, expires_at: int,
                              signature: str | None = None, outcome: str | None = None) -> bool:
        """Mark an assertion used (joins the caller's transaction); False when it already was.
        ``signature`` and ``outcome`` (VERIFIED or the refusal's reason) let the same request sent
        again be answered as it was the first time.

        Rows are pruned SPENT_KEPT_EXTRA_MS after they expire by this process's clock: another
        process whose clock is behind still accepts the assertion's timestamp for a while, and a
        row pruned early would let it verify a second time there."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM identity_assertions WHERE expires_at < ?",
                               (now_ms - SPENT_KEPT_EXTRA_MS,))
            cur = await conn.execute(
                "INSERT OR IGNORE INTO identity_assertions (assertion_key, expires_at, signature, outcome)"
                " VALUES (?, ?, ?, ?)",
                (assertion_key, expires_at, signature, outcome),
            )
            return cur.rowcount != 0


KEY_FINGERPRINT = "identity.key_fingerprint"
VERIFIED = "verified"  # the outcome of a spent assertion that recorded a verification
# How long a spent assertion is kept beyond its expiry (review 11b, break 3). Each process checks
# an assertion's timestamp against its own clock, +-5 min: a process whose clock runs fast prunes
# a row by its clock while one whose clock runs slow still accepts the timestamp. Two clocks each
# within the window of the identity service's differ by 10 min at most; a clock further off than
# that refuses every fresh assertion anyway.
SPENT_KEPT_EXTRA_MS = 10 * 60 * 1000
