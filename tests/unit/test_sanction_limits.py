"""Durations and rates have a maximum: beyond it a command answers with its usage and records
nothing; an absurd expiry already in a database never breaks the gate's message or an export."""

import pytest

from bot.commands.context import Services
from bot.commands.dispatch import Dispatcher
from bot.commands.registry import Registry
from bot.commands.sanctions import COMMANDS
from bot.export import collect, encode
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.sanctions import Request
from bot.store import NewCase
from tests.unit.journal import executor

MOD, TARGET = "@mod:hs", "@bob:hs"


class FakeMatrix:
    def __init__(self):
        self.sent = []

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.sent.append(body)
        return "$reply"


class RecordingSanctions:
    """Opens a real case row, as the service would: a command that got through leaves a trace."""

    def __init__(self, store):
        self._store = store

    def check_target(self, target):
        pass

    async def impose(self, request: Request):
        expires = None if request.duration_ms is None else 1000 + request.duration_ms
        return await self._store.cases.open(NewCase(
            request.target, request.kind.value, request.actor, request.reason, 1000, expires_at=expires,
            rate=None if request.rate is None else str(request.rate),
        ))


@pytest.fixture
def dispatch(store):
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", moderators=frozenset({MOD}))
    registry = Registry(COMMANDS)
    services = Services(Translator("en"), state, store, None, None, registry, RecordingSanctions(store), None,
                        lambda: 1000, None, None, None)
    matrix = FakeMatrix()
    dispatcher = Dispatcher(registry, services, matrix)
    effects = executor(store, matrix)
    count = iter(range(1, 1000))

    async def send(body):
        event = {"event_id": f"$cmd{next(count)}", "sender": MOD, "type": "m.room.message",
                 "content": {"msgtype": "m.text", "body": body}}
        await dispatcher.handle("!mgmt", event, answer_unknown=True, moderator_place=True)
        await effects.run_due()
        return matrix.sent[-1]

    return send


async def test_a_restriction_of_520_weeks_is_recorded(dispatch, store):
    reply = await dispatch(f"!restrict {TARGET} 520w spam")
    assert reply.startswith("Case #1") and "Recorded" in reply
    assert [c.expires_at for c in await store.cases.recent()] == [1000 + 520 * 7 * 86_400_000]


@pytest.mark.parametrize(
    "body",
    [
        f"!restrict {TARGET} 999999w spam",
        f"!restrict {TARGET} 521w spam",
        f"!suspend {TARGET} 999999d spam",
        f"!restrict {TARGET} 1h --rate 3/999999w spam",
        f"!restrict {TARGET} 1h --rate=1/521w spam",
    ],
)
async def test_beyond_the_maximum_the_command_gives_usage_and_records_nothing(dispatch, store, body):
    reply = await dispatch(body)
    command = body.split()[0]
    assert reply.startswith(f"Usage: {command} <user> <duration> <reason…>"), reply
    assert await store.cases.recent() == []
    assert await store.db.fetchall("SELECT id FROM cases") == []


async def test_an_absurd_expiry_already_stored_reads_as_the_last_date(store):
    t = Translator("en")
    absurd = str(1_700_000_000_000 + 999_999 * 7 * 86_400_000)  # what 999999w used to store
    message = t.refusal("deny.restricted", {"action": "send_event", "case": "1", "until_ms": absurd})
    assert "restricted until 9999-12-31 23:59 UTC (case #1)" in message
    assert "9999-12-31" in Translator("zh-CN").refusal("deny.suspended", {"action": "invite", "case": "1", "until_ms": absurd})
    await store.cases.open(NewCase(TARGET, "restrict", MOD, "spam", 1000, expires_at=int(absurd)))
    await store.cases.open(NewCase(TARGET, "suspend", MOD, "spam", 1000, expires_at=-10**18))
    columns, rows = await collect(store, "cases")
    latest, earliest = (row["expires_at"] for row in rows)
    assert latest.startswith("9999-12-31T23:59:59.") and earliest == "0001-01-01T00:00:00.000Z"
    assert encode(columns, rows, "csv", bom=False)


async def test_the_gate_refuses_with_403_not_500_for_an_absurd_stored_expiry():
    from aiohttp.test_utils import TestClient, TestServer

    from bot.gate.server import Gate
    from bot.policy.sanctions import Measure, SanctionKind

    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.record_acceptance(TARGET, "1")
    state.add_measure(TARGET, Measure(1, SanctionKind.RESTRICT, 1_700_000_000_000 + 999_999 * 7 * 86_400_000))
    token = "gate-token-" + "x" * 16
    gate = Gate(state, Translator("en"), token, lambda user: None, lambda: {})
    async with TestClient(TestServer(gate.app())) as client:
        body = {"event": {"sender": TARGET, "room_id": "!r:hs", "type": "m.room.message", "content": {"body": "hi"},
                          "event_id": "$e"}}
        response = await client.post("/antispam/check_event_for_spam", json=body,
                                     headers={"Authorization": f"Bearer {token}"})
        assert response.status == 403
        answer = await response.json()
        assert answer["errcode"] == "M_FORBIDDEN" and "restricted until 9999-12-31" in answer["error"]
