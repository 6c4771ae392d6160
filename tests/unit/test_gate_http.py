"""The gate over HTTP: each callback's decision, and each bad request's status and errcode."""

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState

TOKEN = "gate-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW, AGREED, MOD = "@new:hs.test", "@agreed:hs.test", "@mod:hs.test"


@pytest.fixture
async def gate():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1", moderators=frozenset({MOD}))
    state.record_acceptance(AGREED, "1")
    state.set_dm_room(NEW, "!dm:hs.test")
    prompted: list[str] = []
    server = Gate(state, Translator("en"), TOKEN, prompted.append, lambda: {"matrix": "synced"})
    async with TestClient(TestServer(server.app())) as client:
        client.prompted = prompted
        yield client


def event(sender, room="!room:hs.test", kind="m.room.message"):
    return {"event": {"sender": sender, "room_id": room, "type": kind, "content": {"body": "hi"}, "event_id": "$e"}}


CASES = [
    ("check_event_for_spam", event(NEW)),
    ("user_may_invite", {"inviter": NEW, "invitee": AGREED, "room_id": "!room:hs.test"}),
    ("user_may_send_3pid_invite", {"inviter": NEW, "medium": "email", "address": "a@b.c", "room_id": "!r:hs.test"}),
    ("user_may_create_room", {"user_id": NEW}),
    ("user_may_publish_room", {"user_id": NEW, "room_id": "!room:hs.test"}),
]


@pytest.mark.parametrize("callback, body", CASES, ids=[c[0] for c in CASES])
async def test_account_that_has_not_agreed_is_refused_with_reason(gate, callback, body):
    resp = await gate.post(f"/antispam/{callback}", json=body, headers=AUTH)
    assert resp.status == 403
    data = await resp.json()
    assert data["errcode"] == "M_FORBIDDEN"
    assert "!agree" in data["error"] and "@bot:hs.test" in data["error"]
    assert gate.prompted == [NEW]


@pytest.mark.parametrize("callback, body", CASES[:-1], ids=[c[0] for c in CASES[:-1]])
async def test_same_calls_from_an_agreed_account_are_allowed(gate, callback, body):
    text = json.dumps(body).replace(NEW, AGREED)
    resp = await gate.post(f"/antispam/{callback}", data=text, headers=AUTH)
    assert resp.status == 200 and await resp.json() == {}
    assert gate.prompted == []


async def test_publishing_needs_a_public_account(gate):
    resp = await gate.post("/antispam/user_may_publish_room", json={"user_id": AGREED, "room_id": "!r:hs.test"}, headers=AUTH)
    data = await resp.json()
    assert resp.status == 403 and "public accounts" in data["error"] and "!apply public" in data["error"]


async def test_messages_in_the_users_dm_with_the_bot_are_allowed(gate):
    resp = await gate.post("/antispam/check_event_for_spam", json=event(NEW, "!dm:hs.test"), headers=AUTH)
    assert resp.status == 200


async def test_remote_senders_pass_the_gate(gate):
    resp = await gate.post("/antispam/check_event_for_spam", json=event("@x:remote.test"), headers=AUTH)
    assert resp.status == 200


async def test_join_is_allowed_and_login_prompts(gate):
    join = await gate.post("/antispam/user_may_join_room", json={"user": NEW, "room": "!r:hs.test", "is_invited": False}, headers=AUTH)
    assert join.status == 200 and gate.prompted == []
    login = {"user_id": NEW, "device_id": "D", "initial_display_name": None, "request_info": [["ua", "127.0.0.1"]], "auth_provider_id": None}
    resp = await gate.post("/antispam/check_login_for_spam", json=login, headers=AUTH)
    assert resp.status == 200 and gate.prompted == [NEW]


async def test_refusal_in_chinese():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    server = Gate(state, Translator("zh-CN"), TOKEN, lambda u: None)
    async with TestClient(TestServer(server.app())) as client:
        resp = await client.post("/antispam/user_may_create_room", json={"user_id": NEW}, headers=AUTH)
        data = await resp.json()
        assert resp.status == 403 and "房间未能创建" in data["error"] and "!同意" in data["error"]


async def test_ping_echoes_the_id(gate):
    resp = await gate.post("/antispam/ping", json={"id": "abc123"}, headers=AUTH)
    assert resp.status == 200 and await resp.json() == {"id": "abc123", "status": "ok"}


async def test_passthrough_callbacks_are_allowed(gate):
    resp = await gate.post("/antispam/accept_make_join", json={"user": NEW, "room": "!r:hs"}, headers=AUTH)
    assert resp.status == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}],
    ids=["missing", "wrong", "no-bearer", "longer"],
)
@pytest.mark.parametrize("path", ["/antispam/check_event_for_spam", "/antispam/ping", "/antispam/nope"])
async def test_missing_or_wrong_token_is_401(gate, headers, path):
    resp = await gate.post(path, json=event(NEW), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


@pytest.mark.parametrize("raw", [b"not json", b"{\"event\": ", b"\xff\xfe"], ids=["text", "truncated", "binary"])
async def test_body_that_is_not_json_is_400_bad_json(gate, raw):
    resp = await gate.post("/antispam/check_event_for_spam", data=raw, headers=AUTH)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"


@pytest.mark.parametrize(
    "callback, body, field",
    [
        ("check_event_for_spam", [1, 2], "JSON object"),
        ("check_event_for_spam", {}, "'event'"),
        ("check_event_for_spam", {"event": {"sender": NEW, "type": "m.room.message"}}, "'room_id'"),
        ("check_event_for_spam", {"event": {"sender": 5, "room_id": "!r", "type": "t"}}, "'sender'"),
        ("user_may_invite", {"inviter": NEW, "room_id": "!r:hs"}, "'invitee'"),
        ("user_may_create_room", {"user_id": None}, "'user_id'"),
        ("user_may_join_room", {"user": NEW, "room": "!r:hs", "is_invited": "yes"}, "'is_invited'"),
    ],
)
async def test_body_not_matching_the_schema_is_400_invalid_param(gate, callback, body, field):
    resp = await gate.post(f"/antispam/{callback}", json=body, headers=AUTH)
    assert resp.status == 400
    data = await resp.json()
    assert data["errcode"] == "M_INVALID_PARAM" and field in data["error"]


async def test_body_over_one_mebibyte_is_413(gate):
    huge = {"event": {"sender": NEW, "room_id": "!r:hs", "type": "m.room.message", "content": {"body": "x" * (1024 * 1024)}}}
    resp = await gate.post("/antispam/check_event_for_spam", json=huge, headers=AUTH)
    assert resp.status == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"


async def test_chunked_body_over_one_mebibyte_is_413(gate):
    async def chunks():
        for _ in range(20):
            yield b"x" * 65536 * 2

    resp = await gate.post("/antispam/check_event_for_spam", data=chunks(), headers=AUTH)
    assert resp.status == 413


async def test_unknown_callback_is_404_unrecognized(gate):
    resp = await gate.post("/antispam/user_may_fly", json={}, headers=AUTH)
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_gate_keeps_answering_after_bad_requests(gate):
    for raw in (b"garbage", b"[]", b"{}"):
        await gate.post("/antispam/check_event_for_spam", data=raw, headers=AUTH)
    resp = await gate.post("/antispam/check_event_for_spam", json=event(AGREED), headers=AUTH)
    assert resp.status == 200


async def test_health_and_metrics(gate):
    health = await gate.get("/health")
    assert health.status == 200 and await health.json() == {"status": "ok", "matrix": "synced"}
    await gate.post("/antispam/user_may_create_room", json={"user_id": NEW}, headers=AUTH)
    await gate.post("/antispam/user_may_create_room", json={"user_id": AGREED}, headers=AUTH)
    metrics = await (await gate.get("/metrics")).text()
    assert 'bot_gate_requests_total{callback="user_may_create_room",outcome="deny"} 1.0' in metrics
    assert 'bot_gate_requests_total{callback="user_may_create_room",outcome="allow"} 1.0' in metrics
    assert "bot_gate_decision_seconds_bucket" in metrics
