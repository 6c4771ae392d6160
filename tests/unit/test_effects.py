"""Exactly-once effects: an event is handled once (a replay changes nothing and answers with the
same transaction ID), every effect is an intent row committed with its record, and one executor
carries the rows out — after a crash too, once, in the order they were recorded."""

import pytest

from bot.agreement import AgreementDocument, AgreementService
from bot.commands.context import Services
from bot.commands.dispatch import Dispatcher
from bot.commands.registry import Registry
from bot.commands.sanctions import COMMANDS
from bot.config import Settings
from bot.effects import backoff_ms, is_transient
from bot.i18n import Translator
from bot.matrix.client import MatrixError, txn_id
from bot.matrix.management import ManagementRoom
from bot.matrix.roommode import RoomMode
from bot.policy import PolicyState
from bot.sanctions import Request, Sanctions
from bot.policy.sanctions import SanctionKind
from bot.store import Mute, NewCase
from tests.unit.journal import executor

# The store's tests run on SQLite and on PostgreSQL (issue 11): tests/conftest.py.

BOT, MOD, BOB, MGMT, ROOM = "@bot:hs", "@mod:hs", "@bob:hs", "!mgmt:hs", "!lobby:hs"
T0 = 1_790_000_000_000


class Crash(BaseException):
    """The process dies here: nothing after this line of the executor runs."""


class FakeMatrix:
    """Records every call in ``calls``; ``fail`` maps a method to what it raises (once, or always)."""

    def __init__(self, calls, levels=None):
        self.calls = calls
        self.fail: dict[str, BaseException] = {}
        self.always: set[str] = set()
        self.levels = levels or {"users": {BOT: 100}, "events_default": 0}
        self.topics: dict[str, str] = {}

    def _maybe_fail(self, name):
        exc = self.fail.get(name)
        if exc is not None:
            if name not in self.always:
                del self.fail[name]
            raise exc

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self._maybe_fail("send_notice")
        self.calls.append(("send", room_id, body, txn))
        return "$sent"

    async def find_sent(self, room_id, txn):
        """What the room shows: a send that went out (whatever the homeserver's memory of its txn)."""
        sent = [c for c in self.calls if c[0] == "send" and c[1] == room_id and c[3] == txn]
        return "$sent" if sent else None

    async def redact(self, room_id, event_id, reason, *, txn):
        self._maybe_fail("redact")
        self.calls.append(("redact", room_id, event_id, txn))

    async def power_levels(self, room_id):
        return {**self.levels, "users": dict(self.levels["users"])}

    async def set_power_levels(self, room_id, content):
        self._maybe_fail("set_power_levels")
        self.levels = content
        self.calls.append(("power_levels", room_id, dict(content["users"])))

    async def state_content(self, room_id, event_type, state_key=""):
        if event_type == "m.room.topic" and room_id in self.topics:
            return {"topic": self.topics[room_id]}
        raise MatrixError("read", errcode="M_NOT_FOUND")

    async def put_state(self, room_id, event_type, content, state_key):
        self.calls.append(("state", room_id, event_type, state_key, content))
        if event_type == "m.room.topic":
            self.topics[room_id] = content["topic"]

    async def ban(self, room_id, user_id, reason):
        self.calls.append(("ban", room_id, user_id))

    async def unban(self, room_id, user_id):
        self.calls.append(("unban", room_id, user_id))


class FakeAdmin:
    def __init__(self, calls):
        self.calls = calls
        self.fail: BaseException | None = None

    async def suspend(self, user_id, suspended):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("suspend" if suspended else "unsuspend", user_id))

    async def deactivate(self, user_id, erase):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("deactivate", user_id, erase))


class World:
    """The sanctions service, room mode and the dispatcher as bot.service wires them, a journal,
    and an executor over fakes that record every call in one list (so order shows)."""

    def __init__(self, store, *, admin=True, members=(BOB,)):
        self.store, self.calls, self.now = store, [], T0
        store.effects.clock = self.clock
        self.state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1", moderators=frozenset({MOD}))
        self.state.record_acceptance(BOB, "1")
        settings = Settings(homeserver={"url": "http://hs.test", "user_id": BOT, "password": "x" * 16},
                            gate={"enabled": False}, language="en")
        self.t = Translator("en")
        self.matrix = FakeMatrix(self.calls)
        self.admin = FakeAdmin(self.calls) if admin else None
        self.management = ManagementRoom(store.effects)
        self.room_mode = RoomMode(None, store, self.state, None, self.t, self.clock, lambda room: set(members))
        self.room_mode.protected.add(ROOM)
        self.sanctions = Sanctions(store, self.state, None, self.room_mode, None, self.admin, self.management, self.t,
                                   settings, self.clock)
        agreements = AgreementService(store, self.state, AgreementDocument("1", "Be kind.", "0" * 64), self.clock,
                                      self.room_mode.apply)
        registry = Registry(COMMANDS)
        services = Services(self.t, self.state, store, agreements, None, registry, self.sanctions, None, self.clock,
                            None, None, None)
        self.dispatcher = Dispatcher(registry, services)
        self.effects = self.executor()

    def clock(self):
        return self.now

    def executor(self):
        return executor(self.store, self.matrix, admin=self.admin, management_room=MGMT, clock=self.clock)

    async def command(self, body, event_id="$cmd"):
        event = {"event_id": event_id, "sender": MOD, "type": "m.room.message",
                 "content": {"msgtype": "m.text", "body": body}}
        assert await self.dispatcher.handle(MGMT, event, answer_unknown=True, moderator_place=True)

    def sent(self, room=None):
        return [c for c in self.calls if c[0] == "send" and (room is None or c[1] == room)]


async def test_a_replayed_command_event_records_one_case_and_one_reply_with_the_same_txn(store):
    world = World(store)
    await world.command(f"!warn {BOB} rude", "$warn")
    await world.effects.run_due()
    # The sync token was not saved (a crash after the batch): the same event comes again.
    await world.command(f"!warn {BOB} rude", "$warn")
    await world.effects.run_due()
    assert [(c.kind, c.target) for c in await store.cases.history(BOB)] == [("warn", BOB)]
    replies = await store.effects.listed(kind="notice")
    assert [(e.key, e.status) for e in replies] == [("reply/$warn", "done")]
    assert replies[0].payload["txn"] == txn_id("reply", "$warn")
    assert [c for c in world.sent(MGMT) if c[3] == txn_id("reply", "$warn")] == [
        ("send", MGMT, replies[0].payload["text"], txn_id("reply", "$warn"))]
    assert len(world.sent(MGMT)) == 2  # the reply and the case's announcement, each once
    assert "Case #1" in replies[0].payload["text"]
    # And a second, different event is a second command: the replay guard keys on the event.
    await world.command(f"!warn {BOB} rude", "$warn2")
    assert len(await store.cases.history(BOB)) == 2


async def test_a_replayed_close_mints_no_second_code(store):
    world = World(store)
    await world.command(f"!close {BOB} scam", "$close")
    await world.command(f"!close {BOB} scam", "$close")
    rows = await store.db.fetchall("SELECT code FROM closure_requests")
    assert len(rows) == 1
    assert [e.key for e in await store.effects.listed(kind="notice")] == ["reply/$close"]


async def test_a_replay_before_the_reply_was_sent_still_sends_it_once(store):
    world = World(store)
    await world.command(f"!warn {BOB} rude", "$warn")  # committed; the bot dies before any send
    await world.command(f"!warn {BOB} rude", "$warn")  # replayed after the restart
    await world.executor().run_due()  # a new executor: the restarted process
    replies = [c for c in world.sent(MGMT) if c[3] == txn_id("reply", "$warn")]
    assert len(replies) == 1 and len(await store.cases.history(BOB)) == 1


async def test_a_refused_command_leaves_none_of_its_writes_but_its_answer(store):
    world = World(store)
    await world.command("!confirm ABC123", "$c")
    [reply] = await store.effects.listed(kind="notice")
    assert reply.payload["text"].startswith("No pending closure has the code ABC123")
    assert await store.effects.handled("$c", "command")
    assert await store.db.fetchall("SELECT id FROM cases") == []


async def test_an_executor_crash_between_commit_and_call_leaves_the_effect_pending_then_done_once(store):
    world = World(store)
    await world.command(f"!warn {BOB} rude", "$warn")
    world.matrix.fail["send_notice"] = Crash()
    with pytest.raises(Crash):
        await world.effects.run_due()
    pending = await store.effects.listed(status="pending")
    assert {e.key for e in pending} == {"reply/$warn", "case-1/notice", "management/case-1"}
    assert world.sent() == []
    # The process restarts: a new executor resumes what is pending.
    await world.executor().run_due()
    assert await store.effects.listed(status="pending") == []
    assert {e.key for e in await store.effects.listed(status="done")} == {"reply/$warn", "case-1/notice",
                                                                          "management/case-1"}
    sent_txns = [c[3] for c in world.sent()]
    assert len(sent_txns) == 3 and len(set(sent_txns)) == 3
    # Nothing is left to do: a third run sends nothing more.
    await world.executor().run_due()
    assert len(world.sent()) == 3


async def test_a_transient_error_is_retried_with_backoff_and_then_done(store):
    world = World(store)
    await world.command(f"!warn {BOB} rude", "$warn")
    world.matrix.fail["send_notice"] = MatrixError("send", errcode="M_LIMIT_EXCEEDED")
    await world.effects.run_due()
    [retrying] = [e for e in await store.effects.listed() if e.attempts == 1 and e.status == "pending"]
    assert retrying.last_error == "M_LIMIT_EXCEEDED" and retrying.next_attempt_at == T0 + backoff_ms(0)
    assert len(world.sent()) == 2  # the other targets went on
    world.now += backoff_ms(0)
    await world.effects.run_due()
    assert await store.effects.listed(status="pending") == [] and len(world.sent()) == 3


async def test_a_permanent_failure_is_marked_failed_and_told_to_the_management_room_once(store):
    world = World(store)
    await world.command(f"!suspend {BOB} 1d spam", "$s")
    world.admin.fail = MatrixError("admin API", errcode="M_FORBIDDEN")
    await world.effects.run_due()
    await world.effects.run_due()
    [failed] = await store.effects.listed(status="failed")
    assert (failed.kind, failed.key, failed.last_error) == ("admin", "case-1/suspend", "M_FORBIDDEN")
    told = [c for c in world.sent(MGMT) if "will not be retried" in c[2]]
    assert len(told) == 1
    assert told[0][2] == (
        f"Could not make the admin API call (suspend, unsuspend or deactivate) for {BOB} (case-1/suspend): "
        "M_FORBIDDEN. This will not be retried; if it is still needed, do it by hand.")
    # The effects after it for the same account still ran (the notice to the account).
    assert [c for c in world.sent() if c[1] == f"!dm-{BOB}"]


async def test_the_closure_notice_is_sent_before_the_deactivation_it_announces(store):
    world = World(store)
    await world.command(f"!close {BOB} scam", "$close")
    code = (await store.db.fetchone("SELECT code FROM closure_requests"))[0]
    await world.command(f"!confirm {code}", "$confirm")
    await world.effects.run_due()
    effects = [e.key for e in await store.effects.listed() if e.target == BOB]
    assert effects.index("case-1/notice") < effects.index("case-1/deactivate")
    order = [c[0] for c in world.calls if c[0] in ("deactivate", "ban") or (c[0] == "send" and c[1] == f"!dm-{BOB}")]
    assert order == ["send", "deactivate", "ban"]
    assert ("ban", ROOM, BOB) in world.calls


async def test_the_notice_waits_when_it_fails_for_now_and_the_deactivation_waits_behind_it(store):
    world = World(store)
    await world.sanctions.impose(Request(target=BOB, kind=SanctionKind.CLOSE, actor=MOD, reason="scam"))
    world.matrix.fail["send_notice"] = OSError("network down")
    await world.effects.run_due()
    assert not [c for c in world.calls if c[0] == "deactivate"]  # never before the notice
    world.now += backoff_ms(0)
    await world.effects.run_due()
    assert [c[0] for c in world.calls if c[0] in ("send", "deactivate") and c[1] != MGMT][:2] == ["send", "deactivate"]


async def test_a_mute_and_its_end_are_journaled_and_carried_out_idempotently(store):
    world = World(store)
    await world.sanctions.impose(Request(target=BOB, kind=SanctionKind.SUSPEND, actor=MOD, reason="spam",
                                         duration_ms=60_000))
    await world.effects.run_due()
    assert world.matrix.levels["users"][BOB] == -1
    assert ("suspend", BOB) in world.calls
    mute = await store.rooms.mute_in(ROOM, BOB)
    assert mute is not None and mute.previous_level is None
    # The same mute again (a second cause) changes nothing: the level is already below posting.
    await store.effects.add("mute", BOB, {"room": ROOM, "reason": "suspended"}, "again/mute")
    await world.effects.run_due()
    assert len([c for c in world.calls if c[0] == "power_levels"]) == 1
    world.now += 60_000
    await world.sanctions.expire_due()
    await world.effects.run_due()
    assert BOB not in world.matrix.levels["users"]
    assert ("unsuspend", BOB) in world.calls
    assert await store.rooms.mute_in(ROOM, BOB) is None
    assert [c[2] for c in world.sent(MGMT) if c[2].startswith("Case #1 (")] == [
        f"Case #1 (suspension of {BOB}) expired by {BOT}: expired"]


async def test_a_measure_that_expired_while_the_bot_was_down_lifts_its_mute_and_is_announced(store):
    # A restriction recorded by the previous run, with its mute; the protected rooms are not known
    # yet when load() runs (it runs before the Matrix login).
    world = World(store)
    world.room_mode.protected.clear()
    case = await store.cases.open(NewCase(BOB, "restrict", MOD, "spam", T0 - 120_000, expires_at=T0 - 60_000))
    await store.rooms.record_mute(Mute(ROOM, BOB, None, -1, "restricted", T0 - 120_000), actor=BOT)
    world.matrix.levels["users"][BOB] = -1
    await world.sanctions.load()
    assert {e.kind for e in await store.effects.listed(status="pending")} == {"unmute", "dm", "management"}
    # The executor starts after the rooms are known; it carries the end out.
    await world.effects.run_due()
    assert BOB not in world.matrix.levels["users"]
    assert await store.rooms.mute_in(ROOM, BOB) is None
    announced = [c for c in world.sent(MGMT) if f"#{case.id}" in c[2]]
    assert len(announced) == 1 and "expired" in announced[0][2]
    assert [c for c in world.sent(f"!dm-{BOB}") if f"#{case.id}" in c[2]]


async def test_an_acceptance_and_its_unmute_commit_together_and_a_replay_changes_nothing(store):
    world = World(store)
    world.state.accepted.pop(BOB)
    await store.rooms.record_mute(Mute(ROOM, BOB, None, -1, "not_agreed", T0), actor=BOT)
    world.matrix.levels["users"][BOB] = -1
    agreements = world.dispatcher._services.agreements
    async with store.unit("$agree", kind="reaction") as unit:
        assert not unit.replayed
        await agreements.accept(BOB, "$agree", "!dm", "reaction")
    async with store.unit("$agree", kind="reaction") as unit:
        assert unit.replayed
    assert [e.key for e in await store.effects.listed(kind="unmute")] == [f"agreed-$agree/unmute/{ROOM}"]
    await world.effects.run_due()
    assert BOB not in world.matrix.levels["users"]


async def test_memory_follows_a_rolled_back_unit(store):
    world = World(store)
    with pytest.raises(RuntimeError):
        async with store.unit():
            await world.sanctions.impose(Request(target=BOB, kind=SanctionKind.RESTRICT, actor=MOD, reason="x",
                                                 duration_ms=60_000))
            assert BOB in world.state.sanctions
            raise RuntimeError("the disk is full")
    assert BOB not in world.state.sanctions
    assert await store.db.fetchall("SELECT id FROM cases") == []
    assert await store.effects.listed() == []


@pytest.mark.parametrize("exc, transient", [
    (OSError("reset"), True),
    (TimeoutError(), True),
    (MatrixError("x", errcode="M_LIMIT_EXCEEDED"), True),
    (MatrixError("x", errcode="HTTP 502"), True),
    (MatrixError("x", errcode="HTTP 429"), True),
    (MatrixError("x", errcode="ClientConnectorError"), True),
    (MatrixError("x", errcode=None), True),
    (MatrixError("x", errcode="M_FORBIDDEN"), False),
    (MatrixError("x", errcode="HTTP 404"), False),
    (ValueError("bug"), False),
])
def test_what_is_retried_and_what_fails_for_good(exc, transient):
    assert is_transient(exc) is transient


async def test_a_label_removal_is_recorded_with_its_state_changes_and_the_topic_is_reread_before_retagging(store):
    from bot.labels import LABEL_EVENT, Labels, label_state_key

    world = World(store)
    settings = Settings(homeserver={"url": "http://hs.test", "user_id": BOT, "password": "x" * 16},
                        gate={"enabled": False}, language="en")
    world.state.channels["!chan:hs"] = BOB
    labels = Labels(store, world.state, None, world.management, world.t, settings, world.clock, lambda: {ROOM})
    await labels.refresh(BOB)  # no public account (any more): the label goes, the tag too
    kinds = [(e.kind, e.payload["room"]) for e in await store.effects.listed()]
    assert kinds == [("state", "!chan:hs"), ("topic_tag", "!chan:hs"), ("state", ROOM)]
    [row] = await store.db.fetchall("SELECT action, details FROM audit_log")
    assert row[0] == "label.remove"
    # Meanwhile the owner changed the topic: the executor reads it now and only takes the tag off.
    tag = labels.tags["publisher"]
    world.matrix.topics["!chan:hs"] = f"{tag} Daily news, new schedule"
    await world.effects.run_due()
    assert world.matrix.topics["!chan:hs"] == "Daily news, new schedule"
    assert ("state", ROOM, LABEL_EVENT, label_state_key(BOB), {}) in world.calls


async def test_a_post_waits_for_the_management_room_and_goes_out_once_it_is_known(store):
    world = World(store)
    room = {"id": None}
    effects = executor(store, world.matrix, admin=world.admin, clock=world.clock, management_room=None)
    effects._management_room, effects._management_configured = (lambda: room["id"]), True
    await world.management.post("hello moderators", "hello")
    for _ in range(12):  # long enough that a plain back-off would have grown past many minutes
        await effects.run_due()
        world.now += 30_000
    [waiting] = await store.effects.listed(status="pending")
    assert waiting.last_error == "Transient" and waiting.next_attempt_at <= world.now
    assert world.sent() == []
    room["id"] = MGMT
    await effects.run_due()
    assert [c[2] for c in world.sent(MGMT)] == ["hello moderators"]


async def test_without_a_management_room_configured_a_post_is_only_logged(store):
    world = World(store)
    effects = executor(store, world.matrix, clock=world.clock, management_room=None)
    await world.management.post("hello moderators", "hello")
    await effects.run_due()
    assert world.sent() == [] and [e.status for e in await store.effects.listed()] == ["done"]


async def test_metrics_count_outcomes_by_kind_and_what_is_pending(store):
    from prometheus_client import CollectorRegistry, generate_latest

    world = World(store)
    await world.command(f"!warn {BOB} rude", "$warn")
    world.matrix.fail["send_notice"] = OSError("network down")
    await world.effects.run_due()
    registry = CollectorRegistry()
    registry.register(world.effects)
    text = generate_latest(registry).decode()
    # The account's notice was recorded first, so it met the failure; the reply and the post went.
    assert 'rulesbot_effects_total{kind="dm",outcome="retry"} 1.0' in text
    assert 'rulesbot_effects_total{kind="notice",outcome="done"} 1.0' in text
    assert 'rulesbot_effects_total{kind="management",outcome="done"} 1.0' in text
    assert "rulesbot_effects_pending 1.0" in text


async def test_a_nested_transaction_is_a_savepoint_of_the_open_unit(store):
    """Repositories open their own transactions; inside a unit they join it: an inner block that
    raises undoes only its own writes (its audit row too), and nothing commits before the unit."""
    from bot.store import audit

    async with store.unit() as unit:
        await store.record(now_ms=1, actor=MOD, action="outer", target=BOB, details={})
        with pytest.raises(RuntimeError):
            async with store.db.transaction():
                await store.record(now_ms=2, actor=MOD, action="inner", target=BOB, details={})
                raise RuntimeError("refused half-way")
        await unit.effect("dm", BOB, {"text": "hi"}, "k")
        assert audit._pending[store.db.conn].row_id == 1  # the head is the outer row again
    rows = await store.db.fetchall("SELECT id, action FROM audit_log")
    assert [tuple(r) for r in rows] == [(1, "outer")]
    assert [e.key for e in await store.effects.listed()] == ["k"]
    assert (await audit.stored_head(store.db.conn)).row_id == 1


async def test_another_task_waits_for_the_unit_instead_of_joining_it(store):
    import asyncio

    order = []

    async def other():
        await store.record(now_ms=3, actor=MOD, action="other", target=BOB, details={})
        order.append("other")

    async with store.unit() as unit:
        await unit.effect("dm", BOB, {"text": "hi"}, "k")  # the unit's first write takes the lock
        task = asyncio.ensure_future(other())
        await asyncio.sleep(0.05)
        assert order == []  # it waits for the write lock: it does not slip into this transaction
        order.append("unit")
    await task
    assert order == ["unit", "other"]


async def test_a_unit_that_is_still_reading_holds_no_one_back(store):
    """A command reads Matrix (its evidence) before it writes: meanwhile others may write."""
    import asyncio

    async with store.unit("$slow", kind="command") as unit:
        # Another task writes and commits while this unit has only read so far.
        await asyncio.wait_for(
            asyncio.ensure_future(store.record(now_ms=3, actor=MOD, action="other", target=BOB, details={})), 1.0)
        await unit.effect("dm", BOB, {"text": "hi"}, "k")
    assert [r[0] for r in await store.db.fetchall("SELECT action FROM audit_log")] == ["other"]
    assert await store.effects.handled("$slow", "command")


@pytest.mark.sqlite_only  # SQLite's file lock; PostgreSQL's writer lock: the next test
async def test_a_locked_store_fails_the_batch_so_it_is_fetched_again_and_the_command_is_not_lost(store, tmp_path):
    import sqlite3

    from bot.router import Router

    world = World(store)
    await store.db.conn.execute("PRAGMA busy_timeout=100")
    holder = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        with pytest.raises(sqlite3.OperationalError):
            await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await store.cases.history(BOB) == []
    # The sync loop keeps the old token and fetches the batch again: now it is handled, once.
    await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
    await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
    await world.effects.run_due()
    assert len(await store.cases.history(BOB)) == 1
    assert len([c for c in world.sent(MGMT) if c[3] == txn_id("reply", "$warn")]) == 1


async def test_a_store_whose_writer_lock_another_bot_holds_fails_the_batch_and_loses_nothing(
        pg_cluster, tmp_path, monkeypatch):
    import sqlite3

    import asyncpg

    import bot.store.pg
    from bot.router import Router
    from bot.store import Store

    monkeypatch.setattr(bot.store.pg, "COMMAND_TIMEOUT", 0.5)
    dsn = await pg_cluster.fresh()
    store = await Store.open(dsn, tmp_path / "head")
    holder = await asyncpg.connect(dsn)
    try:
        world = World(store)
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", bot.store.pg.WRITER_LOCK)
            with pytest.raises(sqlite3.OperationalError, match="PostgreSQL is unavailable"):
                await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
        assert await store.cases.history(BOB) == []
        # The sync loop keeps the old token and fetches the batch again: now it is handled, once.
        await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
        await Router._isolated("event $warn", world.command(f"!warn {BOB} rude", "$warn"))
        await world.effects.run_due()
        assert len(await store.cases.history(BOB)) == 1
        assert len([c for c in world.sent(MGMT) if c[3] == txn_id("reply", "$warn")]) == 1
    finally:
        await holder.close()
        await store.close()


async def test_a_failing_event_handler_is_still_isolated(caplog):
    from bot.router import Router

    async def broken():
        raise KeyError("content")

    await Router._isolated("event $x", broken())
    assert "handling event $x failed" in caplog.text


@pytest.mark.parametrize("message, unavailable", [
    ("database is locked", True), ("database or disk is full", True), ("disk I/O error", True),
    ("attempt to write a readonly database", True),
    ("no such column: foo", False), ('near "SELEC": syntax error', False),
])
def test_only_a_store_that_cannot_commit_now_fails_the_batch(message, unavailable):
    import sqlite3

    from bot.router import store_unavailable

    assert store_unavailable(sqlite3.OperationalError(message)) is unavailable


async def test_one_outcome_told_to_several_people_is_one_notice_each(store):
    from bot.matrix.onboarding import Onboarding

    onboarding = Onboarding(None, store, None, None, Translator("en"), None, lambda: T0)
    for reporter in ("@ann:hs", "@cy:hs"):
        await onboarding.tell(reporter, "Report #4 was actioned.", "report-outcome-4")
    await onboarding.tell("@ann:hs", "Report #4 was actioned.", "report-outcome-4")  # a replay
    assert [(e.target, e.kind) for e in await store.effects.listed()] == [("@ann:hs", "dm"), ("@cy:hs", "dm")]


async def test_the_prompt_a_room_mode_violation_asks_for_is_journaled_with_it_and_survives_a_crash(store):
    """Before, the prompt was only queued in memory after the violation's unit committed: a kill in
    between lost it (the replayed event is handled before, so nothing asked again)."""
    world = World(store)
    stranger = "@stranger:hs"
    event = {"event_id": "$post", "sender": stranger, "type": "m.room.message",
             "content": {"msgtype": "m.text", "body": "hello"}}
    await world.room_mode.on_event(ROOM, event, "Protected")
    await world.room_mode.on_event(ROOM, event, "Protected")  # the same batch handled again
    onboard = [e for e in await store.effects.listed(status="pending") if e.kind == "onboard"]
    assert [(e.target, e.key) for e in onboard] == [(stranger, "onboard/$post")]
    # The process dies before any of it is carried out; the next one prompts once.
    prompted: list[str] = []

    async def prompt_now(user_id):
        prompted.append(user_id)

    crashed = world.executor()
    crashed.onboard = prompt_now
    world.matrix.fail["redact"] = Crash()
    with pytest.raises(Crash):
        await crashed.run_due()
    assert prompted == []
    world.matrix.fail.clear()
    resumed = world.executor()
    resumed.onboard = prompt_now
    await resumed.run_due()
    assert prompted == [stranger]
    assert not [e for e in await store.effects.listed(status="pending") if e.kind == "onboard"]
