"""Member events show text nobody else judges (Synapse sends no membership to check_event_for_spam):
a display name or a leave/kick/ban reason that reads as news is redacted where the bot may, and the
sender told; the membership itself stays."""

from types import SimpleNamespace

import pytest

from bot.i18n import Translator
from bot.matrix.roommode import RoomMode, member_text
from bot.policy import PolicyState
from bot.policy.news import NewsRules
from tests.unit.journal import executor

NOW = 1_790_000_000_000
PROTECTED, SCOPED, PRIVATE = "!protected:hs", "!square:hs", "!private:hs"
NEWS = "The State Council met"


class Levels:
    def __init__(self, may):
        self.may = may

    def can_user_redact(self, user_id):
        return self.may


class FakeMatrix:
    def __init__(self):
        self.redacted, self.sent = [], []
        self.client = SimpleNamespace(rooms={})

    async def redact(self, room_id, event_id, reason, *, txn):
        self.redacted.append((room_id, event_id, reason))

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.sent.append((room_id, body))


@pytest.fixture
def mode(store):
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", moderators=frozenset({"@mod:hs"}))
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "organs", "keywords": ["State Council"]}]})
    state.news_scope.add(PROTECTED)
    state.open_rooms.add(SCOPED)
    matrix = FakeMatrix()
    room_mode = RoomMode(matrix, store, state, SimpleNamespace(request=lambda *a: None), Translator("en"),
                         lambda: NOW, lambda room: set())
    room_mode.protected.add(PROTECTED)
    effects = executor(store, matrix, clock=lambda: NOW)

    async def judge(room_id, event):
        await room_mode.on_member(room_id, event, room_id)
        await effects.run_due()

    room_mode.judge = judge
    return room_mode, matrix


def member(event_id, membership, sender="@u:hs", **content):
    return {"event_id": event_id, "sender": sender, "type": "m.room.member", "state_key": sender,
            "content": {"membership": membership, **content}}


@pytest.mark.parametrize("content", [{"displayname": NEWS}, {"reason": NEWS}], ids=["displayname", "reason"])
async def test_a_member_event_showing_news_is_redacted_in_a_protected_room_and_the_sender_told(mode, content):
    room_mode, matrix = mode
    membership = "join" if "displayname" in content else "leave"
    await room_mode.judge(PROTECTED, member("$m", membership, **content))
    assert [(room, event_id) for room, event_id, _ in matrix.redacted] == [(PROTECTED, "$m")]
    reason = matrix.redacted[0][2]
    assert reason.startswith("Your display name or membership reason was removed from this room")
    assert "rule organs" in reason and "!apply news publisher" in reason
    assert matrix.sent == [("!dm-@u:hs", reason)]


async def test_in_server_mode_only_rooms_in_scope_where_the_bot_may_redact(mode):
    room_mode, matrix = mode
    matrix.client.rooms[SCOPED] = SimpleNamespace(power_levels=Levels(False))
    await room_mode.judge(SCOPED, member("$a", "join", displayname=NEWS))
    assert matrix.redacted == []  # the bot has no power there: nothing it can do
    matrix.client.rooms[SCOPED] = SimpleNamespace(power_levels=Levels(True))
    await room_mode.judge(SCOPED, member("$b", "join", displayname=NEWS))
    assert [event_id for _, event_id, _ in matrix.redacted] == ["$b"]
    matrix.client.rooms[PRIVATE] = SimpleNamespace(power_levels=Levels(True))
    await room_mode.judge(PRIVATE, member("$c", "join", displayname=NEWS))
    assert [event_id for _, event_id, _ in matrix.redacted] == ["$b"]  # out of scope: not judged


async def test_harmless_names_and_exempt_senders_are_left_alone(mode):
    room_mode, matrix = mode
    await room_mode.judge(PROTECTED, member("$a", "join", displayname="Alice"))
    await room_mode.judge(PROTECTED, member("$b", "ban", sender="@mod:hs", reason=NEWS))
    assert matrix.redacted == [] and matrix.sent == []


def test_member_text_reads_the_display_name_and_the_reason_only():
    assert member_text({"membership": "leave", "displayname": " A ", "reason": "B", "avatar_url": "mxc://x/y"}) == "A\nB"
    assert member_text({"membership": "join"}) is None
