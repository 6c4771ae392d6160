"""Public accounts end to end: apply, review, filing, directory publication, channels, !whois, revoke."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.integration.harness import until

pytestmark = pytest.mark.integration


async def publish(user, room_id: str) -> tuple[int, dict]:
    return await user.api("PUT", f"/_matrix/client/v3/directory/list/room/{room_id}", {"visibility": "public"})


async def test_only_an_approved_public_account_may_publish_and_revoking_ends_it(gated, mod):
    alice, bob = await mod.member("alice", gated.hs), await mod.member("bob", gated.hs)
    status, room = await alice.create_room(name="ACME news")
    room_id = room["room_id"]
    status, body = await publish(alice, room_id)
    assert status == 403 and "only approved public accounts" in body["error"]

    await alice.say(alice.dm, "!apply public newspaper ACME")
    await alice.wait_for_message(alice.dm, mod.bot_id, "Unknown category newspaper. Choose one of: news-organisation")
    await alice.say(alice.dm, "!申请 public enterprise ACME 公司")
    applied = await alice.wait_for_message(alice.dm, mod.bot_id, "Application #")
    number = int(re.search(r"#(\d+)", applied["content"]["body"]).group(1))
    await alice.say(alice.dm, "!apply public enterprise ACME again")
    await alice.wait_for_message(alice.dm, mod.bot_id, "already have a public application waiting")
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Application #{number} by {alice.user_id}")
    listed = await mod.command("!applications", f"#{number}")
    assert "ACME 公司" in listed["content"]["body"]

    reply = await mod.command(f"!approve {number} welcome", f"Application #{number} approved")
    filing = re.search(r"filing (\S+) for", reply["content"]["body"]).group(1)
    assert re.fullmatch(r"IM\d{4}-04-000001", filing), filing  # enterprise is the 4th default category
    await alice.wait_for_message(alice.dm, mod.bot_id, f"Filing number: {filing}")
    await alice.say(alice.dm, "!application")
    await alice.wait_for_message(alice.dm, mod.bot_id, f"#{number} public account, category enterprise, name ACME 公司: approved")

    status, body = await publish(alice, room_id)
    assert status == 200, body
    # The published room becomes a channel of the account; anyone can look the account up.
    await until(lambda: _whois_lists(bob, mod.bot_id, alice.user_id, room_id), timeout=20, what="the channel in !whois")
    status, body = await publish(bob, room_id)
    assert status == 403, "bob has no public account"

    await mod.command(f"!revoke {alice.user_id} misuse of the account", f"has been revoked (filings {filing})")
    await alice.wait_for_message(alice.dm, mod.bot_id, "Your public account has been revoked")
    status, body = await publish(alice, room_id)
    assert status == 403
    await bob.say(bob.dm, f"!whois {alice.user_id}")
    await bob.wait_for_message(bob.dm, mod.bot_id, f"{alice.user_id} is not a public account")

    await mod.command("!export filings", "Exported 1 filings row(s)")


async def _whois_lists(user, bot_id: str, target: str, room_id: str) -> bool:
    before = len(user.messages(user.dm, bot_id))
    await user.say(user.dm, f"!whois {target}")
    answer = await user.wait_for_message(user.dm, bot_id, target, after=before)
    body = answer["content"]["body"]
    if room_id in body:
        assert "category enterprise" in body and "No news authorisation" in body
        return True
    await asyncio.sleep(0.5)
    return False


async def test_news_tier_needs_a_public_account_first(gated, mod):
    carol = await mod.member("carol", gated.hs)
    await carol.say(carol.dm, "!apply news publisher LIC-2026-001")
    await carol.wait_for_message(carol.dm, mod.bot_id, "apply with !apply public")
    await carol.say(carol.dm, "!apply public news-website Carol Daily")
    applied = await carol.wait_for_message(carol.dm, mod.bot_id, "Application #")
    first = int(re.search(r"#(\d+)", applied["content"]["body"]).group(1))
    await mod.command(f"!approve {first}", "approved")
    before = len(carol.messages(carol.dm, mod.bot_id))
    await carol.say(carol.dm, "!apply news reposter LIC-2026-001")
    applied = await carol.wait_for_message(carol.dm, mod.bot_id, "Application #", after=before)
    second = int(re.search(r"#(\d+)", applied["content"]["body"]).group(1))
    await mod.command(f"!reject {second} licence not found", f"Application #{second} rejected")
    await carol.wait_for_message(carol.dm, mod.bot_id, "Reason: licence not found")
    await carol.say(carol.dm, "!apply news reposter LIC-2026-002")
    applied = await carol.wait_for_message(carol.dm, mod.bot_id, "Application #", after=before + 2)
    third = int(re.search(r"#(\d+)", applied["content"]["body"]).group(1))
    await mod.command(f"!approve {third}", "approved")
    await carol.say(carol.dm, f"!whois {carol.user_id}")
    await carol.wait_for_message(carol.dm, mod.bot_id, "News authorisation: reposter")


async def _approved(mod, user, text: str) -> None:
    before = len(user.messages(user.dm, mod.bot_id))
    await user.say(user.dm, text)
    applied = await user.wait_for_message(user.dm, mod.bot_id, "Application #", after=before)
    number = int(re.search(r"#(\d+)", applied["content"]["body"]).group(1))
    await mod.command(f"!approve {number}", "approved")


async def _label(user, room_id: str, owner: str) -> dict:
    status, body = await user.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/im.rulesbot.label/user:{owner}")
    return body if status == 200 else {}


async def _topic(user, room_id: str) -> str:
    status, body = await user.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/")
    return body.get("topic", "") if status == 200 else ""


async def test_labels_appear_where_users_see_them_and_go_on_revoke(gated, mod):
    lobby = await mod.protected_room()
    pub = await mod.member("pub", gated.hs)
    await _approved(mod, pub, "!apply public news-organisation Pub Daily")
    await _approved(mod, pub, "!apply news publisher LIC-PUB-1")
    status, room = await pub.create_room(name="Pub Daily", topic="Daily news", invite=[mod.bot_id],
                                         power_level_content_override={"users": {mod.bot_id: 100}})
    channel = room["room_id"]

    async def bot_joined() -> bool:
        status, members = await pub.api("GET", f"/_matrix/client/v3/rooms/{channel}/joined_members")
        return mod.bot_id in members.get("joined", {})

    await until(bot_joined, what="the bot to accept the public account's invite")
    status, body = await publish(pub, channel)
    assert status == 200, body
    await until(lambda: _label_tier(pub, channel, pub.user_id), timeout=20, what="the label in the channel")
    label = await _label(pub, channel, pub.user_id)
    assert label["category"] == "news-organisation" and label["filing_number"].startswith("IM")
    assert label["user_id"] == pub.user_id
    await until(lambda: _topic_is(pub, channel, "[News publisher] Daily news"), what="the topic tag")
    assert (await _label(mod.moderator, lobby, pub.user_id)).get("tier") == "publisher", "protected rooms show it too"

    await mod.command(f"!revoke {pub.user_id} licence withdrawn", "has been revoked")
    await until(lambda: _no_label(pub, channel, pub.user_id), what="the label to go")
    await until(lambda: _topic_is(pub, channel, "Daily news"), what="the tag to go")
    assert await _label(mod.moderator, lobby, pub.user_id) == {}
    actions = [r[0] for r in await mod.bot.rows("SELECT action FROM audit_log WHERE target = ? ORDER BY id", (pub.user_id,))]
    assert "label.set" in actions and actions[-1] == "label.remove"


async def _topic_is(user, room_id: str, topic: str) -> bool:
    return await _topic(user, room_id) == topic


async def _label_tier(user, room_id: str, owner: str) -> bool:
    return (await _label(user, room_id, owner)).get("tier") == "publisher"


async def _no_label(user, room_id: str, owner: str) -> bool:
    return await _label(user, room_id, owner) == {}


async def _channel_answer(user, bot_id: str, room: str, expect: str) -> str:
    before = len(user.messages(user.dm, bot_id))
    await user.say(user.dm, f"!channel add {room}")
    return (await user.wait_for_message(user.dm, bot_id, expect, after=before))["content"]["body"]


async def test_channel_add_takes_only_a_public_room_the_owner_runs_with_the_bot_in_it(gated, mod):
    owner, rival = await mod.member("owner", gated.hs), await mod.member("rival", gated.hs)
    await _approved(mod, owner, "!apply public enterprise Owner Co")
    await _approved(mod, rival, "!apply public enterprise Rival Co")
    bot = mod.bot_id

    # The management room: refused with its own reason.
    answer = await _channel_answer(owner, bot, mod.room, "management room")
    assert answer == f"{mod.room} is the moderators' management room; it cannot be a channel."

    # A public room without the bot: refused, saying how to bring the bot in.
    status, room = await owner.create_room(preset="public_chat", name="Owner Co")
    assert status == 200, room
    channel = room["room_id"]
    answer = await _channel_answer(owner, bot, channel, "I am not in")
    assert answer == (f"I am not in {channel}, so I can neither check nor label it. Invite me ({bot}) to the room, "
                      "then send the command again.")

    # A private room (the bot invited, so it can look): refused, it would wrongly become news scope.
    status, room = await owner.create_room(preset="private_chat", name="Owner staff", invite=[bot])
    private = room["room_id"]

    async def bot_in(room_id) -> bool:
        status, members = await owner.api("GET", f"/_matrix/client/v3/rooms/{room_id}/joined_members")
        return bot in members.get("joined", {})

    await until(lambda: bot_in(private), what="the bot to accept the invite to the private room")
    answer = await _channel_answer(owner, bot, private, "is not public")
    assert answer.startswith(f'{private} is not public (its join rule is "invite" and it is not in the room directory).')

    # Once the bot is in the public room, it becomes the owner's channel.
    status, body = await owner.api("POST", f"/_matrix/client/v3/rooms/{channel}/invite", {"user_id": bot})
    assert status == 200, body
    await until(lambda: bot_in(channel), what="the bot to accept the invite to the channel")
    await _channel_answer(owner, bot, channel, "is now a channel of your public account")

    # Another public account may not take it, even as a member of the room (its level is 0 anyway).
    await rival.join(channel)
    answer = await _channel_answer(rival, bot, channel, "already the channel")
    assert answer.startswith(f"{channel} is already the channel of another public account.")
    await rival.say(rival.dm, f"!whois {owner.user_id}")
    await rival.wait_for_message(rival.dm, bot, channel)
