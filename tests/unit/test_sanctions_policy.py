"""Sanctions in the pure core: durations, rates, each measure's rule, and the escalation ladder."""

import pytest

from bot.policy import Action, ActionKind, PolicyState, Reason, Source, decide
from bot.policy.news import NewsRules
from bot.policy.sanctions import (
    MAX_DURATION_MS, MINUTE_MS, CaseFact, LadderRule, Measure, Rate, SanctionKind, format_duration, ladder_step,
    parse_duration,
)

NOW = 1_700_000_000_000
HOUR = 60 * MINUTE_MS
DAY = 24 * HOUR
USER, DM, ROOM = "@u:hs", "!dm:hs", "!room:hs"


@pytest.mark.parametrize(
    "text, ms",
    [("30m", 30 * MINUTE_MS), ("12h", 12 * HOUR), ("7d", 7 * DAY), ("4w", 28 * DAY), ("permanent", None), ("永久", None), ("1M", MINUTE_MS)],
)
def test_durations(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "0m", "10", "5s", "1y", "-3h", "1.5h", "3 h", "forever", "9999999d"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_stop_at_520_weeks():
    assert MAX_DURATION_MS == 520 * 7 * DAY
    assert parse_duration("520w") == MAX_DURATION_MS
    for text in ("521w", "3641d", "999999w", "999999d", "87361h"):
        with pytest.raises(ValueError, match="longer than 520w"):
            parse_duration(text)


def test_rate_periods_stop_at_520_weeks():
    assert Rate.parse("1/520w") == Rate(1, MAX_DURATION_MS)
    for text in ("1/521w", "3/999999w", "9999/999999d"):
        with pytest.raises(ValueError, match="longer than 520w"):
            Rate.parse(text)


def test_format_duration_round_trips():
    for text in ("30m", "12h", "7d", "4w", "90m", "permanent"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(parse_duration("7d")) == "1w"


@pytest.mark.parametrize("text, rate", [("3/1h", Rate(3, HOUR)), ("10/d", Rate(10, DAY)), ("1/30m", Rate(1, 30 * MINUTE_MS))])
def test_rates(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["3", "3/", "/1h", "0/1h", "3/1s", "three/1h", "3/permanent"])
def test_bad_rates(text):
    with pytest.raises(ValueError):
        Rate.parse(text)


@pytest.fixture
def state() -> PolicyState:
    s = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    s.record_acceptance(USER, "1")
    s.set_dm_room(USER, DM)
    return s


def act(kind=ActionKind.SEND_EVENT, room=ROOM, event_type="m.room.message", source=Source.GATE):
    return Action(kind, USER, source=source, room_id=room, event_type=event_type)


def test_restriction_refuses_posts_until_it_expires(state):
    state.add_measure(USER, Measure(7, SanctionKind.RESTRICT, NOW + HOUR))
    refused = decide(act(), state, NOW)
    assert not refused.allowed and refused.reason is Reason.RESTRICTED
    assert refused.params["case"] == "7" and refused.params["until_ms"] == str(NOW + HOUR)
    assert decide(act(), state, NOW + HOUR).allowed  # in force only until expiry, even before it is ended


def test_restriction_leaves_the_dm_redactions_invites_and_rooms(state):
    state.add_measure(USER, Measure(7, SanctionKind.RESTRICT, None))
    assert decide(act(room=DM), state, NOW).allowed
    assert decide(act(event_type="m.room.redaction"), state, NOW).allowed
    assert decide(act(ActionKind.INVITE), state, NOW).allowed
    assert decide(act(ActionKind.CREATE_ROOM, room=None), state, NOW).allowed
    assert decide(act(ActionKind.JOIN_ROOM), state, NOW).allowed


def test_rate_cap_allows_n_per_period_then_says_when(state):
    state.add_measure(USER, Measure(8, SanctionKind.RESTRICT, None, Rate(2, HOUR)))
    for minute in (0, 1):
        decision = decide(act(), state, NOW + minute * MINUTE_MS)
        assert decision.allowed and decision.count_post
        state.note_post(USER, NOW + minute * MINUTE_MS)
    refused = decide(act(), state, NOW + 2 * MINUTE_MS)
    assert refused.reason is Reason.RATE_LIMITED
    assert refused.params["next_ms"] == str(NOW + HOUR) and refused.params["rate"] == "2/1h"
    assert decide(act(), state, NOW + HOUR + 1).allowed  # the first post left the window


def test_suspension_refuses_everything_but_reading_leaving_and_the_dm(state):
    state.add_measure(USER, Measure(9, SanctionKind.SUSPEND, NOW + DAY))
    for kind in (ActionKind.SEND_EVENT, ActionKind.INVITE, ActionKind.CREATE_ROOM, ActionKind.PUBLISH_ROOM):
        assert decide(act(kind), state, NOW).reason is Reason.SUSPENDED
    assert decide(act(room=DM), state, NOW).allowed
    assert decide(act(ActionKind.JOIN_ROOM), state, NOW).allowed


def test_closure_refuses_everything(state):
    state.add_measure(USER, Measure(10, SanctionKind.CLOSE, None))
    for kind in ActionKind:
        assert decide(act(kind), state, NOW).reason is Reason.CLOSED
    assert decide(act(room=DM), state, NOW).reason is Reason.CLOSED


def test_strongest_measure_speaks_first(state):
    state.add_measure(USER, Measure(1, SanctionKind.RESTRICT, None))
    state.add_measure(USER, Measure(2, SanctionKind.SUSPEND, NOW + HOUR))
    assert decide(act(), state, NOW).reason is Reason.SUSPENDED
    assert decide(act(), state, NOW + HOUR).reason is Reason.RESTRICTED  # the suspension ran out


def test_warnings_have_no_effect_and_ending_a_measure_restores(state):
    state.add_measure(USER, Measure(1, SanctionKind.WARN, None))
    assert decide(act(), state, NOW).allowed
    state.add_measure(USER, Measure(2, SanctionKind.RESTRICT, None))
    state.end_measure(USER, 2)
    assert decide(act(), state, NOW).allowed


def test_sanctions_apply_in_room_mode_to_remote_users(state):
    remote = "@far:other"
    state.record_acceptance(remote, "1")
    state.add_measure(remote, Measure(3, SanctionKind.RESTRICT, None))
    gate = Action(ActionKind.SEND_EVENT, remote, room_id=ROOM, event_type="m.room.message")
    room = Action(ActionKind.SEND_EVENT, remote, source=Source.ROOM, room_id=ROOM, event_type="m.room.message")
    assert decide(gate, state, NOW).allowed
    assert decide(room, state, NOW).reason is Reason.RESTRICTED


RULES = [
    LadderRule(3, SanctionKind.WARN, 90 * DAY, SanctionKind.RESTRICT, DAY),
    LadderRule(2, SanctionKind.RESTRICT, 180 * DAY, SanctionKind.SUSPEND, 7 * DAY),
    LadderRule(2, SanctionKind.SUSPEND, 365 * DAY, SanctionKind.CLOSE),
]


def facts(*cases):
    return [CaseFact(i, SanctionKind(kind), at, tuple(caused)) for i, kind, at, caused in cases]


def test_ladder_escalates_on_the_configured_count():
    history = facts((1, "warn", NOW - 10 * DAY, ()), (2, "warn", NOW - DAY, ()))
    assert ladder_step(RULES, history, SanctionKind.WARN, NOW) is None
    history += facts((3, "warn", NOW, ()))
    step = ladder_step(RULES, history, SanctionKind.WARN, NOW)
    assert step.rule.then is SanctionKind.RESTRICT and step.caused_by == (1, 2, 3)


def test_ladder_counts_only_within_the_window():
    history = facts((1, "warn", NOW - 100 * DAY, ()), (2, "warn", NOW - DAY, ()), (3, "warn", NOW, ()))
    assert ladder_step(RULES, history, SanctionKind.WARN, NOW) is None


def test_a_case_counts_toward_one_escalation_only():
    history = facts(
        (1, "warn", NOW, ()), (2, "warn", NOW, ()), (3, "warn", NOW, ()),
        (4, "restrict", NOW, (1, 2, 3)), (5, "warn", NOW, ()),
    )
    assert ladder_step(RULES, history, SanctionKind.WARN, NOW) is None


def test_ladder_steps_chain_and_end_in_a_closure_proposal():
    history = facts((1, "restrict", NOW, ()), (2, "restrict", NOW, ()))
    assert ladder_step(RULES, history, SanctionKind.RESTRICT, NOW).rule.then is SanctionKind.SUSPEND
    history = facts((1, "suspend", NOW, ()), (2, "suspend", NOW, ()))
    assert ladder_step(RULES, history, SanctionKind.SUSPEND, NOW).rule.then is SanctionKind.CLOSE


def test_a_withdrawn_case_does_not_count_toward_the_ladder():
    history = [
        CaseFact(1, SanctionKind.WARN, NOW - DAY),
        CaseFact(2, SanctionKind.WARN, NOW - DAY, withdrawn=True),  # granted on appeal
        CaseFact(3, SanctionKind.WARN, NOW),
    ]
    assert ladder_step(RULES, history, SanctionKind.WARN, NOW) is None
    history.append(CaseFact(4, SanctionKind.WARN, NOW))
    assert ladder_step(RULES, history, SanctionKind.WARN, NOW).caused_by == (1, 3, 4)
    lifted = [CaseFact(1, SanctionKind.RESTRICT, NOW, withdrawn=True), CaseFact(2, SanctionKind.RESTRICT, NOW)]
    assert ladder_step(RULES, lifted, SanctionKind.RESTRICT, NOW) is None


# -- verdicts compose -------------------------------------------------------------------------

RATE_CAP = Measure(20, SanctionKind.RESTRICT, None, Rate(5, HOUR))
FULL = Measure(21, SanctionKind.RESTRICT, NOW + DAY)


@pytest.mark.parametrize("order", [(RATE_CAP, FULL), (FULL, RATE_CAP)])
def test_a_full_restriction_wins_over_a_rate_cap_in_either_order(state, order):
    for measure in order:
        state.add_measure(USER, measure)
    refused = decide(act(), state, NOW)
    assert not refused.allowed and refused.reason is Reason.RESTRICTED and refused.params["case"] == "21"
    assert not refused.count_post


def test_a_rate_cap_that_allows_does_not_skip_the_agreement(state):
    state.agreement_version = "2"  # USER accepted version 1 only
    state.add_measure(USER, RATE_CAP)
    refused = decide(act(), state, NOW)
    assert not refused.allowed and refused.reason is Reason.AGREEMENT_OUTDATED and not refused.count_post
    assert refused.prompt_agreement


def test_a_rate_cap_that_allows_does_not_skip_the_news_rules(state):
    state.news_rules = NewsRules.from_mapping({"news": [{"id": "cn-gov", "keywords": ["国务院"]}]})
    state.news_scope.add(ROOM)
    state.add_measure(USER, RATE_CAP)
    news = Action(ActionKind.SEND_EVENT, USER, room_id=ROOM, event_type="m.room.message", body="国务院今天发布通知")
    refused = decide(news, state, NOW)
    assert not refused.allowed and refused.reason is Reason.NEWS_TIER_MISSING and not refused.count_post
    plain = Action(ActionKind.SEND_EVENT, USER, room_id=ROOM, event_type="m.room.message", body="hello")
    counted = decide(plain, state, NOW)
    assert counted.allowed and counted.count_post


def test_the_strictest_of_two_rate_caps_speaks_whatever_the_order(state):
    loose, tight = Measure(30, SanctionKind.RESTRICT, None, Rate(5, HOUR)), Measure(31, SanctionKind.RESTRICT, None, Rate(1, DAY))
    for measure in (loose, tight):
        state.add_measure(USER, measure)
    assert decide(act(), state, NOW).count_post
    state.note_post(USER, NOW)
    refused = decide(act(), state, NOW + MINUTE_MS)
    assert refused.reason is Reason.RATE_LIMITED and refused.params["case"] == "31"
    assert refused.params["next_ms"] == str(NOW + DAY) and refused.params["rate"] == "1/1d"


def test_strongest_orders_a_full_restriction_before_a_rate_cap(state):
    for measure in (RATE_CAP, FULL):
        state.add_measure(USER, measure)
    assert [m.case_id for m in state.sanctions[USER].strongest(NOW)] == [21, 20]
    state.sanctions[USER].measures = {20: RATE_CAP, 21: FULL}
    assert [m.case_id for m in state.sanctions[USER].strongest(NOW)] == [21, 20]


def test_a_suspended_account_loses_its_dm_exemption_once_a_third_party_is_there(state):
    state.add_measure(USER, Measure(9, SanctionKind.SUSPEND, NOW + DAY))
    assert decide(act(room=DM), state, NOW).allowed
    assert state.note_dm_member(DM, "@friend:hs", "join")
    refused = decide(act(room=DM), state, NOW)
    assert not refused.allowed and refused.reason is Reason.SUSPENDED
    assert not state.note_dm_member(DM, "@friend:hs", "leave")
    assert decide(act(room=DM), state, NOW).allowed  # only the account and the bot again
