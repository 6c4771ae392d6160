"""Real-name verification's back end (issue 9): keys, the service's rules, decide()'s rule, export
and reveal. The gate route's every error path is in test_identity_gate.py."""

from __future__ import annotations

import os
import stat

import pytest

from bot.config import Settings
from bot.export import collect
from bot.i18n import Translator
from bot.identity.keys import AttributesUnreadable, IdentityKeys, KeyFileError, canonical_subject, read_secret
from bot.identity.reveal import RevealError, reveal
from bot.identity.service import Identity
from bot.policy import Action, ActionKind, PolicyState, Reason, decide
from bot.policy.decide import identity_refusal
from bot.policy.news import NewsRules
from bot.policy.state import PublicAccount

NOW = 1_800_000_000_000
ALICE, BOB, CAROL, DAVE = "@alice:hs.test", "@bob:hs.test", "@carol:hs.test", "@dave:hs.test"
SUBJECT = "110101199003074258"
# The repositories must not care which database holds them (issue 11's PostgreSQL too).


def settings_for(tmp_path, **identity) -> Settings:
    return Settings(homeserver={"url": "http://hs.test", "user_id": "@bot:hs.test", "password": "x"},
                    gate={"enabled": False}, database={"path": str(tmp_path / "bot.db")}, language="en",
                    identity=identity)


def new_state() -> PolicyState:
    return PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1",
                       moderators=frozenset({"@mod:hs.test"}))


@pytest.fixture
async def identity(store, tmp_path):
    state = new_state()
    service = await Identity.open(settings_for(tmp_path, accounts_per_subject=2, keep_attributes=["name"]),
                                  store, state, lambda: NOW)
    return service


async def count(store, table: str) -> int:
    row = await store.db.fetchone(f"SELECT COUNT(*) FROM {table}")
    return row[0]


# -- keys -------------------------------------------------------------------------------------------

def test_the_key_file_is_created_owner_only_and_reused(tmp_path):
    path = tmp_path / "identity.key"
    first = IdentityKeys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    again = IdentityKeys.load_or_create(path)
    assert again.blind_index(SUBJECT) == first.blind_index(SUBJECT)


def test_a_key_file_others_can_read_is_refused_not_used(tmp_path):
    path = tmp_path / "identity.key"
    IdentityKeys.load_or_create(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match=r"readable by others \(mode 0640\); it must be 0600"):
        IdentityKeys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # left as it was: the operator decides


def test_a_key_file_of_the_wrong_size_is_refused_not_replaced(tmp_path):
    path = tmp_path / "identity.key"
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="holds 5 bytes, but an identity key is 32"):
        IdentityKeys.load_or_create(path)
    assert path.read_bytes() == b"short"


def test_reading_keys_never_creates_one(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        IdentityKeys.load(tmp_path / "missing.key")
    assert not (tmp_path / "missing.key").exists()


def test_the_assertion_secret_must_be_private_and_long_enough(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"s" * 40 + b"\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        read_secret(path)
    os.chmod(path, 0o600)
    assert read_secret(path) == b"s" * 40
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="needs at least 32"):
        read_secret(path)


def test_the_blind_index_is_stable_canonical_and_keyed(tmp_path):
    keys = IdentityKeys(b"k" * 32)
    index = keys.blind_index("ab123x")
    assert len(index) == 64 and "ab123x" not in index
    # Spaces around, full-width letters and digits, and letter case are the same person.
    assert keys.blind_index("  ＡＢ１２３Ｘ \n") == index
    assert canonical_subject(" ＡＢ１２３Ｘ ") == "ab123x"
    assert keys.blind_index("ab123y") != index
    assert IdentityKeys(b"j" * 32).blind_index("ab123x") != index  # another operator's key: another index
    assert IdentityKeys(b"k" * 32).blind_index("ab123x") == index  # the same key, a later run: the same


def test_attributes_round_trip_and_fail_when_tampered_or_moved():
    keys = IdentityKeys(b"k" * 32)
    blob = keys.encrypt(ALICE, {"name": "张三"})
    assert "张三".encode() not in blob and keys.decrypt(ALICE, blob) == {"name": "张三"}
    assert keys.encrypt(ALICE, {"name": "张三"}) != blob  # a fresh nonce each time
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(AttributesUnreadable, match="do not decrypt"):
        keys.decrypt(ALICE, bytes(tampered))
    with pytest.raises(AttributesUnreadable):
        keys.decrypt(BOB, blob)  # bound to the account by the associated data
    with pytest.raises(AttributesUnreadable):
        IdentityKeys(b"j" * 32).decrypt(ALICE, blob)


# -- the service ------------------------------------------------------------------------------------

async def verify(identity: Identity, user: str, subject: str | None = SUBJECT, **extra):
    defaults = dict(verifier="assertion" if subject else "manual", method="eid", level="L2", verified_at_ms=NOW - 5,
                    actor="assertion")
    defaults.update(extra)
    return await identity.verify(user_id=user, subject=subject, **defaults)


async def test_a_verification_is_recorded_audited_and_in_memory(identity, store):
    assert not identity.is_verified(ALICE)
    outcome = await verify(identity, ALICE, attributes={"name": "张三", "phone": "13800000000"})
    assert outcome.recorded and outcome.refusal is None
    assert identity.is_verified(ALICE) and identity._state.verified[ALICE] == "L2"
    current = await identity.current(ALICE)
    assert (current.verifier, current.method, current.level, current.verified_at) == ("assertion", "eid", "L2", NOW - 5)
    assert not hasattr(current, "subject_index")
    row = await store.db.fetchone("SELECT subject_index, attributes FROM identity_records")
    assert row[0] == identity._keys.blind_index(SUBJECT)
    # Only the attribute names in keep_attributes are kept: the phone number was dropped.
    assert identity._keys.decrypt(ALICE, row[1]) == {"name": "张三"}
    audit = await store.db.fetchone("SELECT action, target, details FROM audit_log WHERE action = 'identity.verify'")
    assert audit["target"] == ALICE and SUBJECT not in audit["details"] and row[0] not in audit["details"]


async def test_a_manual_verification_has_no_subject_and_nothing_to_blacklist(identity, store):
    outcome = await verify(identity, ALICE, None, actor="@mod:hs.test", note="passport seen at the desk")
    assert outcome.recorded
    row = await store.db.fetchone("SELECT verifier, subject_index, note FROM identity_records")
    assert tuple(row) == ("manual", None, "passport seen at the desk")
    assert (await identity.blacklist(ALICE, case_id=3, actor="@mod:hs.test")).identities == 0
    assert await count(store, "identity_blacklist") == 0


async def test_one_more_account_than_accounts_per_subject_is_refused(identity, store):
    assert (await verify(identity, ALICE)).recorded
    assert (await verify(identity, BOB, "  " + SUBJECT + " ")).recorded  # the same subject, canonically
    assert (await verify(identity, ALICE)).recorded  # verifying an account again is not one more account
    third = await verify(identity, CAROL)
    assert (third.recorded, third.refusal) == (False, "too_many_accounts")
    assert not identity.is_verified(CAROL) and await identity.current(CAROL) is None
    refused = await store.db.fetchone("SELECT details FROM audit_log WHERE action = 'identity.refused'")
    assert "too_many_accounts" in refused[0]
    # An account that is no longer verified leaves room for another.
    assert await identity.unverify(user_id=BOB, actor="@mod:hs.test", reason="duplicate")
    assert (await verify(identity, CAROL)).recorded


async def test_a_blacklisted_subject_is_refused_and_the_moderators_are_told(identity, store):
    assert (await verify(identity, ALICE)).recorded
    assert (await identity.blacklist(ALICE, case_id=42, actor="@mod:hs.test")).identities == 1
    outcome = await verify(identity, DAVE, SUBJECT.lower() + " ")
    assert (outcome.recorded, outcome.refusal) == (False, "blacklisted")
    assert not identity.is_verified(DAVE)
    assert [r.user_id for r in await store.identity.history(DAVE)] == []
    notices = await store.effects.listed(kind="management")
    assert len(notices) == 1
    text = notices[0].payload["text"]
    assert DAVE in text and "case #42" in text and "blacklist" in text and SUBJECT not in text
    # A replay of the same attempt tells them once.
    await verify(identity, DAVE, SUBJECT)
    assert len(await store.effects.listed(kind="management")) == 1


async def test_unverify_revokes_with_an_append_only_row(identity, store):
    assert await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="none") is False
    await verify(identity, ALICE)
    assert await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud suspected")
    assert not identity.is_verified(ALICE) and await identity.current(ALICE) is None
    history = await identity.history(ALICE)
    assert [(h.kind, h.actor, h.note) for h in history] == [
        ("verified", "assertion", None), ("revoked", "@mod:hs.test", "fraud suspected")]
    # The blacklist still finds the subject of a verification revoked since (closure comes after).
    assert (await identity.blacklist(ALICE, case_id=1, actor="@mod:hs.test")).identities == 1


async def test_memory_follows_the_store_when_the_callers_transaction_rolls_back(identity, store):
    with pytest.raises(RuntimeError):
        async with store.db.transaction():
            assert (await verify(identity, ALICE)).recorded
            raise RuntimeError("the command failed after it verified")
    assert not identity.is_verified(ALICE) and await count(store, "identity_records") == 0


async def test_only_local_accounts_are_verified(identity, store):
    outcome = await verify(identity, "@x:elsewhere.test")
    assert (outcome.recorded, outcome.refusal) == (False, "unknown_user")
    assert await count(store, "identity_records") == 0


async def test_start_up_loads_the_verified_accounts(store, tmp_path):
    first = await Identity.open(settings_for(tmp_path), store, new_state(), lambda: NOW)
    await verify(first, ALICE)
    await verify(first, BOB, "other")
    await first.unverify(user_id=BOB, actor="@mod:hs.test", reason="x")
    state = new_state()
    await Identity.open(settings_for(tmp_path, required_for=["post"]), store, state, lambda: NOW)
    assert state.verified == {ALICE: "L2"}
    assert state.identity_required_for == frozenset({"post"})


async def test_how_to_verify_names_the_enabled_methods_or_the_operators_text(store, tmp_path):
    plain = await Identity.open(settings_for(tmp_path), store, new_state(), lambda: NOW)
    text = plain.how_to_verify("en")
    assert "moderator" in text and "@bot:hs.test" in text and "log in with" not in text
    rich = await Identity.open(
        settings_for(tmp_path, sso_providers=["oidc-gov"], assertion_secret_file=str(tmp_path / "s"),
                     service_url="https://id.example.org", instructions={"en": "Go to the front desk."}),
        store, new_state(), lambda: NOW)
    assert rich.how_to_verify("en") == "Go to the front desk."
    zh = rich.how_to_verify("zh-CN")
    assert "oidc-gov" in zh and "https://id.example.org" in zh and "实名认证" in zh


# -- decide() ---------------------------------------------------------------------------------------

def gated(required: set[str], *verified: str) -> PolicyState:
    state = new_state()
    state.identity_required_for = frozenset(required)
    state.identity_instructions = "Verify at https://id.example.org."
    for user in (ALICE, BOB):
        state.record_acceptance(user, "1")
    for user in verified:
        state.verified[user] = "L2"
    return state


POST = Action(ActionKind.SEND_EVENT, ALICE, room_id="!room:hs.test", event_type="m.room.message", body="hi")


@pytest.mark.parametrize("kind, purpose", [
    (ActionKind.SEND_EVENT, "post"), (ActionKind.INVITE, "invite"), (ActionKind.CREATE_ROOM, "create_room"),
])
def test_required_for_refuses_the_unverified_with_how_to_verify(kind, purpose):
    action = Action(kind, ALICE, room_id="!room:hs.test", event_type="m.room.message", body="hi",
                    target_user_id=BOB)
    refused = decide(action, gated({purpose}), NOW)
    assert not refused.allowed and refused.reason is Reason.NOT_VERIFIED
    message = Translator("en").refusal(refused.message_key, refused.params)
    assert "not verified" in message and "Verify at https://id.example.org." in message
    assert decide(action, gated({purpose}, ALICE), NOW).allowed
    assert decide(action, gated(set()), NOW).allowed
    others = {"post", "invite", "create_room"} - {purpose}
    assert decide(action, gated(others), NOW).allowed


def test_the_unverified_keep_their_dm_with_the_bot_and_may_delete_their_posts():
    state = gated({"post"})
    state.set_dm_room(ALICE, "!dm:hs.test")
    assert decide(Action(ActionKind.SEND_EVENT, ALICE, room_id="!dm:hs.test", body="!verify"), state, NOW).allowed
    redaction = Action(ActionKind.SEND_EVENT, ALICE, room_id="!room:hs.test", event_type="m.room.redaction")
    assert decide(redaction, state, NOW).allowed
    with_reason = Action(ActionKind.SEND_EVENT, ALICE, room_id="!room:hs.test", event_type="m.room.redaction",
                         body="see here")
    assert not decide(with_reason, state, NOW).allowed


def test_the_agreement_comes_first_and_remote_accounts_are_not_asked():
    state = gated({"post"})
    newcomer = Action(ActionKind.SEND_EVENT, "@new:hs.test", room_id="!room:hs.test", body="hi")
    assert decide(newcomer, state, NOW).reason is Reason.NOT_AGREED
    remote = Action(ActionKind.SEND_EVENT, "@x:elsewhere.test", source="room", room_id="!room:hs.test", body="hi")
    state.record_acceptance("@x:elsewhere.test", "1")
    assert decide(remote, state, NOW).allowed


def test_an_unverified_public_account_loses_publication_and_its_news_tier():
    publish = Action(ActionKind.PUBLISH_ROOM, ALICE, room_id="!room:hs.test")
    news = Action(ActionKind.SEND_EVENT, ALICE, room_id="!room:hs.test", event_type="m.room.message",
                  body="国务院今天发布通知")
    for required, verified, published, news_allowed in [
        ({"public_account", "news"}, (), False, False),
        ({"public_account", "news"}, (ALICE,), True, True),
        ({"news"}, (), True, False),  # still a public account, without its tier
        (set(), (), True, True),
    ]:
        state = gated(required, *verified)
        state.public_accounts[ALICE] = PublicAccount("media", "A", "F-1", tier="publisher")
        state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
        state.news_scope.add("!room:hs.test")
        assert decide(publish, state, NOW).allowed is published, required
        assert decide(news, state, NOW).allowed is news_allowed, required


def test_identity_refusal_for_applications_says_how_to_verify():
    state = gated({"public_account"})
    refused = identity_refusal(state, ALICE, "public_account")
    assert refused is not None and refused.reason is Reason.NOT_VERIFIED
    message = Translator("zh-CN").refusal(refused.message_key, refused.params)
    assert "实名认证" in message and "https://id.example.org" in message
    assert identity_refusal(state, ALICE, "news") is None  # news not required here
    assert identity_refusal(gated({"public_account"}, ALICE), ALICE, "public_account") is None
    assert identity_refusal(state, "@mod:hs.test", "public_account") is None


# -- export and reveal ------------------------------------------------------------------------------

async def test_the_verifications_export_has_neither_subject_nor_index_nor_attributes(identity, store):
    await verify(identity, ALICE, attributes={"name": "张三"})
    await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="test")
    columns, rows = await collect(store, "verifications")
    assert "subject_index" not in columns and "attributes" not in columns
    assert [(r["kind"], r["attributes_kept"]) for r in rows] == [("verified", 1), ("revoked", 0)]
    assert rows[0]["verified_at"].endswith("Z")
    index = identity._keys.blind_index(SUBJECT)
    for kind in ("verifications", "audit"):
        _, exported = await collect(store, kind)
        assert SUBJECT not in repr(exported) and index not in repr(exported) and "张三" not in repr(exported)


async def test_reveal_is_audited_before_it_shows_anything(identity, store):
    await verify(identity, ALICE, attributes={"name": "张三"})
    found = await reveal(store, identity._keys, user_id=ALICE, reason="police request 2026-17", actor="cli:ops",
                         now_ms=NOW)
    assert [item.attributes for item in found] == [{"name": "张三"}]
    audit = await store.db.fetchone("SELECT actor, target, details FROM audit_log WHERE action = 'identity.reveal'")
    assert (audit["actor"], audit["target"]) == ("cli:ops", ALICE) and "police request 2026-17" in audit["details"]
    with pytest.raises(RevealError, match="no attributes are kept"):
        await reveal(store, identity._keys, user_id=BOB, reason="curious", actor="cli:ops", now_ms=NOW)
    # ... and even that attempt is on record.
    assert (await store.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'identity.reveal'"))[0] == 2
    with pytest.raises(ValueError, match="needs a reason"):
        await reveal(store, identity._keys, user_id=ALICE, reason="  ", actor="cli:ops", now_ms=NOW)


# -- the command line -------------------------------------------------------------------------------

def cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.sqlite_only  # the command line reads the config's SQLite file, not the test's store
async def test_identity_reveal_on_the_command_line(store, tmp_path):
    import yaml

    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://hs.test", "user_id": "@bot:hs.test", "password": "x"},
        "gate": {"enabled": False}, "database": {"path": "bot.db"}, "identity": {"keep_attributes": ["name"]},
    }))
    identity = await Identity.open(settings_for(tmp_path, keep_attributes=["name"]), store, new_state(), lambda: NOW)
    await verify(identity, ALICE, attributes={"name": "张三"})
    missing = cli("identity", "reveal", ALICE, "--config", str(config))
    assert missing.returncode == 2 and "the following arguments are required: --reason" in missing.stderr
    blank = cli("identity", "reveal", ALICE, "--reason", " ", "--config", str(config))
    assert blank.returncode == 2 and "--reason must say why" in blank.stderr
    assert (await store.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'identity.reveal'"))[0] == 0
    shown = cli("identity", "reveal", ALICE, "--reason", "court order 7", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert '{"name": "张三"}' in shown.stdout and "assertion" in shown.stdout
    audit = await store.db.fetchone("SELECT actor, details FROM audit_log WHERE action = 'identity.reveal'")
    assert audit["actor"].startswith("cli:") and "court order 7" in audit["details"]
    os.chmod(tmp_path / "identity.key", 0o644)
    loose = cli("identity", "reveal", ALICE, "--reason", "again", "--config", str(config))
    assert loose.returncode == 2 and "readable by others" in loose.stderr and "张三" not in loose.stdout


# -- single sign-on ---------------------------------------------------------------------------------

class RecordsOf:
    """The admin API's user records (external_ids as Synapse lists them); None: no such account."""

    def __init__(self, records: dict) -> None:
        self.records = records
        self.asked: list[str] = []

    async def user_record(self, user_id: str):
        self.asked.append(user_id)
        return self.records.get(user_id)


async def test_an_external_id_of_a_configured_provider_verifies_and_its_removal_revokes(store, tmp_path):
    state = new_state()
    identity = await Identity.open(settings_for(tmp_path, sso_providers=["corp", "gov"], sso_level="sso-high"),
                                   store, state, lambda: NOW)
    assert await identity.check_sso(ALICE) is None  # no admin API: nothing to ask
    identity.admin = admin = RecordsOf({
        ALICE: {"external_ids": [{"auth_provider": "github", "external_id": "a1"},
                                 {"auth_provider": "gov", "external_id": "G-77"}]},
        BOB: {"external_ids": [{"auth_provider": "github", "external_id": "b1"}]},
    })
    outcome = await identity.check_sso(ALICE)
    assert outcome is not None and outcome.recorded
    current = await identity.current(ALICE)
    assert (current.verifier, current.method, current.level) == ("sso", "gov", "sso-high")
    row = await store.db.fetchone("SELECT subject_index FROM identity_records")
    # The provider is part of the subject: the same ID at another provider is another person.
    assert row[0] == identity._keys.blind_index("gov:G-77", exact=True)
    assert row[0] != identity._keys.blind_index("corp:G-77", exact=True)
    assert await identity.check_sso(ALICE) is None  # unchanged: nothing recorded again
    assert await identity.check_sso(BOB) is None and not identity.is_verified(BOB)  # not a configured provider
    admin.records[ALICE] = {"external_ids": []}
    assert (await identity.check_sso(ALICE)).recorded is False
    assert not identity.is_verified(ALICE)
    assert [(h.kind, h.actor, h.note) for h in await identity.history(ALICE)][-1] == (
        "revoked", "sso", "external ID removed")
    # A manual verification is not the SSO verifier's to revoke.
    await verify(identity, BOB, None, actor="@mod:hs.test")
    assert await identity.check_sso(BOB) is None and identity.is_verified(BOB)


async def test_the_sso_sweep_asks_about_every_account_the_bot_knows(store, tmp_path, monkeypatch):
    monkeypatch.setattr("bot.identity.service.SSO_SWEEP_PAUSE_S", 0)
    state = new_state()
    identity = await Identity.open(settings_for(tmp_path, sso_providers=["corp"]), store, state, lambda: NOW)
    state.record_acceptance(ALICE, "1")
    state.set_dm_room(BOB, "!dm:hs.test")
    identity.admin = admin = RecordsOf({ALICE: {"external_ids": [{"auth_provider": "corp", "external_id": "x"}]}})
    await identity.sweep_sso()
    assert sorted(admin.asked) == [ALICE, BOB] and identity.is_verified(ALICE) and not identity.is_verified(BOB)


@pytest.mark.sqlite_only
def test_the_bot_refuses_to_start_with_a_key_file_others_can_read(tmp_path):
    import yaml

    key = tmp_path / "identity.key"
    key.write_bytes(b"k" * 32)
    os.chmod(key, 0o644)
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://127.0.0.1:9", "user_id": "@bot:hs.test", "password": "x"},
        "gate": {"enabled": False}, "database": {"path": "bot.db"},
    }))
    started = cli("run", "--config", str(config))
    assert started.returncode == 2, started.stderr
    assert f"error: {key} is readable by others (mode 0644); it must be 0600" in started.stderr
    assert key.read_bytes() == b"k" * 32
