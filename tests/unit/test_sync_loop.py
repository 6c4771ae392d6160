"""The sync loop: token saved only after its batch is handled; errors back off instead of ending it."""

import asyncio
import time

from nio import SyncError, SyncResponse

from bot.matrix.sync import SYNC_TOKEN_KEY, SyncLoop


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    async def sync(self, timeout, since, full_state, sync_filter):
        self.calls.append((since, full_state))
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            await asyncio.sleep(0.01)
        if isinstance(answer, Exception):
            raise answer
        return answer


def batch(token: str) -> SyncResponse:
    response = SyncResponse.__new__(SyncResponse)
    response.next_batch = token
    return response


async def no_backoff(seconds: float) -> None:
    await asyncio.sleep(0)


async def run_until(loop: SyncLoop, client: FakeClient, calls: int) -> None:
    task = asyncio.ensure_future(loop.run())
    deadline = time.monotonic() + 10
    while len(client.calls) < calls and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


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
