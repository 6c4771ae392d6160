"""The module's replica, outbox and rate-cap question against the REAL bot side: a Gate with its
ReplicaPublisher on an aiohttp test server (no Synapse process), so the two ends of the wire are
checked against each other instead of against a fake written in the module's own format."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import Action, ActionKind, PolicyState, decide
from bot.policy.sanctions import Measure, Rate, SanctionKind
from bot.replica.changelog import ChangeLog
from bot.replica.publisher import ReplicaPublisher
from bot.synapse import module as module_code
from bot.synapse.replica import Replica
from tests.unit.test_synapse_module import FakeEvent, message_event, module

TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_700_000_000_000
CAPPED, SPAMMER = "@capped:hs.test", "@spammer:hs.test"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def bot():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    for user in (CAPPED, SPAMMER):
        state.record_acceptance(user, "1")
    state.add_measure(CAPPED, Measure(7, SanctionKind.RESTRICT, None, Rate.parse("1/1h")))
    clock = Clock()
    gate = Gate(state, Translator("en"), TOKEN, lambda user: None, clock=clock)
    gate.replica = publisher = ReplicaPublisher(ChangeLog(state), gate, clock)
    async with TestClient(TestServer(gate.app())) as client:
        client.state, client.publisher, client.clock = state, publisher, clock
        yield client


def fetch_from(client):
    async def fetch(method: str, path: str, *, params=None, body=None, timeout=10.0) -> tuple[int, Any]:
        response = await client.request(method, path, params=params, json=body, headers=AUTH)
        try:
            return response.status, await response.json()
        except ValueError:
            return response.status, None
    return fetch


def module_on(client):
    """A RulesModule (fake ModuleApi) whose every request goes to the real bot side."""
    rules = module()
    rules._fetch = rules.replica._fetch = rules.outbox._fetch = fetch_from(client)
    return rules


async def test_a_rate_capped_account_posts_once_across_two_processes_and_gets_the_bots_refusal(bot, monkeypatch):
    from synapse.module_api import NOT_SPAM

    main, worker = module_on(bot), module_on(bot)
    for rules in (main, worker):
        await rules.replica.take_snapshot()
    monkeypatch.setattr(module_code, "_now_ms", lambda: NOW)
    assert await main.check_event_for_spam(FakeEvent(message_event(CAPPED, "one", event_id="$1"))) == NOT_SPAM
    refused = await worker.check_event_for_spam(FakeEvent(message_event(CAPPED, "two", event_id="$2")))
    assert refused != NOT_SPAM
    assert "your posting is limited to 1/1h (case #7)" in refused[1]["error"]
    assert bot.state.sanctions[CAPPED].recent_posts == [NOW]  # counted once, by the bot
    answered = {sample.labels["server_name"]: sample.labels["outcome"] for metric in module_code.RATECAP.collect()
                for sample in metric.samples if sample.name.endswith("_total")
                and sample.labels["server_name"] in (main.server_name, worker.server_name)}
    assert set(answered.values()) == {"answered"}
