"""The effects that were still called directly (issue 8, item 2) are journaled now: the agreement
prompt (onboarding and ``!rules``, recorded with the sent event's ID once the executor sends it),
onboarding's notes, and the directory guard's unlisting. A crash between the commit and the call
leaves them pending; a new executor carries each out once."""

import pytest

from bot.agreement import AgreementDocument, AgreementService
from bot.commands.agreement import COMMANDS as AGREEMENT_COMMANDS
from bot.commands.context import Services
from bot.commands.dispatch import Dispatcher
from bot.commands.registry import Registry
from bot.config import Settings
from bot.directory import DirectoryGuard
from bot.i18n import Translator
from bot.matrix.client import txn_id
from bot.matrix.onboarding import Onboarding
from bot.policy import PolicyState
from tests.unit.journal import executor
from tests.unit.test_effects import Crash, FakeMatrix

BOT, BOB, DM, LOBBY = "@bot:hs", "@bob:hs", "!dm-bob:hs", "!lobby:hs"
T0 = 1_790_000_000_000


class SentThenCrash(FakeMatrix):
    """The send reaches the homeserver, then the process dies before the journal marks it."""

    crash_after = 0

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        event_id = await super().send_notice(room_id, body, txn=txn, reply_to=reply_to)
        if self.crash_after:
            self.crash_after -= 1
            raise Crash()
        return event_id


def onboarding_for(store, matrix=None):
    state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1")
    state.set_dm_room(BOB, DM)
    settings = Settings(homeserver={"url": "http://hs.test", "user_id": BOT, "password": "x" * 16},
                        gate={"enabled": False}, language="en")
    document = AgreementDocument("1", "Be kind.", "0" * 64)
    return Onboarding(matrix, store, state, document, Translator("en"), settings, lambda: T0), state, document


async def test_the_prompt_and_its_notes_are_journaled_and_a_crash_before_the_send_sends_them_once(store):
    calls = []
    matrix = FakeMatrix(calls)
    onboarding, _, _ = onboarding_for(store, matrix)
    await onboarding._onboard(BOB, [("Your direct chat was reopened.", "dm-reopened-!old")])  # noqa: SLF001
    assert calls == []  # recorded, not sent
    assert [(e.kind, e.target) for e in await store.effects.listed(status="pending")] == [
        ("notice", BOB), ("agreement_prompt", BOB)]
    assert await store.agreements.prompt_for(BOB, "1") is None  # recorded by the executor, with the event ID
    matrix.fail["send_notice"] = Crash()
    with pytest.raises(Crash):
        await executor(store, matrix, clock=lambda: T0).run_due()
    assert calls == []
    await executor(store, matrix, clock=lambda: T0).run_due()
    assert [(c[1], c[3]) for c in calls] == [(DM, txn_id("note", BOB, "dm-reopened-!old")),
                                             (DM, txn_id("agreement", BOB, f"{DM}/1"))]
    prompt = await store.agreements.prompt_for(BOB, "1")
    assert prompt is not None and prompt.event_id == "$sent" and prompt.room_id == DM
    assert await store.agreements.prompt_by_event("$sent") is not None  # a ✅ reaction to it counts
    # Onboarded again (after a restart the in-memory "prompted" is gone): the prompt row is found.
    onboarding._prompted.clear()  # noqa: SLF001
    await onboarding._onboard(BOB, [])  # noqa: SLF001
    assert await executor(store, matrix, clock=lambda: T0).run_due() == 0 and len(calls) == 2


async def test_a_crash_after_the_prompt_was_sent_records_it_once_with_the_same_transaction(store):
    calls = []
    matrix = SentThenCrash(calls)
    onboarding, _, _ = onboarding_for(store, matrix)
    await onboarding._onboard(BOB, [])  # noqa: SLF001
    matrix.crash_after = 1
    with pytest.raises(Crash):
        await executor(store, matrix, clock=lambda: T0).run_due()
    await executor(store, matrix, clock=lambda: T0).run_due()
    # Not sent again: the retry finds the first send in the room by the transaction ID in its content.
    assert len(calls) == 1
    rows = await store.agreements._db.fetchall("SELECT event_id FROM agreement_prompts WHERE user_id = ?", (BOB,))  # noqa: SLF001
    assert [tuple(r) for r in rows] == [("$sent",)]


async def test_rules_is_journaled_with_the_commands_handled_mark_and_a_replay_sends_nothing_more(store):
    calls = []
    matrix = FakeMatrix(calls)
    onboarding, state, document = onboarding_for(store, matrix)
    registry = Registry(AGREEMENT_COMMANDS)
    agreements = AgreementService(store, state, document, lambda: T0, None)
    services = Services(Translator("en"), state, store, agreements, onboarding, registry, None, None, lambda: T0,
                        None, None, None)
    dispatcher = Dispatcher(registry, services)
    event = {"event_id": "$rules", "sender": BOB, "type": "m.room.message",
             "content": {"msgtype": "m.text", "body": "!rules"}}
    assert await dispatcher.handle(LOBBY, event, answer_unknown=True, moderator_place=False)
    assert calls == []
    assert [e.key for e in await store.effects.listed()] == [f"agreement/{BOB}/$rules"]
    await dispatcher.handle(LOBBY, event, answer_unknown=True, moderator_place=False)  # a replayed batch
    await executor(store, matrix, clock=lambda: T0).run_due()
    assert [(c[1], c[3]) for c in calls] == [(LOBBY, txn_id("agreement", BOB, "$rules"))]
    prompt = await store.agreements.prompt_by_event("$sent")
    assert prompt is not None and prompt.room_id == LOBBY and prompt.user_id == BOB


class FakeAdmin:
    def __init__(self):
        self.calls = []
        self.fail = None

    async def unlist_room(self, room_id):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("unlist", room_id))


async def test_unlisting_is_journaled_survives_a_crash_and_is_done_once(store):
    state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1")
    guard = DirectoryGuard(state, "http://hs", "admin-token", lambda work, name: work.close())
    guard.store = store
    state.listed_rooms.add("!pub:hs")
    await guard._unlist("!pub:hs", BOB, None)  # noqa: SLF001
    await guard._unlist("!pub:hs", BOB, None)  # noqa: SLF001 — seen again while pending: one intent
    assert [(e.kind, e.key) for e in await store.effects.listed()] == [("unlist", "unlist/!pub:hs")]
    admin = FakeAdmin()
    admin.fail = Crash()
    first = executor(store, FakeMatrix([]), admin=admin, clock=lambda: T0)
    first.after_done["unlist"] = guard.unlisted_done
    with pytest.raises(Crash):
        await first.run_due()
    assert admin.calls == [] and "!pub:hs" in state.listed_rooms  # in scope until it is unlisted
    admin.fail = None
    second = executor(store, FakeMatrix([]), admin=admin, clock=lambda: T0)
    second.after_done["unlist"] = guard.unlisted_done
    await second.run_due()
    assert admin.calls == [("unlist", "!pub:hs")] and "!pub:hs" not in state.listed_rooms
    assert [room for room, _ in guard.unlisted] == ["!pub:hs"]
    assert await second.run_due() == 0
    # Listed again later (seen by a sweep): a new intent with the next key, carried out once.
    await guard._unlist("!pub:hs", BOB, None)  # noqa: SLF001
    await second.run_due()
    assert admin.calls == [("unlist", "!pub:hs")] * 2
