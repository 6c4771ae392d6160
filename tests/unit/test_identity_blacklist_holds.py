"""Review 9's breaks of the identity blacklist and of single sign-on (#1, #3, #4, #9, #11, #12, #15):
every subject of a closed account is blacklisted, the same person's other accounts lose their
verification, SSO leaves other verifiers' verifications alone and does not undo a moderator's
revocation, a blacklisted account is told once, lifting the closure lifts its blacklist entries,
and a moderator's note cannot carry an ID number into the exports."""

from __future__ import annotations

import re

import pytest

from bot.export import collect
from bot.identity.service import Blacklisted, Identity
from tests.unit.test_commands import MOD, NEWBIE, World
from tests.unit.test_identity import (ALICE, BOB, CAROL, DAVE, NOW, SUBJECT, RecordsOf, count, new_state,
                                      settings_for, verify)
from tests.unit.test_identity_commands import Admin, audit_actions, known, rows

EVE = "@eve:hs.test"
OTHER = "E12345678-passport"


def sso(provider: str, external_id: str) -> dict:
    return {"external_ids": [{"auth_provider": provider, "external_id": external_id}]}


async def open_identity(store, tmp_path, clock=lambda: NOW, **config) -> Identity:
    return await Identity.open(settings_for(tmp_path, **config), store, new_state(), clock)


# -- the service: both backends ------------------------------------------------------------------------

async def test_the_blacklist_takes_every_subject_the_account_was_ever_verified_with(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    assert (await verify(identity, ALICE)).recorded
    await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="papers expired")
    assert (await verify(identity, ALICE, OTHER)).recorded  # verified again, another document
    assert await identity.blacklist(ALICE, case_id=11, actor="@mod:hs.test") == Blacklisted(2)
    for user, subject in ((DAVE, SUBJECT), (EVE, OTHER)):
        outcome = await verify(identity, user, subject)
        assert (outcome.recorded, outcome.refusal) == (False, "blacklisted"), subject
    audit = await store.db.fetchone("SELECT details FROM audit_log WHERE action = 'identity.blacklist'")
    assert audit[0] == '{"case":11,"identities":2}'


async def test_blacklisting_revokes_the_same_persons_other_accounts_with_audit_records(store, tmp_path):
    identity = await open_identity(store, tmp_path)
    for user in (ALICE, BOB, CAROL):
        assert (await verify(identity, user)).recorded
    assert (await verify(identity, DAVE, "someone else")).recorded
    result = await identity.blacklist(ALICE, case_id=9, actor="@mod:hs.test")
    assert result == Blacklisted(1, (BOB, CAROL))
    assert not identity.is_verified(BOB) and not identity.is_verified(CAROL)
    # The closed account's own records stay as they are (lifting its closure leaves it so); others untouched.
    assert identity.is_verified(ALICE) and identity.is_verified(DAVE)
    revoked = await store.db.fetchall(
        "SELECT target, actor, details FROM audit_log WHERE action = 'identity.unverify' ORDER BY id")
    assert [(r[0], r[1]) for r in revoked] == [(BOB, "@mod:hs.test"), (CAROL, "@mod:hs.test")]
    assert all("identity blacklisted with the closure of case #9" in r[2] for r in revoked)


async def test_single_sign_on_leaves_an_eid_verification_alone_and_its_slot_taken(store, tmp_path):
    identity = await open_identity(store, tmp_path, accounts_per_subject=1, sso_providers=["corp"])
    identity.admin = RecordsOf({ALICE: sso("corp", "alice")})
    assert (await verify(identity, ALICE, level="L3")).recorded
    assert await identity.check_sso(ALICE) is None  # the user's !verify, or the sweep
    current = await identity.current(ALICE)
    assert (current.verifier, current.level) == ("assertion", "L3")
    again = await verify(identity, BOB)
    assert (again.recorded, again.refusal) == (False, "too_many_accounts")


async def test_a_verification_chain_holds_the_slot_of_each_of_its_subjects(store, tmp_path):
    identity = await open_identity(store, tmp_path, accounts_per_subject=1, sso_providers=["corp"])
    identity.admin = RecordsOf({ALICE: sso("corp", "alice"), BOB: sso("corp", "alice")})
    assert (await identity.check_sso(ALICE)).recorded
    assert (await verify(identity, ALICE)).recorded  # then the identity service, another subject
    refused = await identity.check_sso(BOB)  # the SSO subject is still ALICE's while she stays verified
    assert (refused.recorded, refused.refusal) == (False, "too_many_accounts")
    await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="moved")
    assert (await identity.check_sso(BOB)).recorded


async def test_a_moderators_revocation_holds_against_single_sign_on_until_a_moderator_rechecks(store, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setattr("bot.identity.service.SSO_SWEEP_PAUSE_S", 0)
    identity = await open_identity(store, tmp_path, sso_providers=["gov"])
    identity.admin = admin = RecordsOf({ALICE: sso("gov", "G-1")})
    assert (await identity.check_sso(ALICE)).recorded
    assert await identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud suspected")
    held = await identity.check_sso(ALICE)  # the user's own !verify
    assert (held.recorded, held.refusal) == (False, "held")
    await identity.sweep_sso()
    assert not identity.is_verified(ALICE) and await count(store, "identity_records") == 2
    rechecked = await identity.check_sso(ALICE, moderator="@mod:hs.test")
    assert rechecked.recorded and identity.is_verified(ALICE)
    assert (await identity.history(ALICE))[-1].actor == "@mod:hs.test"
    # The SSO verifier's own revocation (the external ID was removed) holds nothing back.
    admin.records[ALICE] = {"external_ids": []}
    assert (await identity.check_sso(ALICE)).refusal is None
    admin.records[ALICE] = sso("gov", "G-1")
    assert (await identity.check_sso(ALICE)).recorded


async def test_a_blacklisted_account_is_told_and_audited_once_per_blacklist_entry(store, tmp_path):
    clock = {"now": NOW}
    identity = await open_identity(store, tmp_path, clock=lambda: clock["now"], sso_providers=["gov"])
    identity.admin = RecordsOf({ALICE: sso("gov", "G-1"), BOB: sso("gov", "G-1")})
    assert (await identity.check_sso(ALICE)).recorded
    await identity.blacklist(ALICE, case_id=5, actor="@mod:hs.test")
    for _ in range(10):  # ten !verify messages from BOB a second apart, or ten sweeps
        clock["now"] += 1000
        outcome = await identity.check_sso(BOB)
        assert (outcome.recorded, outcome.refusal) == (False, "blacklisted")
    assert len(await store.effects.listed(kind="management")) == 1
    assert (await store.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'identity.refused'"))[0] == 1
    # Another account of the same blacklisted person is told of too, once.
    identity.admin.records[CAROL] = sso("gov", "G-1")
    await identity.check_sso(CAROL)
    await identity.check_sso(CAROL)
    notices = await store.effects.listed(kind="management")
    assert len(notices) == 2 and CAROL in notices[1].payload["text"]


# -- in chat (SQLite: the world reads the database file) -------------------------------------------------

async def refused_with_its_dry_run(world, body: str, expected: str) -> None:
    """``body`` and its dry run both answer ``expected`` and change nothing."""
    before = await world.everything()
    assert await world.send(body) == expected
    answered = [world.last_event]
    assert await world.send(body + " --dry-run") == expected
    answered.append(world.last_event)
    assert await world.everything(answered=answered) == before


async def close_with_blacklist(world, user) -> str:
    code = re.search(r"!confirm (\w+)", await world.send(f"!close {user} fraud --blacklist")).group(1)
    return await world.send(f"!confirm {code}")


async def test_confirming_a_blacklist_names_the_accounts_it_revoked(store, tmp_path):
    world = World(store, tmp_path)
    for user in ("@bob:hs", "@bob2:hs"):
        await world.identity.verify(user_id=user, verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                    verified_at_ms=world.now, actor="@idp:hs")
    answer = await close_with_blacklist(world, "@bob:hs")
    assert answer.endswith("\nThe same identity also verified @bob2:hs: their verifications were revoked (a "
                           "moderator's !verify <user> re-checks one later).")
    assert "@bob2:hs" not in world.state.verified


async def test_a_revocation_sticks_against_the_users_own_verify_and_a_moderator_rechecks(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": [], "sso_providers": ["corp"]})
    world.identity.admin = Admin({NEWBIE: [("corp", "n-1")]})
    assert (await world.send("!verify", sender=NEWBIE)).startswith("Your sign-in with corp verifies you")
    assert await world.send(f"!unverify {NEWBIE} fraud suspected") == (
        "@newbie:hs is no longer verified (the single sign-on verification was revoked). Reason: fraud suspected "
        "Its single sign-on will not verify it again until a moderator sends !verify @newbie:hs.")
    answer = await world.send("!verify", sender=NEWBIE)
    assert answer.startswith("Your sign-in does not verify this account again: a moderator revoked its verification. "
                             "Ask a moderator in your direct chat with the bot to review it.\n"
                             "Your real identity is not verified yet."), answer
    assert NEWBIE not in world.state.verified
    dry = await world.send(f"!verify {NEWBIE} --dry-run")
    assert "ask the homeserver whether @newbie:hs's single sign-on verifies it" in dry
    assert NEWBIE not in world.state.verified
    assert await world.send(f"!verify {NEWBIE}") == (
        "@newbie:hs is verified again by single sign-on (method corp, level sso); the earlier revocation no longer "
        "holds.")
    assert world.state.verified == {NEWBIE: "sso"}
    assert (await world.identity.history(NEWBIE))[-1].actor == MOD


async def test_a_recheck_without_single_sign_on_says_how_to_record_a_manual_check(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    await refused_with_its_dry_run(world, f"!verify {NEWBIE}", (
        "This server does not verify by single sign-on (identity.sso_providers, or no admin token), so there is "
        "nothing to ask again for @newbie:hs. Record a manual check with !verify <user> <method> <note…>."))


async def test_lifting_a_blacklisting_closure_lifts_its_blacklist_entries(store, tmp_path):
    world = World(store, tmp_path)
    await world.identity.verify(user_id="@bob:hs", verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=world.now, actor="@idp:hs")
    await close_with_blacklist(world, "@bob:hs")
    refused = await world.identity.verify(user_id="@bob2:hs", verifier="assertion", method="eid", level="high",
                                          subject=SUBJECT, verified_at_ms=world.now, actor="@idp:hs")
    assert refused.refusal == "blacklisted"
    world.now += 60_000
    before = await world.everything()
    assert ("• lift the identity blacklist entries case #1 made for @bob:hs (audited): those identities may verify "
            "again") in await world.send("!lift 1 appeal upheld --dry-run")
    assert await world.everything(answered=[world.last_event]) == before
    await world.send("!lift 1 appeal upheld")
    (entry,) = await rows(world, "identity_blacklist")
    assert entry[-2:] == (world.now, MOD)  # kept, marked lifted
    assert (await audit_actions(world)).count("identity.blacklist_lift") == 1
    assert any(name == "post" and args[0].startswith(
        "Case #1 was lifted, and with it the identity blacklist entries it made for @bob:hs: those identities may "
        "verify accounts again.") for name, args in world.writes)
    outcome = await world.identity.verify(user_id="@bob2:hs", verifier="assertion", method="eid", level="high",
                                          subject=SUBJECT, verified_at_ms=world.now, actor="@idp:hs")
    assert outcome.recorded


ID_LIKE = [
    f"ID card {SUBJECT} seen",
    "ID card 110101\u200b199003074258 seen",  # a zero-width space inside
    "ID 110101 19900307 4258",  # grouped with spaces
    "ID １１０１０１１９９００３０７４２５８",  # full-width digits
    "passport E12345678 seen",
    "phone 138-0013-8000-1234 confirmed",
]


@pytest.mark.parametrize("note", ID_LIKE)
async def test_a_manual_check_whose_note_holds_an_id_number_is_refused(store, tmp_path, note):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    await refused_with_its_dry_run(world, f"!verify {NEWBIE} id-card {note}", (
        "Nothing was recorded: the note holds a run of digits that looks like an ID, passport or phone number. "
        "Never type a person's identity into chat: the note is kept in clear in the history, the audit log and "
        "every export. Describe what you checked instead (e.g. \"ID card seen in person\"), and write dates "
        "with separators (2026-11-29)."))
    assert all(SUBJECT not in str(r) for r in await collect(store, "audit", None, None))


async def test_the_method_and_an_unverify_reason_are_checked_too_and_dates_pass(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    assert (await world.send(f"!verify {NEWBIE} {SUBJECT} seen")).startswith(
        "Nothing was recorded: the method holds a run of digits")
    assert await world.send(f"!verify {NEWBIE} id-card seen in person 2026-11-29 14:00, ticket 4521") == (
        "@newbie:hs is now verified: manual check, method id-card, level manual, recorded at 2027-01-15 08:00 UTC.")
    assert (await world.send(f"!unverify {NEWBIE} card {SUBJECT} was forged")).startswith(
        "Nothing was recorded: the reason holds a run of digits")
    assert world.state.verified == {NEWBIE: "manual"}


async def test_an_upheld_appeal_of_a_blacklisting_closure_lifts_its_blacklist_entries(store, tmp_path):
    world = World(store, tmp_path)
    await world.identity.verify(user_id="@bob:hs", verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=world.now, actor="@idp:hs")
    await close_with_blacklist(world, "@bob:hs")
    await world.send("!appeal 1 it was not me", sender="@bob:hs")
    assert "• lift the identity blacklist entries case #1 made for @bob:hs" in await world.send(
        "!grant 1 upheld --dry-run")
    await world.send("!grant 1 upheld")
    assert [r[-1] for r in await rows(world, "identity_blacklist")] == [MOD]
    outcome = await world.identity.verify(user_id="@bob2:hs", verifier="assertion", method="eid", level="high",
                                          subject=SUBJECT, verified_at_ms=world.now, actor="@idp:hs")
    assert outcome.recorded


async def test_the_sweep_audits_an_sso_refusal_for_too_many_accounts_once(store, tmp_path, monkeypatch):
    monkeypatch.setattr("bot.identity.service.SSO_SWEEP_PAUSE_S", 0)
    identity = await open_identity(store, tmp_path, accounts_per_subject=1, sso_providers=["gov"])
    identity.admin = RecordsOf({ALICE: sso("gov", "G-1"), BOB: sso("gov", "G-1")})
    identity._state.record_acceptance(BOB, "1")
    assert (await identity.check_sso(ALICE)).recorded
    for _ in range(5):  # five hourly sweeps
        await identity.sweep_sso()
    refused = "SELECT COUNT(*) FROM audit_log WHERE action = 'identity.refused'"
    assert (await store.db.fetchone(refused))[0] == 1
    # A verification of BOB and its revocation (by the SSO verifier: no moderator's hold) are news: the
    # next refusal is audited again.
    assert (await verify(identity, BOB, None, actor="@mod:hs.test")).recorded
    await identity.unverify(user_id=BOB, actor="@mod:hs.test", reason="duplicate", verifier="sso")
    await identity.sweep_sso()
    await identity.sweep_sso()
    assert (await store.db.fetchone(refused))[0] == 2
