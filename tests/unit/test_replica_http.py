"""The replica routes on the gate's server: snapshot, long-polled changes, the modules' reports and
the synchronous rate-cap question, each with its refusals (401, 400, 410) and their messages."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.policy.news import NewsRules, fingerprint
from bot.policy.sanctions import Measure, Rate, SanctionKind
from bot.replica.changelog import ChangeLog
from bot.replica.protocol import apply_change, apply_snapshot, encode_state
from bot.replica.publisher import ReplicaPublisher

TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_700_000_000_000
AGREED, CAPPED, NEW = "@agreed:hs.test", "@capped:hs.test", "@new:hs.test"
SCOPED = "!public:hs.test"
HOUR = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def replica():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "gov", "keywords": ["国务院"]}]})
    for user in (AGREED, CAPPED):
        state.record_acceptance(user, "1")
    state.add_measure(CAPPED, Measure(7, SanctionKind.RESTRICT, None, Rate(1, HOUR)))
    state.news_scope = {SCOPED}
    prompted: list[str] = []
    published: list[tuple[str, str]] = []
    clock = Clock()
    gate = Gate(state, Translator("en"), TOKEN, prompted.append, clock=clock,
                on_publish=lambda user, room: published.append((user, room)))
    gate.replica = publisher = ReplicaPublisher(ChangeLog(state, ring_size=50), gate, clock)
    async with TestClient(TestServer(gate.app())) as client:
        client.state, client.publisher, client.prompted, client.published = state, publisher, prompted, published
        client.clock = clock
        yield client


async def snapshot_and_follow(client) -> PolicyState:
    snap = await (await client.get("/replica/v1/snapshot", headers=AUTH)).json()
    local = apply_snapshot(snap)
    changes = await (await client.get(f"/replica/v1/changes?since={snap['seq']}&timeout=0", headers=AUTH)).json()
    for change in changes["changes"]:
        apply_change(local, change)
    return local


@pytest.mark.parametrize("method, path", [
    ("GET", "/replica/v1/snapshot"), ("GET", "/replica/v1/changes?since=0"),
    ("POST", "/replica/v1/reports"), ("POST", "/replica/v1/ratecap"), ("POST", "/replica/v1/consent"),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["none", "wrong"])
async def test_every_route_needs_the_gate_token(replica, method, path, headers) -> None:
    resp = await replica.request(method, path, headers=headers, json={})
    assert resp.status == 401
    assert await resp.json() == {"errcode": "M_UNKNOWN_TOKEN", "error": "missing or wrong bearer token"}


@pytest.mark.parametrize("method, path", [
    ("GET", "/replica/v1/snapshot"), ("GET", "/replica/v1/changes?since=0"), ("POST", "/replica/v1/reports"),
    ("POST", "/antispam/user_may_invite"), ("POST", "/antispam/ping"),
])
async def test_an_authorization_header_that_is_not_utf8_is_a_wrong_token(replica, method, path) -> None:
    # Raw bytes: no client library sends them, anyone on the network can.
    reader, writer = await asyncio.open_connection(replica.server.host, replica.server.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"Authorization: Bearer \xff\xfe\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'{"errcode": "M_UNKNOWN_TOKEN", "error": "missing or wrong bearer token"}' in answer


async def test_a_snapshot_rebuilds_the_state_and_changes_follow_a_gate_decision(replica) -> None:
    local = await snapshot_and_follow(replica)
    assert encode_state(local) == encode_state(replica.state)
    seq = replica.publisher.changes.seq
    # A post the gate allows in scope is remembered (identical-repost memory): a change.
    body = {"event": {"sender": AGREED, "room_id": SCOPED, "type": "m.room.message", "event_id": "$1",
                      "content": {"msgtype": "m.text", "body": "hello all"}}}
    assert (await replica.post("/antispam/check_event_for_spam", json=body, headers=AUTH)).status == 200
    answer = await (await replica.get(f"/replica/v1/changes?since={seq}", headers=AUTH)).json()
    assert [c["field"] for c in answer["changes"]] == ["recent_texts"]
    assert answer["epoch"] == replica.publisher.changes.epoch and answer["seq"] == seq + 1
    for change in answer["changes"]:
        apply_change(local, change)
    assert local.recent_texts == replica.state.recent_texts


async def test_a_long_poll_answers_within_milliseconds_of_a_change(replica) -> None:
    seq = replica.publisher.changes.seq
    started = time.perf_counter()
    poll = asyncio.ensure_future(replica.get(f"/replica/v1/changes?since={seq}&timeout=20000", headers=AUTH))
    await asyncio.sleep(0.1)
    assert not poll.done()
    changed_at = time.perf_counter()
    replica.state.record_acceptance(NEW, "1")
    answer = await (await poll).json()
    waited = time.perf_counter() - changed_at
    assert [(c["field"], c["key"], c["value"]) for c in answer["changes"]] == [("accepted", NEW, "1")]
    assert waited < 0.05, waited
    assert time.perf_counter() - started < 1


async def test_a_long_poll_with_nothing_new_answers_empty_at_its_timeout(replica) -> None:
    seq = replica.publisher.changes.seq
    started = time.perf_counter()
    answer = await (await replica.get(f"/replica/v1/changes?since={seq}&timeout=150", headers=AUTH)).json()
    assert answer["changes"] == [] and answer["seq"] == seq
    assert 0.14 < time.perf_counter() - started < 1


@pytest.mark.parametrize("query, message", [
    ("", "'since' must be the seq of the last change applied"),
    ("since=-1", "'since' must be the seq of the last change applied"),
    ("since=abc", "'since' must be the seq of the last change applied"),
    ("since=0&timeout=soon", "'timeout' must be milliseconds"),
    ("since=%C2%B2", "'since' must be the seq of the last change applied"),  # '²': a digit to isdigit()
    ("since=0&timeout=%C2%B2", "'timeout' must be milliseconds"),
    ("since=" + "9" * 5000, "'since' must be the seq of the last change applied"),  # past int()'s limit
    ("since=0&timeout=" + "9" * 5000, "'timeout' must be milliseconds"),
])
async def test_a_bad_query_is_400_with_its_reason(replica, query, message) -> None:
    resp = await replica.get(f"/replica/v1/changes?{query}", headers=AUTH)
    data = await resp.json()
    assert resp.status == 400 and data["errcode"] == "M_INVALID_PARAM" and message in data["error"]


async def test_changes_the_ring_no_longer_holds_another_epoch_or_a_future_seq_are_410(replica) -> None:
    for index in range(60):  # the fixture's ring keeps 50
        replica.state.record_acceptance(f"@u{index}:hs.test", "1")
    seq = replica.publisher.changes.seq
    for query, message in [("since=0", "no longer kept"), (f"since={seq + 5}", "not of this epoch"),
                           (f"since={seq}&epoch=another", "the bot restarted")]:
        resp = await replica.get(f"/replica/v1/changes?{query}&timeout=0", headers=AUTH)
        data = await resp.json()
        assert resp.status == 410 and data["errcode"] == "M_REPLICA_GONE", query
        assert message in data["error"] and "take a new snapshot" in data["error"]
    ok = await replica.get(f"/replica/v1/changes?since={seq - 10}&timeout=0", headers=AUTH)
    assert len((await ok.json())["changes"]) == 10


def items(*entries: dict) -> dict:
    return {"items": list(entries)}


async def test_reports_are_applied_by_the_gates_handlers_once_per_item_id(replica) -> None:
    state = replica.state
    batch = items(
        {"id": "prompt:1", "kind": "prompt", "user_id": NEW},
        {"id": "post:a", "kind": "post", "user_id": CAPPED, "ts": NOW - 1000},  # no event ID: only the item id
        {"id": "text:1", "kind": "text", "user_id": AGREED, "fingerprint": fingerprint("国务院 今天"), "ts": NOW},
        # a module older than the fingerprint sends the body
        {"id": "text:2", "kind": "text", "user_id": AGREED, "body": "the old way", "ts": NOW},
        {"id": "pn:1", "kind": "private_news", "room_id": "!private:hs.test", "rule": "gov", "user_id": AGREED},
        {"id": "scope:1", "kind": "scope", "room_id": "!opened:hs.test",
         "event": {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"},
                   "room_id": "!opened:hs.test", "sender": AGREED}},
        {"id": "publish:1", "kind": "publish", "user_id": AGREED, "room_id": "!pub:hs.test"},
        {"id": "new_room:1", "kind": "new_room", "user_id": AGREED},
    )
    first = await replica.post("/replica/v1/reports", json=batch, headers=AUTH)
    assert first.status == 200 and await first.json() == {"applied": 8, "duplicates": 0}
    again = await replica.post("/replica/v1/reports", json=batch, headers=AUTH)  # the module retries
    assert await again.json() == {"applied": 0, "duplicates": 8}
    assert replica.prompted == [NEW]
    assert state.sanctions[CAPPED].recent_posts == [NOW - 1000]
    assert state.seen_from_other("国务院 今天", NEW, NOW) and state.seen_from_other("the old way", NEW, NOW)
    assert state.private_news == {"!private:hs.test": "gov"}
    assert "!opened:hs.test" in state.open_rooms
    assert replica.published == [(AGREED, "!pub:hs.test")]


@pytest.mark.parametrize("item, message", [
    ({"kind": "prompt", "user_id": NEW}, "item 1: 'id' must be a non-empty string"),
    ({"id": "x", "kind": "post", "user_id": CAPPED, "ts": "now"}, "item 1: 'ts' must be a non-negative integer"),
    ({"id": "x", "kind": "teleport"}, "item 1: unknown kind 'teleport'"),
    ({"id": "x", "kind": "text", "user_id": AGREED, "ts": NOW, "fingerprint": "国务院"},
     "item 1: 'fingerprint' must be bot.policy.news.fingerprint's 32 hex digits"),
    ({"id": "x", "kind": "text", "user_id": AGREED, "ts": NOW}, "item 1: 'body' must be a non-empty string"),
    ({"id": "x", "kind": "scope", "room_id": "!r:hs.test", "event": "m.room.join_rules"}, "'event' must be"),
])
async def test_a_bad_item_refuses_the_whole_batch_by_name(replica, item, message) -> None:
    good = {"id": "prompt:ok", "kind": "prompt", "user_id": NEW}
    resp = await replica.post("/replica/v1/reports", json=items(good, item), headers=AUTH)
    data = await resp.json()
    assert resp.status == 400 and data["errcode"] == "M_INVALID_PARAM"
    assert message in data["error"] and "nothing of this batch was applied" in data["error"]
    assert replica.prompted == []
    # ... and the good item is applied when it comes again without the bad one.
    assert await (await replica.post("/replica/v1/reports", json=items(good), headers=AUTH)).json() == {
        "applied": 1, "duplicates": 0}


async def test_reports_body_must_hold_a_list_of_items(replica) -> None:
    resp = await replica.post("/replica/v1/reports", json={"items": "all"}, headers=AUTH)
    assert resp.status == 400 and "'items' must be a list" in (await resp.json())["error"]


async def test_the_rate_cap_question_gets_the_gates_answer_and_counts_once(replica) -> None:
    ask = {"user_id": CAPPED, "event_id": "$first", "ts": NOW}
    assert (await replica.post("/replica/v1/ratecap", json=ask, headers=AUTH)).status == 200
    assert replica.state.sanctions[CAPPED].recent_posts == [NOW]
    retried = await replica.post("/replica/v1/ratecap", json=ask, headers=AUTH)  # the same post again
    assert retried.status == 200 and replica.state.sanctions[CAPPED].recent_posts == [NOW]
    second = await replica.post("/replica/v1/ratecap", json={**ask, "event_id": "$second", "ts": NOW + 1},
                                headers=AUTH)
    data = await second.json()
    assert second.status == 403 and data["errcode"] == "M_FORBIDDEN"
    assert "1/1h" in data["error"]  # the gate's own rate-cap refusal
    bad = await replica.post("/replica/v1/ratecap", json={"user_id": CAPPED}, headers=AUTH)
    assert bad.status == 400 and (await bad.json())["error"] == "'ts' must be a non-negative integer (ms)"


async def test_the_consent_question_gets_the_gates_registration_lookup(replica) -> None:
    asked: list[str] = []

    async def consent(user_id):  # bot.consent's lookup, as the service sets it on the gate
        asked.append(user_id)
        if user_id != NEW:
            return False
        replica.state.record_acceptance(user_id, "1")
        return True

    no_lookup = await replica.post("/replica/v1/consent", json={"user_id": NEW}, headers=AUTH)
    # No hook yet (the service not up, a takeover under way): not a no, but "could not check"
    # (review 11b); without an admin token the service's hook answers a plain no.
    assert no_lookup.status == 200
    assert await no_lookup.json() == {"accepted": False, "unknown": True, "retry_after_ms": 10_000}
    replica.publisher._gate.consent = consent
    yes = await replica.post("/replica/v1/consent", json={"user_id": NEW}, headers=AUTH)
    assert yes.status == 200 and await yes.json() == {"accepted": True, "version": "1"}
    no = await replica.post("/replica/v1/consent", json={"user_id": "@other:hs.test"}, headers=AUTH)
    assert no.status == 200 and await no.json() == {"accepted": False}
    assert asked == [NEW, "@other:hs.test"]
    bad = await replica.post("/replica/v1/consent", json={"user": NEW}, headers=AUTH)
    assert bad.status == 400 and (await bad.json())["error"] == "'user_id' must be a non-empty string"
    assert replica.publisher.consent_questions == 3


async def test_metrics_show_subscribers_changes_and_the_snapshot(replica) -> None:
    await snapshot_and_follow(replica)
    text = await (await replica.get("/metrics")).text()
    assert "rulesbot_replica_subscribers 1.0" in text
    assert f"rulesbot_replica_changes_total {float(replica.publisher.changes.seq)}" in text
    assert "rulesbot_replica_snapshots_total 1.0" in text
    size = replica.publisher.snapshot_bytes
    assert size > 100 and f"rulesbot_replica_snapshot_bytes {float(size)}" in text


async def test_an_item_that_fails_is_not_marked_seen_so_the_retried_batch_applies_it(replica) -> None:
    calls = []

    def flaky_publish(user, room):
        calls.append(room)
        if len(calls) == 1:
            raise OSError("the store is locked")
        replica.published.append((user, room))
    replica.publisher._gate._on_publish = flaky_publish
    batch = items({"id": "prompt:1", "kind": "prompt", "user_id": NEW},
                  {"id": "publish:1", "kind": "publish", "user_id": AGREED, "room_id": "!pub:hs.test"})
    first = await replica.post("/replica/v1/reports", json=batch, headers=AUTH)
    data = await first.json()
    assert first.status == 503 and data["applied"] == 1
    assert data["error"] == "1 item(s) could not be applied: send the batch again"
    again = await replica.post("/replica/v1/reports", json=batch, headers=AUTH)
    assert await again.json() == {"applied": 1, "duplicates": 1}
    assert replica.prompted == [NEW] and replica.published == [(AGREED, "!pub:hs.test")]


async def test_the_bot_serves_a_replica_of_what_it_loaded_from_its_first_answer(database) -> None:
    """As ``python -m bot run`` starts: the gate (bot.gatefirst) has the replica routes, the
    snapshot holds the store's acceptances and measures, and later changes follow."""
    import aiohttp

    from bot.config import Settings
    from bot.devserver import free_port
    from bot.gatefirst import GateFirst
    from bot.store import Acceptance, NewCase

    store = await database.open()
    await store.agreements.record_acceptance(Acceptance(AGREED, "1", "0" * 64, NOW - 10, "$a", "!dm:hs.test", "command"))
    await store.cases.open(NewCase(target=CAPPED, kind="restrict", actor="@mod:hs.test", reason="spam",
                                   created_at=NOW - 10, expires_at=NOW + HOUR))
    await store.close()
    port = free_port()
    settings = Settings(homeserver={"url": "http://127.0.0.1:9", "user_id": "@bot:hs.test", "password": "x" * 16},
                        language="en", gate={"listen": f"127.0.0.1:{port}", "token": TOKEN}, **database.settings)
    early = await GateFirst.open(settings, Translator("en"), lambda: NOW)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=AUTH) as http:
            async with http.get("/replica/v1/snapshot") as resp:
                document = await resp.json()
            local = apply_snapshot(document)
            assert local.has_agreed(AGREED) and CAPPED in local.sanctions
            early.state.record_acceptance(NEW, "1")
            async with http.get("/replica/v1/changes", params={"since": str(document["seq"]), "timeout": "0",
                                                              "epoch": document["epoch"]}) as resp:
                for change in (await resp.json())["changes"]:
                    apply_change(local, change)
            assert local.has_agreed(NEW)
            assert encode_state(local)["accepted"] == encode_state(early.state)["accepted"]
    finally:
        await early.close()
