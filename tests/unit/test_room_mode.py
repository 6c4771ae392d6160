"""Room mode judges what a room shows: state events with text (topic, name …) and edits, through
the one text pipeline; a refused one is redacted, and for news the sender is told why."""

import pytest

import bot.matrix.roommode as roommode
from bot.i18n import Translator
from bot.matrix.roommode import RoomMode
from bot.policy import PolicyState
from bot.policy.news import NewsRules
from tests.unit.journal import executor

NOW = 1_790_000_000_000
ROOM = "!square:hs"


class FakeMatrix:
    def __init__(self):
        self.redacted, self.sent = [], []

    async def redact(self, room_id, event_id, reason, *, txn):
        self.redacted.append((event_id, reason))

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.sent.append((room_id, body, txn))


class FakeOnboarding:
    def __init__(self):
        self.told = []

    def request(self, user_id, note=None):
        self.told.append((user_id, note))


@pytest.fixture
def room_mode(store, monkeypatch):
    # The pipeline's own extraction is another module's concern (and tested there): here a stand-in
    # that shows a topic and an edit's new text, as the real one does, proves room mode asks it
    # about state events and passes the whole content.
    def event_text(event_type, content):
        if event_type == "m.room.topic":
            return content.get("topic"), False
        if event_type == "m.room.message":
            return (content.get("m.new_content") or content).get("body"), False
        return None, False

    monkeypatch.setattr(roommode, "event_text", event_text)
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "organs", "keywords": ["State Council"]}]})
    state.news_scope.add(ROOM)
    state.record_acceptance("@remote:elsewhere", "1")
    matrix, onboarding = FakeMatrix(), FakeOnboarding()
    mode = RoomMode(matrix, store, state, onboarding, Translator("en"), lambda: NOW, lambda room: set())
    mode.protected.add(ROOM)
    effects = executor(store, matrix, clock=lambda: NOW)

    async def on_event(*args):
        # Room mode journals; the executor carries out, as in the service.
        await mode.on_event(*args)
        await effects.run_due()

    mode.on_event_and_effects = on_event
    return mode, matrix, onboarding


def event(event_id, event_type, content, state_key=None):
    e = {"event_id": event_id, "sender": "@remote:elsewhere", "type": event_type, "content": content}
    if state_key is not None:
        e["state_key"] = state_key
    return e


async def test_a_topic_carrying_news_is_redacted_and_the_sender_told(room_mode):
    mode, matrix, onboarding = room_mode
    await mode.on_event_and_effects(ROOM, event("$topic", "m.room.topic", {"topic": "The State Council met"}, ""), "Square")
    assert [e for e, _ in matrix.redacted] == ["$topic"]
    reason = matrix.redacted[0][1]
    assert "rule organs" in reason and "!apply news publisher" in reason
    assert [(room, body) for room, body, _ in matrix.sent] == [("!dm-@remote:elsewhere", reason)]


async def test_a_replayed_violation_is_redacted_and_told_once(room_mode, store):
    mode, matrix, onboarding = room_mode
    topic = event("$topic", "m.room.topic", {"topic": "The State Council met"}, "")
    await mode.on_event_and_effects(ROOM, topic, "Square")
    await mode.on_event_and_effects(ROOM, topic, "Square")  # the batch again, as after a crash
    assert [e for e, _ in matrix.redacted] == ["$topic"]
    assert len(matrix.sent) == 1
    assert [(e.kind, e.status) for e in await store.effects.listed()] == [("redact", "done"), ("dm", "done")]


async def test_an_edit_is_judged_on_its_new_content_and_the_edit_redacted(room_mode):
    mode, matrix, onboarding = room_mode
    edit = event("$edit", "m.room.message", {
        "msgtype": "m.text", "body": "* hello",
        "m.new_content": {"msgtype": "m.text", "body": "The State Council met"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"},
    })
    await mode.on_event_and_effects(ROOM, edit, "Square")
    assert [e for e, _ in matrix.redacted] == ["$edit"]
    assert matrix.sent[0][0] == "!dm-@remote:elsewhere"


async def test_state_without_text_and_harmless_topics_are_left_alone(room_mode):
    mode, matrix, onboarding = room_mode
    await mode.on_event_and_effects(ROOM, event("$pl", "m.room.power_levels", {"users": {}}, ""), "Square")
    await mode.on_event_and_effects(ROOM, event("$t", "m.room.topic", {"topic": "lunch at noon"}, ""), "Square")
    await mode.on_event_and_effects(ROOM, event("$m", "m.room.member", {"membership": "join"}, "@remote:elsewhere"), "Square")
    assert matrix.redacted == [] and matrix.sent == [] and onboarding.told == []
    assert await mode._store.effects.listed() == []


async def test_a_first_post_is_not_redacted_when_the_account_accepted_at_registration(room_mode, store):
    # The service wires bot.consent's lookup in: asked before refusing for want of the agreement.
    mode, matrix, onboarding = room_mode
    asked: list[str] = []

    async def consent(user_id):
        asked.append(user_id)
        if user_id != "@registered:hs":
            return False
        mode._state.record_acceptance(user_id, "1")  # what the recorded acceptance does in memory
        return True

    mode.consent = consent
    first = {**event("$hi", "m.room.message", {"msgtype": "m.text", "body": "hi all"}), "sender": "@registered:hs"}
    await mode.on_event_and_effects(ROOM, first, "Square")
    assert matrix.redacted == [] and matrix.sent == [] and await store.effects.listed() == []
    # Another newcomer, who did not accept at registration, meets room mode as before.
    other = {**event("$yo", "m.room.message", {"msgtype": "m.text", "body": "yo"}), "sender": "@newcomer:hs"}
    await mode.on_event_and_effects(ROOM, other, "Square")
    assert [e for e, _ in matrix.redacted] == ["$yo"]
    assert {e.kind for e in await store.effects.listed()} >= {"redact", "mute", "onboard"}
    assert asked == ["@registered:hs", "@newcomer:hs"]
