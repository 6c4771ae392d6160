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


def guard_with(rooms, token="admin-token"):
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
        return {}

    async def on_initial_text(room_id, creator, refused, error, aliases):
        told.append((room_id, creator, sorted(refused), {d.reason for d in refused.values()}, error))
        guard.aliases = aliases

    guard._call = call  # noqa: SLF001 — the guard's one door to Synapse
    guard.on_initial_text = on_initial_text
    return guard, state, calls, told


async def test_a_public_rooms_news_name_is_refused_and_the_bot_made_admin():
    guard, state, calls, told = guard_with({"!pub:hs": new_room("!pub:hs", "public")})
    await guard._look(CREATOR, None)  # noqa: SLF001 — one look, as the watch makes
    assert told == [("!pub:hs", CREATOR, ["m.room.name"], {Reason.NEWS_TIER_MISSING}, None)]
    # The guard only reads: making the bot admin is the service's journaled effect (room_admin).
    assert {method for method, _, _ in calls} == {"GET"}
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


async def test_without_an_admin_token_the_reason_is_passed_on_and_a_refused_alias_is_named():
    guard, state, _, told = guard_with({"!pub:hs": new_room("!pub:hs", "public")}, token=None)
    state.open_rooms.add("!pub:hs")
    await guard._judge_initial_text("!pub:hs", CREATOR, new_room("!pub:hs", "public"))  # noqa: SLF001
    assert told[-1][4] == "no homeserver.admin_token"
    room = new_room("!pub:hs", "public") + [{"type": "m.room.canonical_alias", "state_key": "", "sender": CREATOR,
                                             "content": {"alias": "#国务院:hs", "alt_aliases": ["#a:hs", 7]}}]
    guard, state, _, told = guard_with({"!pub:hs": room})
    await guard._look(CREATOR, None)  # noqa: SLF001
    assert told[-1][4] is None and guard.aliases == ["#国务院:hs", "#a:hs"]


class FakeAdmin:
    def __init__(self, calls, fail=None, refuse=()):
        self.calls, self.fail, self.refuse = calls, fail, set(refuse)

    async def make_room_admin(self, room_id, user_id):
        if self.fail is not None:
            raise self.fail
        if room_id in self.refuse:
            raise MatrixError("admin API POST make_room_admin", errcode="M_FORBIDDEN")
        self.calls.append(("make_room_admin", room_id, user_id))

    async def delete_alias(self, alias):
        self.calls.append(("delete_alias", alias))

    async def unlist_room(self, room_id):
        self.calls.append(("unlist", room_id))


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


class Crash(BaseException):
    """The process dies here."""


def room_mode(matrix, store):
    return RoomMode(matrix, store, PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1"),
                    SimpleNamespace(request=lambda *a: None), Translator("en"), lambda: NOW, lambda r: set())


async def test_the_bot_clears_the_refused_text_and_tells_the_creator_and_the_moderators(store):
    matrix, admin_calls = FakeMatrix(), []
    mode = room_mode(matrix, store)
    decision = await refusal()
    assert not decision.allowed
    await mode.clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision, "m.room.topic": decision}, None,
                                  ["#guowuyuan:hs"])
    assert matrix.joined == [] and admin_calls == []  # journaled, not called
    await executor(store, matrix, admin=FakeAdmin(admin_calls), clock=lambda: NOW).run_due()
    assert admin_calls == [("make_room_admin", "!pub:hs", BOT), ("delete_alias", "#guowuyuan:hs")]
    assert matrix.joined == ["!pub:hs"] and "!pub:hs" in mode.joining
    assert sorted(matrix.states) == [("!pub:hs", "m.room.name", {"name": ""}), ("!pub:hs", "m.room.topic", {"topic": ""})]
    dm = [body for room, body in matrix.sent if room == f"!dm-{CREATOR}"]
    assert len(dm) == 1 and dm[0].startswith("About your new room !pub:hs: The name, topic or address you gave your new "
                                             "room was cleared: it reads as current-affairs news (rule cn-gov)")
    mgmt = [body for room, body in matrix.sent if room == "!mgmt"]
    assert len(mgmt) == 1 and mgmt[0].startswith(f"The initial name, topic of !pub:hs, created by {CREATOR}, was refused")
    # Asked again (the guard looked twice, or after a restart): the keys find what was done.
    await mode.clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision, "m.room.topic": decision}, None,
                                  ["#guowuyuan:hs"])
    assert await executor(store, matrix, admin=FakeAdmin(admin_calls), clock=lambda: NOW).run_due() == 0
    assert len(admin_calls) == 2 and len(matrix.states) == 2 and len(matrix.sent) == 2


async def test_a_crash_after_the_commit_leaves_the_clearing_pending_and_it_is_done_once(store):
    matrix, admin_calls = FakeMatrix(), []
    decision = await refusal()
    await room_mode(matrix, store).clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision}, None)
    with pytest.raises(Crash):  # dies in the admin call: nothing is marked done
        await executor(store, matrix, admin=FakeAdmin(admin_calls, fail=Crash()), clock=lambda: NOW).run_due()
    assert admin_calls == [] and matrix.states == [] and matrix.sent == []
    assert await executor(store, matrix, admin=FakeAdmin(admin_calls), clock=lambda: NOW).run_due() == 4
    assert admin_calls == [("make_room_admin", "!pub:hs", BOT)] and matrix.joined == ["!pub:hs"]
    assert matrix.states == [("!pub:hs", "m.room.name", {"name": ""})] and len(matrix.sent) == 2
    assert await store.effects.count_pending() == 0


async def test_when_the_bot_cannot_act_only_the_moderators_are_told(store):
    matrix = FakeMatrix(join_fails=True)
    mode = room_mode(matrix, store)
    decision = await refusal()
    await mode.clear_initial_text("!pub:hs", CREATOR, {"m.room.name": decision}, None)
    await mode.clear_initial_text("!pub2:hs", CREATOR, {"m.room.name": decision}, "no homeserver.admin_token")
    await mode.clear_initial_text("!pub3:hs", CREATOR, {"m.room.name": decision}, None)
    await executor(store, matrix, admin=FakeAdmin([], refuse={"!pub3:hs"}), clock=lambda: NOW).run_due()
    assert matrix.states == []
    assert [room for room, _ in matrix.sent] == ["!mgmt"] * 3  # no DM: nothing was cleared
    texts = sorted(body for _, body in matrix.sent)
    assert any("!pub:hs" in t and "could not clear it (the bot could not join" in t for t in texts)
    assert any("!pub2:hs" in t and "could not clear it (no homeserver.admin_token)" in t for t in texts)
    assert any("!pub3:hs" in t and "could not clear it (M_FORBIDDEN)" in t for t in texts)
    assert {e.status for e in await store.effects.listed()} == {"done", "failed"}
