"""Issue 9 review breaks in real-name verification: the key file's loss, replacement and creation
race; subject spellings and the blind index; refused assertions replayed; odd verification times;
chunked bodies; identity reveal's actor and reason; SQL parameters in DEBUG logs; full-width
category names."""

from __future__ import annotations

import logging
import os
import pwd
import threading
import time

import pytest

from bot.config import PublicAccountsConfig
from bot.identity import keys as keys_module
from bot.identity.keys import IdentityKeys, KeyFileError, canonical_subject
from bot.identity.reveal import os_actor, reveal
from bot.identity.service import Identity
from bot.store.identity import KEY_FINGERPRINT
from tests.unit.test_identity import ALICE, BOB, NOW, SUBJECT, new_state, settings_for, verify
from tests.unit.test_identity_gate import NOW_S, assertion, gate, post, signed, snapshot  # noqa: F401 (fixture)



# -- #2: a lost or other key file is refused while records need the original -----------------------

async def open_identity(store, tmp_path, **identity) -> Identity:
    return await Identity.open(settings_for(tmp_path, **identity), store, new_state(), lambda: NOW)


async def test_a_lost_key_file_is_not_replaced_while_records_were_written_under_it(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    await verify(identity, ALICE)
    await identity.blacklist(ALICE, case_id=1, actor="@mod:hs.test")
    await store.delete(KEY_FINGERPRINT)  # a database from before the fingerprint: the records alone tell
    (tmp_path / "identity.key").unlink()
    with pytest.raises(KeyFileError, match=r"identity.key does not exist, but this database holds identity records"
                                           r" written under a key: restore that key file"):
        await open_identity(store, tmp_path)
    assert not (tmp_path / "identity.key").exists()  # no new key that would let the blacklisted in


async def test_a_lost_key_file_is_refused_by_the_recorded_fingerprint_alone(store, tmp_path):
    await open_identity(store, tmp_path)  # first start: the key is made and its fingerprint kept
    (tmp_path / "identity.key").unlink()
    with pytest.raises(KeyFileError, match="does not exist, but this database holds identity records"):
        await open_identity(store, tmp_path)


async def test_another_key_file_is_refused_by_its_fingerprint(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    await verify(identity, ALICE)
    # A standby configured with another key file (say, one made by its own earlier start).
    IdentityKeys.load_or_create(tmp_path / "other.key")
    with pytest.raises(KeyFileError, match=r"other.key is not the identity key this database's records were written"
                                           r" under \(its fingerprint differs\)"):
        await open_identity(store, tmp_path, key_file=str(tmp_path / "other.key"))
    again = await open_identity(store, tmp_path)  # the right key still opens
    assert again._keys.blind_index(SUBJECT) == identity._keys.blind_index(SUBJECT)


async def test_a_database_with_nothing_recorded_gets_a_new_key_and_its_fingerprint(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    assert (tmp_path / "identity.key").exists()
    assert await store.get(KEY_FINGERPRINT) == identity._keys.fingerprint
    assert identity._keys.fingerprint not in (tmp_path / "identity.key").read_bytes().hex()


# -- #17: the key file appears whole or not at all --------------------------------------------------

def test_two_starters_at_once_get_the_same_whole_key(tmp_path, monkeypatch):
    real_write = os.write

    def slow_write(fd, data):  # widens the window between creating the file and filling it
        time.sleep(0.3)
        return real_write(fd, data)

    monkeypatch.setattr(keys_module.os, "write", slow_write)
    path = tmp_path / "identity.key"
    first: list[IdentityKeys] = []
    creator = threading.Thread(target=lambda: first.append(IdentityKeys.load_or_create(path)))
    creator.start()
    time.sleep(0.05)
    second = IdentityKeys.load_or_create(path)
    creator.join()
    assert second.fingerprint == first[0].fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]  # no temporary file left


def test_a_crash_while_writing_the_key_leaves_no_file_that_blocks_the_next_start(tmp_path, monkeypatch):
    def crash(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys_module.os, "write", crash)
    with pytest.raises(OSError, match="No space left"):
        IdentityKeys.load_or_create(tmp_path / "identity.key")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert len(IdentityKeys.load_or_create(tmp_path / "identity.key").fingerprint) == 32


# -- #5: one ID number, one index; SSO subjects as they are -----------------------------------------

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
SPELLINGS = {
    "zero-width space": SUBJECT[:6] + "\u200b" + SUBJECT[6:],
    "soft hyphen": SUBJECT[:6] + "\u00ad" + SUBJECT[6:],
    "word joiner": SUBJECT + "\u2060",
    "byte order mark": "\ufeff" + SUBJECT,
    "inner spaces": f"{SUBJECT[:6]} {SUBJECT[6:14]}\u3000{SUBJECT[14:]}",
    "hyphens": f"{SUBJECT[:6]}-{SUBJECT[6:14]}-{SUBJECT[14:]}",
    "dashes and minus": f"{SUBJECT[:6]}\u2013{SUBJECT[6:14]}\u2212{SUBJECT[14:]}",
    "Arabic-Indic digits": SUBJECT.translate(ARABIC_INDIC),
    "full-width digits": "".join(chr(ord(c) + 0xFEE0) for c in SUBJECT),
}


@pytest.mark.parametrize("spelling", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_every_spelling_of_an_id_number_has_its_index(spelling):
    keys = IdentityKeys(b"k" * 32)
    assert canonical_subject(spelling) == SUBJECT
    assert keys.blind_index(spelling) == keys.blind_index(SUBJECT)
    assert keys.blind_index("11010119900307425x") == keys.blind_index("11010119900307425X")


async def test_a_blacklisted_id_number_with_an_invisible_character_inside_is_still_refused(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    await verify(identity, ALICE)
    await identity.blacklist(ALICE, case_id=3, actor="@mod:hs.test")
    outcome = await verify(identity, BOB, subject=SPELLINGS["zero-width space"])
    assert (outcome.recorded, outcome.refusal) == (False, "blacklisted")


async def test_sso_subjects_differing_in_case_are_two_people(store, tmp_path):
    keys = IdentityKeys(b"k" * 32)
    assert keys.blind_index("oidc:AbC-123", exact=True) != keys.blind_index("oidc:abc123", exact=True)
    identity = await open_identity(store, tmp_path, accounts_per_subject=1)
    sso = dict(verifier="sso", method="oidc", actor="sso")
    assert (await verify(identity, ALICE, subject="oidc:AbC123", **sso)).recorded
    assert (await verify(identity, BOB, subject="oidc:abc123", **sso)).recorded


async def test_a_subject_of_invisible_characters_only_is_refused(gate):
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(subject="\u200b\u00ad-\u2060")))
    assert (status, body["errcode"], body["error"]) == (400, "M_INVALID_PARAM", "subject has no letters or digits")
    assert await snapshot(gate.store) == before


# -- #10: a refused assertion is spent ---------------------------------------------------------------

async def test_a_refused_assertion_cannot_be_replayed_even_once_a_slot_frees(gate):
    assert (await post(gate, *signed(assertion())))[0] == 200
    gate.identity._state.record_acceptance(BOB, "1")
    refused = signed(assertion(user_id=BOB, assertion_id="bob-1"))
    status, body = await post(gate, *refused)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN") and "most verified accounts" in body["error"]
    first_answer = (status, body)
    after_refusal = await snapshot(gate.store)
    for _ in range(3):  # the same request sent again: its first answer (review 11b), nothing more
        assert await post(gate, *refused) == first_answer
    assert await snapshot(gate.store) == after_refusal  # no audit row per replay
    await gate.identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="closed")
    gate.clock["now"] = NOW + 60_000
    after_revocation = await snapshot(gate.store)
    assert await post(gate, *refused) == first_answer  # not judged again now that a slot is free
    # Under another signature (a new timestamp) the same assertion_id is a replay.
    status, body = await post(gate, *signed(assertion(user_id=BOB, assertion_id="bob-1"), timestamp=NOW_S + 30))
    assert (status, body["errcode"], body["error"]) == (
        401, "M_UNAUTHORIZED", "assertion already used: each signed assertion is accepted once")
    assert await snapshot(gate.store) == after_revocation
    assert not gate.identity.is_verified(BOB)


async def test_a_refused_assertion_raced_in_twice_is_refused_once_and_audited_once(store, tmp_path):
    identity = await open_identity(store, tmp_path, accounts_per_subject=1)
    await verify(identity, ALICE)
    spent = dict(assertion_key="id:bob-1", assertion_expires_at=NOW + 300_001)
    assert (await verify(identity, BOB, **spent)).refusal == "too_many_accounts"
    # The second copy passed the endpoint's used-check before the first committed.
    assert (await verify(identity, BOB, **spent)).refusal == "replayed"
    row = await store.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'identity.refused'")
    assert row[0] == 1


# -- #18: verification times before 2000 ------------------------------------------------------------

ODD_TIMES = {"ISO year 1": "0001-01-01T00:00:00Z", "ISO 1900": "1900-01-01T00:00:00+00:00",
             "ISO 1999": "1999-12-31T23:59:59Z", "negative ISO": "1969-12-31T23:59:59Z", "ms 1": 1}


@pytest.mark.parametrize("verified_at", ODD_TIMES.values(), ids=ODD_TIMES.keys())
async def test_a_verification_time_before_2000_is_refused(gate, verified_at):
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(verified_at=verified_at)))
    assert (status, body["errcode"], body["error"]) == (
        400, "M_INVALID_PARAM", "verified_at must be ms since the epoch or an ISO 8601 time, not before 2000-01-01")
    assert await snapshot(gate.store) == before


async def test_a_verification_time_of_2000_01_01_is_accepted(gate):
    status, _ = await post(gate, *signed(assertion(verified_at="2000-01-01T00:00:00Z")))
    assert status == 200
    assert (await gate.store.identity.current(ALICE)).verified_at == 946_684_800_000


# -- #20: a chunked body ------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces", [2, 32], ids=["128 KiB", "2 MiB"])
async def test_a_chunked_body_over_64_kib_is_413_with_an_errcode(gate, pieces):
    async def chunks():
        for _ in range(pieces):
            yield b"x" * 65536

    raw, headers = signed(b"")
    resp = await gate.post("/identity/v1/verifications", data=chunks(), headers=headers)
    assert resp.status == 413 and resp.content_type == "application/json"
    assert await resp.json() == {"errcode": "M_TOO_LARGE", "error": "request body is larger than 64 KiB"}


# -- #8: identity reveal's actor and reason -----------------------------------------------------------

def test_the_reveal_actor_is_the_real_os_account_not_the_environment(monkeypatch):
    real = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert os_actor() == f"cli:{real}"
    monkeypatch.setenv("SUDO_USER", "ops-alice")
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert os_actor() == f"cli:{pwd.getpwuid(0).pw_name} (SUDO_USER=ops-alice, claimed)"


INVISIBLE_REASONS = {"zero-width space": "\u200b", "braille blank and Hangul filler": "\u2800\u3164",
                     "soft hyphen and BOM": " \u00ad\ufeff "}


@pytest.mark.parametrize("reason", INVISIBLE_REASONS.values(), ids=INVISIBLE_REASONS.keys())
async def test_a_reveal_with_an_invisible_reason_shows_and_records_nothing(store, tmp_path, reason):
    identity = await open_identity(store, tmp_path, keep_attributes=["name"])
    await verify(identity, ALICE, attributes={"name": "张三"})
    with pytest.raises(ValueError, match="a reveal needs a reason a reader can see"):
        await reveal(store, identity._keys, user_id=ALICE, reason=reason, actor="cli:ops", now_ms=NOW)
    assert (await store.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'identity.reveal'"))[0] == 0


def test_the_command_line_refuses_an_invisible_reason(capsys, tmp_path):
    from bot.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["identity", "reveal", ALICE, "--reason", "\u2800\u3164", "--config", str(tmp_path / "none.yaml")])
    assert exited.value.code == 2
    assert "--reason must say why the attributes are read, in visible characters" in capsys.readouterr().err


# -- #19: no SQL parameters in DEBUG logs -------------------------------------------------------------

@pytest.mark.sqlite_only  # aiosqlite's logger
async def test_debug_logging_does_not_log_sql_parameters(store, caplog, monkeypatch):
    from bot import __main__ as cli_main

    monkeypatch.setattr(cli_main.faulthandler, "register", lambda *args, **kwargs: None)
    aiosqlite_logger = logging.getLogger("aiosqlite")
    monkeypatch.setattr(aiosqlite_logger, "level", aiosqlite_logger.level)  # restored after the test
    caplog.set_level(logging.DEBUG)
    cli_main._logging("DEBUG")
    await store.put("probe", "0f1e2d3c-blind-index-like-value")
    assert "0f1e2d3c-blind-index-like-value" not in caplog.text
    assert aiosqlite_logger.getEffectiveLevel() >= logging.INFO


# -- #16: full-width category names ------------------------------------------------------------------

def test_full_width_category_words_are_their_categories():
    config = PublicAccountsConfig()
    assert config.category_key("ＥＮＴＥＲＰＲＩＳＥ") == "enterprise"
    assert config.category_key("ｓｅｌｆ－ｍｅｄｉａ") == "self-media"
    with pytest.raises(ValueError, match="category_names: 'ｎｅｗｓ' names both 'news' and 'media'"):
        PublicAccountsConfig(categories=["news", "enterprise", "media"], category_names={"media": "ｎｅｗｓ"})
