"""The agreement at registration (bot.consent): Synapse's policy pages, the migration that lets an
acceptance have method 'registration', recording it once from the admin API's user record, the
gate's check before it refuses, and the version comparison at start-up."""

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.agreement import AgreementDocument, AgreementService, registration_key
from bot.config import SHIPPED_DIR
from bot.consent import registration
from bot.consent.registration import LookupFailed, RegistrationConsent
from bot.consent.synapse import page_text_sha256s, page_version, probe, terms_version
from bot.consent.templates import AgreementText, TemplateError, texts_for, write_templates
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.store import Store
from bot.store.db import _split_sql
from bot.store.migrations import MIGRATIONS

REPO = Path(__file__).resolve().parents[2]
USER = "@new:hs.test"


def synapse_render(out: Path, name: str, **context) -> str:
    """The page as Synapse's ConsentResource renders it: Jinja2 from <template_dir>/en, autoescaped."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(out)),
                             autoescape=jinja2.select_autoescape(["html", "htm", "xml"]))
    return env.get_template(f"en/{name}").render(**context)


# -- the policy pages ----------------------------------------------------------------------------

def test_the_page_holds_both_shipped_texts_in_en_named_by_version(tmp_path):
    written = write_templates(tmp_path, "2026-11", texts_for(None))
    assert sorted(p.path.relative_to(tmp_path).as_posix() for p in written) == ["en/2026-11.html", "en/success.html"]
    page = synapse_render(tmp_path, "2026-11.html", version="2026-11", public_version=True, user="", userhmac=None,
                          has_consented=False)
    zh = (SHIPPED_DIR / "agreement.zh-CN.md").read_text(encoding="utf-8").strip()
    en = (SHIPPED_DIR / "agreement.en.md").read_text(encoding="utf-8").strip()
    # Every line of each text, HTML-escaped as it must be, zh-CN (the default language) first.
    for line in zh.splitlines() + en.splitlines():
        assert line.replace('"', "&quot;").replace("'", "&#x27;") in page
    assert page.index('<section lang="zh-CN">') < page.index('<section lang="en">')
    assert "服务协议（版本 2026-11）" in page and "Service agreement, version 2026-11" in page
    assert page_version(page) == "2026-11"
    # Each text's hash, as the bot hashes its agreement: Synapse's "2026-11" is then this document.
    shipped = [SHIPPED_DIR / f"agreement.{lang}.md" for lang in ("zh-CN", "en")]
    assert page_text_sha256s(page) == {AgreementDocument.load(path, "2026-11").sha256 for path in shipped}
    assert "<form" not in page  # the public page (no user) offers nothing to submit


def test_a_users_page_has_the_consent_form_and_a_consented_user_is_told_so(tmp_path):
    write_templates(tmp_path, "1", texts_for(None))
    page = synapse_render(tmp_path, "1.html", version="1", public_version=False, user="@a:hs", userhmac="abc",
                          has_consented=False)
    assert '<form method="post" action="consent">' in page
    for name, value in (("v", "1"), ("u", "@a:hs"), ("h", "abc")):
        assert f'name="{name}" value="{value}"' in page
    agreed = synapse_render(tmp_path, "1.html", version="1", public_version=False, user="@a:hs", userhmac="abc",
                            has_consented=True)
    assert "<form" not in agreed and "You have accepted this version" in agreed and "您已同意此版本" in agreed
    assert "Thank you" in synapse_render(tmp_path, "success.html")


def test_agreement_text_is_escaped_for_html_and_for_jinja(tmp_path):
    hostile = "Rule <script>alert(1)</script> & {{ 7 * 7 }} {% for x in y %} {# c #} \"q\""
    write_templates(tmp_path, "1", [AgreementText("en", hostile)])
    page = synapse_render(tmp_path, "1.html", version="1", public_version=True, user="", userhmac=None,
                          has_consented=False)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "49" not in page  # Jinja did not evaluate the text
    assert "&#123;&#123; 7 * 7 &#125;&#125;" in page and "&#123;% for x in y %&#125;" in page


def test_an_operators_own_agreement_file_is_the_only_text(tmp_path):
    own = tmp_path / "ours.md"
    own.write_text("Our own terms, in English only.\n", encoding="utf-8")
    config = _config(tmp_path, {"language": "en", "agreement": {"version": "7", "file": str(own)}})
    out = tmp_path / "templates"
    result = _cli("consent-templates", "--out", str(out), "--config", str(config))
    assert result.returncode == 0, result.stderr
    page = (out / "en" / "7.html").read_text(encoding="utf-8")
    assert "Our own terms, in English only." in page and '<section lang="zh-CN">' not in page
    assert "user_consent.version to '7'" in result.stdout


def test_writing_again_changes_nothing_and_keeps_older_versions(tmp_path):
    first = write_templates(tmp_path, "1", texts_for(None))
    page = tmp_path / "en" / "1.html"
    before = page.stat().st_mtime_ns
    again = write_templates(tmp_path, "1", texts_for(None))
    assert [w.changed for w in first] == [True, True] and [w.changed for w in again] == [False, False]
    assert page.stat().st_mtime_ns == before
    write_templates(tmp_path, "2", texts_for(None))
    assert page.is_file() and (tmp_path / "en" / "2.html").is_file()  # the page agreed to under 1 stays


def test_a_version_that_cannot_be_a_file_name_is_refused_with_the_reason(tmp_path):
    for bad in ("../x", "a/b", "v 1", ".hidden"):
        with pytest.raises(TemplateError, match="cannot name a policy page"):
            write_templates(tmp_path, bad, texts_for(None))
    assert not (tmp_path / "en").exists()


def test_an_unwritable_directory_is_a_clear_error_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    result = _cli("consent-templates", "--out", str(blocker / "templates"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot create") and "Not a directory" in result.stderr
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def test_the_cli_writes_the_default_version_and_says_what_to_configure(tmp_path):
    result = _cli("consent-templates", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path}/en/1.html" in result.stdout and "set user_consent.version to '1'" in result.stdout
    assert "unchanged" in _cli("consent-templates", "--out", str(tmp_path)).stdout


def test_the_page_skeletons_are_package_data():
    data = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"consent/*.html"' in data
    assert (REPO / "bot" / "consent" / "page.html").is_file() and (REPO / "bot" / "consent" / "success.html").is_file()


# -- the migration -------------------------------------------------------------------------------

MIGRATION = next(m for m in MIGRATIONS if "method 'registration'" in m.description)


def test_the_migration_keeps_every_row_and_id_and_admits_registration(tmp_path):
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as conn:
        for migration in MIGRATIONS:
            if migration.version < MIGRATION.version:
                for statement in _split_sql(migration.sql):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {MIGRATION.version - 1}")
        rows = [(3, "@a:hs", "1", "aa", 1000, "$a", "!dm1:hs", "command"),
                (7, "@b:hs", "1", "bb", 2000, "$b", "!dm2:hs", "reaction")]
        conn.executemany("INSERT INTO agreement_acceptances VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO agreement_acceptances VALUES (8, '@c:hs', '1', 'cc', 1, 'consent:@c:hs:1', '', 'registration')")
    conn.close()

    async def upgraded():
        store = await Store.open(path)
        try:
            kept = [tuple(r) for r in await store.db.fetchall("SELECT * FROM agreement_acceptances ORDER BY id")]
            indexes = [r[1] for r in await store.db.fetchall("PRAGMA index_list(agreement_acceptances)")]
            async with store.db.transaction() as conn:
                await conn.execute("INSERT INTO agreement_acceptances (user_id, version, text_sha256, accepted_at,"
                                   " event_id, room_id, method) VALUES ('@c:hs', '1', 'cc', 1, 'consent:@c:hs:1', '', 'registration')")
            with pytest.raises(sqlite3.IntegrityError):
                async with store.db.transaction() as conn:
                    await conn.execute("INSERT INTO agreement_acceptances (user_id, version, text_sha256, accepted_at,"
                                       " event_id, room_id, method) VALUES ('@d:hs', '1', 'dd', 1, '$d', '', 'telepathy')")
            new_id = (await store.db.fetchone("SELECT id FROM agreement_acceptances WHERE event_id = 'consent:@c:hs:1'"))[0]
            return kept, indexes, new_id
        finally:
            await store.close()

    kept, indexes, new_id = asyncio.run(upgraded())
    assert kept == rows
    assert "agreement_acceptances_user" in indexes
    assert new_id == 8  # ids go on after the kept ones


# -- recording an acceptance at registration -----------------------------------------------------

class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
async def consent(store):
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="3")
    document = AgreementDocument(version="3", text="terms", sha256="ab" * 32)
    clock = Clock()
    unmuted: list[str] = []

    async def on_accepted(user_id, key):
        unmuted.append(user_id)

    agreements = AgreementService(store, state, document, clock, on_accepted)
    clock.now = 0
    await agreements.took_effect()  # the bot's first start with version 3 (recorded in kv)
    clock.now = 1_000_000
    records: dict[str, dict | None | Exception] = {}
    calls: list[str] = []

    async def lookup(user_id):
        calls.append(user_id)
        answer = records.get(user_id)
        if isinstance(answer, Exception):
            raise answer
        return answer

    checker = RegistrationConsent(lookup, agreements.accept_at_registration, lambda: document.version,
                                  state.is_local, clock)
    checker.store, checker.state, checker.records, checker.calls, checker.clock = store, state, records, calls, clock
    checker.agreements, checker.unmuted = agreements, unmuted
    return checker


async def test_an_account_that_consented_to_the_current_version_is_recorded_once(consent):
    consent.records[USER] = {"name": USER, "consent_version": "3", "consent_ts": 900_000, "consent_server_notice_sent": None}
    assert await consent.accepted(USER) is True
    assert await consent.accepted(USER) is True
    assert consent.state.has_agreed(USER)
    rows = await consent.store.db.fetchall("SELECT user_id, version, accepted_at, event_id, room_id, method"
                                           " FROM agreement_acceptances")
    assert [tuple(r) for r in rows] == [(USER, "3", 900_000, "consent:@new:hs.test:3", "", "registration")]
    audit = await consent.store.db.fetchall("SELECT created_at, action, details FROM audit_log")
    assert len(audit) == 1 and audit[0][1] == "agreement.accept"
    assert audit[0][0] == 1_000_000 and '"accepted_at":900000' in audit[0][2] and '"method":"registration"' in audit[0][2]
    assert consent.unmuted == [USER]  # room mode's mutes are lifted as for !agree

    # A restart (a new checker, memory from the store) records nothing more.
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="3",
                        accepted=await consent.store.agreements.latest_versions())
    assert state.has_agreed(USER)
    assert not await consent.store.agreements.record_acceptance(
        (await consent.store.agreements.latest_for(USER)))
    assert registration_key(USER, "3") == "consent:@new:hs.test:3"


async def test_no_consent_or_another_version_is_not_an_acceptance_and_is_asked_again_later(consent):
    consent.records[USER] = {"name": USER, "consent_version": None, "consent_ts": None}
    assert await consent.accepted(USER) is False
    assert await consent.accepted(USER) is False
    assert consent.calls == [USER]  # the "no" is kept for a while
    consent.records[USER] = {"name": USER, "consent_version": "2", "consent_ts": 5}  # an older policy
    consent.clock.now += registration.NEGATIVE_FOR_MS
    assert await consent.accepted(USER) is False and consent.calls == [USER, USER]
    consent.records[USER] = {"name": USER, "consent_version": "3", "consent_ts": 6}  # agreed on the consent page
    consent.clock.now += registration.NEGATIVE_FOR_MS
    assert await consent.accepted(USER) is True
    assert tuple(await consent.store.db.fetchone("SELECT COUNT(*) FROM agreement_acceptances")) == (1,)


async def test_a_consent_from_before_this_version_took_effect_or_without_a_time_does_not_count(consent):
    # Synapse's consent form stores any version its `v` field sends (with the user's link `h`), so
    # a user can set "3" before the bot published version 3: only a time since then counts.
    took_effect = 600_000
    consent.agreements.document = AgreementDocument(version="3", text="terms, revised", sha256="cd" * 32)
    consent.clock.now = took_effect
    assert await consent.agreements.took_effect() == took_effect  # a new text under "3" takes effect anew
    consent.clock.now = 1_000_000
    consent.records[USER] = {"consent_version": "3", "consent_ts": took_effect - 90 * 86_400_000}
    assert await consent.accepted(USER) is False
    consent.records[USER] = {"consent_version": "3", "consent_ts": None}
    consent.clock.now += registration.NEGATIVE_FOR_MS
    assert await consent.accepted(USER) is False
    assert not consent.state.has_agreed(USER)
    assert tuple(await consent.store.db.fetchone("SELECT COUNT(*) FROM agreement_acceptances")) == (0,)
    consent.records[USER] = {"consent_version": "3", "consent_ts": took_effect}
    consent.clock.now += registration.NEGATIVE_FOR_MS
    assert await consent.accepted(USER) is True
    assert await consent.agreements.took_effect() == took_effect  # kept, not moved by later calls


async def test_an_unknown_user_a_remote_user_and_a_failed_lookup_are_no(consent):
    assert await consent.accepted("@ghost:hs.test") is False  # 404: no such account
    assert await consent.accepted("@someone:remote.test") is False
    assert "@someone:remote.test" not in consent.calls  # the admin API only knows local accounts
    consent.records[USER] = LookupFailed("TimeoutError")
    assert await consent.accepted(USER) is False
    consent.records[USER] = {"consent_version": "3", "consent_ts": 1}
    consent.clock.now += registration.FAILED_FOR_MS  # a failure is asked again sooner than a "no"
    assert await consent.accepted(USER) is True


async def test_concurrent_questions_about_one_account_make_one_lookup(consent):
    release = asyncio.Event()

    async def slow(user_id):
        consent.calls.append(user_id)
        await release.wait()
        return {"consent_version": "3", "consent_ts": 1}

    consent._lookup = slow
    waiting = [asyncio.ensure_future(consent.accepted(USER)) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*waiting) == [True] * 5
    assert consent.calls == [USER]


async def test_the_user_record_lookup_times_out_as_a_failure():
    async def stalls(request):
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/_synapse/admin/v2/users/{user}", stalls)
    async with TestServer(app) as server:
        records = registration.UserRecords(str(server.make_url("")), "token", timeout_s=0.2)
        try:
            with pytest.raises(LookupFailed, match="TimeoutError"):
                await records.user(USER)
        finally:
            await records.close()


# -- the gate asks before it refuses ---------------------------------------------------------------

TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _event(sender):
    return {"event": {"sender": sender, "room_id": "!room:hs.test", "type": "m.room.message",
                      "content": {"body": "hi"}, "event_id": "$e"}}


async def test_the_gate_lets_through_an_account_that_accepted_at_registration_and_refuses_others(consent):
    consent.records[USER] = {"consent_version": "3", "consent_ts": 1}
    consent.records["@other:hs.test"] = {"consent_version": None}
    prompted: list[str] = []
    gate = Gate(consent.state, Translator("en"), TOKEN, prompted.append)
    gate.consent = consent.accepted
    async with TestClient(TestServer(gate.app())) as client:
        allowed = await client.post("/antispam/check_event_for_spam", json=_event(USER), headers=AUTH)
        assert allowed.status == 200 and await allowed.json() == {}
        refused = await client.post("/antispam/check_event_for_spam", json=_event("@other:hs.test"), headers=AUTH)
        assert refused.status == 403
        body = await refused.json()
        assert body["errcode"] == "M_FORBIDDEN" and "not accepted the service agreement (version 3)" in body["error"]
    assert prompted == ["@other:hs.test"]  # the one who accepted is not sent the agreement in chat
    assert consent.state.has_agreed(USER)


# -- Synapse's version against ours ------------------------------------------------------------------

def test_the_terms_stage_and_the_policy_page_give_synapses_version():
    body = {"session": "s", "flows": [{"stages": ["m.login.terms", "m.login.dummy"]}],
            "params": {"m.login.terms": {"policies": {"privacy_policy": {
                "version": "2", "en": {"name": "Privacy Policy", "url": "http://hs/_matrix/consent?v=2"}}}}}}
    assert terms_version(body) == "2"
    assert terms_version({"flows": [{"stages": ["m.login.dummy"]}], "params": {}}) is None
    assert terms_version(None) is None and terms_version({"params": {"m.login.terms": []}}) is None
    assert page_version('<meta name="rulesbot-agreement-version" content="2026-11">') == "2026-11"
    assert page_version("<html>someone else's policy</html>") is None


def _fake_synapse(register_status=401, terms="2", page=None):
    async def register(request):
        if register_status != 401:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "Registration has been disabled"}, status=403)
        params = {} if terms is None else {"m.login.terms": {"policies": {"privacy_policy": {"version": terms}}}}
        return web.json_response({"session": "s", "flows": [], "params": params}, status=401)

    async def consent_page(request):
        if page is None:
            return web.json_response({"errcode": "M_UNRECOGNIZED"}, status=404)
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_post("/_matrix/client/v3/register", register)
    app.router.add_get("/_matrix/consent", consent_page)
    return TestServer(app)


async def test_probe_reads_the_terms_stage_then_the_policy_page_then_gives_up():
    async with _fake_synapse(terms="2") as server:
        found = await probe(str(server.make_url("")))
        assert (found.version, found.at_registration) == ("2", True)
    page = '<meta name="rulesbot-agreement-version" content="5">'
    async with _fake_synapse(register_status=403, page=page) as server:
        found = await probe(str(server.make_url("")))
        assert (found.version, found.at_registration, found.text_sha256s) == ("5", False, frozenset())
    hashed = page + '<meta name="rulesbot-agreement-sha256" content="ab cd">'
    async with _fake_synapse(terms="5", page=hashed) as server:
        found = await probe(str(server.make_url("")))
        assert (found.version, found.at_registration, found.text_sha256s) == ("5", True, {"ab", "cd"})
    async with _fake_synapse(terms=None) as server:
        assert (await probe(str(server.make_url("")))).version is None
    assert (await probe("http://127.0.0.1:9", timeout_s=1)).version is None  # nobody there: no crash


async def test_a_mismatch_is_logged_warned_and_posted_to_the_management_room_once(database, caplog):
    from bot.config import Settings
    from bot.consent.wiring import Consent
    from bot.matrix.management import ManagementRoom

    store = await database.open()
    try:
        async with _fake_synapse(terms="2") as server:
            settings = Settings(homeserver={"url": str(server.make_url("")).rstrip("/"), "user_id": "@bot:hs.test",
                                            "password": "pw"},
                                gate={"enabled": False}, agreement={"version": "3"}, language="en")
            state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="3")
            agreements = AgreementService(store, state, AgreementDocument("3", "t", "ab"), Clock(), None)
            for _ in range(2):  # two start-ups
                wiring = Consent(settings, state, agreements, ManagementRoom(store.effects), Translator("en"), Clock())
                found = await wiring.check_versions()
        assert found.version == "2"
        assert wiring.warnings == ["Synapse user_consent.version '2' differs from agreement.version '3'"]
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 2 and "user_consent.version is '2'" in errors[0] and "agreement.version is '3'" in errors[0]
        # Without an admin token the start-up says the registration consent cannot be read.
        assert "cannot be read, so every account is asked to agree in chat" in caplog.text
        posts = await store.db.fetchall("SELECT kind, payload FROM effects")
        assert len(posts) == 1 and posts[0][0] == "management"
        assert "version 2 (user_consent.version)" in posts[0][1] and "python -m bot consent-templates" in posts[0][1]
    finally:
        await store.close()


async def test_synapses_record_is_trusted_only_once_synapse_is_seen_asking_for_this_version(consent):
    from bot.config import Settings
    from bot.consent.wiring import Consent
    from bot.matrix.management import ManagementRoom

    consent.records[USER] = {"consent_version": "3", "consent_ts": 1}
    warned: list[str] = []
    ours = consent.agreements.document.sha256
    page_of = '<meta name="rulesbot-agreement-version" content="3"><meta name="rulesbot-agreement-sha256" content="{}">'
    for synapse_version, page, trusted in (
        ("2", page_of.format(ours), False),  # another version
        ("3", None, False),  # no policy page to show which text "3" is
        ("3", page_of.format("cd" * 32), False),  # "3" over another text (an older policy page)
        ("3", page_of.format(f"{'ef' * 32} {ours}"), True),
    ):
        async with _fake_synapse(terms=synapse_version, page=page) as server:
            settings = Settings(homeserver={"url": str(server.make_url("")).rstrip("/"), "user_id": "@bot:hs.test",
                                            "password": "pw", "admin_token": "admin"},
                                gate={"enabled": False}, agreement={"version": "3"}, language="en")
            wiring = Consent(settings, consent.state, consent.agreements, ManagementRoom(consent.store.effects),
                             Translator("en"), consent.clock)
            await wiring._records.close()
            wiring.checker = consent
            wiring.versions_wait_s = 0.05
            assert await wiring.accepted(USER) is False  # the versions not compared within the wait
            wiring.versions_wait_s = 5
            asking = asyncio.ensure_future(wiring.accepted(USER))  # a question at start-up waits for them
            await asyncio.sleep(0.01)
            assert not asking.done()
            await wiring.check_versions()
            assert await asking is trusted
            warned.extend(wiring.warnings)
            assert await wiring.accepted(USER) is trusted
    assert consent.state.has_agreed(USER)
    assert wiring.warnings == []
    assert "Synapse's policy page for version '3' is not the bot's agreement text" in warned
    posts = [row[0] for row in await consent.store.db.fetchall("SELECT payload FROM effects")]
    assert sum("does not show the bot's agreement text" in post for post in posts) == 1  # once per text


# -- helpers -------------------------------------------------------------------------------------

def _config(tmp_path, extra):
    config = {"homeserver": {"url": "http://127.0.0.1:1", "user_id": "@bot:hs.test", "password": "pw"},
              "database": {"path": str(tmp_path / "bot.db")}, "gate": {"enabled": False}, **extra}
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60, cwd=REPO)
