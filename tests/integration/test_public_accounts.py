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
