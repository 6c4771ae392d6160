"""The sync loop: token saved only after its batch is handled; errors back off instead of ending it;
a limited timeline is back-filled with /messages, oldest first, up to the bound; a stop waits for
the batch in hand."""

import asyncio
import time

from nio import RoomMessagesError, RoomMessagesResponse, SyncError, SyncResponse

from bot.gate.metrics import SyncGaps
from bot.matrix.sync import SYNC_TOKEN_KEY, SyncLoop

ROOM = "!room:hs.test"
BOT = "@bot:hs.test"


def message(n: int, sender: str = "@alice:hs.test") -> dict:
    return {"type": "m.room.message", "event_id": f"$e{n}", "sender": sender, "origin_server_ts": n,
            "content": {"msgtype": "m.text", "body": f"message {n}"}}


def own_join(n: int) -> dict:
    return {"type": "m.room.member", "event_id": f"$e{n}", "sender": BOT, "state_key": BOT,
            "origin_server_ts": n, "content": {"membership": "join"}}


def batch(token: str, events: list[dict] | None = None, limited: bool = False, prev_batch: str = "p") -> SyncResponse:
    rooms = {}
    if events is not None:
        rooms = {"join": {ROOM: {"timeline": {"events": events, "limited": limited, "prev_batch": prev_batch},
                                 "state": {"events": []}}}}
    return SyncResponse.from_dict({"next_batch": token, "rooms": rooms})


def page(events: list[dict], start: str, end: str | None) -> RoomMessagesResponse:
    body = {"chunk": events, "start": start}
    if end is not None:
        body["end"] = end
    return RoomMessagesResponse.from_dict(body, ROOM)


class FakeClient:
    user_id = BOT

    def __init__(self, answers, pages=()):
        self.answers = list(answers)
        self.pages = list(pages)
        self.calls = []
        self.page_calls = []

    async def sync(self, timeout, since, full_state, sync_filter):
        self.calls.append((since, full_state))
        self.filter = sync_filter
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            await asyncio.sleep(0.01)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def room_messages(self, room_id, start, end, direction, limit):
        self.page_calls.append((room_id, start, end, direction.value, limit))
        answer = self.pages.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def no_backoff(seconds: float) -> None:
    await asyncio.sleep(0)


async def run_until(loop: SyncLoop, client: FakeClient, calls: int) -> None:
    task = asyncio.ensure_future(loop.run())
    deadline = time.monotonic() + 10
    while len(client.calls) < calls and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert len(client.calls) >= calls, "the loop stopped syncing"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def ids(response: SyncResponse) -> list[str]:
    return [e.event_id for e in response.rooms.join[ROOM].timeline.events]


async def test_errors_back_off_and_the_token_follows_handled_batches(store):
    handled = []

    async def handle(response, live):
        assert await store.get(SYNC_TOKEN_KEY) != response.next_batch, "token saved before handling"
        handled.append((response.next_batch, live))

    client = FakeClient([SyncError("down"), ConnectionError("refused"), batch("t1"), batch("t2")])
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff), client, calls=5)
    # Fresh database: the first batch is not live (no backlog commands); full state first.
    assert handled == [("t1", False), ("t2", True)]
    assert client.calls[:4] == [(None, True), (None, True), (None, True), ("t1", None)]
    assert await store.get(SYNC_TOKEN_KEY) == "t2"


async def test_a_failing_batch_is_fetched_again_not_skipped(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    attempts = []

    async def handle(response, live):
        attempts.append(response.next_batch)
        if len(attempts) == 1:
            raise RuntimeError("disk full")

    client = FakeClient([batch("t1"), batch("t1")])
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff), client, calls=3)
    assert attempts == ["t1", "t1"]
    assert [since for since, _ in client.calls[:2]] == ["t0", "t0"]
    assert await store.get(SYNC_TOKEN_KEY) == "t1"


async def test_a_limited_timeline_is_back_filled_oldest_first_before_the_batch(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    # Events 1..5 happened while the bot was away; the timeline holds 6..7. /messages pages
    # backwards (newest first) from prev_batch to the previous sync's position.
    client = FakeClient(
        [batch("t1", [message(6), message(7)], limited=True, prev_batch="p6")],
        [page([message(5), message(4), message(3)], "p6", "p3"), page([message(2), message(1)], "p3", "p1"),
         page([], "p1", None)],
    )
    gaps = SyncGaps()
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff, gaps=gaps), client, calls=2)
    assert handled[0] == ["$e1", "$e2", "$e3", "$e4", "$e5", "$e6", "$e7"]
    assert [(start, end, direction) for _, start, end, direction, _ in client.page_calls] == [
        ("p6", "t0", "b"), ("p3", "t0", "b"), ("p1", "t0", "b")]
    assert (gaps.gaps, gaps.recovered, gaps.truncated, gaps.dropped) == (1, 5, 0, 0)


async def test_a_gap_longer_than_the_bound_keeps_the_newest_and_counts_the_rest(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    # Bound 3: one more than the bound is asked for, so the cut is seen and counted.
    client = FakeClient(
        [batch("t1", [message(9)], limited=True, prev_batch="p9")],
        [page([message(8), message(7), message(6), message(5)], "p9", "p5")],
    )
    gaps = SyncGaps()
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff, gap_limit=3, gaps=gaps), client, calls=2)
    assert handled[0] == ["$e6", "$e7", "$e8", "$e9"]
    assert client.page_calls[0][4] == 4
    assert len(client.page_calls) == 1
    assert (gaps.gaps, gaps.recovered, gaps.truncated, gaps.dropped) == (1, 3, 1, 1)


async def test_the_back_fill_stops_at_the_bots_own_join(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    # The bot joined during the gap: what came before its join is history, not commands to answer.
    client = FakeClient(
        [batch("t1", [message(9)], limited=True, prev_batch="p9")],
        [page([message(8), own_join(7), message(6)], "p9", "p5")],
    )
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff), client, calls=2)
    assert handled[0] == ["$e8", "$e9"]


def own_member(n: int, prev: str | None, replaces: bool = True) -> dict:
    """A member event of the bot: membership join, from ``prev`` (None: prev_content not given)."""
    unsigned = {"replaces_state": f"$old{n}"} if replaces else {}
    if prev is not None:
        unsigned["prev_content"] = {"membership": prev, "displayname": "Rules bot"}
    return {"type": "m.room.member", "event_id": f"$e{n}", "sender": BOT, "state_key": BOT, "origin_server_ts": n,
            "content": {"membership": "join", "displayname": "Rules bot v2"}, "unsigned": unsigned}


async def test_the_back_fill_reads_past_the_bots_profile_change_and_stops_at_a_rejoin(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    # A display-name change is join -> join: not where the bot came in. Nor is a member event
    # whose previous content is not given. A join after a leave is.
    client = FakeClient(
        [batch("t1", [message(9)], limited=True, prev_batch="p9")],
        [page([message(8), own_member(7, "join"), message(6, "@mod:hs.test"), own_member(5, None), message(4)],
              "p9", "p4"),
         page([own_member(3, "leave"), message(2)], "p4", None)],
    )
    gaps = SyncGaps()
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff, gaps=gaps), client, calls=2)
    assert handled[0] == ["$e4", "$e5", "$e6", "$e7", "$e8", "$e9"]
    assert gaps.recovered == 5 and gaps.dropped == 0


async def test_no_back_fill_on_a_fresh_database_or_an_unlimited_timeline(store):
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    client = FakeClient([batch("t1", [message(1)], limited=True), batch("t2", [message(2)], limited=False)])
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff), client, calls=3)
    assert handled[:2] == [["$e1"], ["$e2"]]
    assert client.page_calls == []


async def test_a_gap_that_cannot_be_read_yet_leaves_the_batch_to_be_fetched_again(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    client = FakeClient(
        [batch("t1", [message(3)], limited=True, prev_batch="p3"),
         batch("t1", [message(3)], limited=True, prev_batch="p3")],
        [RoomMessagesError("rate limited", "M_LIMIT_EXCEEDED"), page([message(2)], "p3", None)],
    )
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff), client, calls=3)
    assert handled[0] == ["$e2", "$e3"]
    assert [since for since, _ in client.calls[:2]] == ["t0", "t0"]
    assert await store.get(SYNC_TOKEN_KEY) == "t1"


async def test_a_forbidden_gap_is_counted_as_lost_and_the_batch_goes_on(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    handled = []

    async def handle(response, live):
        handled.append(ids(response))

    client = FakeClient([batch("t1", [message(3)], limited=True, prev_batch="p3")],
                        [RoomMessagesError("not allowed", "M_FORBIDDEN")])
    gaps = SyncGaps()
    await run_until(SyncLoop(client, store, handle, sleep=no_backoff, gaps=gaps), client, calls=2)
    assert handled[0] == ["$e3"]
    assert (gaps.gaps, gaps.truncated) == (1, 1)


async def test_the_timeline_limit_is_the_configured_one(store):
    client = FakeClient([batch("t1")])
    await run_until(SyncLoop(client, store, lambda r, live: asyncio.sleep(0), timeline_limit=7), client, calls=1)
    assert client.filter["room"]["timeline"]["limit"] == 7


async def test_a_stop_lets_the_batch_in_hand_finish_and_save_its_token(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    started, release = asyncio.Event(), asyncio.Event()
    finished = []

    async def handle(response, live):
        started.set()
        await release.wait()
        finished.append(response.next_batch)

    client = FakeClient([batch("t1"), batch("t2")])
    loop = SyncLoop(client, store, handle, sleep=no_backoff)
    task = asyncio.ensure_future(loop.run())
    await asyncio.wait_for(started.wait(), 5)
    draining = asyncio.ensure_future(loop.drain(5.0))
    await asyncio.sleep(0.05)
    assert not draining.done(), "drain returned while the batch was still being handled"
    release.set()
    assert await asyncio.wait_for(draining, 5) is True
    assert finished == ["t1"]
    assert await store.get(SYNC_TOKEN_KEY) == "t1"
    await asyncio.wait_for(task, 5)  # the loop ends instead of taking the next batch
    assert len(client.calls) == 1


async def test_a_stop_gives_up_on_a_batch_that_outlasts_the_grace(store):
    await store.put(SYNC_TOKEN_KEY, "t0")
    started = asyncio.Event()

    async def handle(response, live):
        started.set()
        await asyncio.sleep(3600)

    client = FakeClient([batch("t1")])
    loop = SyncLoop(client, store, handle, sleep=no_backoff)
    task = asyncio.ensure_future(loop.run())
    await asyncio.wait_for(started.wait(), 5)
    begun = time.monotonic()
    assert await loop.drain(0.1) is False
    assert time.monotonic() - begun < 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await store.get(SYNC_TOKEN_KEY) == "t0"  # not saved: the batch is fetched again next start


async def test_a_stop_between_batches_returns_at_once(store):
    client = FakeClient([])
    loop = SyncLoop(client, store, lambda r, live: asyncio.sleep(0))
    task = asyncio.ensure_future(loop.run())
    await asyncio.sleep(0.02)
    assert await asyncio.wait_for(loop.drain(5.0), 0.5) is True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_loop_reports_successes_and_survived_errors_to_its_supervisor(store):
    class Status:
        def __init__(self):
            self.events = []

        def ok(self):
            self.events.append("ok")

        def failed(self, exc):
            self.events.append(type(exc).__name__)

    status = Status()
    client = FakeClient([ConnectionError("refused"), SyncError("down"), batch("t1")])
    loop = SyncLoop(client, store, lambda r, live: asyncio.sleep(0), sleep=no_backoff)
    task = asyncio.ensure_future(loop.run(status))
    deadline = time.monotonic() + 5
    while "ok" not in status.events and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert status.events[:3] == ["ConnectionError", "SyncFailed", "ok"]


async def test_the_time_a_batch_is_saved_is_kept_with_its_token(store):
    from bot.matrix.sync import SYNC_AT_KEY

    await store.put(SYNC_TOKEN_KEY, "t0")
    await store.put(SYNC_AT_KEY, "1000")
    seen = []
    loop = None

    async def handle(response, live):
        seen.append(loop.saved_at)  # while a batch is in hand: when the one before it was saved

    client = FakeClient([batch("t1", [message(1)]), batch("t2", [message(2)])])
    loop = SyncLoop(client, store, handle, sleep=no_backoff, clock=lambda: 5000)
    await run_until(loop, client, calls=3)
    assert seen == [1000, 5000]
    assert await store.get(SYNC_AT_KEY) == "5000" and await store.get(SYNC_TOKEN_KEY) == "t2"
