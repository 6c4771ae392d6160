"""Room mode and rate caps: a post is counted once by event ID (a replayed batch, a gap read back
over, a gate callback sent again), and judged at its own time (origin_server_ts), bounded by how
long the bot has been behind, so a back-filled gap is spaced as it was posted and a forged old
timestamp gains nothing."""

from bot.policy import PolicyState
from bot.policy.sanctions import Measure, Rate, SanctionKind
from tests.unit.test_effects import BOB, ROOM, T0, World

MIN = 60_000


def post(n: int, ts: int = T0) -> dict:
    return {"event_id": f"$p{n}", "sender": BOB, "type": "m.room.message", "origin_server_ts": ts,
            "content": {"msgtype": "m.text", "body": f"hello {n}"}}


def capped(store, rate: str = "2/1h") -> World:
    world = World(store)
    world.state.add_measure(BOB, Measure(case_id=1, kind=SanctionKind.RESTRICT, expires_at=None, rate=Rate.parse(rate)))
    return world


async def redacted(store) -> list[str]:
    return [e.payload["event_id"] for e in await store.effects.listed(kind="redact")]


async def test_a_replayed_post_is_counted_once(store):
    world = capped(store)
    await world.room_mode.on_event(ROOM, post(1), "lobby")
    await world.room_mode.on_event(ROOM, post(1), "lobby")  # the batch is handled again
    await world.room_mode.on_event(ROOM, post(2), "lobby")  # the 2nd post in the hour: within 2/1h
    await world.room_mode.on_event(ROOM, post(2), "lobby")  # replayed once the cap is full: still allowed
    assert await redacted(store) == []
    await world.room_mode.on_event(ROOM, post(3), "lobby")  # the 3rd is over the cap
    assert await redacted(store) == ["$p3"]
    assert world.state.sanctions[BOB].recent_posts == [T0, T0]


def test_the_gate_counts_a_post_sent_again_once():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.add_measure(BOB, Measure(case_id=1, kind=SanctionKind.RESTRICT, expires_at=None, rate=Rate.parse("2/1h")))
    state.note_post(BOB, T0, "$a")
    state.note_post(BOB, T0 + 1, "$a")
    state.note_post(BOB, T0 + 2)
    assert state.sanctions[BOB].recent_posts == [T0, T0 + 2]
    assert state.is_counted(BOB, "$a") and not state.is_counted(BOB, "$b")
    state.note_post(BOB, T0 + 2 * 60 * MIN, "$c")  # $a has left the window: forgotten
    assert not state.is_counted(BOB, "$a")


async def test_posts_read_back_from_a_gap_are_judged_at_their_own_time(store):
    world = capped(store)
    world.now = T0 + 90 * MIN  # the bot is back; the gap is read back, oldest first
    world.room_mode.synced_at = lambda: T0 - 5 * MIN  # the last batch saved before it went down
    for n, ts in enumerate((T0, T0 + 40 * MIN, T0 + 80 * MIN), 1):
        await world.room_mode.on_event(ROOM, post(n, ts), "lobby")
    assert await redacted(store) == []  # never more than 2 in an hour
    await world.room_mode.on_event(ROOM, post(4, T0 + 85 * MIN), "lobby")
    assert await redacted(store) == ["$p4"]  # 3 within the hour before T0 + 85 min


async def test_a_forged_old_timestamp_counts_no_earlier_than_the_bot_has_been_behind(store):
    world = capped(store)
    world.now = T0 + 24 * 60 * MIN
    world.room_mode.synced_at = lambda: world.now - MIN  # live: the last batch was saved a minute ago
    # A remote server claims posts two hours apart, long ago: they count as posted a minute ago.
    for n in range(1, 4):
        await world.room_mode.on_event(ROOM, post(n, T0 + n * 120 * MIN), "lobby")
    assert await redacted(store) == ["$p3"]
    # In the future: counted now.
    world.room_mode.synced_at = lambda: None
    assert world.room_mode.posted_at(post(9, world.now + 60 * MIN)) == world.now
