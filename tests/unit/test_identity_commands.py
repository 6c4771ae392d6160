"""Real names in chat (issue 9): !verify, !unverify, and what !status, !whois, !history,
!close --blacklist, !apply and !approve say and do about verification.

The services are the real ones over a real database (tests.unit.test_commands.World); only Matrix
and the admin API are fakes. Every refusal is asserted word for word, with nothing recorded."""

import re

import pytest

from bot.commands.agreement import help_
from bot.i18n import Translator
from tests.unit import dbview
from tests.unit.test_commands import BOB, MOD, NEWBIE, PUB, T0, World

SUBJECT = "110101199001011234"  # a subject in clear: must never be shown or stored
STRANGER = "@stranger:hs"


class Admin:
    """The admin API's user records: external IDs of single sign-on providers."""

    def __init__(self, external=None):
        self.external = external or {}

    async def user_record(self, user_id):
        ids = [{"auth_provider": p, "external_id": e} for p, e in self.external.get(user_id, [])]
        return {"name": user_id, "deactivated": False, "external_ids": ids}


async def known(world, *users):
    for user in users:
        await world.send("!agree", sender=user)  # the bot now knows the account (no admin API here)


async def rows(world, table):
    return [tuple(r) for r in await world.store.db.fetchall(f"SELECT * FROM {table} ORDER BY 1")]


async def audit_actions(world):
    return [r[0] for r in await world.store.db.fetchall("SELECT action FROM audit_log ORDER BY id")]


# -- !verify alone -----------------------------------------------------------------------------------

async def test_verify_alone_says_how_to_verify_and_then_shows_the_verification(store, tmp_path):
    world = World(store, tmp_path)
    answer = await world.send("!verify", sender=NEWBIE)
    assert answer == "Your real identity is not verified yet.\n" + world.identity.how_to_verify("en")
    assert "ask a moderator in your direct chat with @bot:hs" in answer
    await known(world, NEWBIE)
    await world.send(f"!verify {NEWBIE} id-card seen in person")
    assert await world.send("!实名认证", sender=NEWBIE) == (
        "Your real identity is verified (manual check, method id-card, level manual, since 2027-01-15 08:00 UTC). "
        "Other users never see it; your display name stays your own.")


async def test_verify_alone_asks_single_sign_on_again_and_says_the_result(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": [], "sso_providers": ["corp"]})
    world.identity.admin = admin = Admin()
    assert (await world.send("!verify", sender=NEWBIE)).startswith("Your real identity is not verified yet.\n")
    assert NEWBIE not in world.state.verified
    admin.external[NEWBIE] = [("corp", SUBJECT)]
    answer = await world.send("!verify", sender=NEWBIE)
    assert answer.startswith("Your sign-in with corp verifies you: recorded now (level sso).\n"
                             "Your real identity is verified (single sign-on, method corp, level sso"), answer
    assert world.state.verified[NEWBIE] == "sso" and SUBJECT not in answer
    admin.external[NEWBIE] = []
    answer = await world.send("!verify", sender=NEWBIE)
    assert answer.startswith("Your single sign-on verification has ended: your account is no longer linked to that "
                             "sign-in.\nYour real identity is not verified yet.\n"), answer
    assert NEWBIE not in world.state.verified


async def test_a_blacklisted_sign_in_is_refused_in_the_answer_and_the_moderators_are_told(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": [], "sso_providers": ["corp"]})
    world.identity.admin = Admin({BOB: [("corp", SUBJECT)], NEWBIE: [("corp", SUBJECT)]})
    await world.send("!verify", sender=BOB)
    code = re.search(r"!confirm (\w+)", await world.send(f"!close {BOB} fraud --blacklist")).group(1)
    await world.send(f"!confirm {code}")
    answer = await world.send("!verify", sender=NEWBIE)
    assert answer.startswith("Your sign-in cannot verify this account: that identity is on the blacklist after an "
                             "account closure. The moderators have been told.\nYour real identity is not verified yet."
                             ), answer
    notices = [args[0] for name, args in world.writes if name == "post" and "Identity blacklist" in args[0]]
    assert notices == ["Identity blacklist: @newbie:hs was just verified (sso, corp) with an identity that is on the "
                       "blacklist (case #1). The verification was refused; the account is not verified."]
    assert "identity.refused" in await audit_actions(world)  # answered, not raised: the audit row stays
    assert NEWBIE not in world.state.verified


async def test_a_sign_in_that_already_verifies_the_most_accounts_allowed_is_refused(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": [], "sso_providers": ["corp"], "accounts_per_subject": 1})
    world.identity.admin = Admin({BOB: [("corp", SUBJECT)], NEWBIE: [("corp", SUBJECT)]})
    assert (await world.send("!verify", sender=BOB)).startswith("Your sign-in with corp verifies you")
    assert await world.send("!verify", sender=NEWBIE) == (
        "Your sign-in cannot verify this account: that identity already verifies as many accounts as this server "
        "allows.\nYour real identity is not verified yet.\n" + world.identity.how_to_verify("en"))
    assert set(world.state.verified) == {BOB}


# -- !verify <user> … and !unverify: moderators --------------------------------------------------------

async def test_a_moderator_verifies_and_unverifies_with_audit_records(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    assert await world.send(f"!verify {NEWBIE} id-card passport seen at the desk --level high") == (
        "@newbie:hs is now verified: manual check, method id-card, level high, recorded at 2027-01-15 08:00 UTC.")
    assert world.state.verified == {NEWBIE: "high"}
    assert await world.send(f"!取消实名 {NEWBIE} the passport was forged") == (
        "@newbie:hs is no longer verified (the manual check verification was revoked). Reason: the passport was forged")
    assert world.state.verified == {}
    assert [a for a in await audit_actions(world) if a.startswith("identity.")] == ["identity.verify", "identity.unverify"]
    # A manual check names no subject: nothing to count or blacklist, nothing to leak.
    assert [r[9] for r in await rows(world, "identity_records")] == [None, None]


@pytest.mark.parametrize("body, sender, expected", [
    (f"!verify {NEWBIE} id-card seen", NEWBIE,
     "!verify with arguments is for moderators only; !verify alone is open to everyone."),
    (f"!unverify {NEWBIE} x", NEWBIE, "!unverify is for moderators only."),
    (f"!verify {STRANGER} id-card seen", MOD,
     "@stranger:hs is not an account of this homeserver that I know of, so it cannot be verified here."),
    ("!verify @someone:elsewhere id-card seen", MOD,
     "@someone:elsewhere is not an account of this homeserver that I know of, so it cannot be verified here."),
    (f"!verify {NEWBIE} id-card", MOD,
     "Usage: !verify alone says how to verify; moderators record a manual check with !verify <user> <method> "
     "<note…> [--level LEVEL] (say what was checked, never the person's ID number), and !verify <user> asks single "
     "sign-on again after a revocation."),
    (f"!unverify {NEWBIE} nothing there", MOD, "@newbie:hs is not verified: there is nothing to revoke."),
    ("!verify nobody id-card seen", MOD,
     "Usage: !verify [user] [method] [note…] [--level LEVEL] [--dry-run]"),
])
async def test_refusals_say_why_and_record_nothing(store, tmp_path, body, sender, expected):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    before = await world.everything()
    assert await world.send(body, sender=sender) == expected
    answered = [world.last_event]
    assert await rows(world, "identity_records") == [] and world.state.verified == {}
    if "moderators only" in expected:
        assert (await audit_actions(world))[-1] == "command.refused"  # the attempt itself is on record
        return
    assert await world.send(body + " --dry-run", sender=sender) == expected  # the dry run meets the same refusal
    answered.append(world.last_event)
    assert await world.everything(answered=answered) == before


async def test_an_account_already_verified_is_not_verified_again(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    await world.identity.verify(user_id=NEWBIE, verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=T0 - 60_000, actor="@idp:hs")
    answer = await world.send(f"!verify {NEWBIE} id-card seen")
    assert answer == ("@newbie:hs is already verified (identity service, method eid, level high, since "
                      "2027-01-15 07:59 UTC). Nothing was recorded; send !unverify first to replace it.")
    assert len(await rows(world, "identity_records")) == 1


# -- !status, !whois, !history -------------------------------------------------------------------------

async def test_status_shows_method_level_and_date_never_the_subject(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    assert (await world.send("!status", sender=NEWBIE)).endswith("\nReal identity: not verified. !verify says how.")
    await world.identity.verify(user_id=NEWBIE, verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=T0 - 60_000, actor="@idp:hs")
    answer = await world.send("!状态", sender=NEWBIE)
    assert answer.endswith("\nReal identity: verified (identity service, level high, since 2027-01-15 07:59 UTC).")
    assert SUBJECT not in answer


async def test_whois_says_verified_for_public_accounts_only(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, PUB)
    assert await world.send(f"!whois {PUB}", sender=NEWBIE) == "@pub:hs is not a public account."
    await world.send("!apply public enterprise ACME", sender=PUB)
    await world.send("!approve 1")
    assert (await world.send(f"!whois {PUB}", sender=NEWBIE)).endswith("\nReal identity: not verified.")
    await world.send(f"!verify {PUB} licence business licence checked")
    answer = await world.send(f"!whois {PUB}", sender=NEWBIE)
    assert answer.endswith("\nNo news authorisation.\nReal identity: verified."), answer


async def test_history_puts_verifications_and_revocations_among_the_cases_in_time_order(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    await world.send(f"!verify {NEWBIE} id-card seen in person")
    world.now += 60_000
    await world.send(f"!warn {NEWBIE} rude")
    world.now += 60_000
    await world.send(f"!unverify {NEWBIE} forged card")
    answer = await world.send(f"!history {NEWBIE}")
    blocks = answer.split("\n\n")
    assert blocks[0] == "3 record(s) for @newbie:hs, oldest first:"
    assert blocks[1] == ("2027-01-15 08:00 UTC real identity verified: manual check, method id-card, level manual, "
                         "by @mod:hs; note: seen in person")
    assert blocks[2].startswith("Case #1")
    assert blocks[3] == "2027-01-15 08:02 UTC real-identity verification revoked by @mod:hs; reason: forged card"
    # Without verifications, the history reads as before.
    assert (await world.send(f"!history {BOB}")) == "@bob:hs has no cases."


# -- !close --blacklist ----------------------------------------------------------------------------------

async def test_close_with_blacklist_lists_the_subject_and_a_later_account_with_it_is_refused(store, tmp_path):
    world = World(store, tmp_path)
    await world.identity.verify(user_id=BOB, verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=T0, actor="@idp:hs")
    answer = await world.send(f"!关闭 {BOB} fraud --blacklist")
    assert "(blacklist requested)" in answer
    assert answer.endswith("\nOnce confirmed, the identity @bob:hs was verified with goes on the identity blacklist.")
    code = re.search(r"!confirm (\w+)", answer).group(1)
    assert await rows(world, "identity_blacklist") == []  # not before the confirmation
    answer = await world.send(f"!confirm {code}")
    assert answer == ("Case #1: closure @bob:hs. Recorded and in effect; the account has been told.\nThe identity "
                      "@bob:hs was verified with is now on the identity blacklist: any account verified with it later "
                      "is refused, and you will be told.")
    assert [(r[2], r[3]) for r in await rows(world, "identity_blacklist")] == [(BOB, 1)]
    # A second account verified with the same subject (written differently) is refused.
    outcome = await world.identity.verify(user_id="@bob2:hs", verifier="assertion", method="eid", level="high",
                                          subject=f" {SUBJECT} ", verified_at_ms=T0, actor="@idp:hs")
    assert (outcome.recorded, outcome.refusal) == (False, "blacklisted")
    assert any(name == "post" and "Identity blacklist: @bob2:hs" in args[0] for name, args in world.writes)
    # The subject is nowhere: not in the database (nor its file), not in any answer.
    assert await dbview.texts_holding(store.db, SUBJECT) == []
    if store.db.dialect == "sqlite":
        assert SUBJECT.encode() not in (tmp_path / "bot.db").read_bytes()
    assert all(SUBJECT not in str(w) for w in world.writes)


async def test_close_with_blacklist_of_an_account_without_subject_says_so_and_still_closes(store, tmp_path):
    world = World(store, tmp_path)
    await known(world, NEWBIE)
    await world.send(f"!verify {NEWBIE} id-card seen")
    dry = await world.send(f"!close {NEWBIE} spam --blacklist --dry-run")
    assert ("• blacklist nobody: @newbie:hs has no verification that names an identity (manual or none); the "
            "closure goes ahead") in dry
    answer = await world.send(f"!close {NEWBIE} spam --blacklist")
    assert answer.endswith("\n@newbie:hs has no verification that names an identity (verified manually, or not at "
                           "all): the closure will blacklist nobody.")
    code = re.search(r"!confirm (\w+)", answer).group(1)
    assert "• on confirmation: put the identity" not in await world.send(f"!confirm {code} --dry-run")
    answer = await world.send(f"!confirm {code}")
    assert answer == ("Case #1: closure @newbie:hs. Recorded and in effect; the account has been told.\n@newbie:hs "
                      "has no verification that names an identity (verified manually, or not at all): nothing was "
                      "blacklisted; the account is closed all the same.")
    assert await rows(world, "identity_blacklist") == []
    assert [r[2] for r in await rows(world, "cases")] == ["close"]


async def test_a_dry_run_of_close_and_confirm_names_the_blacklist_step_and_changes_nothing(store, tmp_path):
    world = World(store, tmp_path)
    await world.identity.verify(user_id=BOB, verifier="assertion", method="eid", level="high", subject=SUBJECT,
                                verified_at_ms=T0, actor="@idp:hs")
    step = "• on confirmation: put the identity @bob:hs was verified with on the identity blacklist"
    before = await world.everything()
    assert step in await world.send(f"!close {BOB} fraud --blacklist --dry-run")
    assert await world.everything(answered=[world.last_event]) == before
    code = re.search(r"!confirm (\w+)", await world.send(f"!close {BOB} fraud --blacklist")).group(1)
    assert step in await world.send(f"!confirm {code} --dry-run")
    assert await rows(world, "identity_blacklist") == []
    # Without the flag, nothing is said about the blacklist.
    assert "blacklist" not in await world.send(f"!close {BOB} fraud --dry-run")


# -- identity.required_for: public_account and news --------------------------------------------------------

async def test_unverified_applicants_are_refused_with_how_to_verify(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": ["public_account", "news"]})
    await known(world, PUB)
    refusal = ("Your public-account application was not accepted: this needs a verified real identity, and this "
               "account is not verified. " + world.identity.how_to_verify("en"))
    for body in ("!apply public enterprise ACME --dry-run", "!apply public enterprise ACME"):
        assert await world.send(body, sender=PUB) == refusal
    assert await store.accounts.applications_of(PUB) == []
    await world.send(f"!verify {PUB} licence business licence checked")
    assert (await world.send("!apply public enterprise ACME", sender=PUB)).startswith("Application #1 received")
    await world.send("!approve 1")
    await world.send(f"!unverify {PUB} licence withdrawn")
    refusal = refusal.replace("public-account application", "news-tier application")
    assert await world.send("!apply news reposter L-1", sender=PUB) == refusal


async def test_approval_is_refused_when_the_applicant_is_no_longer_verified(store, tmp_path):
    world = World(store, tmp_path, identity={"required_for": ["public_account"]})
    await known(world, PUB)
    await world.send(f"!verify {PUB} licence checked")
    await world.send("!apply public enterprise ACME", sender=PUB)
    await world.send(f"!unverify {PUB} licence withdrawn")
    before = await world.everything()
    expected = ("Application #1 cannot be approved: @pub:hs has no verified real identity, which this server requires "
                "(identity.required_for: public_account). Nothing was recorded; they can learn how with !verify.")
    assert await world.send("!approve 1 --dry-run") == expected
    assert await world.send("!approve 1") == expected
    assert await world.everything(answered=[f"$cmd{world._events - 1}", world.last_event]) == before
    assert PUB not in world.state.public_accounts


# -- !help -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "zh-CN"])
async def test_help_lists_the_new_commands_in_both_languages(store, tmp_path, language):
    world = World(store, tmp_path, language=language)
    t = Translator(language)
    for_users = await world.send("!help", sender=NEWBIE)
    assert t("cmd.verify.summary") in for_users and "(!实名认证)" in for_users
    assert t("cmd.unverify.summary") not in for_users  # moderators only
    for_moderators = await world.send("!help")
    assert t("cmd.unverify.summary") in for_moderators and "!unverify <user> <reason…> [--dry-run] (!取消实名)" in for_moderators
    assert "[--blacklist]" in for_moderators
