"""Graduated sanctions end to end: moderators' commands, the gate, room mode, the admin API, the ladder."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.integration.harness import User, new_user, setup, until

pytestmark = pytest.mark.integration
# Each test that uses `gated` runs with the HTTP gate and with the in-process module (conftest).
BOTH_SHELLS = True


def case_number(reply: dict) -> int:
    return int(re.search(r"Case #(\d+)", reply["content"]["body"]).group(1))


def refused(response, needle: str) -> None:
    assert getattr(response, "status_code", None), f"expected a refusal, got {response}"
    assert needle in response.message, response.message


async def test_warning_reaches_the_dm_with_the_case_number(gated, mod):
    alice = await mod.member("alice", gated.hs)
    reply = await mod.command(f"!warn {alice.user_id} rude to other members", "Recorded and in effect")
    case = case_number(reply)
    notice = await alice.wait_for_message(alice.dm, mod.bot_id, f"Case #{case}: you have received a warning")
    body = notice["content"]["body"]
    assert "rude to other members" in body and f"!appeal {case}" in body
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Case #{case}: warning of {alice.user_id}")
    shown = await mod.command(f"!case {case}", f"Case #{case}")
    assert mod.moderator.user_id in shown["content"]["body"]
    # Given as a reply, a command copies the message it answers into the case as evidence.
    quoted = await mod.moderator.say(mod.room, "forwarded: alice wrote something nasty")
    await mod.moderator.client.room_send(mod.room, "m.room.message", {
        "msgtype": "m.text", "body": f"!warn {alice.user_id} see the quoted message",
        "m.relates_to": {"m.in_reply_to": {"event_id": quoted.event_id}},
    })
    with_evidence = await mod.moderator.wait_for_message(mod.room, mod.bot_id, "(with evidence). Recorded")
    second = case_number(with_evidence)
    shown = await mod.command(f"!case {second}", f"Case #{second}")
    assert "evidence:" in shown["content"]["body"] and "something nasty" in shown["content"]["body"]


async def test_restriction_refuses_survives_a_restart_and_ends_on_time(gated, mod):
    alice = await mod.member("alice", gated.hs)
    status, room = await alice.create_room(name="alice's room")
    assert status == 200
    started = time.monotonic()
    case = case_number(await mod.command(f"!restrict {alice.user_id} 1m posting spam", "Recorded and in effect"))
    refused(await alice.say(room["room_id"], "more spam"), f"restricted until")
    # The DM with the bot stays open, and invites and room creation are not part of a posting restriction.
    assert getattr(await alice.say(alice.dm, "!status"), "event_id", None)
    assert mod.bot.stop(signal.SIGTERM) == 0
    mod.bot.start()
    refused(await alice.say(room["room_id"], "after the restart"), f"case #{case}")
    await alice.wait_for_message(alice.dm, mod.bot_id, f"Case #{case}: your posting restriction has ended", timeout=90)
    assert time.monotonic() - started >= 55, "it must not end early"
    sent = await alice.say(room["room_id"], "back again")
    assert getattr(sent, "event_id", None), sent
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Case #{case} (posting restriction of {alice.user_id}) expired")


async def test_rate_cap_allows_n_and_refuses_the_next(gated, mod):
    bob = await mod.member("bob", gated.hs)
    status, room = await bob.create_room(name="bob's room")
    await mod.command(f"!restrict {bob.user_id} 1h --rate 2/1h too many posts", "at most 2/1h")
    for n in (1, 2):
        assert getattr(await bob.say(room["room_id"], f"post {n}"), "event_id", None)
    refused(await bob.say(room["room_id"], "post 3"), "Your next post is possible at")


async def test_suspension_refuses_posts_invites_and_room_creation_until_lifted(gated, mod):
    carol, dave = await mod.member("carol", gated.hs), await mod.member("dave", gated.hs)
    status, room = await carol.create_room(name="carol's room")
    case = case_number(await mod.command(f"!suspend {carol.user_id} 7d suspicious activity", "Recorded and in effect"))
    refused(await carol.client.room_create(name="another"), "suspended until")
    refused(await carol.client.room_invite(room["room_id"], dave.user_id), "suspended")
    assert getattr(await carol.say(room["room_id"], "hello"), "status_code", None), "posting is refused too"
    # With the admin token, Synapse's own suspension is set as well.
    admin = User(gated.hs, gated.bot)
    await until(lambda: _suspended(admin, carol.user_id), what="Synapse's suspension")
    await mod.command(f"!lift {case} appeal granted", f"Case #{case} ({carol.user_id}) lifted")
    await until(lambda: _not(_suspended(admin, carol.user_id)), what="the suspension to be lifted")
    assert getattr(await carol.say(room["room_id"], "hello again"), "event_id", None)
    await carol.wait_for_message(carol.dm, mod.bot_id, f"Case #{case}: your suspension was lifted")
    await admin.close()


async def _suspended(admin: User, user_id: str) -> bool:
    status, body = await admin.api("GET", f"/_synapse/admin/v2/users/{user_id}")
    return status == 200 and body.get("suspended") is True


async def _not(coro) -> bool:
    return not await coro


async def test_closure_needs_confirmation_then_bans_and_deactivates(gated, make_bot):
    mod = await setup(gated.hs, gated.bot, make_bot, gate=gated)
    lobby = {"room_id": await mod.protected_room()}
    erin = await mod.member("erin", gated.hs)
    await erin.join(lobby["room_id"])
    reply = await mod.command(f"!close {erin.user_id} repeated serious violations --erase", "!confirm")
    code = re.search(r"!confirm (\w+)", reply["content"]["body"]).group(1)
    assert getattr(await erin.say(lobby["room_id"], "still here"), "event_id", None), "nothing happens before !confirm"
    await mod.command("!confirm WRONG1", "No pending closure has the code WRONG1")
    case = case_number(await mod.command(f"!confirm {code}", "Recorded and in effect"))
    await until(lambda: _membership(mod.moderator, lobby["room_id"], erin.user_id), what="the ban")
    again = User(gated.hs, erin.account)
    login = await again.client.login(erin.account.password)
    await again.close()
    assert getattr(login, "status_code", None) in ("M_USER_DEACTIVATED", "M_FORBIDDEN"), login
    await mod.command(f"!confirm {code}", f"No pending closure has the code {code}")  # single use
    shown = await mod.command(f"!case {case}", f"Case #{case}: closure of {erin.user_id}")
    assert "in force" in shown["content"]["body"]
    for user in mod.users:
        await user.close()


async def _membership(user: User, room_id: str, member: str) -> bool:
    status, body = await user.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{member}")
    return status == 200 and body.get("membership") == "ban"


async def test_the_ladder_escalates_after_three_warnings(gated, mod):
    frank = await mod.member("frank", gated.hs)
    first = case_number(await mod.command(f"!warn {frank.user_id} one", "Recorded"))
    await mod.command(f"!警告 {frank.user_id} two", "Recorded")
    third = case_number(await mod.command(f"!warn {frank.user_id} three", "Recorded"))
    announcement = await mod.moderator.wait_for_message(mod.room, mod.bot_id, "posting restriction of")
    body = announcement["content"]["body"]
    assert "by ladder" in body and f"#{first}" in body and f"#{third}" in body
    status, room = await frank.create_room(name="frank's")
    refused(await frank.say(room["room_id"], "hi"), "restricted until")


async def test_non_moderator_is_refused_and_the_attempt_recorded(gated, mod):
    alice, bob = await mod.member("alice", gated.hs), await mod.member("bob", gated.hs)
    await alice.say(alice.dm, f"!warn {bob.user_id} I do not like him")
    await alice.wait_for_message(alice.dm, mod.bot_id, "!warn is for moderators only")
    rows = await mod.bot.rows("SELECT actor, action FROM audit_log WHERE action = 'command.refused'")
    cases = await mod.bot.value("SELECT COUNT(*) FROM cases")
    assert rows == [(alice.user_id, "command.refused")] and cases == 0


async def test_bad_durations_and_user_ids_get_usage_and_nothing_happens(gated, mod):
    alice = await mod.member("alice", gated.hs)
    for bad in (f"!restrict {alice.user_id} 5s spam", f"!restrict {alice.user_id} tomorrow spam",
                "!restrict alice 1h spam", f"!suspend {alice.user_id} 1h", "!lift abc reason",
                # Beyond the 520-week maximum: 999999w used to be enforced, then broke the gate.
                f"!restrict {alice.user_id} 999999w spam", f"!suspend {alice.user_id} 521w spam",
                f"!restrict {alice.user_id} 1h --rate 3/999999w spam"):
        reply = await mod.command(bad, "Usage: !")
        assert reply["content"]["body"].split()[1] == bad.split()[0]
    await mod.command(f"!history {alice.user_id}", "has no cases")
    await mod.command(f"!warn {mod.moderator.user_id} test", "moderators cannot be the target")
    await mod.command(f"!restrict {alice.user_id} 1h spam --dry-run", "Dry run of !restrict: nothing was recorded")
    await mod.command(f"!history {alice.user_id}", "has no cases")


async def test_room_mode_mutes_and_restores_on_lift(plain, make_bot):
    mod = await setup(plain, plain.bot, make_bot)
    room = {"room_id": await mod.protected_room()}
    # Without the module no login is reported: a first post in a protected room brings the agreement.
    gina = await new_user(plain, "gina")
    mod.users.append(gina)
    await gina.join(room["room_id"])
    await gina.say(room["room_id"], "hello")
    dm = await gina.wait_for_invite(mod.bot_id)
    await gina.join(dm)
    await gina.wait_for_message(dm, mod.bot_id, "!agree")
    await gina.say(dm, "!agree")
    await gina.wait_for_message(dm, mod.bot_id, "recorded")
    await until(lambda: _no_entry(mod.moderator, room["room_id"], gina.user_id), what="the agreement mute to end")
    case = case_number(await mod.command(f"!restrict {gina.user_id} 1d flooding", "Recorded and in effect"))
    await until(lambda: _level(mod.moderator, room["room_id"], gina.user_id, below=0), what="the mute")
    refused(await gina.say(room["room_id"], "let me speak"), "")
    await mod.command(f"!lift {case} sorted out", "lifted")
    await until(lambda: _no_entry(mod.moderator, room["room_id"], gina.user_id), what="the restore")
    assert getattr(await gina.say(room["room_id"], "thanks"), "event_id", None)
    for user in mod.users:
        await user.close()


async def _level(user: User, room_id: str, member: str, below: int) -> bool:
    return (await user.power_levels(room_id)).get("users", {}).get(member, 0) < below


async def _no_entry(user: User, room_id: str, member: str) -> bool:
    return member not in (await user.power_levels(room_id)).get("users", {})


async def test_a_full_restriction_wins_over_an_earlier_rate_cap(gated, mod):
    bob = await mod.member("bob", gated.hs)
    status, room = await bob.create_room(name="bob's room")
    # Wait for the reply itself ("Recorded"), not the management room's announcement of the case.
    capped = await mod.command(f"!restrict {bob.user_id} 1h --rate 5/1h slow down", "Recorded and in effect")
    assert "5/1h" in capped["content"]["body"]
    assert getattr(await bob.say(room["room_id"], "one post"), "event_id", None)
    full = case_number(await mod.command(f"!restrict {bob.user_id} 1h stop entirely", "Recorded and in effect"))
    # Two restrictions climb the default ladder to a suspension: the strictest of three speaks.
    ladder = await mod.moderator.wait_for_message(mod.room, mod.bot_id, "by ladder")
    suspension = case_number(ladder)
    # (With the admin token, Synapse's own suspension may answer before the gate does.)
    refused(await bob.say(room["room_id"], "another"), "suspended")
    await mod.command(f"!lift {suspension} one step at a time", f"Case #{suspension} ({bob.user_id}) lifted")
    # The rate cap still has room, but it does not speak first and let the post through.
    refused(await bob.say(room["room_id"], "and another"), f"restricted until")
    refused(await bob.say(room["room_id"], "and another"), f"case #{full}")
    await mod.command(f"!lift {full} enough", f"Case #{full} ({bob.user_id}) lifted")
    assert getattr(await bob.say(room["room_id"], "capped again"), "event_id", None)


async def test_the_bots_dm_does_not_let_the_account_invite_anyone(gated, mod):
    alice, dave = await mod.member("alice", gated.hs), await mod.member("dave", gated.hs)
    levels = await alice.power_levels(alice.dm)
    assert levels["invite"] == 100 and alice.user_id not in levels.get("users", {})
    refused(await alice.client.room_invite(alice.dm, dave.user_id), "direct chat")
    # Another account cannot join it either (the gate sees user_may_join_room).
    refused(await dave.client.join(alice.dm), "direct chat")
    # Restricted, the account still talks to the bot in the DM that stayed private.
    await mod.command(f"!restrict {alice.user_id} 1d testing", "Recorded and in effect")
    assert getattr(await alice.say(alice.dm, "!status"), "event_id", None)


async def test_a_warning_granted_on_appeal_does_not_count_toward_the_ladder(gated, mod):
    frank = await mod.member("frank", gated.hs)
    first = case_number(await mod.command(f"!warn {frank.user_id} one", "Recorded"))
    await mod.command(f"!warn {frank.user_id} two", "Recorded")
    await frank.say(frank.dm, f"!appeal {first} that was not me")
    announced = await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"on case #{first} by {frank.user_id}")
    appeal = re.search(r"Appeal #(\d+)", announced["content"]["body"]).group(1)
    await mod.command(f"!grant {appeal} mistaken identity", f"Appeal #{appeal} granted")
    await mod.command(f"!warn {frank.user_id} three", "Recorded")
    # The ladder ran before that reply: only two warnings stand, so nothing is in force.
    await mod.command("!cases active", "No cases.")
    await mod.command(f"!warn {frank.user_id} four", "Recorded")
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, "by ladder")
    reply = await mod.command("!cases active", "Measures in force (1)")
    assert frank.user_id in reply["content"]["body"]


async def _no_rows(rows) -> bool:
    return not await rows


def replies_to(messages: list[dict], event_id: str) -> list[dict]:
    return [m for m in messages
            if (m["content"].get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id") == event_id]


async def test_a_kill_between_commit_and_reply_and_a_replayed_batch_leave_one_case_and_one_reply(
        gated, mod, monkeypatch):
    """SIGKILL after `!warn` is committed (the executor held back, so nothing was sent yet), and
    the sync token put back to before the command (as if the bot died before saving it): after
    the restart the batch is handled again. One case, one reply, one notice to the account."""
    from bot.effects import PAUSE_ENV

    alice = await mod.member("alice", gated.hs)
    query = mod.bot.rows

    assert mod.bot.stop(signal.SIGTERM) == 0
    monkeypatch.setenv(PAUSE_ENV, "1")
    mod.bot.start()
    [(token_before,)] = await query("SELECT value FROM kv WHERE key = 'sync_token'")
    replies_before = len(mod.moderator.messages(mod.room, mod.bot_id))
    sent = await mod.moderator.say(mod.room, f"!warn {alice.user_id} rude, once")
    await until(lambda: query("SELECT id FROM cases WHERE target = ?", (alice.user_id,)), what="the case committed")
    await until(lambda: query("SELECT 1 FROM kv WHERE key = 'sync_token' AND value != ?", (token_before,)),
                what="the batch's token saved")
    assert {k for (k,) in await query("SELECT idempotency_key FROM effects WHERE status = 'pending'")} >= {
        f"reply/{sent.event_id}"}
    assert mod.bot.stop(signal.SIGKILL) == -signal.SIGKILL
    await mod.moderator.sync()
    # Nothing answered the !warn. (Other posts may come: a fresh bot takes in the homeserver's
    # earlier event reports, whose management posts wait for the room to be known.)
    assert not replies_to(mod.moderator.messages(mod.room, mod.bot_id), sent.event_id)

    # As if the token had not been saved: the restarted bot receives the same batch again.
    await mod.bot.change("UPDATE kv SET value = ? WHERE key = 'sync_token'", (token_before,))
    monkeypatch.delenv(PAUSE_ENV)
    mod.bot.start()
    reply = await mod.moderator.wait_for_message(mod.room, mod.bot_id, "Recorded and in effect", after=replies_before)
    case = case_number(reply)
    await alice.wait_for_message(alice.dm, mod.bot_id, f"Case #{case}: you have received a warning")
    await until(lambda: _no_rows(query("SELECT 1 FROM effects WHERE status = 'pending'")), what="every effect carried out")
    await mod.moderator.sync()
    await alice.sync()
    assert await query("SELECT id FROM cases WHERE target = ?", (alice.user_id,)) == [(case,)]
    assert len(replies_to(mod.moderator.messages(mod.room, mod.bot_id), sent.event_id)) == 1
    notices = [m for m in alice.messages(alice.dm, mod.bot_id)
               if f"Case #{case}: you have received" in m["content"]["body"]]
    assert len(notices) == 1
    assert "was handled before; not again" in mod.bot.log()


async def test_a_restriction_that_ends_while_the_bot_is_down_lifts_its_mute_and_is_announced(plain, make_bot):
    """Room mode: the restriction's time passes while the bot is stopped. At start-up the end is
    recorded before the rooms are known; the unmute and the announcements wait in the journal and
    are carried out once they are."""
    mod = await setup(plain, plain.bot, make_bot)
    room_id = await mod.protected_room()
    hana = await new_user(plain, "hana")
    mod.users.append(hana)
    await hana.join(room_id)
    await hana.say(room_id, "hello")
    dm = await hana.wait_for_invite(mod.bot_id)
    await hana.join(dm)
    await hana.wait_for_message(dm, mod.bot_id, "!agree")
    await hana.say(dm, "!agree")
    await hana.wait_for_message(dm, mod.bot_id, "recorded")
    await until(lambda: _no_entry(mod.moderator, room_id, hana.user_id), what="the agreement mute to end")
    case = case_number(await mod.command(f"!restrict {hana.user_id} 1d flooding", "Recorded and in effect"))
    await until(lambda: _level(mod.moderator, room_id, hana.user_id, below=0), what="the mute")
    assert mod.bot.stop(signal.SIGTERM) == 0
    # A day passes while the bot is down (the case's end moved to the past, as the clock would).
    # A case's end is never rewritten, but the clock cannot be moved.
    await mod.bot.change("UPDATE cases SET expires_at = ? WHERE id = ?", (int(time.time() * 1000) - 1000, case),
                         past_append_only=True)
    mod.bot.start()
    await until(lambda: _no_entry(mod.moderator, room_id, hana.user_id), what="the mute lifted after the restart")
    await mod.moderator.wait_for_message(mod.room, mod.bot_id,
                                         f"Case #{case} (posting restriction of {hana.user_id}) expired")
    await hana.wait_for_message(dm, mod.bot_id, f"Case #{case}: your posting restriction has ended")
    assert getattr(await hana.say(room_id, "back again"), "event_id", None)
    for user in mod.users:
        await user.close()
