"""`python -m bot migrate-db`: every record from SQLite into an empty PostgreSQL, verified there;
a non-empty target or a broken chain is refused and nothing is left behind; the PostgreSQL
database then serves `audit verify` and `export` through `database.url`."""

import asyncio
import sqlite3

import yaml

from bot.__main__ import main
from bot.store import Acceptance, NewCase, Store
from bot.store.audit import verify
from tests.tamper import drop_append_only_sqlite


async def _records(path):
    """One row or more in every table that holds records."""
    store = await Store.open(path)
    try:
        await store.agreements.record_acceptance(Acceptance("@u:hs", "1", "ab" * 32, 1000, "$a", "!dm:hs", "command"))
        case = await store.cases.open(NewCase("@t:hs", "restrict", "@mod:hs", "spam", 2000, evidence={"body": "x"}))
        await store.cases.end(case.id, ended_at=3000, actor="@mod:hs", how="lifted", reason="ok")
        await store.reports.add(event_id="$r", room_id="!r:hs", sender="@t:hs", reporter="@u:hs",
                                reason="spam", snapshot={"body": "x"}, now=2500, source="command")
        await store.appeals.add(case_id=case.id, appellant="@t:hs", text="sorry", now=3500)
        async with store.unit("$e", kind="command") as unit:
            await unit.effect("notice", "!r:hs", {"room": "!r:hs", "text": "hi"}, key="reply/$e")
        await store.put("sync_token", "s42")
    finally:
        await store.close()


def _counts(dsn):
    async def read():
        store = await Store.open(dsn)
        try:
            rows = {t: (await store.db.fetchone(f"SELECT COUNT(*) FROM {t}"))[0]
                    for t in ("agreement_acceptances", "cases", "case_ends", "reports", "report_reporters", "appeals",
                              "handled_events", "effects", "audit_log", "kv")}
            return rows, (await verify(store.db.conn)).ok
        finally:
            await store.close()
    return asyncio.run(read())


def test_every_record_is_copied_and_the_chain_verified_on_the_target(pg_cluster, tmp_path, capsys):
    source = tmp_path / "bot.db"
    asyncio.run(_records(source))
    target = asyncio.run(pg_cluster.fresh(migrated=False))
    assert main(["migrate-db", "--from", f"sqlite:///{source}", "--to", target]) == 0
    out = capsys.readouterr().out
    assert "audit chain intact on the target" in out and "row counts match the source in every table" in out
    with sqlite3.connect(source) as conn:
        audit_rows = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    rows, chain_ok = _counts(target)
    assert chain_ok and rows["audit_log"] == audit_rows >= 4
    assert all(rows[t] >= 1 for t in rows), rows

    async def carry_on():
        # New rows get the next ids: the identity sequences moved past the copied ones.
        store = await Store.open(target)
        try:
            case = await store.cases.open(NewCase("@t2:hs", "warn", "@mod:hs", "again", 9000))
            assert case.id == 2
            assert await store.get("sync_token") == "s42"
        finally:
            await store.close()
    asyncio.run(carry_on())


def test_a_target_that_holds_rows_is_refused_and_left_as_it_was(pg_cluster, tmp_path, capsys):
    source = tmp_path / "bot.db"
    asyncio.run(_records(source))
    target = asyncio.run(pg_cluster.fresh())

    async def one_row():
        store = await Store.open(target)
        await store.put("mine", "1")
        await store.close()
    asyncio.run(one_row())
    assert main(["migrate-db", "--from", str(source), "--to", target]) == 1
    assert "the target is not empty (table kv has rows)" in capsys.readouterr().err
    rows, _ = _counts(target)
    assert rows["kv"] == 1 and rows["audit_log"] == 0


def test_a_broken_source_chain_is_refused_and_nothing_is_copied(pg_cluster, tmp_path, capsys):
    source = tmp_path / "bot.db"
    asyncio.run(_records(source))
    with sqlite3.connect(source) as conn:
        drop_append_only_sqlite(conn)
        conn.execute("UPDATE audit_log SET actor = '@forger:hs' WHERE id = 2")
    target = asyncio.run(pg_cluster.fresh())
    assert main(["migrate-db", "--from", str(source), "--to", target]) == 1
    assert "the audit chain on the target is broken at row 2: row 2 was altered" in capsys.readouterr().err
    rows, _ = _counts(target)
    assert sum(rows.values()) == 0, "a copy that does not verify is rolled back"


def test_a_missing_source_is_refused_not_created(tmp_path, capsys):
    missing = tmp_path / "nothing.db"
    assert main(["migrate-db", "--from", f"sqlite:///{missing}", "--to", f"sqlite:///{tmp_path / 'new.db'}"]) == 1
    assert f"the source database {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_audit_verify_and_export_run_against_postgresql_through_database_url(pg_cluster, tmp_path, capsys):
    source = tmp_path / "bot.db"
    asyncio.run(_records(source))
    target = asyncio.run(pg_cluster.fresh())
    assert main(["migrate-db", "--from", str(source), "--to", target]) == 0
    config = tmp_path / "pg.yaml"
    config.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://127.0.0.1:1", "user_id": "@bot:hs", "access_token": "t"},
        "database": {"url": target}, "gate": {"enabled": False},
        # The head file moved with the records: the chain is the same, so are its heads.
        "records": {"audit_head_file": str(tmp_path / "bot.db.audit-head")},
    }))
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "audit log intact" in capsys.readouterr().out
    out = tmp_path / "cases.csv"
    assert main(["export", "--config", str(config), "--kind", "cases", "--format", "csv", "--output", str(out)]) == 0
    assert "@t:hs" in out.read_text(encoding="utf-8")


def test_a_url_with_an_unencoded_password_is_refused_without_showing_the_password(tmp_path, capsys):
    # Review 11, break 9: asyncpg read "S3cret" as the port and its int() error printed it.
    asyncio.run(_records(tmp_path / "bot.db"))
    for url, problem in [("postgresql://bot:S3cret#PW@localhost/db", "--to database.url holds a '#'"),
                         ("postgresql://bot:S3cret@/db?host=/nonexistent&sslmode=bogus", "--to has an unknown sslmode"),
                         ("postgresql://bot:S3cret@localhost:99999/db", "--to has a port that is not a number")]:
        assert main(["migrate-db", "--from", f"sqlite:///{tmp_path / 'bot.db'}", "--to", url]) == 1
        err = capsys.readouterr().err
        assert problem.replace("database.url ", "") in err
        assert "S3cret" not in err and "Traceback" not in err


def test_a_record_holding_nul_is_refused_naming_its_table_row_and_column(pg_cluster, tmp_path, capsys):
    """Review 11, break 6: a report reason with U+0000, which SQLite took before the store refused
    it, made COPY fail with a traceback naming nothing; now the copy is refused and rolled back."""
    source = tmp_path / "bot.db"
    asyncio.run(_records(source))
    with sqlite3.connect(source) as conn:  # as an older bot wrote it: straight into the file
        conn.execute("INSERT INTO report_reporters (report_id, reporter, reason, reported_at, source)"
                     " VALUES (1, '@nul:hs', 'spam' || char(0), 2600, 'command')")
    target = asyncio.run(pg_cluster.fresh(migrated=False))
    assert main(["migrate-db", "--from", f"sqlite:///{source}", "--to", target]) == 1
    err = capsys.readouterr().err
    assert ("error: table report_reporters, row report_id = 1, reporter = '@nul:hs': column reason holds U+0000"
            " (NUL), which PostgreSQL cannot store; remove it from that row in the source and copy again") in err
    assert "Traceback" not in err
    rows, _ = _counts(target)
    assert sum(rows.values()) == 0, "nothing of the refused copy stays"
