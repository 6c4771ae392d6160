"""bot.synapse without Synapse's network: the replica's snapshot/changes loop against a fake bot,
the judge against the gate's answers, and the module's callbacks with a fake ModuleApi."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.i18n import Translator
from bot.policy import PolicyState, Reason
from bot.policy.news import NewsRules, fingerprint
from bot.policy.sanctions import Measure, Rate, SanctionKind
from bot.policy.state import PublicAccount
from bot.replica.protocol import snapshot
from bot.synapse.judge import NEW_ROOM, Judge
from bot.synapse.replica import Replica

BOT, MOD, NEW, AGREED, PUB = "@bot:hs.test", "@mod:hs.test", "@new:hs.test", "@agreed:hs.test", "@pub:hs.test"
ROOM, DM = "!room:hs.test", "!dm:hs.test"
NOW = 1_700_000_000_000
NEWS = {"news": [{"id": "cn-gov", "keywords": ["国务院"]}]}


def make_state() -> PolicyState:
    state = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="2", moderators=frozenset({MOD}))
    state.record_acceptance(AGREED, "2")
    state.record_acceptance(PUB, "2")
    state.public_accounts[PUB] = PublicAccount("enterprise", "Pub", "IM-1")
    state.set_dm_room(NEW, DM)
    state.news_rules = NewsRules.from_mapping(NEWS)
    return state


class FakeBot:
    """The bot's replica routes, as bot.replica.protocol's docstring describes them."""

    def __init__(self, state: PolicyState, epoch: str = "e1") -> None:
        self.state, self.epoch, self.seq = state, epoch, 5
        self.changes: list[dict[str, Any]] = []
        self.gone = False
        self.down = False
        self.requests: list[tuple[str, str, Any]] = []
        self.wake = asyncio.Event()

    async def fetch(self, method: str, path: str, *, params=None, body=None, timeout=10.0):
        self.requests.append((method, path, params or body))
        if self.down:
            raise ConnectionRefusedError("bot down")
        if path == "/replica/v1/snapshot":
            return 200, snapshot(self.state, self.epoch, self.seq)
        if path == "/replica/v1/changes":
            if self.gone:
                return 410, {"errcode": "M_REPLICA_GONE", "error": "too old"}
            since = int(params["since"])
            if not any(c["seq"] > since for c in self.changes):
                self.wake.clear()
                await self.wake.wait()
            if self.down:
                raise ConnectionResetError("bot killed")
            return 200, {"epoch": self.epoch, "seq": self.seq, "changes": [c for c in self.changes if c["seq"] > since]}
        raise AssertionError(path)

    def change(self, field: str, key: Any, value: Any) -> None:
        self.seq += 1
        self.changes.append({"seq": self.seq, "field": field, "key": key, "value": value})
        self.wake.set()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


async def until(check, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(what)


# -- the replica --------------------------------------------------------------------------------

async def test_replica_takes_a_snapshot_then_follows_the_changes():
    bot = FakeBot(make_state())
    replica = Replica(bot.fetch, no_sleep)
    task = asyncio.create_task(replica.run())
    await until(lambda: replica.state is not None, "a snapshot")
    assert replica.epoch == "e1" and replica.seq == 5 and not replica.state.has_agreed(NEW)
    bot.change("accepted", NEW, "2")
    await until(lambda: replica.seq == 6, "the change")
    assert replica.state.has_agreed(NEW) and replica.snapshots == 1
    replica.stop()
    bot.change("accepted", "@x:hs.test", "2")
    await task


async def test_a_gone_position_or_a_new_epoch_takes_a_new_snapshot():
    bot = FakeBot(make_state())
    replica = Replica(bot.fetch, no_sleep)
    task = asyncio.create_task(replica.run())
    await until(lambda: replica.snapshots == 1, "a snapshot")
    bot.state.record_acceptance(NEW, "2")
    bot.gone = True
    bot.wake.set()
    await until(lambda: replica.snapshots >= 2, "a second snapshot after 410")
    assert replica.state.has_agreed(NEW)
    bot.gone = False
    bot.epoch = "e2"  # the bot restarted: its numbering means something else now
    bot.change("accepted", AGREED, "1")
    await until(lambda: replica.epoch == "e2", "a snapshot of the new epoch")
    replica.stop()
    bot.change("accepted", "@x:hs.test", "2")
    await task


async def test_while_the_bot_is_down_the_replica_keeps_its_state_and_says_it_is_stale(caplog):
    clock = Clock()
    bot = FakeBot(make_state())
    replica = Replica(bot.fetch, no_sleep, stale_after=60, poll_timeout=25, monotonic=clock)
    task = asyncio.create_task(replica.run())
    await until(lambda: replica.state is not None and bot.requests[-1][1] == "/replica/v1/changes", "a poll")
    clock.t += 20
    assert replica.staleness() == 0  # a long poll is open: the bot would answer it at once
    caplog.set_level(logging.INFO, "bot.synapse.replica")
    bot.down = True
    bot.wake.set()
    await until(lambda: len(bot.requests) > 3, "retries")
    assert replica.state is not None and replica.state.has_agreed(AGREED)  # decides from its last state
    assert replica.staleness() == pytest.approx(20)
    assert "no word from the bot" not in caplog.text
    clock.t += 45
    replica.check_staleness()
    assert replica.staleness() == pytest.approx(65)
    assert "no word from the bot for 65 s" in caplog.text
    bot.down = False
    bot.change("accepted", NEW, "2")
    await until(lambda: replica.state.has_agreed(NEW), "catching up")
    assert "in step with the bot again" in caplog.text
    replica.stop()
    bot.change("accepted", "@x:hs.test", "2")
    await task


async def test_a_bot_that_takes_connections_but_never_answers_grows_stale_for_an_hour():
    """A frozen bot (SIGSTOP, a hung proxy): each poll hangs until its own timeout, a new one
    opens, and staleness must keep counting from the last answer, not from each new poll: a
    max_staleness of 60 s applies within 85 s (one poll's timeout) for the rest of the hour."""
    clock = Clock()
    hanging: list[tuple[float, asyncio.Future]] = []

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        if path == "/replica/v1/snapshot":
            return 200, snapshot(make_state(), "e1", 5)
        answer = asyncio.get_running_loop().create_future()
        hanging.append((clock.t + timeout, answer))
        return await answer

    async def sleep(seconds: float) -> None:
        clock.t += seconds
        await asyncio.sleep(0)

    replica = Replica(fetch, sleep, poll_timeout=25, monotonic=clock, retry_max=2)
    task = asyncio.create_task(replica.run())
    await until(lambda: hanging, "a poll")
    answered_at, fresh_after_a_minute = replica.last_success, []
    for _ in range(3600):  # an hour, a second at a time
        clock.t += 1
        for deadline, answer in list(hanging):
            if clock.t >= deadline:
                answer.set_exception(TimeoutError("no answer"))
                hanging.remove((deadline, answer))
        for _ in range(3):
            await asyncio.sleep(0)
        stale = replica.staleness()
        assert stale >= clock.t - answered_at - 25  # an open poll is credited one timeout at most
        if clock.t - answered_at > 60 + 25 and stale < 60:
            fresh_after_a_minute.append(clock.t)
    assert fresh_after_a_minute == [] and replica.staleness() > 3500
    replica.stop()
    task.cancel()


async def test_a_page_of_thousands_of_changes_is_applied_in_slices_with_the_reactor_free_between():
    from bot.replica.changelog import ChangeLog
    from bot.synapse.replica import APPLY_SLICE

    source = make_state()
    changelog = ChangeLog(source)
    first = snapshot(source, changelog.epoch, changelog.seq)
    for index in range(3_000):  # a burst: caps and counted posts, the records a scope refresh or a blip brings
        user = f"@u{index}:hs.test"
        source.add_measure(user, Measure(index, SanctionKind.RESTRICT, None, Rate.parse("3/1h")))
        source.note_post(user, NOW + index, f"$e{index}")
    page = {"epoch": changelog.epoch, "seq": changelog.seq, "changes": changelog.since(first["seq"], 10_000)}
    assert len(page["changes"]) == 9_000  # three records an account

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        return 200, first if path.endswith("snapshot") else page

    yielded_at: list[int] = []
    replica = Replica(fetch, no_sleep)

    async def sleep(seconds: float) -> None:
        yielded_at.append(replica.changes_applied)
        await asyncio.sleep(0)

    replica._sleep = sleep
    await replica.take_snapshot()
    await replica.poll_once()
    assert replica.seq == changelog.seq and replica.changes_applied == 9_000
    assert yielded_at == list(range(APPLY_SLICE, 9_000, APPLY_SLICE))
    assert replica.state.sanctions["@u2999:hs.test"].recent_posts == [NOW + 2999]


# -- the judge: the gate's answers --------------------------------------------------------------

@pytest.fixture
def judge() -> Judge:
    return Judge(Translator("en"))


def message_event(sender: str, body: str, room: str = ROOM, event_id: str = "$e1") -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "room_id": room, "event_id": event_id,
            "content": {"msgtype": "m.text", "body": body}}


def test_refusal_is_the_gates_text(judge):
    state = make_state()
    action, decision = judge.event(state, message_event(NEW, "hi"), NOW)
    assert decision.reason is Reason.NOT_AGREED and decision.prompt_agreement
    assert judge.refusal(decision) == Translator("en").refusal(decision.message_key, decision.params)
    assert "!agree" in judge.refusal(decision)
    items = judge.after_event(state, action, decision, message_event(NEW, "hi"), NOW)
    assert [i["kind"] for i in items] == ["prompt"] and items[0]["user_id"] == NEW


def test_an_allowed_text_is_remembered_here_and_reported(judge):
    state = make_state()
    state.open_rooms.add(ROOM)
    event = message_event(AGREED, "a plain message")
    action, decision = judge.event(state, event, NOW)
    assert decision.allowed
    items = judge.after_event(state, action, decision, event, NOW)
    # The bot needs only the text's fingerprint (bot.policy.news.fingerprint): no body.
    assert items == [{"id": "text:$e1", "kind": "text", "user_id": AGREED, "room_id": ROOM,
                      "fingerprint": fingerprint("a plain message"), "ts": NOW}]
    assert len(state.recent_texts) == 1


def test_news_out_of_scope_marks_the_room_so_it_cannot_be_opened(judge):
    state = make_state()
    event = message_event(AGREED, "国务院 今日发布")
    action, decision = judge.event(state, event, NOW)
    assert decision.allowed  # a private room: out of scope
    judge.after_event(state, action, decision, event, NOW)
    assert state.private_news == {ROOM: "cn-gov"}
    opening = {"type": "m.room.join_rules", "sender": AGREED, "room_id": ROOM, "event_id": "$e2", "state_key": "",
               "content": {"join_rule": "public"}}
    _, decision = judge.event(state, opening, NOW)
    assert decision.reason is Reason.PRIVATE_NEWS


def test_room_creation_public_needs_a_public_account(judge):
    state = make_state()
    decision = judge.create_room(state, AGREED, {"visibility": "public", "name": "Open"}, NOW)
    assert decision.reason is Reason.NOT_PUBLIC_ACCOUNT
    assert "The room was not published" in judge.refusal(decision)
    assert judge.create_room(state, PUB, {"visibility": "public", "name": "Open"}, NOW).allowed
    assert judge.create_room(state, AGREED, {"preset": "public_chat", "name": "Square"}, NOW).allowed
    refused = judge.create_room(state, NEW, {"name": "Mine"}, NOW)
    assert refused.reason is Reason.NOT_AGREED and refused.prompt_agreement


@pytest.mark.parametrize("config", [
    {"preset": "public_chat", "name": "国务院 消息"},
    {"preset": "public_chat", "topic": "国务院 消息"},
    {"preset": "private_chat", "name": "x", "initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}},
        {"type": "m.room.topic", "state_key": "", "content": {"topic": "国务院"}}]},
    {"preset": "private_chat", "initial_state": [
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}],
     "name": "国务院"},
])
def test_the_initial_name_and_topic_of_a_public_room_are_judged_like_posts(judge, config):
    state = make_state()
    decision = judge.create_room(state, AGREED, config, NOW)
    assert decision.reason is Reason.NEWS_TIER_MISSING
    assert judge.refusal(decision).startswith("The room was not created")
    assert NEW_ROOM not in state.open_rooms  # the replica itself is untouched


def test_a_private_room_may_be_named_anything_and_encryption_in_a_public_one_needs_a_publisher(judge):
    state = make_state()
    assert judge.create_room(state, AGREED, {"name": "国务院"}, NOW).allowed
    encrypted = {"preset": "public_chat", "initial_state": [
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}
    assert judge.create_room(state, AGREED, encrypted, NOW).reason is Reason.ENCRYPTION_IN_SCOPE
    state.public_accounts[PUB] = PublicAccount("enterprise", "Pub", "IM-1", tier="publisher")
    assert judge.create_room(state, PUB, encrypted, NOW).allowed


# -- the module's callbacks with a fake ModuleApi --------------------------------------------------

class FakeApi:
    def __init__(self, name: str) -> None:
        self.server_name = name
        self.callbacks: dict[str, Any] = {}
        self.background: list[str] = []

    def register_spam_checker_callbacks(self, **callbacks: Any) -> None:
        self.callbacks = callbacks

    def run_as_background_process(self, desc: str, func: Any, *args: Any) -> None:
        self.background.append(desc)  # not run: the tests drive the replica themselves

    def looping_background_call(self, f: Any, msec: float, *args: Any, **kwargs: Any) -> None:
        pass

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def defer_to_thread(self, f: Any, *args: Any) -> Any:
        return f(*args)


class FakeEvent:
    def __init__(self, content: dict[str, Any]) -> None:
        self.event_id = content["event_id"]
        self._content = {k: v for k, v in content.items() if k != "event_id"}

    def get_dict(self) -> dict[str, Any]:
        return dict(self._content)


_names = iter(range(10_000))


def module(**config: Any):
    from bot.synapse.config import parse_config
    from bot.synapse.module import RulesModule

    api = FakeApi(f"hs{next(_names)}.test")
    return RulesModule(parse_config({"bot_url": "http://127.0.0.1:1", "token": "t", "language": "en", **config}), api)


async def test_callbacks_are_registered_and_follow_fail_before_the_first_snapshot():
    from synapse.module_api import NOT_SPAM
    from synapse.module_api.errors import Codes

    rules = module()
    assert set(rules.api.callbacks) == {
        "check_event_for_spam", "user_may_invite", "user_may_send_3pid_invite", "user_may_create_room",
        "user_may_publish_room", "user_may_join_room", "check_login_for_spam", "check_registration_for_spam"}
    from bot.synapse.config import CALLBACKS
    assert set(rules.api.callbacks) == set(CALLBACKS)  # a fail mode only for what is registered
    assert rules.api.background == ["rulesbot_replica", "rulesbot_reports"]
    code, fields = await rules.check_event_for_spam(FakeEvent(message_event(AGREED, "hi")))
    assert code == Codes.FORBIDDEN
    assert fields["error"].startswith("Your message was not sent: the rules service of this server cannot decide")
    assert await rules.user_may_join_room(AGREED, ROOM, False) == NOT_SPAM  # fails open by default
    assert await rules.check_login_for_spam(AGREED, None, None, [], None) == NOT_SPAM
    opened = module(fail={"check_event_for_spam": "open"})
    assert await opened.check_event_for_spam(FakeEvent(message_event(AGREED, "hi"))) == NOT_SPAM


async def test_max_staleness_makes_a_callback_follow_fail_and_only_that_callback():
    from synapse.module_api import NOT_SPAM

    rules = module(max_staleness={"user_may_invite": 30})
    clock = Clock()
    rules.replica._monotonic = clock
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = make_state(), "e1", clock.t
    assert await rules.user_may_invite(AGREED, "@x:hs.test", ROOM) == NOT_SPAM
    clock.t += 31
    refused = await rules.user_may_invite(AGREED, "@x:hs.test", ROOM)
    assert refused[1]["error"].startswith("Your invitation was not sent: the rules service")
    # No max_staleness for messages: decided from the last state, however old.
    assert await rules.check_event_for_spam(FakeEvent(message_event(AGREED, "hi"))) == NOT_SPAM
    _, fields = await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id="$e2")))
    assert "!agree" in fields["error"]
    assert [i["kind"] for i in rules.outbox.pending] == ["prompt"]


def rate_capped(state: PolicyState) -> PolicyState:
    state.add_measure(AGREED, Measure(7, SanctionKind.RESTRICT, None, Rate.parse("1/1h")))
    return state


async def test_a_rate_capped_post_asks_the_bot_and_takes_its_refusal():
    rules = module()
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = rate_capped(make_state()), "e1", 0.0
    asked = []

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        asked.append((path, body, timeout))
        return 403, {"errcode": "M_FORBIDDEN", "error": "refused by the bot's count"}

    rules._fetch = fetch
    _, fields = await rules.check_event_for_spam(FakeEvent(message_event(AGREED, "one")))
    assert fields["error"] == "refused by the bot's count"
    assert asked[0][0] == "/replica/v1/ratecap" and asked[0][1]["event_id"] == "$e1" and asked[0][2] == 0.5
    # Others are never asked about: only accounts with a rate cap.
    await rules.check_event_for_spam(FakeEvent(message_event(PUB, "one", event_id="$p")))
    assert len(asked) == 1


async def test_before_refusing_a_newcomer_the_module_asks_the_bot_about_consent_at_registration():
    from synapse.module_api import NOT_SPAM

    from bot.synapse.module import CONSENT_ASK_AGAIN_S, CONSENT_PATH

    rules = module()
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = make_state(), "e1", 0.0
    clock = Clock()
    rules.consent_clock = clock
    asked = []
    registered = {"@registered:hs.test"}

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        asked.append((path, body, timeout))
        if body["user_id"] in registered:
            return 200, {"accepted": True, "version": "2"}
        return 200, {"accepted": False}

    rules._fetch = fetch
    # Accepted at registration: the first message goes through, no prompt, the replica knows.
    assert await rules.check_event_for_spam(FakeEvent(message_event("@registered:hs.test", "hi"))) == NOT_SPAM
    assert asked == [(CONSENT_PATH, {"user_id": "@registered:hs.test"}, 3.0)]
    assert rules.replica.state.has_agreed("@registered:hs.test") and list(rules.outbox.pending) == []
    # Not accepted: refused as before, and not asked again for every event.
    for event_id in ("$n1", "$n2"):
        _, fields = await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id=event_id)))
        assert "not accepted the service agreement (version 2)" in fields["error"] and "!agree" in fields["error"]
    assert [body["user_id"] for _, body, _ in asked] == ["@registered:hs.test", NEW]
    # It may agree on Synapse's consent page meanwhile: asked again later, by another callback too.
    clock.t += CONSENT_ASK_AGAIN_S
    registered.add(NEW)
    assert await rules.user_may_invite(NEW, AGREED, ROOM) == NOT_SPAM
    assert [body["user_id"] for _, body, _ in asked] == ["@registered:hs.test", NEW, NEW]
    # Remote accounts are never asked about (Synapse's consent is this homeserver's).
    await rules.check_event_for_spam(FakeEvent(message_event("@far:remote.test", "hi", event_id="$r")))
    assert len(asked) == 3


async def test_without_the_bots_consent_answer_the_newcomer_is_refused_as_not_agreed(caplog):
    rules = module(consent_timeout=0.25)
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = make_state(), "e1", 0.0
    asked = []

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        asked.append(timeout)
        raise TimeoutError

    rules._fetch = fetch
    _, fields = await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi")))
    assert "not accepted the service agreement (version 2)" in fields["error"]
    assert asked == [0.25] and [i["kind"] for i in rules.outbox.pending] == ["prompt"]
    assert "no answer from the bot whether @new:hs.test accepted the agreement at registration" in caplog.text


async def test_a_bot_that_could_not_check_consent_is_asked_again_after_10_s_a_no_after_60_s(caplog):
    """/replica/v1/consent's {"unknown": true} (the bot's admin-API lookup failed) and no answer are
    not a "no": the account may have agreed at registration, so it is asked about again soon."""
    from synapse.module_api import NOT_SPAM

    from bot.synapse.module import CONSENT_ASK_AGAIN_S, CONSENT_RETRY_S

    rules = module()
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = make_state(), "e1", 0.0
    clock = Clock()
    rules.consent_clock = clock
    answers = [(200, {"accepted": False, "unknown": True, "retry_after_ms": 10_000}), (200, {"accepted": False}),
               (200, {"accepted": True, "version": "2"})]
    asked = []

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        asked.append(body["user_id"])
        return answers[len(asked) - 1]

    rules._fetch = fetch
    _, fields = await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi")))
    assert "not accepted the service agreement (version 2)" in fields["error"]
    assert "the bot could not check whether @new:hs.test accepted the agreement at registration" in caplog.text
    clock.t += CONSENT_RETRY_S - 1
    await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id="$n2")))
    assert len(asked) == 1  # not before the retry
    clock.t += 1
    await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id="$n3")))
    assert len(asked) == 2  # asked again: this time a plain no, kept for a minute
    clock.t += CONSENT_ASK_AGAIN_S - 1
    await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id="$n4")))
    assert len(asked) == 2
    clock.t += 1
    assert await rules.check_event_for_spam(FakeEvent(message_event(NEW, "hi", event_id="$n5"))) == NOT_SPAM
    assert len(asked) == 3


async def test_without_the_bots_answer_the_replica_counts_and_reports_the_post():
    from synapse.module_api import NOT_SPAM

    rules = module()
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = rate_capped(make_state()), "e1", 0.0

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        raise TimeoutError

    rules._fetch = fetch
    assert await rules.check_event_for_spam(FakeEvent(message_event(AGREED, "one"))) == NOT_SPAM
    assert [(i["kind"], i["event_id"]) for i in rules.outbox.pending] == [("post", "$e1")]
    _, fields = await rules.check_event_for_spam(FakeEvent(message_event(AGREED, "two", event_id="$e2")))
    assert "your posting is limited to 1/1h (case #7)" in fields["error"]


async def test_outbox_keeps_reports_while_the_bot_is_down_and_sends_them_once():
    from bot.synapse.outbox import Outbox

    sent: list[list[str]] = []
    down = True

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        if down:
            raise ConnectionRefusedError
        sent.append([i["id"] for i in body["items"]])
        return 200, {"applied": len(body["items"]), "duplicates": 0}

    outbox = Outbox(fetch, no_sleep, 0.01)
    outbox.add([{"id": "a", "kind": "prompt", "user_id": NEW}, {"id": "b", "kind": "prompt", "user_id": AGREED}])
    with pytest.raises(ConnectionRefusedError):
        await outbox.flush()
    assert len(outbox.pending) == 2
    down = False
    await outbox.flush()
    assert sent == [["a", "b"]] and not outbox.pending and outbox.sent == 2


async def test_a_batch_the_bot_refuses_is_dropped_and_does_not_hold_back_later_reports(caplog):
    from bot.synapse.outbox import Outbox

    sent: list[list[str]] = []

    async def fetch(method, path, *, params=None, body=None, timeout=10.0):
        ids = [i["id"] for i in body["items"]]
        if "bad" in ids:
            return 400, {"errcode": "M_INVALID_PARAM", "error": "item 0: unknown kind 'nonsense'"}
        sent.append(ids)
        return 200, {"applied": len(ids), "duplicates": 0}

    outbox = Outbox(fetch, no_sleep, 0.01)
    outbox.add([{"id": "bad", "kind": "nonsense"}])
    await outbox.flush()
    assert outbox.rejected == 1 and not outbox.pending
    assert "the bot refused 1 reports" in caplog.text and "unknown kind 'nonsense'" in caplog.text
    outbox.add([{"id": "good", "kind": "prompt", "user_id": NEW}])
    await outbox.flush()
    assert sent == [["good"]]


def test_every_report_kind_the_module_sends_is_one_the_bot_takes():
    """The bot's intake refuses a batch with an unknown kind: the module must send only known ones."""
    import inspect
    import re

    from bot.replica import publisher
    from bot.synapse import judge, module

    sent = set(re.findall(r'report\("([a-z_]+)"', inspect.getsource(judge) + inspect.getsource(module)))
    taken = set(re.findall(r'kind == "([a-z_]+)"', inspect.getsource(publisher.ReplicaPublisher._step)))
    assert sent and sent <= taken, sent - taken


def test_staleness_and_decisions_are_exported_on_synapses_registry():
    from prometheus_client import REGISTRY

    rules = module()
    name = rules.server_name
    assert REGISTRY.get_sample_value("rulesbot_module_replica_staleness_seconds", {"server_name": name}) == float("inf")
    clock = Clock()
    rules.replica._monotonic = clock
    rules.replica.last_success = clock.t - 42
    assert REGISTRY.get_sample_value("rulesbot_module_replica_staleness_seconds", {"server_name": name}) == 42
    rules.replica.state, rules.replica.epoch = make_state(), "e1"
    asyncio.run(rules.user_may_invite(NEW, AGREED, ROOM))
    assert REGISTRY.get_sample_value("rulesbot_module_decisions_total",
                                     {"server_name": name, "callback": "user_may_invite", "outcome": "deny"}) == 1


def test_a_posting_restriction_does_not_stop_room_creation_but_a_suspension_does(judge):
    state = make_state()
    state.add_measure(AGREED, Measure(3, SanctionKind.RESTRICT, None))
    assert judge.create_room(state, AGREED, {"name": "frank's", "preset": "public_chat"}, NOW).allowed
    assert judge.create_room(state, AGREED, {"preset": "public_chat", "topic": "国务院"}, NOW).reason \
        is Reason.NEWS_TIER_MISSING
    assert AGREED in state.sanctions  # judged on a copy
    state.add_measure(AGREED, Measure(4, SanctionKind.SUSPEND, None))
    assert judge.create_room(state, AGREED, {"name": "x"}, NOW).reason is Reason.SUSPENDED
