"""One bad event must not stop the rest of a sync batch."""

import logging
from types import SimpleNamespace

from bot.policy import PolicyState
from bot.router import Router


class FakeDispatcher:
    def __init__(self):
        self.seen = []

    async def handle(self, room_id, event, *, answer_unknown, moderator_place=False):
        self.seen.append(event["event_id"])
        if event["event_id"] == "$bad":
            raise RuntimeError("boom")
        return True


class FakeRoomMode:
    protected: set = set()

    def __init__(self):
        self.seen = []

    async def on_event(self, room_id, event, room_name):
        self.seen.append(event["event_id"])


def _event(event_id, body="!status"):
    return SimpleNamespace(source={"event_id": event_id, "sender": "@u:hs", "type": "m.room.message", "content": {"body": body}})


def _batch(*events):
    room = SimpleNamespace(timeline=SimpleNamespace(events=list(events)))
    return SimpleNamespace(rooms=SimpleNamespace(invite={}, leave={}, join={"!r:hs": room}))


def _router():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    dispatcher, room_mode = FakeDispatcher(), FakeRoomMode()
    services = SimpleNamespace(store=None, state=state, onboarding=None, agreements=None, t=None)
    router = Router(None, services, dispatcher, room_mode, lambda r: r, lambda r: set(), SimpleNamespace(room_id=None))
    return router, dispatcher, room_mode


async def test_a_failing_handler_is_logged_and_the_batch_goes_on(caplog):
    router, dispatcher, room_mode = _router()
    with caplog.at_level(logging.ERROR):
        await router.handle_batch(_batch(_event("$1"), _event("$bad"), _event("$3")), live=True)
    assert dispatcher.seen == ["$1", "$bad", "$3"]
    assert room_mode.seen == ["$1", "$3"]
    assert "handling event $bad failed" in caplog.text


async def test_backlog_of_a_fresh_database_is_not_run_as_commands():
    router, dispatcher, _ = _router()
    await router.handle_batch(_batch(_event("$old")), live=False)
    assert dispatcher.seen == []


async def test_events_without_sender_or_id_are_skipped():
    router, dispatcher, _ = _router()
    junk = SimpleNamespace(source={"type": "m.room.message"})
    await router.handle_batch(_batch(junk, SimpleNamespace(), _event("$ok")), live=True)
    assert dispatcher.seen == ["$ok"]
