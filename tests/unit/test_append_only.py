"""Append-only records, enforced by the database (issue 11 review, break 10): a direct UPDATE or
DELETE of a case, its end, an audit row, an acceptance or an identity record is refused on both
backends with an IntegrityError naming the table; the evidence purge, the one change the code
makes to such a row, still works and the audit chain still verifies."""

import sqlite3

import pytest

from bot.store import Acceptance, NewCase
from bot.store.audit import verify
from bot.store.retention import purge_evidence



async def _records(store):
    await store.agreements.record_acceptance(Acceptance("@u:hs", "1", "ab" * 32, 1000, "$a", "!dm:hs", "command"))
    case = await store.cases.open(NewCase("@t:hs", "restrict", "@mod:hs", "spam", 2000, evidence={"body": "x"}))
    await store.cases.end(case.id, ended_at=3000, actor="@mod:hs", how="lifted", reason="ok")
    return case


@pytest.mark.parametrize("statement, message", [
    ("UPDATE cases SET reason = 'rewritten'",
     "cases are append-only: a case is never changed, only its evidence purged (set to NULL)"),
    ("UPDATE cases SET evidence = NULL",  # emptied without the purge's stamp: not the purge
     "cases are append-only: a case is never changed, only its evidence purged (set to NULL)"),
    ("UPDATE cases SET evidence = NULL, evidence_purged_at = 9000, expires_at = 1",
     "cases are append-only: a case is never changed, only its evidence purged (set to NULL)"),
    ("DELETE FROM cases", "cases rows are append-only: a row is never deleted"),
    ("UPDATE case_ends SET how = 'expired'", "case_ends rows are append-only: a row is never changed"),
    ("DELETE FROM case_ends", "case_ends rows are append-only: a row is never deleted"),
    ("UPDATE audit_log SET actor = '@forger:hs'", "audit_log rows are append-only: a row is never changed"),
    ("DELETE FROM audit_log", "audit_log rows are append-only: a row is never deleted"),
    ("UPDATE agreement_acceptances SET version = '2'",
     "agreement_acceptances rows are append-only: a row is never changed"),
    ("DELETE FROM agreement_acceptances", "agreement_acceptances rows are append-only: a row is never deleted"),
])
async def test_a_direct_change_of_an_append_only_row_is_refused(store, statement, message):
    await _records(store)
    before = [tuple(r) for r in await store.db.fetchall("SELECT * FROM cases")]
    with pytest.raises(sqlite3.IntegrityError, match=message.replace("(", r"\(").replace(")", r"\)")):
        async with store.db.transaction() as conn:
            await conn.execute(statement)
    assert [tuple(r) for r in await store.db.fetchall("SELECT * FROM cases")] == before
    assert (await verify(store.db.conn)).ok


async def test_identity_records_refuse_update_and_delete_too(store):
    async with store.db.transaction() as conn:
        await conn.execute("INSERT INTO identity_records (user_id, kind, verifier, recorded_at, actor)"
                           " VALUES ('@u:hs', 'verified', 'manual', 1, '@mod:hs')")
    for statement, word in (("UPDATE identity_records SET kind = 'revoked'", "changed"),
                            ("DELETE FROM identity_records", "deleted")):
        with pytest.raises(sqlite3.IntegrityError, match=f"identity_records rows are append-only: a row is never {word}"):
            async with store.db.transaction() as conn:
                await conn.execute(statement)


async def test_the_evidence_purge_still_empties_a_case_s_evidence_and_the_chain_verifies(store):
    case = await _records(store)
    purged = await purge_evidence(store.db, cutoff=10_000, now=20_000, actor="@bot:hs", days=180)
    assert purged.cases == [case.id]
    row = await store.db.fetchone("SELECT evidence, evidence_purged_at, reason FROM cases WHERE id = ?", (case.id,))
    assert (row[0], row[1], row[2]) == (None, 20_000, "spam")
    assert (await verify(store.db.conn)).ok


@pytest.mark.postgres_only
async def test_truncate_is_refused_on_postgresql(store):
    """PostgreSQL's TRUNCATE skips row triggers: a statement trigger refuses it too."""
    await _records(store)
    with pytest.raises(sqlite3.IntegrityError, match="audit_log rows are append-only: a row is never deleted"):
        async with store.db.transaction() as conn:
            await conn.execute("TRUNCATE audit_log")
    assert (await verify(store.db.conn)).rows_checked >= 2
