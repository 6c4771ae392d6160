"""The executor under the faults a homeserver really has: a 500 now and then, a logged-out token,
an effect in back-off with others queued behind it, a failing store, no management room."""

import asyncio
import logging
import sqlite3
from types import SimpleNamespace

import pytest

from bot.effects import Executor, is_transient
from bot.i18n import Translator
from bot.matrix.client import EFFECT_FIELD, Matrix, MatrixError
from bot.supervise import LoopStatus, Supervisor
from tests.unit.journal import executor
from tests.unit.test_effects import BOT, Crash, FakeMatrix

# The store's tests run on SQLite and on PostgreSQL (issue 11): tests/conftest.py.


async def test_a_synapse_500_is_retried_not_failed_for_good(store):
    m = FakeMatrix([], levels={"users": {BOT: 100}, "events_default": 0})
    m.fail["set_power_levels"] = MatrixError("set power levels", errcode="M_UNKNOWN")  # once
    ex = executor(store, m, clock=lambda: 1000)
    await store.effects.add("mute", "@bob:hs", {"room": "!lobby:hs", "reason": "r"}, "case-1/mute")
    await ex.run_due()
    assert (await store.effects.get("case-1/mute")).status == "pending"
    ex._clock = lambda: 10_000_000
    await ex.run_due()
    assert (await store.effects.get("case-1/mute")).status == "done"
    assert m.levels["users"]["@bob:hs"] == -1


def test_unknown_token_and_server_errors_are_transient():
    assert is_transient(MatrixError("x", errcode="M_UNKNOWN"))
    assert is_transient(MatrixError("x", errcode="M_UNKNOWN_TOKEN"))
    assert is_transient(MatrixError("x", errcode="HTTP 502"))
    assert is_transient(MatrixError("x", errcode="M_UNKNOWN", status=500))
    assert not is_transient(MatrixError("x", errcode="M_UNKNOWN", status=400))  # a request Synapse refuses
    assert not is_transient(MatrixError("x", errcode="M_FORBIDDEN"))


async def test_the_executor_sleeps_while_the_head_effect_backs_off(store):
    ex = executor(store, FakeMatrix([]), management_room=None, clock=lambda: 1000)
    ex._management_configured = True  # configured, not joined yet: the head backs off
    await store.effects.add("management", "management", {"text": "one"}, "case-1")
    await store.effects.add("management", "management", {"text": "two"}, "case-2")
    await ex.run_due()
    head = await store.effects.get("case-1")
    assert head.next_attempt_at > 1000
    # Not the second effect's time (0): it waits behind the head, and the executor would spin.
    assert await store.effects.next_attempt_at() == head.next_attempt_at


async def test_no_management_room_logs_only_the_key(store, caplog):
    ex = executor(store, FakeMatrix([]), management_room=None)
    await store.effects.add("management", "management", {"text": "evidence: 555-0199"}, "report-1")
    with caplog.at_level(logging.DEBUG):
        await ex.run_due()
    assert (await store.effects.get("report-1")).status == "done"
    assert "555-0199" not in caplog.text
    assert "report-1" in caplog.text


def _failing_executor(store):
    async def broken_due(now, limit=50):
        raise sqlite3.OperationalError("disk I/O error")

    async def fast(_s):
        await asyncio.sleep(0)

    async def dm_room(u):
        return "!dm"

    store.effects.due = broken_due
    return Executor(store, None, Translator("en"), admin=None, dm_room=dm_room, management_room=lambda: "!m",
                    management_configured=True, bot_user_id=BOT, clock=lambda: 1000, sleep=fast), fast


async def test_health_sees_the_executor_fail_without_a_status(store):
    ex, fast = _failing_executor(store)
    tasks = []
    sup = Supervisor(lambda coro, name: tasks.append(asyncio.ensure_future(coro)) or tasks[-1], sleep=fast)
    sup.forever("effects", lambda status: ex.run())  # the failure is raised to the supervisor
    try:
        await asyncio.sleep(0.1)
        health = sup.health()
        assert health["status"] == "degraded"
        assert health["loops"]["effects"]["state"] == "failing"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_executor_reports_to_its_status(store):
    ex, _ = _failing_executor(store)
    status = LoopStatus("effects")
    task = asyncio.ensure_future(ex.run(status))
    try:
        await asyncio.sleep(0.1)
        assert not task.done()  # it keeps trying itself
        assert status.failing() and status.last_error_class == "OperationalError"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class SentThenCrash(FakeMatrix):
    """The send reaches the homeserver, then the process dies before the journal marks it; the
    homeserver forgets the transaction ID (Synapse keeps it in memory for under an hour)."""

    crash = True

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        event_id = await super().send_notice(room_id, body, txn=txn, reply_to=reply_to)
        if self.crash:
            self.crash = False
            raise Crash()
        return event_id


async def test_a_send_retried_after_a_crash_is_found_in_the_room_not_sent_again(store):
    calls = []
    m = SentThenCrash(calls)
    await store.effects.add("notice", "!lobby:hs", {"room": "!lobby:hs", "text": "hello"}, "reply/$e")
    with pytest.raises(Crash):
        await executor(store, m).run_due()
    effect = await store.effects.get("reply/$e")
    assert effect.status == "pending" and effect.attempts == 1  # the attempt was counted before the call
    await executor(store, m).run_due()
    assert len([c for c in calls if c[0] == "send"]) == 1
    assert (await store.effects.get("reply/$e")).status == "done"


async def test_a_send_that_never_went_out_is_sent_on_the_retry(store):
    calls = []
    m = FakeMatrix(calls)
    m.fail["send_notice"] = MatrixError("send", errcode="M_UNKNOWN")
    await store.effects.add("notice", "!lobby:hs", {"room": "!lobby:hs", "text": "hello"}, "reply/$e")
    await executor(store, m).run_due()
    await executor(store, m, clock=lambda: 10_000_000).run_due()
    assert [c[0] for c in calls] == ["send"]
    assert (await store.effects.get("reply/$e")).status == "done"


class FakeNio:
    user_id = BOT

    def __init__(self, events):
        self.events, self.sent, self.reads = events, [], 0

    async def room_send(self, room_id, event_type, content, tx_id):
        self.sent.append((room_id, content, tx_id))
        return SimpleNamespace(event_id="$new")

    async def room_messages(self, room_id, start=None, direction=None, limit=10, message_filter=None):
        self.reads += 1
        page = self.events[self.reads - 1] if self.reads <= len(self.events) else []
        return SimpleNamespace(chunk=[SimpleNamespace(source=e) for e in page], end=f"t{self.reads}" if page else None)


async def test_matrix_sends_carry_their_transaction_id_and_a_retry_finds_them():
    nio = FakeNio([])
    matrix = Matrix(nio)
    await matrix.send_notice("!r", "hi", txn="rb-1")
    assert nio.sent[0][1][EFFECT_FIELD] == "rb-1" and nio.sent[0][2] == "rb-1"
    other = {"event_id": "$other", "sender": "@eve:hs", "content": {EFFECT_FIELD: "rb-1"}}  # not the bot's
    mine = {"event_id": "$mine", "sender": BOT, "content": {"body": "x", EFFECT_FIELD: "rb-1"}}
    nio = FakeNio([[other, {"event_id": "$a", "sender": BOT, "content": {}}], [mine]])
    assert await Matrix(nio).find_sent("!r", "rb-1") == "$mine"
    nio = FakeNio([[other], [other], [mine]])  # beyond the pages looked at
    assert await Matrix(nio).find_sent("!r", "rb-1") is None and nio.reads == 2
