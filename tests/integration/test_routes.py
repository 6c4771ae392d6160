"""No path around the news rules: every route a client offers gets the refusal the plain message gets.

One account that agreed and holds no news tier, in a public room of a real Synapse wired to the gate.
Each route carries the same current-affairs news in another shape (another field, event type,
spelling or link form); each must be refused with exactly the message the plain route gets
(M_FORBIDDEN naming the rule and the tier to apply for). Everything runs against one bot so the
whole table costs a few seconds; every failing route is reported, not only the first.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.integration.harness import put_state, setup
from tests.integration.harness import send_raw as send

pytestmark = pytest.mark.integration

RULES = {
    "news": [
        {"id": "state-organs", "keywords": ["State Council", "国务院"]},
        {"id": "news-agencies", "domains": ["xinhuanet.com", "news.cn"]},
    ],
    "repost": {"sources": [], "markers": ["转载自"], "quote_replies": True, "identical_days": 7},
}
NEWS = "国务院 today"  # the plain route's text: keyword state-organs
HTML = "org.matrix.custom.html"


@pytest.fixture
async def square(gated, make_bot, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES, allow_unicode=True), encoding="utf-8")
    mod = await setup(gated.hs, gated.bot, make_bot, gate=gated, public_accounts={"rules_file": str(rules)})
    status, room = await mod.moderator.create_room(preset="public_chat", name="Square", invite=[mod.bot_id])
    assert status == 200, room
    await mod.command("!cases", "")  # the bot has joined the square: it is news scope
    mod.square = room["room_id"]
    member = await mod.member("routes", gated.hs)
    await member.join(mod.square)
    yield mod, member
    for user in mod.users:
        await user.close()






def text(body: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return "m.room.message", {"msgtype": "m.text", "body": body, **extra}


# Each route: (name, rule it must name, (event type, content)). Sent by the member into the square.
MESSAGE_ROUTES: list[tuple[str, str, tuple[str, dict[str, Any]]]] = [
    ("formatted_body under a harmless body", "state-organs",
     text("hello", format=HTML, formatted_body="<p>hello <b>国务院</b> today</p>")),
    ("zero-width space inside the keyword", "state-organs", text("国\u200b务\u200d院 today")),
    ("soft hyphen and word joiner", "state-organs", text("State\u00ad Coun\u2060cil met")),
    ("fullwidth Latin", "state-organs", text("Ｓｔａｔｅ Ｃｏｕｎｃｉｌ met")),
    ("traditional characters", "state-organs", text("國務院 today")),
    ("Cyrillic look-alike letters", "state-organs", text("St\u0430te C\u043euncil met")),
    ("upper case", "state-organs", text("STATE COUNCIL met")),
    ("notice", "state-organs", ("m.room.message", {"msgtype": "m.notice", "body": NEWS})),
    ("emote", "state-organs", ("m.room.message", {"msgtype": "m.emote", "body": NEWS})),
    ("image caption", "state-organs",
     ("m.room.message", {"msgtype": "m.image", "body": "国务院 meets", "filename": "photo.jpg",
                         "url": "mxc://example.org/abc", "info": {"mimetype": "image/jpeg"}})),
    ("file name", "state-organs",
     ("m.room.message", {"msgtype": "m.file", "body": "国务院通知.pdf", "url": "mxc://example.org/abc"})),
    ("sticker", "state-organs", ("m.sticker", {"body": NEWS, "url": "mxc://example.org/abc", "info": {}})),
    ("edit of a harmless message", "state-organs",
     text("* hello", **{"m.new_content": {"msgtype": "m.text", "body": NEWS},
                        "m.relates_to": {"rel_type": "m.replace", "event_id": "$harmless"}})),
    ("poll question (unstable)", "state-organs",
     ("org.matrix.msc3381.poll.start", {
         "org.matrix.msc3381.poll.start": {
             "kind": "org.matrix.msc3381.poll.undisclosed", "max_selections": 1,
             "question": {"org.matrix.msc1767.text": NEWS},
             "answers": [{"id": "a", "org.matrix.msc1767.text": "yes"}, {"id": "b", "org.matrix.msc1767.text": "no"}]},
         "org.matrix.msc1767.text": "poll"})),
    ("poll answer (unstable)", "state-organs",
     ("org.matrix.msc3381.poll.start", {
         "org.matrix.msc3381.poll.start": {
             "kind": "org.matrix.msc3381.poll.disclosed", "max_selections": 1,
             "question": {"org.matrix.msc1767.text": "lunch?"},
             "answers": [{"id": "a", "org.matrix.msc1767.text": NEWS}, {"id": "b", "org.matrix.msc1767.text": "no"}]},
         "org.matrix.msc1767.text": "lunch?"})),
    ("poll (stable)", "state-organs",
     ("m.poll.start", {"m.poll": {"kind": "m.disclosed", "max_selections": 1,
                                  "question": {"m.text": [{"body": NEWS}]},
                                  "answers": [{"m.id": "a", "m.text": [{"body": "yes"}]}]},
                       "m.text": [{"body": "poll"}]})),
    ("extensible-events text", "state-organs", ("m.message", {"m.text": [{"body": NEWS}]})),
    ("unstable extensible text", "state-organs", ("m.room.message", {"msgtype": "m.text", "body": "hi",
                                                                     "org.matrix.msc1767.text": NEWS})),
    ("an invented event type with a body", "state-organs", ("com.example.post", {"body": NEWS})),
]

LINK_PLAIN = text("see https://xinhuanet.com/politics/1.htm")
LINK_ROUTES: list[tuple[str, str, tuple[str, dict[str, Any]]]] = [
    ("trailing dot", "news-agencies", text("see https://xinhuanet.com./politics/1.htm")),
    ("userinfo", "news-agencies", text("see https://x@news.cn/politics/1.htm")),
    ("no scheme", "news-agencies", text("see www.news.cn/politics/1.htm")),
    ("upper-case host", "news-agencies", text("see HTTPS://WWW.XINHUANET.COM/a")),
    ("fullwidth dots", "news-agencies", text("see https://www。news。cn/a")),
    ("link only in the HTML", "news-agencies",
     text("see this", format=HTML, formatted_body='<a href="https://www.news.cn/a">this</a>')),
    ("percent-encoded host", "news-agencies", text("see https://%6Eews.cn/a")),
]


async def test_every_message_route_gets_the_plain_refusal(square):
    mod, member = square
    status, plain = await send(member, mod.square, *text(NEWS))
    assert status == 403 and plain["errcode"] == "M_FORBIDDEN", plain
    assert "state-organs" in plain["error"] and "!apply news publisher" in plain["error"], plain
    status, harmless = await send(member, mod.square, *text("lunch at noon?"))
    assert status == 200, harmless  # the member can post: the refusals below are the news rules'

    failures = []
    for name, rule, (event_type, content) in MESSAGE_ROUTES:
        relation = content.get("m.relates_to")
        if relation and relation.get("event_id") == "$harmless":  # Synapse refuses edits of unknown events
            content = {**content, "m.relates_to": {**relation, "event_id": harmless["event_id"]}}
        status, answer = await send(member, mod.square, event_type, content)
        if status != 403 or answer != plain:
            failures.append(f"{name}: HTTP {status} {answer}")
    assert not failures, "routes around the rule:\n" + "\n".join(failures)


async def test_every_link_form_gets_the_plain_link_refusal(square):
    mod, member = square
    status, plain = await send(member, mod.square, *LINK_PLAIN)
    assert status == 403 and "news-agencies" in plain["error"], plain
    failures = []
    for name, rule, (event_type, content) in LINK_ROUTES:
        status, answer = await send(member, mod.square, event_type, content)
        if status != 403 or answer != plain:
            failures.append(f"{name}: HTTP {status} {answer}")
    # A look-alike domain is not the agency's: it must not be taken for news.
    status, answer = await send(member, mod.square, *text("see https://notnews.cn/a"))
    if status != 200:
        failures.append(f"notnews.cn was refused: {answer}")
    assert not failures, "routes around the rule:\n" + "\n".join(failures)


async def test_topic_and_name_of_a_room_made_public_a_moment_ago(square):
    """The member's own room, public from its creation: its state events are in scope at once."""
    mod, member = square
    status, plain = await send(member, mod.square, *text(NEWS))
    assert status == 403, plain
    status, room = await member.create_room(preset="public_chat", name="My room")
    assert status == 200, room
    room_id = room["room_id"]
    # No wait, no poll: the room is public from its first state event.
    status, answer = await send(member, room_id, *text(NEWS))
    assert (status, answer) == (403, plain)
    status, answer = await put_state(member, room_id, "m.room.topic", {"topic": NEWS})
    assert (status, answer) == (403, plain)
    status, answer = await put_state(member, room_id, "m.room.name", {"name": "國務院"})
    assert (status, answer) == (403, plain)
    status, answer = await put_state(member, room_id, "m.room.topic", {"topic": "a quiet place"})
    assert status == 200, answer


async def test_a_private_room_turned_public_is_in_scope_at_once(square):
    mod, member = square
    status, plain = await send(member, mod.square, *text(NEWS))
    assert status == 403, plain
    status, room = await member.create_room(preset="private_chat", name="Was private")
    assert status == 200, room
    room_id = room["room_id"]
    status, answer = await send(member, room_id, *text("nothing newsworthy"))
    assert status == 200, answer
    status, answer = await put_state(member, room_id, "m.room.join_rules", {"join_rule": "public"})
    assert status == 200, answer
    status, answer = await send(member, room_id, *text(NEWS))
    assert (status, answer) == (403, plain)


async def test_a_private_room_holding_news_cannot_be_opened(square):
    """Its old messages stay readable under the visibility they were posted with."""
    mod, member = square
    status, room = await member.create_room(preset="private_chat", name="Back room")
    assert status == 200, room
    room_id = room["room_id"]
    status, answer = await send(member, room_id, *text(NEWS))
    assert status == 200, answer  # a private room is out of scope by default
    for event_type, content in (("m.room.join_rules", {"join_rule": "public"}),
                                ("m.room.history_visibility", {"history_visibility": "world_readable"})):
        status, answer = await put_state(member, room_id, event_type, content)
        assert status == 403 and answer["errcode"] == "M_FORBIDDEN", answer
        assert "state-organs" in answer["error"] and "new room" in answer["error"], answer
