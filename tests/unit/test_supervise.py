"""Supervised loops survive any exception, back off with a cap, end only when cancelled, and a loop
that keeps failing is named by /health (503) and /metrics."""

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from bot.gate.metrics import GateMetrics
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.supervise import FAILING_AFTER, Supervisor, describe_error


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    """A supervisor whose sleeps are recorded and return at once, on a fake clock."""

    def __init__(self, max_backoff_s: float = 300.0):
        self.sleeps: list[float] = []
        self.tasks: list[asyncio.Task] = []
        self.clock = Clock()
        self.supervisor = Supervisor(self.spawn, sleep=self.sleep, max_backoff_s=max_backoff_s,
                                     wall=self.clock, monotonic=self.clock)

    def spawn(self, work, name):
        task = asyncio.ensure_future(work)
        self.tasks.append(task)
        return task

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    async def until(self, check, timeout=5.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "condition never met"
            await asyncio.sleep(0)

    async def stop(self):
        for task in self.tasks:
            task.cancel()
        return await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_periodic_loop_survives_any_exception_and_backs_off_with_a_cap():
    h = Harness(max_backoff_s=8.0)
    calls = []

    async def step():
        calls.append(len(calls))
        if len(calls) <= 6:
            raise [TimeoutError, ConnectionError, ValueError, KeyError, OSError, RuntimeError][len(calls) - 1]("boom")

    h.supervisor.every("expiry", step, period_s=60.0)
    await h.until(lambda: len(calls) >= 8)
    # 1, 2, 4, 8, 8, 8 after the six failures, then the period after each success.
    assert h.sleeps[:8] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 60.0, 60.0]
    status = h.supervisor.loops["expiry"]
    assert status.failures == 0 and status.failures_total == 6
    assert status.last_success == 1000.0
    assert status.last_error == "RuntimeError: boom"
    results = await h.stop()
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_cancellation_ends_a_loop_even_inside_its_step():
    h = Harness()
    entered = asyncio.Event()

    async def step():
        entered.set()
        await asyncio.sleep(3600)

    task = h.supervisor.every("retention", step, period_s=60.0)
    await entered.wait()
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert h.supervisor.loops["retention"].failures == 0


async def test_a_paced_step_chooses_its_next_pass_and_a_wake_runs_it_at_once():
    h = Harness()
    wake = asyncio.Event()
    passes = []

    async def step():
        passes.append(1)
        return 3600.0 if len(passes) > 1 else 0.0  # 0: run again now; then far off, capped by the period

    h.supervisor.every("expiry", step, period_s=0.05, wake=wake, paced=True)
    await h.until(lambda: len(passes) >= 3)  # the cap (period) ends the long wait
    count = len(passes)
    wake.set()
    await h.until(lambda: len(passes) > count)
    await h.stop()


async def test_a_forever_loop_is_restarted_after_it_raises_and_reports_through_its_status():
    h = Harness()
    runs = []

    async def work(status):
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionError("homeserver gone")
        status.ok()
        await asyncio.sleep(3600)

    h.supervisor.forever("sync", work, period_s=60.0)
    await h.until(lambda: h.supervisor.loops["sync"].last_success is not None)
    assert len(runs) == 3 and h.sleeps == [1.0, 2.0]
    assert h.supervisor.loops["sync"].failures == 0
    await h.stop()


async def test_a_loop_with_nothing_to_do_is_finished_not_failing():
    h = Harness()

    async def work(status):
        return None

    task = h.supervisor.forever("homeserver-reports", work, period_s=1.0)
    await task
    h.clock.now += 3600
    assert h.supervisor.health()["status"] == "ok"
    assert h.supervisor.loops["homeserver-reports"].as_dict()["state"] == "finished"


async def test_health_names_a_loop_that_keeps_failing():
    h = Harness()

    async def fine():
        return None

    async def broken():
        raise TimeoutError("admin API did not answer")

    h.supervisor.every("retention", fine, period_s=60.0)
    h.supervisor.every("expiry", broken, period_s=60.0)
    await h.until(lambda: h.supervisor.loops["expiry"].failures >= FAILING_AFTER)
    health = h.supervisor.health()
    assert health["status"] == "degraded"
    assert health["failing"][0]["loop"] == "expiry" and health["failing"][0]["error"] == "TimeoutError"
    assert health["loops"]["retention"]["state"] == "ok"
    assert health["loops"]["expiry"]["state"] == "failing"
    await h.stop()


async def test_two_failures_are_not_yet_failing():
    h = Harness()
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) <= FAILING_AFTER - 1:
            raise ConnectionError("blip")
        await asyncio.sleep(3600)

    h.supervisor.every("news-scope", flaky, period_s=60.0)
    await h.until(lambda: len(attempts) == FAILING_AFTER)
    assert h.supervisor.health()["status"] == "ok"
    await h.stop()


async def test_a_periodic_loop_with_no_success_for_three_periods_is_failing():
    h = Harness()
    entered = asyncio.Event()

    async def hangs():
        entered.set()
        await asyncio.sleep(3600)  # stuck: never raises, never succeeds

    h.supervisor.every("homeserver-reports", hangs, period_s=30.0)
    await entered.wait()
    h.clock.now += 89
    assert h.supervisor.health()["status"] == "ok"
    h.clock.now += 2
    health = h.supervisor.health()
    assert health["status"] == "degraded"
    assert health["failing"] == [{"loop": "homeserver-reports", "error": "no success", "failures": 0}]
    await h.stop()


def test_error_text_loses_credentials_and_length():
    text = describe_error(ValueError("GET /sync?access_token=syt_secret123&since=1 Bearer abc.def password: hunter2"))
    assert "syt_secret123" not in text and "abc.def" not in text and "hunter2" not in text
    assert text.startswith("ValueError: GET /sync?access_token=***")
    assert len(describe_error(RuntimeError("x" * 10_000))) <= 160 + len("RuntimeError: ")
    assert describe_error(TimeoutError()) == "TimeoutError"


async def test_a_second_loop_of_the_same_name_is_refused():
    h = Harness()

    async def fine():
        return None

    h.supervisor.every("expiry", fine, period_s=1.0)
    try:
        h.supervisor.every("expiry", fine, period_s=1.0)
    except ValueError as exc:
        assert "expiry" in str(exc)
    else:
        raise AssertionError("a duplicate loop name was accepted")
    await h.stop()


async def test_metrics_show_each_loop():
    h = Harness()

    async def broken():
        raise OSError("disk")

    h.supervisor.every("retention", broken, period_s=60.0)
    await h.until(lambda: h.supervisor.loops["retention"].failures >= 2)
    metrics = GateMetrics()
    metrics.include(h.supervisor)
    text = generate_latest(metrics.registry).decode()
    await h.stop()
    assert 'rulesbot_loop_consecutive_failures{loop="retention"}' in text
    assert 'rulesbot_loop_failures_total{loop="retention"}' in text


async def test_the_gates_health_is_503_while_a_loop_is_failing():
    h = Harness()

    async def broken():
        raise TimeoutError("admin API")

    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    gate = Gate(state, Translator("en"), "token", lambda user: None, health=h.supervisor.health)
    client = TestClient(TestServer(gate.app()))
    await client.start_server()
    try:
        resp = await client.get("/health")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        h.supervisor.every("expiry", broken, period_s=60.0)
        await h.until(lambda: h.supervisor.loops["expiry"].failures >= FAILING_AFTER)
        resp = await client.get("/health")
        body = json.loads(await resp.text())
        assert resp.status == 503
        assert body["status"] == "degraded"
        assert body["failing"][0] == {"loop": "expiry", "error": "TimeoutError", "failures": body["failing"][0]["failures"]}
    finally:
        await client.close()
        await h.stop()
