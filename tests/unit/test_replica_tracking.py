"""Every path that changes the bot's state produces change records: after driving the real
services (every state-changing command, the DM and scope followers, the news refresh and rules
reload), a replica built from the snapshot taken before plus the changes after equals a fresh
snapshot of the bot's state. A write that bypassed tracking would show here as a difference."""

from __future__ import annotations

import json

import pytest

from bot.matrix.onboarding import Onboarding
from bot.news import News
from bot.policy import PolicyState
from bot.replica.changelog import ChangeLog
from bot.replica.protocol import apply_change, apply_snapshot, encode_state
from bot.router import Router
from tests.unit.test_commands import BOB, BOT, DM, LOBBY, MGMT, NEWBIE, STATE_CHANGING, Boundary, World

OTHER = "@other:hs"


def replayed(document: dict, log: ChangeLog) -> PolicyState:
    replica = apply_snapshot(json.loads(json.dumps(document)))
    for change in json.loads(json.dumps(log.since(document["seq"]))):
        apply_change(replica, change)
    return replica


def comparable(state: PolicyState) -> dict:
    """Encoded fields with sets and lists in a fixed order (a set's order is not state)."""
    def canonical(value):
        if isinstance(value, list):
            return sorted((canonical(v) for v in value), key=repr)
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        return value
    return {name: canonical(value) for name, value in encode_state(state).items()}


def assert_replica_follows(document: dict, log: ChangeLog, state: PolicyState) -> None:
    assert log.seq > document["seq"], "the services changed nothing: the test drives nothing"
    assert comparable(replayed(document, log)) == comparable(state)


@pytest.mark.parametrize("name", sorted(STATE_CHANGING))
async def test_every_state_changing_command_is_replicated(store, tmp_path, name) -> None:
    seed, body, sender, _ = STATE_CHANGING[name]
    world = World(store, tmp_path)
    log = ChangeLog(world.state)
    document = log.snapshot()
    # Something of each kind the command may touch: the seed, and for the commands that need
    # none, an account that agreed (so the replica has acceptances to follow too).
    # Checked after each step: a later step (an expiry) could otherwise hide an earlier miss.
    code = await seed(world)
    await world.send("!agree", sender=BOB)
    assert_replica_follows(document, log, world.state)
    await world.send(body % code if "%s" in body else body, sender=sender)
    assert_replica_follows(document, log, world.state)
    world.now += 3 * 3_600_000  # measures expire, the expiry path ends them
    await world.dispatcher._services.sanctions.expire_due()
    assert_replica_follows(document, log, world.state)


class Rooms:
    """nio's room objects, as much as the news refresh reads."""

    def __init__(self, **rooms: tuple[str, str]) -> None:
        self.rooms = {room_id: type("Room", (), {"join_rule": rule, "history_visibility": visibility})()
                      for room_id, (rule, visibility) in rooms.items()}
        self.access_token = "token"


async def test_dm_scope_and_news_paths_are_replicated(store, tmp_path, monkeypatch) -> None:
    world = World(store, tmp_path)
    services = world.dispatcher._services
    log = ChangeLog(world.state)
    document = log.snapshot()

    # A DM opened by onboarding, a third party invited into it (the router forgets it), another DM.
    async def create_dm(user_id, power_levels=None):
        return f"!dm-{user_id[1:].split(':')[0]}:hs"
    matrix = Boundary(world.writes, create_dm=create_dm, resolve=lambda room: room)
    onboarding = Onboarding(matrix, store, world.state, services.agreements.document, services.t, world.settings,
                            lambda: world.now)
    dm = await onboarding.dm_room(NEWBIE)
    await onboarding.dm_room(BOB)
    router = Router(matrix, services, world.dispatcher, Boundary(world.writes), lambda room: room, lambda room: set(),
                    Boundary(world.writes))
    member = {"type": "m.room.member", "sender": NEWBIE, "event_id": "$m1", "content": {"membership": "invite"},
              "state_key": OTHER}
    await router.on_event(world.state.dm_room_by_user[BOB], {**member, "sender": BOB, "state_key": BOB,
                                                             "content": {"membership": "join"}})
    assert_replica_follows(document, log, world.state)
    world.state.note_dm_member(dm, OTHER, "invite")  # a third party noted (the start-up check's path)
    world.state.note_dm_member(dm, "@third:hs", "join")
    assert_replica_follows(document, log, world.state)
    world.state.note_dm_member(dm, "@third:hs", "leave")
    assert_replica_follows(document, log, world.state)
    await router.on_event(dm, {**member, "event_id": "$m2"})
    assert_replica_follows(document, log, world.state)
    # Scope followed from the stored events, both ways.
    for event_id, kind, content in [("$s1", "m.room.join_rules", {"join_rule": "public"}),
                                    ("$s2", "m.room.history_visibility", {"history_visibility": "world_readable"}),
                                    ("$s3", "m.room.join_rules", {"join_rule": "invite"})]:
        await router.on_event(LOBBY, {"type": kind, "state_key": "", "sender": BOT if event_id == "$s3" else BOB,
                                      "event_id": event_id, "content": content})
        assert_replica_follows(document, log, world.state)
    # The periodic refresh: whole fields assigned anew, from the homeserver's lists.
    news: News = services.news
    news._matrix = type("M", (), {"client": Rooms(**{"!open:hs": ("public", "shared"),
                                                     "!read:hs": ("invite", "world_readable")})})()

    async def public_rooms(session, path, key, token):
        return [{"room_id": "!listed:hs"}]
    monkeypatch.setattr(news, "_pages", public_rooms)
    await news.refresh_scope()
    assert_replica_follows(document, log, world.state)
    world.state.news_rules = type(world.state.news_rules)()  # emptied, then reloaded from the file
    news.reload()
    assert {"!open:hs", "!listed:hs", "!read:hs"} <= world.state.open_rooms | world.state.listed_rooms \
        | world.state.readable_rooms
    assert world.state.dm_room_by_user.get(NEWBIE) is None and world.state.dm_room_by_user.get(BOB)
    assert_replica_follows(document, log, world.state)


async def test_the_gate_first_start_up_serves_a_replica_of_what_it_loaded(store, tmp_path) -> None:
    """A change log attached after loading: the first snapshot holds everything loaded, and
    the management room id is not state (nothing there leaks)."""
    world = World(store, tmp_path)
    await world.send("!agree", sender=NEWBIE)
    await world.send(f"!restrict {BOB} 2h --rate 3/1h spam")
    log = ChangeLog(world.state)
    replica = apply_snapshot(json.loads(json.dumps(log.snapshot())))
    assert comparable(replica) == comparable(world.state)
    assert replica.has_agreed(NEWBIE) and BOB in replica.sanctions
    assert MGMT not in json.dumps(log.snapshot())
    assert DM not in replica.dm_user_by_room
