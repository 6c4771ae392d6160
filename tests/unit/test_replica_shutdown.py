"""A bot that stops ends the replicas' open long polls at once (issue 10's restart window).

aiohttp's graceful shutdown closes the listener, then waits for every request in progress: a
change poll open with the shipped 25 s timeout held SIGTERM -> exit for up to 25 s, while Synapse
processes using the HTTP gate were refused every post. The poll is now answered as soon as the gate
stops, with what it would have said at its timeout (the changes since ``since``, normally none),
so the module stays "in step" (its staleness does not jump) and asks the next process at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bot.devserver import free_port
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.replica.changelog import ChangeLog
from bot.replica.publisher import DEFAULT_POLL_MS, ReplicaPublisher
from bot.synapse.replica import Replica

TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW = "@new:hs.test"


def make_gate(state: PolicyState) -> Gate:
    gate = Gate(state, Translator("en"), TOKEN, lambda user: None)
    gate.replica = ReplicaPublisher(ChangeLog(state), gate, lambda: 1_700_000_000_000)
    return gate


def make_state() -> PolicyState:
    return PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")


async def until(check: Any, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.01)


async def test_stopping_the_gate_answers_an_open_long_poll_at_once() -> None:
    port = free_port()
    gate = make_gate(make_state())
    publisher = gate.replica
    assert publisher is not None
    await gate.start("127.0.0.1", port)
    seq, epoch = publisher.changes.seq, publisher.changes.epoch
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=AUTH) as http:
        # The shipped timeout, as the module asks with its default poll_timeout.
        params = {"since": str(seq), "timeout": str(DEFAULT_POLL_MS), "epoch": epoch}
        poll = asyncio.ensure_future(http.get("/replica/v1/changes", params=params))
        await until(lambda: publisher._waiting == 1, "the poll waiting on the gate")
        started = time.perf_counter()
        await gate.stop()
        stopped_in = time.perf_counter() - started
        response = await poll
        assert response.status == 200
        # What the poll would have answered at its timeout: in step, nothing new, this epoch.
        assert await response.json() == {"epoch": epoch, "seq": seq, "changes": []}
    assert stopped_in < 1.0, f"gate.stop() took {stopped_in:.2f} s with a long poll open"


async def test_a_poll_that_arrives_while_the_gate_stops_does_not_wait() -> None:
    publisher = make_gate(make_state()).replica
    assert publisher is not None
    publisher.close()
    started = time.perf_counter()
    await publisher._wait(DEFAULT_POLL_MS / 1000)
    assert time.perf_counter() - started < 0.1


async def test_a_gate_started_again_after_a_stop_holds_its_polls_again() -> None:
    # Else every module would poll in a tight loop, each answer empty and immediate.
    port = free_port()
    gate = make_gate(make_state())
    await gate.start("127.0.0.1", port)
    await gate.stop()
    await gate.start("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=AUTH) as http:
            started = time.perf_counter()
            async with http.get("/replica/v1/changes", params={"since": "0", "timeout": "200"}) as resp:
                assert (await resp.json())["changes"] == []
            assert time.perf_counter() - started >= 0.19
    finally:
        await gate.stop()


async def test_the_module_follows_the_restarted_bot_within_a_second_of_its_start() -> None:
    """The module's own replica loop (bot.synapse.replica) over HTTP: its poll is ended by the old
    bot's stop, it finds the new process (another epoch) and takes its snapshot, in about the
    first retry's 0.5 s, not after the 25 s poll."""
    port = free_port()
    old = make_gate(make_state())
    await old.start("127.0.0.1", port)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=AUTH) as http:
        async def fetch(method: str, path: str, *, params: Any = None, body: Any = None,
                        timeout: float = 10.0) -> tuple[int, Any]:
            async with http.request(method, path, params=params, json=body,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status, await resp.json()

        replica = Replica(fetch, asyncio.sleep, poll_timeout=DEFAULT_POLL_MS / 1000)
        following = asyncio.ensure_future(replica.run())
        try:
            await until(lambda: old.replica is not None and old.replica._waiting == 1, "the module's first poll")
            old_epoch = replica.epoch
            started = time.perf_counter()
            await old.stop()
            assert time.perf_counter() - started < 1.0
            assert replica.staleness() < 1.0  # answered, not failed: no jump to the last success

            restarted_state = make_state()
            restarted_state.record_acceptance(NEW, "1")  # accepted while the bot restarted
            new = make_gate(restarted_state)
            await new.start("127.0.0.1", port)
            up = time.perf_counter()
            try:
                await until(lambda: replica.epoch not in (None, old_epoch), "a snapshot of the new process")
                assert time.perf_counter() - up < 1.5
                assert replica.state is not None and replica.state.has_agreed(NEW)
            finally:
                replica.stop()
                await new.stop()  # ends the module's poll of the new process, so its loop ends
        finally:
            await asyncio.wait_for(following, 5)
