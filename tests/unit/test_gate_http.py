"""The gate over HTTP: each callback's decision, and each bad request's status and errcode."""

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.gate.callbacks import GATED, PASSTHROUGH
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.policy.news import NewsRules
from bot.policy.state import PublicAccount

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


# -- side doors (issue 12): scope without lag, rooms created public, encryption, the module's reading

PUBLISHER = "@publisher:hs.test"


@pytest.fixture
async def side():
    """A gate over a state with a publisher, recording the rooms created by accounts that may not publish."""
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1", moderators=frozenset({MOD}))
    for user in (AGREED, PUBLISHER):
        state.record_acceptance(user, "1")
    state.public_accounts[PUBLISHER] = PublicAccount("news-website", "Daily", "F-1", tier="publisher")
    created: list[str] = []
    followed: list = []

    class NewRooms:  # the directory guard's side of the gate
        async def room_creation(self, user):
            created.append(user)

        def unsettled(self, user, room):
            return user in created and room == "!new:hs.test"

        async def settle(self, user):
            state.open_rooms.add("!new:hs.test")

        def follow_scope(self, room_id, still_current):
            followed.append((room_id, still_current))

    server = Gate(state, Translator("en"), TOKEN, lambda u: None, new_rooms=NewRooms())
    async with TestClient(TestServer(server.app())) as client:
        client.state, client.created, client.gate, client.followed = state, created, server, followed
        yield client


def state_event(sender, kind, content, room="!room:hs.test"):
    body = event(sender, room, kind)
    body["event"].update(content=content, state_key="")
    return body


async def test_a_room_is_in_news_scope_the_moment_its_join_rule_becomes_public(side):
    assert not side.state.in_news_scope("!room:hs.test")
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", {"join_rule": "public"}), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")


async def test_an_allowed_join_rule_change_to_invite_does_not_narrow_the_scope_at_the_gate(side):
    # Synapse's auth rules may still refuse the event after the gate allowed it (a member below the
    # state level): the room would leave scope while it stays public. Only the stored event, seen
    # by the sync, or the refresh narrow it.
    side.state.open_rooms.add("!room:hs.test")
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", {"join_rule": "invite"}), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(
        AGREED, "m.room.history_visibility", {"history_visibility": "joined"}), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")
    # The stored state is read back to narrow (the directory guard, with an admin token); a read
    # made stale by a newer change the gate allowed is dropped.
    assert [room for room, _ in side.followed] == ["!room:hs.test", "!room:hs.test"]
    first, second = (current for _, current in side.followed)
    assert not first() and second()
    await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", {"join_rule": "public"}), headers=AUTH)
    assert not second()


@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
async def test_restricted_rooms_are_open(side, rule):
    # Every member of an allowed room (a public space, a square) joins them without approval.
    content = {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": "!square:hs.test"}]}
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", content), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")


async def test_a_world_readable_room_is_in_scope_at_once(side):
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(
        AGREED, "m.room.history_visibility", {"history_visibility": "world_readable"}), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")
    side.state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
    resp = await side.post("/antispam/check_event_for_spam", json=news_event(AGREED), headers=AUTH)
    assert resp.status == 403
    assert "rule cn-gov" in (await resp.json())["error"]


def news_event(sender, room="!room:hs.test"):
    body = event(sender, room)
    body["event"]["content"] = {"msgtype": "m.text", "body": "国务院今天开会"}
    return body


OPENINGS = [
    ("check_event_for_spam", state_event(AGREED, "m.room.join_rules", {"join_rule": "public"})),
    ("check_event_for_spam", state_event(AGREED, "m.room.join_rules", {"join_rule": "restricted"})),
    ("check_event_for_spam", state_event(AGREED, "m.room.history_visibility", {"history_visibility": "world_readable"})),
    ("user_may_publish_room", {"user_id": PUBLISHER, "room_id": "!room:hs.test"}),
]


@pytest.mark.parametrize("callback, body", OPENINGS, ids=["public", "restricted", "world_readable", "publish"])
async def test_a_room_with_news_in_its_private_history_cannot_be_opened(side, callback, body):
    side.state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
    resp = await side.post("/antispam/check_event_for_spam", json=news_event(AGREED), headers=AUTH)
    assert resp.status == 200  # private: not judged, but remembered
    resp = await side.post(f"/antispam/{callback}", json=body, headers=AUTH)
    assert resp.status == 403
    answer = await resp.json()
    assert answer["errcode"] == "M_FORBIDDEN" and "news (rule cn-gov) posted while it was private" in answer["error"]
    assert not side.state.in_news_scope("!room:hs.test")
    # A room whose private history holds nothing of the kind opens as before.
    other = {**body}
    if "event" in other:
        other["event"] = {**other["event"], "room_id": "!other:hs.test"}
    else:
        other["room_id"] = "!other:hs.test"
    assert (await side.post(f"/antispam/{callback}", json=other, headers=AUTH)).status == 200


async def test_news_by_a_publisher_in_a_private_room_does_not_lock_it(side):
    side.state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
    assert (await side.post("/antispam/check_event_for_spam", json=news_event(PUBLISHER), headers=AUTH)).status == 200
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", {"join_rule": "public"}), headers=AUTH)
    assert resp.status == 200 and side.state.in_news_scope("!room:hs.test")


async def test_a_refused_join_rule_change_does_not_move_the_scope(side):
    resp = await side.post("/antispam/check_event_for_spam", json=state_event(NEW, "m.room.join_rules", {"join_rule": "public"}), headers=AUTH)
    assert resp.status == 403 and not side.state.in_news_scope("!room:hs.test")


async def test_knock_is_not_public(side):
    await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, "m.room.join_rules", {"join_rule": "knock"}), headers=AUTH)
    assert not side.state.in_news_scope("!room:hs.test")


async def test_room_creation_is_followed_and_the_first_post_there_waits_for_it(side):
    for user in (AGREED, PUBLISHER, MOD, NEW):
        resp = await side.post("/antispam/user_may_create_room", json={"user_id": user}, headers=AUTH)
        assert resp.status == (403 if user == NEW else 200)
    assert side.created == [AGREED, PUBLISHER]  # moderators are exempt; a refusal creates nothing
    body = state_event(AGREED, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, "!new:hs.test")
    resp = await side.post("/antispam/check_event_for_spam", json=body, headers=AUTH)
    # The new room was classified (public) before the decision, so encryption there is refused.
    assert resp.status == 403 and "encrypted messages cannot be checked" in (await resp.json())["error"]


@pytest.mark.parametrize("kind, content", [
    ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    ("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s"}),
])
async def test_encryption_in_scope_needs_the_publisher_tier(side, kind, content):
    side.state.open_rooms.add("!room:hs.test")
    body = state_event(AGREED, kind, content)
    resp = await side.post("/antispam/check_event_for_spam", json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == 403 and data["errcode"] == "M_FORBIDDEN"
    assert "encrypted messages cannot be checked" in data["error"] and "!apply news publisher" in data["error"]
    allowed = await side.post("/antispam/check_event_for_spam", json=state_event(PUBLISHER, kind, content), headers=AUTH)
    assert allowed.status == 200
    private = await side.post("/antispam/check_event_for_spam", json=state_event(AGREED, kind, content, "!private:hs.test"), headers=AUTH)
    assert private.status == 200


async def test_encryption_refusal_in_chinese():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    state.record_acceptance(AGREED, "1")
    state.open_rooms.add("!room:hs.test")
    server = Gate(state, Translator("zh-CN"), TOKEN, lambda u: None)
    async with TestClient(TestServer(server.app())) as client:
        resp = await client.post("/antispam/check_event_for_spam", headers=AUTH,
                                 json=state_event(AGREED, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}))
        data = await resp.json()
        assert resp.status == 403 and "加密消息无法审查" in data["error"] and "!申请 news publisher" in data["error"]


async def test_username_callback_is_answered_and_reported_as_misconfiguration(side):
    body = {"user_profile": {"user_id": AGREED, "display_name": "A", "avatar_url": None}, "requester_id": NEW}
    resp = await side.post("/antispam/check_username_for_spam", json=body, headers=AUTH)
    assert resp.status == 200
    health = await (await side.get("/health")).json()
    assert "check_username_for_spam" in health["warnings"][0]


# -- what synapse-http-antispam makes of the gate's answers, with the module's own code

class _ModuleHttp:
    """Synapse's SimpleHttpClient.post_json_get_json over the test client: 2xx -> JSON, else raise."""

    def __init__(self, client):
        self._client = client

    async def post_json_get_json(self, url, data, headers):
        from synapse.api.errors import HttpResponseException

        resp = await self._client.post("/antispam/" + url.rsplit("/", 1)[1], json=data,
                                       headers={k: v[0] for k, v in headers.items()})
        raw = await resp.read()
        if not 200 <= resp.status < 300:
            raise HttpResponseException(resp.status, resp.reason or "", raw)
        return json.loads(raw)


class _ModuleApi:
    def __init__(self, client):
        self.http_client = _ModuleHttp(client)
        self.registered: dict = {}

    def register_spam_checker_callbacks(self, **callbacks):
        self.registered = callbacks


def _module(client, enabled=None):
    from synapse_http_antispam import HTTPAntispam

    config = {"base_url": "http://gate/antispam", "authorization": TOKEN}
    if enabled is not None:
        config["enabled_callbacks"] = enabled
    api = _ModuleApi(client)
    return HTTPAntispam(config, api), api


@pytest.mark.parametrize("callback, args", [
    ("user_may_create_room_alias", (AGREED, "#a:hs.test")),
    ("accept_make_join", (AGREED, "!r:hs.test")),
])
async def test_passthrough_answers_mean_allow_to_the_module(side, callback, args):
    from synapse.module_api import NOT_SPAM

    module, _ = _module(side)
    # Synapse allows only when the callback returns True or NOT_SPAM itself (`res is NOT_SPAM`).
    assert await getattr(module, callback)(*args) is NOT_SPAM


async def test_federated_invite_answer_means_allow_to_the_module(side):
    from synapse.module_api import NOT_SPAM

    class Remote:
        event_id = "$i"
        def get_dict(self):
            return {"type": "m.room.member", "sender": "@x:remote.test", "state_key": AGREED, "room_id": "!r:remote.test",
                    "content": {"membership": "invite"}, "origin_server_ts": 1, "unsigned": {}}

    module, _ = _module(side)
    assert await module.federated_user_may_invite(Remote()) is NOT_SPAM


async def test_every_gated_allow_and_refusal_reads_right_in_the_module(side):
    from synapse.api.errors import Codes
    from synapse.module_api import NOT_SPAM

    module, _ = _module(side)
    assert await module.user_may_create_room(AGREED) is NOT_SPAM
    assert await module.user_may_join_room(NEW, "!r:hs.test", False) is NOT_SPAM
    refused = await module.user_may_publish_room(AGREED, "!r:hs.test")
    assert refused[0] is Codes.FORBIDDEN and "public accounts" in refused[1]["error"]


async def test_no_answer_keeps_users_visible_when_the_username_callback_is_enabled(side):
    """Why the shipped config leaves check_username_for_spam out: Synapse hides the user whenever
    the module returns something truthy, and it does for a 2xx, a refusal and a dead gate alike."""
    module, _ = _module(side)
    profile = {"user_id": AGREED, "display_name": "A", "avatar_url": None}
    assert bool(await module.check_username_for_spam(profile, NEW)) is True


def test_shipped_module_config_registers_cleanly_and_leaves_the_username_callback_out():
    import inspect

    from synapse.module_api import ModuleApi

    from bot.devserver import module_config

    (module,) = module_config("http://gate/antispam", TOKEN)
    enabled = module["config"]["enabled_callbacks"]
    assert "check_username_for_spam" not in enabled
    register = inspect.signature(ModuleApi.register_spam_checker_callbacks)
    register.bind(None, **{name: object() for name in enabled})  # each one a callback Synapse knows
    # Leaving out enabled_callbacks registers every method, accept_make_join included: Synapse
    # 1.163 does not know it and refuses to start. The config's comment says so.
    with pytest.raises(TypeError):
        register.bind(None, accept_make_join=object())


# -- the gate never answers 500: bodies a fuzzer makes up

import asyncio  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
    | st.sampled_from([AGREED, NEW, "!room:hs.test", "m.room.message", "m.room.join_rules", "m.room.encrypted", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.sampled_from(
        ["body", "formatted_body", "m.new_content", "join_rule", "msgtype", "m.relates_to", "format"]), inner, max_size=5),
    max_leaves=25,
)
_event_like = st.fixed_dictionaries(
    {"sender": st.sampled_from([AGREED, NEW, PUBLISHER]) | _junk, "room_id": st.just("!room:hs.test") | _junk,
     "type": st.sampled_from(["m.room.message", "m.room.join_rules", "m.room.encryption", "m.room.topic"]) | _junk,
     "content": _junk},
    optional={"state_key": _junk, "event_id": _junk},
)
_CALLBACKS = [*sorted(GATED), *sorted(PASSTHROUGH), "check_username_for_spam"]


def _fuzz_state() -> PolicyState:
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    state.record_acceptance(AGREED, "1")
    state.open_rooms.add("!room:hs.test")
    return state


async def _post_all(bodies):
    server = Gate(_fuzz_state(), Translator("en"), TOKEN, lambda u: None)
    statuses = []
    async with TestClient(TestServer(server.app())) as client:
        for callback, raw, content_type in bodies:
            resp = await client.post(f"/antispam/{callback}", data=raw, headers={**AUTH, "Content-Type": content_type})
            statuses.append((resp.status, callback, raw[:200]))
    return statuses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.sampled_from(_CALLBACKS),
    st.one_of(
        _junk.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"event": _event_like}).map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["user_id", "user", "room", "room_id", "inviter", "invitee", "is_invited",
                                         "medium", "address", "requester_id", "user_profile"]), _junk)
        .map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.text(min_size=1, max_size=20).map(lambda t: json.dumps({"event": {"content": {"body": t * 5000}}}).encode()),
    ),
    st.sampled_from(["application/json", "text/plain", "multipart/form-data", "application/x-www-form-urlencoded", ""]),
), min_size=1, max_size=8))
def test_the_gate_answers_200_400_or_403_to_anything(bodies):
    for status, callback, raw in asyncio.run(_post_all(bodies)):
        assert status in (200, 400, 403), (status, callback, raw)


# -- the directory guard's sweep and the scope refresh's merge (pure parts)

def test_sweep_unlists_only_rooms_listed_by_local_accounts_that_may_not_publish():
    from bot.directory import DirectoryGuard

    state = _fuzz_state()
    state.moderators = frozenset({MOD})
    state.public_accounts[PUBLISHER] = PublicAccount("news-website", "Daily", "F-1")
    state.channels["!channel:hs.test"] = PUBLISHER
    spawned: list[str] = []

    def spawn(work, name):
        work.close()
        spawned.append(name)

    guard = DirectoryGuard(state, "http://hs", "admin-token", spawn)
    guard.sweep([
        {"room_id": "!a:hs.test", "creator": AGREED, "public": True},
        {"room_id": "!b:hs.test", "creator": AGREED, "public": False},
        {"room_id": "!c:hs.test", "creator": PUBLISHER, "public": True},
        {"room_id": "!d:hs.test", "creator": MOD, "public": True},
        {"room_id": "!e:remote.test", "creator": "@x:remote.test", "public": True},
        {"room_id": "!channel:hs.test", "creator": AGREED, "public": True},  # published by its public account
    ])
    assert spawned == ["directory-unlist-!a:hs.test"]
    spawned.clear()
    DirectoryGuard(state, "http://hs", None, spawn).sweep([{"room_id": "!a:hs.test", "creator": AGREED, "public": True}])
    assert spawned == []  # no admin token: nothing it could do


def test_scope_refresh_keeps_changes_made_while_it_asked():
    from bot.news import _merge

    before = {"!old:hs", "!closing:hs"}
    now = {"!old:hs", "!opened:hs"}  # the gate saw !closing close and !opened open meanwhile
    read = {"!old:hs", "!closing:hs", "!other:hs"}  # what the homeserver said, a moment stale
    assert _merge(read, before, now) == {"!old:hs", "!opened:hs", "!other:hs"}
