"""The module's replica, outbox and rate-cap question against the REAL bot side: a Gate with its
ReplicaPublisher on an aiohttp test server (no Synapse process), so the two ends of the wire are
checked against each other instead of against a fake written in the module's own format."""

from __future__ import annotations

import asyncio
import json
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
from bot.synapse.judge import report
from bot.synapse.replica import Replica
from tests.unit.test_replica_http import AUTH, CAPPED, NEW, NOW, TOKEN, Clock
from tests.unit.test_synapse_module import FakeEvent, message_event, module

SPAMMER = "@spammer:hs.test"


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


async def test_a_replica_more_than_a_page_behind_gets_every_change_after_it(bot, monkeypatch):
    from bot.replica import publisher as publisher_code

    monkeypatch.setattr(publisher_code, "MAX_CHANGES", 100)  # a page of 10,000, scaled down
    replica = Replica(fetch_from(bot), asyncio.sleep, poll_timeout=1.0)
    await replica.take_snapshot()
    for index in range(250):  # ordinary changes (agreements, texts in scope...), then a suspension
        bot.state.record_acceptance(f"@u{index}:hs.test", "1")
    bot.state.add_measure(SPAMMER, Measure(99, SanctionKind.SUSPEND, None))
    page = await (await bot.get(f"/replica/v1/changes?since={replica.seq}&timeout=0", headers=AUTH)).json()
    assert len(page["changes"]) == 100 and page["seq"] == page["changes"][-1]["seq"] < bot.publisher.changes.seq
    for _ in range(3):
        await replica.poll_once()
    assert replica.seq == bot.publisher.changes.seq
    post = Action(ActionKind.SEND_EVENT, SPAMMER, room_id="!r:hs.test", event_type="m.room.message", body="spam")
    assert not decide(post, replica.state, NOW).allowed


async def test_the_replica_takes_only_the_changes_it_applied_as_its_position():
    """Against a bot that answers its newest seq with a cut page (one older than this fix)."""
    from tests.unit.test_synapse_module import make_state
    from bot.replica.protocol import snapshot

    async def fetch(method: str, path: str, *, params=None, body=None, timeout=10.0):
        if path.endswith("snapshot"):
            return 200, snapshot(make_state(), "e1", 5)
        return 200, {"epoch": "e1", "seq": 500, "changes": [
            {"seq": 6, "field": "accepted", "key": "@a:hs.test", "value": "2"},
            {"seq": 7, "field": "accepted", "key": "@b:hs.test", "value": "2"}]}

    replica = Replica(fetch, asyncio.sleep)
    await replica.take_snapshot()
    await replica.poll_once()
    assert replica.seq == 7


def outbox_on(client):
    from bot.synapse.outbox import Outbox

    async def fetch(method: str, path: str, *, params=None, body=None, timeout=10.0) -> tuple[int, Any]:
        # Sent as the module sends it (bot.synapse.module._fetch: UTF-8 JSON).
        data = json.dumps(body, ensure_ascii=False).encode()
        response = await client.request(method, path, data=data,
                                        headers={**AUTH, "Content-Type": "application/json"})
        try:
            return response.status, await response.json()
        except ValueError:
            return response.status, None
    return Outbox(fetch, asyncio.sleep, 0.01)


def large_text(index: int, characters: int) -> dict[str, Any]:
    # The item a module older than the fingerprint sends: the body itself, here 3 bytes a character.
    return report("text", f"$t{index}", user_id=CAPPED, room_id="!r:hs.test", body=f"{index} " + "国" * characters,
                  ts=NOW)


async def test_reports_larger_than_the_gates_body_limit_go_in_batches_it_accepts(bot, monkeypatch):
    prompted: list[str] = []
    monkeypatch.setattr(bot.publisher._gate, "_on_prompt", prompted.append)
    outbox = outbox_on(bot)
    outbox.add([large_text(index, 20_000) for index in range(20)])  # 20 x 60 KB: over 1 MiB together
    outbox.add([report("prompt", None, user_id=NEW)])
    await outbox.flush()
    assert not outbox.pending and outbox.sent == 21 and prompted == [NEW]
    assert len(bot.state.recent_texts) == 20


async def test_a_413_splits_the_batch_and_an_item_too_large_alone_is_dropped_with_its_reason(bot, monkeypatch, caplog):
    from bot.synapse import outbox as outbox_code

    prompted: list[str] = []
    monkeypatch.setattr(bot.publisher._gate, "_on_prompt", prompted.append)
    monkeypatch.setattr(outbox_code, "BATCH_BYTES", 8 * 1024 * 1024)  # a bot whose limit is below ours
    outbox = outbox_on(bot)
    outbox.add([large_text(index, 20_000) for index in range(20)])
    outbox.add([large_text(99, 400_000)])  # 1.2 MB: too large for the gate by itself
    outbox.add([report("prompt", None, user_id=NEW)])
    await outbox.flush()
    assert not outbox.pending and outbox.sent == 21 and outbox.rejected == 1 and prompted == [NEW]
    assert "the bot refused a text report of 1200" in caplog.text and "as too large; dropped" in caplog.text


def test_waiting_reports_are_bounded_in_bytes_too():
    from bot.synapse.outbox import BYTES_LIMIT, Outbox

    outbox = Outbox(fetch_from(None), asyncio.sleep, 1.0)
    outbox.add([large_text(index, 20_000) for index in range(600)])  # 600 x 60 KB = 36 MB waiting
    assert outbox.pending_bytes <= BYTES_LIMIT and outbox.dropped == 600 - len(outbox.pending) > 0
    assert outbox.pending[-1]["id"] == "text:$t599"  # the oldest go first


async def test_a_module_reports_a_text_in_scope_by_its_fingerprint_and_the_bot_remembers_it(bot):
    from synapse.module_api import NOT_SPAM

    room = "!open:hs.test"
    bot.state.open_rooms.add(room)
    rules = module_on(bot)
    await rules.replica.take_snapshot()
    text = "国" * 20_000
    assert await rules.check_event_for_spam(FakeEvent(message_event(SPAMMER, text, room=room))) == NOT_SPAM
    [item] = rules.outbox.pending
    assert rules.outbox.pending_bytes < 300  # not the 60 KB text
    await rules.outbox.flush()
    assert bot.state.seen_from_other(text, CAPPED, NOW)
