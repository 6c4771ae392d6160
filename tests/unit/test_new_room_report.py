"""A room creation reported after createRoom ran (the in-process module's new_room item, issue 10
review break 5): the directory guard must still classify the new room, though it exists already
when the report arrives, and the module's report carries the room's ID and the scope it set."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

import bot.directory as directory
from bot.directory import DirectoryGuard
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.policy.news import NewsRules
from bot.replica.changelog import ChangeLog
from bot.replica.publisher import NEW_ROOM_LOOKBACK_MS, ReplicaPublisher

NOW = 1_790_000_000_000
CREATOR, BOT = "@maker:hs.test", "@bot:hs.test"
OLD, NEW = "!old:hs.test", "!new:hs.test"
TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def room(created: int, join_rule: str, name: str) -> list[dict]:
    return [{"type": "m.room.create", "state_key": "", "sender": CREATOR, "origin_server_ts": created,
             "content": {"room_version": "12"}},
            {"type": "m.room.join_rules", "state_key": "", "sender": CREATOR, "content": {"join_rule": join_rule}},
            {"type": "m.room.name", "state_key": "", "sender": CREATOR, "content": {"name": name}}]


def guard_with(rooms: dict[str, list[dict]]):
    state = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="1")
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "gov", "keywords": ["国务院"]}]})
    state.record_acceptance(CREATOR, "1")
    tasks: list[asyncio.Task] = []
    guard = DirectoryGuard(state, "http://hs", "admin-token", lambda work, name: tasks.append(asyncio.ensure_future(work)))
    guard.clock = lambda: NOW
    reads: list[str] = []

    async def call(method, path, body):
        if path.endswith("/joined_rooms"):
            return {"joined_rooms": list(rooms)}
        if path.endswith("/state"):
            room_id = path.split("/")[-2].replace("%21", "!").replace("%3A", ":")
            reads.append(room_id)
            return {"state": rooms[room_id]}
        return {"visibility": "private"}

    judged: list[str] = []

    async def judge_initial(room_id, creator, events):
        judged.append(room_id)

    guard._call = call  # noqa: SLF001 — the guard's one door to Synapse
    guard._judge_initial_text = judge_initial  # noqa: SLF001
    return guard, state, tasks, reads, judged


async def test_a_creation_reported_after_the_room_exists_is_classified_by_time(monkeypatch):
    monkeypatch.setattr(directory, "POLL_DELAYS", (0.01,) * 3)
    rooms = {OLD: room(NOW - 86_400_000, "invite", "国务院 old"), NEW: room(NOW + 150, "public", "国务院 通知")}
    guard, state, tasks, reads, judged = guard_with(rooms)
    # room_creation (the gate's order) would note NEW as known here, the room being made already
    await guard.room_reported(CREATOR, None, NOW)
    await asyncio.gather(*tasks)
    assert NEW in state.open_rooms and judged == [NEW]
    assert OLD not in state.open_rooms  # the account's older room is only noted as looked at
    # The gate's order, same moment, shows what went wrong: the new room counts as known.
    guard, state, tasks, _, judged = guard_with(rooms)
    await guard.room_creation(CREATOR)
    await asyncio.gather(*tasks)
    assert NEW not in state.open_rooms and judged == []


async def test_with_the_room_id_only_that_room_is_read():
    rooms = {OLD: room(NOW - 86_400_000, "invite", "old"), NEW: room(NOW + 150, "public", "国务院 通知")}
    guard, state, tasks, reads, judged = guard_with(rooms)
    await guard.room_reported(CREATOR, NEW, NOW)
    assert tasks == [] and reads == [NEW]
    assert NEW in state.open_rooms and judged == [NEW]
    await guard.room_reported(CREATOR, NEW, NOW)  # a retried report: looked at once
    assert reads == [NEW] and judged == [NEW]


async def http(state: PolicyState, guard: DirectoryGuard | None = None):
    gate = Gate(state, Translator("en"), TOKEN, lambda user: None, clock=lambda: NOW, new_rooms=guard)
    gate.replica = ReplicaPublisher(ChangeLog(state), gate, lambda: NOW)
    client = TestClient(TestServer(gate.app()))
    await client.start_server()
    return client


async def test_the_bots_intake_classifies_the_room_and_takes_its_scope(monkeypatch):
    monkeypatch.setattr(directory, "POLL_DELAYS", (0.01,) * 3)
    rooms = {OLD: room(NOW - 86_400_000, "invite", "old"), NEW: room(NOW + 150, "public", "国务院")}
    guard, state, tasks, reads, judged = guard_with(rooms)
    client = await http(state, guard)
    try:
        # At creation only a time; once the module sees the room, its ID and what createRoom set.
        batch = {"items": [
            {"id": "new_room:a", "kind": "new_room", "user_id": CREATOR, "since": NOW},
            {"id": "new_room:b", "kind": "new_room", "user_id": CREATOR, "room_id": NEW, "since": NOW,
             "scope": {"join_rule": "public", "history_visibility": "world_readable", "listed": True}}]}
        resp = await client.post("/replica/v1/reports", json=batch, headers=AUTH)
        assert resp.status == 200 and await resp.json() == {"applied": 2, "duplicates": 0}
        await asyncio.gather(*tasks)
        assert NEW in state.open_rooms and judged == [NEW] and OLD not in state.open_rooms
        # What only the report said (the fake Synapse has no history visibility, lists nothing).
        assert NEW in state.readable_rooms and NEW in state.listed_rooms
    finally:
        await client.close()


async def test_without_an_admin_token_the_reported_scope_still_opens_the_room():
    state = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="1")
    client = await http(state)  # no directory guard
    try:
        resp = await client.post("/replica/v1/reports", headers=AUTH, json={"items": [
            {"id": "n", "kind": "new_room", "user_id": CREATOR, "room_id": NEW, "since": NOW,
             "scope": {"join_rule": "public", "listed": False}}]})
        assert resp.status == 200
        assert NEW in state.open_rooms and NEW not in state.listed_rooms
    finally:
        await client.close()


async def test_an_item_without_since_looks_back_a_minute(monkeypatch):
    seen = []

    async def reported(self, user_id, room_id, since):
        seen.append((user_id, room_id, since))

    monkeypatch.setattr(Gate, "room_reported", reported)
    state = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="1")
    client = await http(state)
    try:
        resp = await client.post("/replica/v1/reports", headers=AUTH, json={
            "items": [{"id": "n", "kind": "new_room", "user_id": CREATOR}]})
        assert resp.status == 200
        assert seen == [(CREATOR, None, NOW - NEW_ROOM_LOOKBACK_MS)]
    finally:
        await client.close()


async def test_a_bad_new_room_item_is_refused_by_name():
    state = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="1")
    client = await http(state)
    try:
        for item, message in (
            ({"since": "now"}, "item 0: 'since' must be a non-negative integer (ms)"),
            ({"room_id": NEW, "scope": {"listed": "yes"}}, "item 0: 'scope' must be an object of join_rule"),
            ({"scope": {"join_rule": "public"}}, "item 0: 'scope' needs the 'room_id' it is of"),
        ):
            resp = await client.post("/replica/v1/reports", headers=AUTH, json={
                "items": [{"id": "n", "kind": "new_room", "user_id": CREATOR, **item}]})
            data = await resp.json()
            assert resp.status == 400 and data["error"].startswith(message)
            assert data["error"].endswith("; nothing of this batch was applied")
        assert NEW not in state.open_rooms
    finally:
        await client.close()


# -- the module's side -----------------------------------------------------------------------------

class CreateEvent:
    def __init__(self, sender: str, ts: int) -> None:
        self.sender, self.origin_server_ts = sender, ts


async def test_the_module_reports_the_time_then_the_room_and_its_scope():
    from tests.unit.test_synapse_module import AGREED, FakeEvent, make_state, message_event, module

    rules = module()
    state = make_state()
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = state, "e1", 0.0

    async def get_room_state(room_id, types):
        return {("m.room.create", ""): CreateEvent(AGREED, 10**13)}

    rules.api.get_room_state = get_room_state
    config = {"preset": "private_chat", "initial_state": [
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}
    assert await rules.user_may_create_room(AGREED, config) == "NOT_SPAM"
    first = rules.outbox.pending[-1]
    assert first["kind"] == "new_room" and first["user_id"] == AGREED and "room_id" not in first
    since = first["since"]
    assert isinstance(since, int)
    event = FakeEvent(message_event(AGREED, "hello", room=NEW, event_id="$n1"))
    event.sender, event.room_id = AGREED, NEW  # what Synapse's event has besides get_dict()
    await rules.check_event_for_spam(event)
    reported = [i for i in rules.outbox.pending if i["kind"] == "new_room" and i.get("room_id") == NEW]
    assert reported == [{"id": f"new_room:{NEW}", "kind": "new_room", "user_id": AGREED, "room_id": NEW,
                         "since": since, "scope": {"listed": False, "join_rule": "invite",
                                                   "history_visibility": "world_readable"}}]
    assert state.in_news_scope(NEW)  # this replica at once; the others through the bot
