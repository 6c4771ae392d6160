"""Current-affairs news on a real Synapse: tiers, reposts, identical re-posts, reloading the rules."""

from __future__ import annotations

import re
import signal

import pytest
import yaml

from tests.integration.harness import Moderation, User, refused, sent

pytestmark = pytest.mark.integration
# Each test that uses `gated` runs with the HTTP gate and with the in-process module (conftest).
BOTH_SHELLS = True

RULES = {
    "news": [{"id": "state-organs", "keywords": ["State Council", "国务院"]}],
    "repost": {"sources": ["xinhuanet.com"], "markers": ["转载自"], "quote_replies": True, "identical_days": 7},
}


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(RULES, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
async def newsroom(gated, make_bot, rules_file):
    from tests.integration.harness import setup

    mod = await setup(gated.hs, gated.bot, make_bot, gate=gated, public_accounts={"rules_file": str(rules_file)})
    status, room = await mod.moderator.create_room(preset="public_chat", name="Square", invite=[mod.bot_id])
    assert status == 200, room
    await mod.command("!cases", "")  # the bot has joined the square, so it is news scope
    mod.square = room["room_id"]
    yield mod
    for user in mod.users:
        await user.close()


async def tiered(mod: Moderation, hs, name: str, tier: str | None) -> User:
    user = await mod.member(name, hs)
    await user.join(mod.square)
    if tier is None:
        return user
    for text in ("!apply public news-website " + name, f"!apply news {tier} LIC-{name}"):
        before = len(user.messages(user.dm, mod.bot_id))
        await user.say(user.dm, text)
        applied = await user.wait_for_message(user.dm, mod.bot_id, "Application #", after=before)
        number = re.search(r"#(\d+)", applied["content"]["body"]).group(1)
        await mod.command(f"!approve {number}", "approved")
    return user




async def test_tiers_reposts_and_identical_reposts(gated, newsroom):
    mod = newsroom
    plain = await tiered(mod, gated.hs, "plain", None)
    publisher = await tiered(mod, gated.hs, "pub", "publisher")
    reposter = await tiered(mod, gated.hs, "rep", "reposter")

    refused(await plain.say(mod.square, "The State Council met today"), "rule state-organs", "news publisher",
            "!apply news publisher")
    sent(await plain.say(mod.square, "lunch at noon?"))  # not news: no tier needed
    sent(await publisher.say(mod.square, "The State Council met today"))
    sent(await reposter.say(mod.square, "国务院 会议 转载自 新华网"))
    refused(await reposter.say(mod.square, "国务院 今日会议 (our own report)"), "news publisher")
    # Identical to the publisher's message (after whitespace and case): a repost, so allowed.
    sent(await reposter.say(mod.square, "the state council   met today"))
    refused(await plain.say(mod.square, "the state council met today"), "news reposter")
    # Direct chats are out of scope by default.
    sent(await plain.say(plain.dm, "The State Council met today"))


async def test_rules_reload_without_restart_and_a_bad_file_keeps_the_old_rules(gated, newsroom, rules_file):
    mod = newsroom
    plain = await tiered(mod, gated.hs, "plain", None)
    sent(await plain.say(mod.square, "zebra crossing headline"))
    rules_file.write_text(yaml.safe_dump({**RULES, "news": [*RULES["news"], {"id": "zebra", "keywords": ["zebra"]}]}),
                          encoding="utf-8")
    await mod.command("!reload", "Rules reloaded: 2 news rule(s)")
    refused(await plain.say(mod.square, "zebra crossing headline"), "rule zebra")

    rules_file.write_text("news: [ {id: broken, regex: ['(unclosed']} ]", encoding="utf-8")
    await mod.command("!reload", "was not loaded, and the previous rules stay in force")
    refused(await plain.say(mod.square, "zebra again"), "rule zebra")

    # SIGHUP reloads too.
    rules_file.write_text(yaml.safe_dump(RULES, allow_unicode=True), encoding="utf-8")
    mod.bot.process.send_signal(signal.SIGHUP)
    from tests.integration.harness import until

    await until(lambda: mod.bot.log().count("news rules loaded") >= 3, what="the SIGHUP reload")
    sent(await plain.say(mod.square, "zebra once more"))
