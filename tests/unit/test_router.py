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
    joining: set = set()

    def __init__(self):
        self.seen = []
        self.members = []

    async def on_event(self, room_id, event, room_name):
        self.seen.append(event["event_id"])

    async def on_member(self, room_id, event, room_name):
        self.members.append(event["event_id"])


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


class FakeMatrix:
    def __init__(self):
        self.calls = []

    async def join(self, room_id):
        self.calls.append(("join", room_id))
        return room_id

    async def leave(self, room_id):
        self.calls.append(("leave", room_id))


def _invite_router(moderators=frozenset({"@mod:hs"})):
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", moderators=moderators)
    matrix = FakeMatrix()
    services = SimpleNamespace(store=None, state=state, onboarding=None, agreements=None, t=None)
    router = Router(matrix, services, FakeDispatcher(), FakeRoomMode(), lambda r: r, lambda r: set(),
                    SimpleNamespace(room_id=None))
    return router, matrix


def _member(sender, membership="invite", state_key="@bot:hs"):
    return {"type": "m.room.member", "state_key": state_key, "sender": sender, "content": {"membership": membership}}


def _invite_batch(room_id, events):
    from nio import SyncResponse

    # Parsed by nio as the sync loop does: the order Synapse sent is what the router sees.
    return SyncResponse.from_dict({"next_batch": "s1", "rooms": {
        "invite": {room_id: {"invite_state": {"events": events}}}, "join": {}, "leave": {}}})


async def test_a_forged_member_event_in_stripped_state_does_not_bring_the_bot_in():
    router, matrix = _invite_router()
    # A remote server's stripped state claims our moderator invited the bot; Synapse appends the
    # real invite, from a stranger on that server, last.
    events = [
        _member("@mod:hs"),
        {"type": "m.room.name", "state_key": "", "sender": "@mod:hs", "content": {"name": "Moderators"}},
        _member("@stranger:evil.example"),
    ]
    await router.handle_batch(_invite_batch("!evil:evil.example", events), live=True)
    assert matrix.calls == [("leave", "!evil:evil.example")]


async def test_the_real_invite_of_a_moderator_is_accepted():
    router, matrix = _invite_router()
    events = [{"type": "m.room.join_rules", "state_key": "", "sender": "@mod:hs", "content": {"join_rule": "invite"}},
              _member("@mod:hs")]
    await router.handle_batch(_invite_batch("!r:hs", events), live=True)
    assert matrix.calls == [("join", "!r:hs")]


async def test_a_public_accounts_invite_is_accepted_and_a_remote_moderators_is_not():
    router, matrix = _invite_router(moderators=frozenset({"@mod:hs", "@mod:other.example"}))
    router._state.public_accounts["@news:hs"] = object()
    await router.handle_batch(_invite_batch("!c:hs", [_member("@news:hs")]), live=True)
    await router.handle_batch(_invite_batch("!o:other.example", [_member("@mod:other.example")]), live=True)
    assert matrix.calls == [("join", "!c:hs"), ("leave", "!o:other.example")]


async def test_an_invite_state_without_the_invite_event_last_is_declined():
    router, matrix = _invite_router()
    # The only member event is the stripped state's (not last): nothing vouches for its sender.
    events = [_member("@mod:hs"), {"type": "m.room.name", "state_key": "", "sender": "@x:evil", "content": {"name": "x"}}]
    await router.handle_batch(_invite_batch("!e:evil", events), live=True)
    await router.handle_batch(_invite_batch("!f:evil", [_member("@mod:hs", state_key="@other:hs")]), live=True)
    await router.handle_batch(_invite_batch("!g:evil", [_member("@mod:hs", membership="join")]), live=True)
    assert matrix.calls == [("leave", "!e:evil"), ("leave", "!f:evil"), ("leave", "!g:evil")]


async def test_an_invite_to_a_protected_room_is_accepted_whoever_sent_it():
    router, matrix = _invite_router()
    router._room_mode.protected = {"!p:hs"}
    await router.handle_batch(_invite_batch("!p:hs", [_member("@someone:elsewhere")]), live=True)
    assert matrix.calls == [("join", "!p:hs")]
