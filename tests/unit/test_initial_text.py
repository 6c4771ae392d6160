"""A new room's initial name, topic and alias pass no callback of the HTTP module: the directory
guard judges them once the room exists, as if the creator had sent them, and a refused one is
cleared by the bot (made the room's admin) with the creator and the management room told."""

from types import SimpleNamespace

import pytest

from bot.directory import DirectoryGuard
from bot.i18n import Translator
from bot.matrix.client import MatrixError
from bot.matrix.roommode import RoomMode
from bot.policy import Action, ActionKind, PolicyState, Reason, decide
from bot.policy.news import NewsRules
from tests.unit.journal import executor

NOW = 1_790_000_000_000
CREATOR, BOT = "@maker:hs", "@bot:hs"
NEWS = "国务院今天开会"


def new_room(room_id, join_rule, *, name=NEWS, topic="A quiet room", visibility=None):
    state = [
        {"type": "m.room.create", "state_key": "", "sender": CREATOR, "content": {"room_version": "12"}},
        {"type": "m.room.join_rules", "state_key": "", "sender": CREATOR, "content": {"join_rule": join_rule}},
        {"type": "m.room.name", "state_key": "", "sender": CREATOR, "content": {"name": name}},
        {"type": "m.room.topic", "state_key": "", "sender": CREATOR, "content": {"topic": topic}},
    ]
    if visibility:
        state.append({"type": "m.room.history_visibility", "state_key": "", "sender": CREATOR,
                      "content": {"history_visibility": visibility}})
    return state


def guard_with(rooms, token="admin-token", fail_admin=False):
    state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1")
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
    state.record_acceptance(CREATOR, "1")
    guard = DirectoryGuard(state, "http://hs", token, lambda work, name: None)
    guard.clock = lambda: NOW
    calls, told = [], []

    async def call(method, path, body):
        calls.append((method, path, body))
        if path.endswith("/joined_rooms"):
            return {"joined_rooms": list(rooms)}
        if path.endswith("/state"):
            return {"state": rooms[path.split("/")[-2].replace("%21", "!").replace("%3A", ":")]}
        if path.startswith("/_matrix/client/v3/directory/list/room/"):
            return {"visibility": "private"}
        if path.endswith("/make_room_admin") and fail_admin:
            raise LookupError("HTTP 400 No local admin user in room")
        return {}

    async def on_initial_text(room_id, creator, refused, error):
        told.append((room_id, creator, sorted(refused), {d.reason for d in refused.values()}, error))

    guard._call = call  # noqa: SLF001 — the guard's one door to Synapse
    guard.on_initial_text = on_initial_text
    return guard, state, calls, told


async def test_a_public_rooms_news_name_is_refused_and_the_bot_made_admin():
    guard, state, calls, told = guard_with({"!pub:hs": new_room("!pub:hs", "public")})
    await guard._look(CREATOR, None)  # noqa: SLF001 — one look, as the watch makes
    assert told == [("!pub:hs", CREATOR, ["m.room.name"], {Reason.NEWS_TIER_MISSING}, None)]
    assert ("POST", "/_synapse/admin/v1/rooms/%21pub%3Ahs/make_room_admin", {"user_id": BOT}) in calls
    await guard._look(CREATOR, None)  # noqa: SLF001
    assert len(told) == 1  # judged once


@pytest.mark.parametrize("join_rule, visibility", [("restricted", None), ("invite", "world_readable")])
async def test_rooms_open_in_other_ways_are_judged_too(join_rule, visibility):
    guard, state, calls, told = guard_with({"!r:hs": new_room("!r:hs", join_rule, visibility=visibility)})
    await guard._look(CREATOR, None)  # noqa: SLF001
    assert state.in_news_scope("!r:hs")  # a room created world-readable is in scope from its first look
    assert [t[2] for t in told] == [["m.room.name"]]


async def test_a_private_rooms_news_name_keeps_the_room_from_being_opened():
    guard, state, calls, told = guard_with({"!priv:hs": new_room("!priv:hs", "invite", topic=NEWS)})
    await guard._look(CREATOR, None)  # noqa: SLF001
    assert told == [] and state.private_news == {"!priv:hs": "cn-gov"}


async def test_without_an_admin_token_or_when_make_room_admin_fails_the_reason_is_passed_on():
    guard, state, _, told = guard_with({"!pub:hs": new_room("!pub:hs", "public")}, token=None)
    state.open_rooms.add("!pub:hs")
    await guard._judge_initial_text("!pub:hs", CREATOR, new_room("!pub:hs", "public"))  # noqa: SLF001
    assert told[-1][4] == "no homeserver.admin_token"
    guard, state, _, told = guard_with({"!pub:hs": new_room("!pub:hs", "public")}, fail_admin=True)
    await guard._look(CREATOR, None)  # noqa: SLF001
    assert told[-1][4].startswith("make_room_admin failed: HTTP 400 No local admin user")


class FakeMatrix:
    def __init__(self, join_fails=False):
        self.joined, self.states, self.sent = [], [], []
        self.join_fails = join_fails

    async def join(self, room_id):
        if self.join_fails:
            raise MatrixError("join", errcode="M_FORBIDDEN")
        self.joined.append(room_id)
        return room_id

    async def put_state(self, room_id, event_type, content, state_key):
        self.states.append((room_id, event_type, content))

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.sent.append((room_id, body))


async def refusal():
    guard, state, _, told = guard_with({})
    state.open_rooms.add("!pub:hs")
    return decide(Action(ActionKind.SEND_EVENT, CREATOR, room_id="!pub:hs", event_type="m.room.name", body=NEWS), state, NOW)


async def test_the_bot_clears_the_refused_text_and_tells_the_creator_and_the_moderators(store):
    matrix = FakeMatrix()
    mode = RoomMode(matrix, store, PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1"),
                    SimpleNamespace(request=lambda *a: None), Translator("en"), lambda: NOW, lambda r: set())
    decision = await refusal()
    assert not decision.allowed
    await mode.clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision, "m.room.topic": decision}, None)
    await executor(store, matrix, clock=lambda: NOW).run_due()
    assert matrix.joined == ["!pub:hs"]
    assert sorted(matrix.states) == [("!pub:hs", "m.room.name", {"name": ""}), ("!pub:hs", "m.room.topic", {"topic": ""})]
    dm = [body for room, body in matrix.sent if room == f"!dm-{CREATOR}"]
    assert len(dm) == 1 and dm[0].startswith("About your new room !pub:hs: The name, topic or address you gave your new "
                                             "room was cleared: it reads as current-affairs news (rule cn-gov)")
    mgmt = [body for room, body in matrix.sent if room == "!mgmt"]
    assert len(mgmt) == 1 and mgmt[0].startswith(f"The initial name, topic of !pub:hs, created by {CREATOR}, was refused")


async def test_when_the_bot_cannot_act_only_the_moderators_are_told(store):
    matrix = FakeMatrix(join_fails=True)
    mode = RoomMode(matrix, store, PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1"),
                    SimpleNamespace(request=lambda *a: None), Translator("en"), lambda: NOW, lambda r: set())
    decision = await refusal()
    await mode.clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision}, None)
    await mode.clear_initial_text("!pub2:hs", CREATOR, {"m.room.name": decision}, "no homeserver.admin_token")
    await executor(store, matrix, clock=lambda: NOW).run_due()
    assert matrix.states == []
    assert [room for room, _ in matrix.sent] == ["!mgmt", "!mgmt"]
    assert "could not clear it (the bot could not join" in matrix.sent[0][1]
    assert "could not clear it (no homeserver.admin_token)" in matrix.sent[1][1]
