"""Every command answers in a reply: what it did, or why not. Never raw exception text."""

import pytest

from bot.commands.agreement import COMMANDS
from bot.commands.context import Services
from bot.commands.dispatch import Dispatcher
from bot.commands.registry import Command, Registry
from bot.i18n import Refusal, Translator
from bot.matrix.client import txn_id
from bot.policy import PolicyState
from tests.unit.journal import executor


class FakeMatrix:
    def __init__(self):
        self.sent = []

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.sent.append((room_id, body, reply_to, txn))
        return "$reply"


async def _crash(ctx):
    raise RuntimeError("secret internal detail /var/lib/db")


async def _refuse(ctx):
    raise Refusal("sanction.no_such_case", case=42)


async def _reply_target(ctx):
    return f"evidence: {ctx.reply_to}"


async def _ok(ctx):
    return f"done for {ctx.sender}"


@pytest.fixture
def setup(store):
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", moderators=frozenset({"@mod:hs"}))
    registry = Registry([
        *COMMANDS,
        Command("crash", (), "cmd.help.summary", _crash),
        Command("refuse", (), "cmd.help.summary", _refuse),
        Command("modonly", (), "cmd.help.summary", _ok, moderator_only=True),
        Command("replyto", (), "cmd.help.summary", _reply_target),
    ])
    services = Services(Translator("en"), state, store, None, None, registry, None, None, lambda: 1234, None, None, None)
    matrix = FakeMatrix()
    return Delivering(registry, services, executor(store, matrix)), matrix


class Delivering(Dispatcher):
    """The dispatcher journals its replies; the executor sends them, as in the service."""

    def __init__(self, registry, services, effects):
        super().__init__(registry, services)
        self._effects = effects

    async def handle(self, *args, **kwargs):
        handled = await super().handle(*args, **kwargs)
        await self._effects.run_due()
        return handled


def message(body, sender="@u:hs", event_id="$cmd"):
    return {"event_id": event_id, "sender": sender, "type": "m.room.message", "content": {"msgtype": "m.text", "body": body}}


async def test_unknown_command_gets_a_hint_in_own_rooms_only(setup):
    dispatcher, matrix = setup
    assert await dispatcher.handle("!dm", message("!nope"), answer_unknown=True)
    assert matrix.sent == [("!dm", "I do not know the command !nope. Send !help for the list.", "$cmd", matrix.sent[0][3])]
    assert not await dispatcher.handle("!shared", message("!nope"), answer_unknown=False)
    assert len(matrix.sent) == 1


async def test_bad_arguments_get_usage(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!dm", message("!status now"), answer_unknown=False)
    assert matrix.sent[0][1] == "Usage: !status"


async def test_moderator_only_command_is_refused_for_others_and_recorded(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!mgmt", message("!modonly"), answer_unknown=True, moderator_place=True)
    await dispatcher.handle("!mgmt", message("!modonly", sender="@mod:hs", event_id="$2"), answer_unknown=True, moderator_place=True)
    assert [s[1] for s in matrix.sent] == ["!modonly is for moderators only.", "done for @mod:hs"]
    rows = await dispatcher._services.store.db.fetchall("SELECT created_at, actor, action, target, details FROM audit_log")
    assert [tuple(r) for r in rows] == [
        (1234, "@u:hs", "command.refused", "@u:hs", '{"command":"modonly","event_id":"$cmd","room_id":"!mgmt"}'),
    ]


async def test_moderator_commands_run_only_in_a_moderators_place(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!lobby", message("!modonly", sender="@mod:hs"), answer_unknown=False, moderator_place=False)
    assert matrix.sent[0][1] == "!modonly works only in the management room or in your direct chat with me."


async def test_crash_gets_a_short_generic_reply_without_internals(setup, caplog):
    dispatcher, matrix = setup
    await dispatcher.handle("!dm", message("!crash"), answer_unknown=True)
    reply = matrix.sent[0][1]
    assert "went wrong" in reply and "secret" not in reply and "/var/lib" not in reply
    assert "secret internal detail" in caplog.text  # logged with its traceback for the operator


async def test_refusal_is_translated_for_the_user(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!dm", message("!refuse"), answer_unknown=True)
    assert matrix.sent[0][1] == "There is no case #42."


async def test_replies_are_threaded_and_deduplicated_by_the_command_event(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!dm", message("!refuse", event_id="$a"), answer_unknown=True)
    await dispatcher.handle("!dm", message("!refuse", event_id="$a"), answer_unknown=True)  # a replay
    await dispatcher.handle("!dm", message("!refuse", event_id="$b"), answer_unknown=True)
    # The replay is recognised by its event ID: answered once, not twice.
    assert [s[2] for s in matrix.sent] == ["$a", "$b"]
    assert matrix.sent[0][3] != matrix.sent[1][3]
    assert matrix.sent[0][3] == txn_id("reply", "$a")


@pytest.mark.parametrize("content", [{"body": 5}, {}, {"body": None}, {"body": "plain chat"}])
async def test_non_commands_and_malformed_bodies_are_ignored(setup, content):
    dispatcher, matrix = setup
    event = {"event_id": "$x", "sender": "@u:hs", "type": "m.room.message", "content": content}
    assert not await dispatcher.handle("!dm", event, answer_unknown=True)
    assert matrix.sent == []


async def test_huge_message_is_answered_with_usage_not_processed(setup):
    dispatcher, matrix = setup
    await dispatcher.handle("!dm", message("!status " + "x " * 500_000), answer_unknown=True)
    assert matrix.sent[0][1] == "Usage: !status"


THREAD = {"rel_type": "m.thread", "event_id": "$root"}


@pytest.mark.parametrize("relates, expected", [
    # A thread message: the client's fallback names the thread's latest event, not a choice.
    ({**THREAD, "is_falling_back": True, "m.in_reply_to": {"event_id": "$latest"}}, "None"),
    # A real reply inside a thread (is_falling_back false or absent) names the message.
    ({**THREAD, "is_falling_back": False, "m.in_reply_to": {"event_id": "$picked"}}, "$picked"),
    ({**THREAD, "m.in_reply_to": {"event_id": "$picked"}}, "$picked"),
    ({"m.in_reply_to": {"event_id": "$picked"}}, "$picked"),
    ({"m.in_reply_to": "$not-an-object"}, "None"),
])
async def test_only_a_real_reply_names_the_replied_to_message(setup, relates, expected):
    dispatcher, matrix = setup
    event = message("!replyto")
    event["content"]["m.relates_to"] = relates
    await dispatcher.handle("!dm", event, answer_unknown=True)
    assert matrix.sent[0][1] == f"evidence: {expected}"
