"""The agreement gate end to end: real Synapse + synapse-http-antispam + the bot process + nio users."""

from __future__ import annotations

import signal

import pytest

from tests.integration.harness import User, new_user, until

pytestmark = pytest.mark.integration
# Each test that uses `gated` runs with the HTTP gate and with the in-process module (conftest).
BOTH_SHELLS = True

SEVEN_LINES = "the authenticity of information"


@pytest.fixture
async def bot(gated, make_bot):
    process = make_bot(gated.hs, gated.bot, gate=gated, admin_token=True)
    process.start()
    return process


@pytest.fixture
async def users(gated):
    created: list[User] = []

    async def make(name: str, **kwargs) -> User:
        user = await new_user(gated.hs, name, **kwargs)
        created.append(user)
        return user

    yield make
    for user in created:
        await user.close()


async def open_dm(user: User, bot_id: str) -> tuple[str, dict]:
    """Log in for the first time, accept the bot's DM and return it with the agreement message."""
    await user.login()
    room = await user.wait_for_invite(bot_id)
    await user.join(room)
    agreement = await user.wait_for_message(room, bot_id, "!agree")
    return room, agreement


async def public_room(owner: User) -> str:
    status, body = await owner.create_room(preset="public_chat", name="Town square")
    assert status == 200, body
    return body["room_id"]


def assert_refused(response, *, needle: str = "!agree") -> None:
    assert getattr(response, "status_code", None) == "M_FORBIDDEN", response
    assert needle in response.message, response.message


async def test_new_account_is_greeted_refused_everywhere_then_agrees(gated, make_bot, users):
    moderator = await users("mod")
    make_bot(gated.hs, gated.bot, gate=gated, moderators=[moderator.user_id]).start()
    alice, bob = await users("alice"), await users("bob")
    square = await public_room(moderator)

    # A first login brings the DM with the agreement, the seven bottom lines and how to accept.
    dm, agreement = await open_dm(alice, gated.bot.user_id)
    assert alice.invite_content[dm].get("is_direct") is True
    status, _ = await alice.api("GET", f"/_matrix/client/v3/rooms/{dm}/state/m.room.encryption/")
    assert status == 404, "the bot's DM is unencrypted so it can read the answer"
    body = agreement["content"]["body"]
    assert SEVEN_LINES in body and "✅" in body
    assert agreement["content"]["msgtype"] == "m.notice"

    # Reading and joining are allowed; everything else is refused with a reason naming !agree.
    await alice.join(square)
    assert_refused(await alice.say(square, "hello everyone"))
    create = await alice.client.room_create(name="mine")
    assert_refused(create)
    assert "room was not created" in create.message
    invite = await alice.client.room_invite(square, bob.user_id)
    assert_refused(invite)
    status, published = await alice.api("PUT", f"/_matrix/client/v3/directory/list/room/{square}", {"visibility": "public"})
    assert status == 403 and published["errcode"] == "M_FORBIDDEN" and "!agree" in published["error"]

    # !agree in the DM: a confirmation, and from then on everything works.
    agreed = await alice.say(dm, "!agree")
    assert getattr(agreed, "event_id", None), agreed
    confirmation = await alice.wait_for_message(dm, gated.bot.user_id, "recorded")
    assert "version 1" in confirmation["content"]["body"]
    assert confirmation["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
    sent = await alice.say(square, "hello everyone")
    assert getattr(sent, "event_id", None), sent
    created = await alice.client.room_create(name="mine")
    assert getattr(created, "room_id", None), created
    invited = await alice.client.room_invite(created.room_id, bob.user_id)
    assert not getattr(invited, "status_code", None), invited


async def test_acceptance_is_committed_with_version_hash_time_and_event(gated, bot, users):
    alice = await users("alice")
    dm, _ = await open_dm(alice, gated.bot.user_id)
    sent = await alice.say(dm, "!同意")
    await alice.wait_for_message(dm, gated.bot.user_id, "recorded")
    bot.stop()
    rows = await bot.rows(
        "SELECT user_id, version, length(text_sha256), accepted_at > 0, event_id, method FROM agreement_acceptances")
    audit = await bot.rows("SELECT action, target FROM audit_log")
    assert rows == [(alice.user_id, "1", 64, 1, sent.event_id, "command")]
    assert ("agreement.accept", alice.user_id) in audit


async def test_reaction_accepts_the_agreement(gated, bot, users):
    alice = await users("alice")
    dm, agreement = await open_dm(alice, gated.bot.user_id)
    await alice.react(dm, agreement["event_id"], "✅️")  # with the variation selector some clients add
    await alice.wait_for_message(dm, gated.bot.user_id, "recorded")
    square = await alice.create_room(name="after agreeing")
    assert square[0] == 200, square


async def test_refused_attempt_brings_the_agreement_even_without_a_login(gated, bot, users):
    # Accounts made by the admin API (or SSO, or /register) never pass /login: the gate's refusal
    # is then the moment the bot steps in.
    carol = await users("carol")
    create = await carol.client.room_create(name="x")
    assert_refused(create)
    room = await carol.wait_for_invite(gated.bot.user_id)
    await carol.join(room)
    await carol.wait_for_message(room, gated.bot.user_id, "!agree")


async def test_commands_answer_in_the_dm(gated, bot, users):
    alice = await users("alice")
    dm, _ = await open_dm(alice, gated.bot.user_id)
    bot_id = gated.bot.user_id
    await alice.say(dm, "!status")
    await alice.wait_for_message(dm, bot_id, "not accepted yet")
    await alice.say(dm, "!help")
    help_text = await alice.wait_for_message(dm, bot_id, "What you can do")
    for command in ("!agree", "!rules", "!status", "!help", "!同意"):
        assert command in help_text["content"]["body"]
    await alice.say(dm, "!frobnicate")
    await alice.wait_for_message(dm, bot_id, "I do not know the command !frobnicate")
    await alice.say(dm, "!agree please")
    await alice.wait_for_message(dm, bot_id, "Usage: !agree")
    before = len(alice.messages(dm, bot_id))
    await alice.say(dm, "!规则")
    rules = await alice.wait_for_message(dm, bot_id, SEVEN_LINES, after=before)
    # The agreement sent by !rules can be accepted with a reaction too.
    await alice.react(dm, rules["event_id"], "✅")
    await alice.wait_for_message(dm, bot_id, "recorded")
    await alice.say(dm, "!状态")
    await alice.wait_for_message(dm, bot_id, "version 1 accepted at")


async def test_moderators_and_the_bot_are_never_gated(gated, make_bot, users):
    moderator, other = await users("mod"), await users("other")
    process = make_bot(gated.hs, gated.bot, gate=gated, moderators=[moderator.user_id])
    process.start()
    await moderator.login()
    status, room = await moderator.create_room(name="moderators' room")
    assert status == 200, room
    sent = await moderator.say(room["room_id"], "no agreement needed")
    assert getattr(sent, "event_id", None), sent
    invited = await moderator.client.room_invite(room["room_id"], other.user_id)
    assert not getattr(invited, "status_code", None), invited
    await moderator.sync()
    assert not moderator.invites, "moderators are not sent the agreement"


async def test_agreement_survives_sigterm_and_sigkill_right_after_confirmation(gated, bot, users):
    alice = await users("alice")
    dm, _ = await open_dm(alice, gated.bot.user_id)
    bot_account = User(gated.hs, gated.bot)
    devices_before = await bot_devices(bot_account)
    await alice.say(dm, "!agree")
    await alice.wait_for_message(dm, gated.bot.user_id, "recorded")
    # SIGKILL: no chance to flush anything; the acceptance was committed before the confirmation.
    assert bot.stop(signal.SIGKILL) == -signal.SIGKILL
    bot.start()
    square = await alice.create_room(name="after a crash")
    assert square[0] == 200, square
    # SIGTERM: a clean exit, and the same again after it.
    assert bot.stop(signal.SIGTERM) == 0
    bot.start()
    sent = await alice.say(square[1]["room_id"], "still fine")
    assert getattr(sent, "event_id", None), sent
    # Neither restart replayed the old !agree as a new command, nor made a new device.
    await alice.sync()
    confirmations = [m for m in alice.messages(dm, gated.bot.user_id) if "recorded" in m["content"]["body"]]
    assert len(confirmations) == 1
    assert await bot_devices(bot_account) == devices_before, "a restart reuses the bot's device"
    await bot_account.close()


async def bot_devices(account: User) -> set[str]:
    status, body = await account.api("GET", "/_matrix/client/v3/devices")
    assert status == 200, body
    return {d["device_id"] for d in body["devices"] if d.get("display_name") == "rules-bot"}


async def test_version_change_asks_everyone_again(gated, bot, users):
    alice = await users("alice")
    dm, _ = await open_dm(alice, gated.bot.user_id)
    await alice.say(dm, "!agree")
    await alice.wait_for_message(dm, gated.bot.user_id, "recorded")
    before = len(alice.messages(dm, gated.bot.user_id))
    bot.stop()
    bot.config["agreement"] = {"version": "2"}
    bot.start()
    # Asked again in the DM, without doing anything.
    await alice.wait_for_message(dm, gated.bot.user_id, "version 2", after=before)
    refused = await alice.client.room_create(name="x")
    assert_refused(refused, needle="has changed")
    await alice.say(dm, "!agree")
    await alice.wait_for_message(dm, gated.bot.user_id, "version 2 was recorded")
    allowed = await alice.create_room(name="x")
    assert allowed[0] == 200


async def test_bot_lifts_its_own_rate_limit_with_the_admin_token(gated, bot):
    admin = User(gated.hs, gated.bot)
    status, body = await admin.api("GET", f"/_synapse/admin/v1/users/{gated.bot.user_id}/override_ratelimit")
    await admin.close()
    assert status == 200 and body == {"messages_per_second": 0, "burst_count": 0}


async def test_user_who_leaves_the_dm_gets_a_new_one_on_the_next_refusal(gated, bot, users):
    alice = await users("alice")
    dm, _ = await open_dm(alice, gated.bot.user_id)
    await alice.client.room_leave(dm)
    await until(lambda: "left their direct chat" in bot.log(), what="the bot to notice the leave")
    assert_refused(await alice.client.room_create(name="x"))
    alice.invites.clear()
    new_dm = await alice.wait_for_invite(gated.bot.user_id)
    assert new_dm != dm
    await alice.join(new_dm)
    await alice.wait_for_message(new_dm, gated.bot.user_id, "!agree")
