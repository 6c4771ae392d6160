"""Every rule of the policy core, allow and deny."""

import pytest

from bot.i18n import Translator
from bot.policy import Action, ActionKind, PolicyState, Reason, Source, decide
from bot.policy.sanctions import Measure, SanctionKind
from bot.policy.state import PublicAccount

BOT, MOD, NEW, AGREED, OLD, REMOTE = (
    "@bot:hs.test", "@mod:hs.test", "@new:hs.test", "@agreed:hs.test", "@old:hs.test", "@far:elsewhere.test",
)
DM, ROOM = "!dm:hs.test", "!room:hs.test"
NOW = 1_700_000_000_000


@pytest.fixture
def state() -> PolicyState:
    s = PolicyState(bot_user_id=BOT, server_name="hs.test", agreement_version="2", moderators=frozenset({MOD}))
    s.record_acceptance(AGREED, "2")
    s.record_acceptance(OLD, "1")
    s.set_dm_room(NEW, DM)
    return s


GATED_KINDS = [ActionKind.SEND_EVENT, ActionKind.INVITE, ActionKind.CREATE_ROOM, ActionKind.PUBLISH_ROOM]


@pytest.mark.parametrize("kind", GATED_KINDS)
def test_account_that_has_not_agreed_is_refused_and_prompted(state, kind):
    decision = decide(Action(kind, NEW, room_id=ROOM), state, NOW)
    assert not decision.allowed
    assert decision.reason is Reason.NOT_AGREED
    assert decision.prompt_agreement
    assert decision.params == {"action": kind.value, "version": "2", "bot": BOT}


@pytest.mark.parametrize("kind", GATED_KINDS)
def test_account_that_agreed_to_an_older_version_is_refused_as_outdated(state, kind):
    decision = decide(Action(kind, OLD, room_id=ROOM), state, NOW)
    assert not decision.allowed
    assert decision.reason is Reason.AGREEMENT_OUTDATED
    assert decision.message_key == "deny.agreement_outdated"


@pytest.mark.parametrize("kind", [k for k in GATED_KINDS if k is not ActionKind.PUBLISH_ROOM])
def test_account_that_agreed_to_the_current_version_may_act(state, kind):
    assert decide(Action(kind, AGREED, room_id=ROOM), state, NOW).allowed


def test_only_an_approved_public_account_may_publish_to_the_directory(state):
    from bot.policy.state import PublicAccount

    refused = decide(Action(ActionKind.PUBLISH_ROOM, AGREED, room_id=ROOM), state, NOW)
    assert not refused.allowed and refused.reason is Reason.NOT_PUBLIC_ACCOUNT
    state.public_accounts[AGREED] = PublicAccount("enterprise", "ACME", "IM2026-04-000001")
    assert decide(Action(ActionKind.PUBLISH_ROOM, AGREED, room_id=ROOM), state, NOW).allowed


@pytest.mark.parametrize("user", [BOT, MOD])
@pytest.mark.parametrize("kind", GATED_KINDS)
def test_bot_and_moderators_are_never_gated(state, user, kind):
    decision = decide(Action(kind, user, room_id=ROOM), state, NOW)
    assert decision.allowed and not decision.prompt_agreement


def test_account_may_talk_to_the_bot_in_its_own_dm(state):
    assert decide(Action(ActionKind.SEND_EVENT, NEW, room_id=DM), state, NOW).allowed


def test_dm_of_another_user_does_not_open_the_gate(state):
    decision = decide(Action(ActionKind.SEND_EVENT, OLD, room_id=DM), state, NOW)
    assert not decision.allowed


def test_invite_is_refused_even_into_the_dm(state):
    assert not decide(Action(ActionKind.INVITE, NEW, room_id=DM, target_user_id=OLD), state, NOW).allowed


def test_joining_rooms_is_always_allowed_without_prompt(state):
    decision = decide(Action(ActionKind.JOIN_ROOM, NEW, room_id=ROOM), state, NOW)
    assert decision.allowed and not decision.prompt_agreement


def test_login_is_allowed_and_asks_for_a_prompt_until_agreed(state):
    assert decide(Action(ActionKind.LOGIN, NEW), state, NOW).prompt_agreement
    assert decide(Action(ActionKind.LOGIN, OLD), state, NOW).prompt_agreement
    login = decide(Action(ActionKind.LOGIN, AGREED), state, NOW)
    assert login.allowed and not login.prompt_agreement


def test_gate_lets_remote_senders_through_for_room_mode_to_judge(state):
    assert decide(Action(ActionKind.SEND_EVENT, REMOTE, room_id=ROOM), state, NOW).allowed


def test_room_mode_judges_remote_senders_too(state):
    decision = decide(Action(ActionKind.SEND_EVENT, REMOTE, source=Source.ROOM, room_id=ROOM), state, NOW)
    assert not decision.allowed and decision.reason is Reason.NOT_AGREED


def test_a_version_change_gates_everyone_again(state):
    state.agreement_version = "3"
    assert not decide(Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM), state, NOW).allowed


def test_leaving_the_dm_closes_that_exception(state):
    assert state.forget_dm_room(DM) == NEW
    assert not decide(Action(ActionKind.SEND_EVENT, NEW, room_id=DM), state, NOW).allowed


# -- redactions under a measure (a reason is text clients show in place of the message) ----------


@pytest.mark.parametrize("kind, reason", [(SanctionKind.RESTRICT, Reason.RESTRICTED), (SanctionKind.SUSPEND, Reason.SUSPENDED)])
def test_a_measure_spares_a_redaction_only_without_a_reason(state, kind, reason):
    state.add_measure(AGREED, Measure(7, kind, None))
    bare = Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM, event_type="m.room.redaction", body=None)
    assert decide(bare, state, NOW).allowed
    said = Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM, event_type="m.room.redaction",
                  body="meet me at the square at 8")
    decision = decide(said, state, NOW)
    assert not decision.allowed and decision.reason is reason
    message = Translator("en").refusal(decision.message_key, decision.params)
    assert message.startswith("Your deletion was not made, because it gives a reason")
    assert "without a reason" in message and "case #7" in message
    assert Translator("zh-CN").refusal(decision.message_key, decision.params).startswith("您的删除未能执行")


def test_a_closure_refuses_every_redaction(state):
    state.add_measure(AGREED, Measure(8, SanctionKind.CLOSE, None))
    bare = Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM, event_type="m.room.redaction")
    assert decide(bare, state, NOW).reason is Reason.CLOSED


# -- opening a room whose private history holds news ----------------------------------------------

def test_a_room_holding_private_news_cannot_be_opened_or_published(state):
    state.private_news[ROOM] = "cn-gov"
    state.public_accounts["@pub:hs.test"] = PublicAccount("media", "Daily", "F-1", tier="publisher")
    state.record_acceptance("@pub:hs.test", "2")
    opening = Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM, event_type="m.room.join_rules", opens_room=True)
    decision = decide(opening, state, NOW)
    assert not decision.allowed and decision.reason is Reason.PRIVATE_NEWS and decision.params["rule"] == "cn-gov"
    publish = Action(ActionKind.PUBLISH_ROOM, "@pub:hs.test", room_id=ROOM)
    assert decide(publish, state, NOW).reason is Reason.PRIVATE_NEWS
    # Closing further, or a moderator's own decision, stays possible.
    closing = Action(ActionKind.SEND_EVENT, AGREED, room_id=ROOM, event_type="m.room.join_rules")
    assert decide(closing, state, NOW).allowed
    assert decide(Action(ActionKind.SEND_EVENT, MOD, room_id=ROOM, event_type="m.room.join_rules", opens_room=True),
                  state, NOW).allowed
