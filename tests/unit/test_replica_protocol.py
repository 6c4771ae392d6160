"""The replica protocol: a snapshot plus the change records after it rebuild the bot's state.

The property: any sequence of PolicyState mutations (its methods, direct dict and set writes,
whole fields assigned anew) made on the bot, replayed on a replica from a snapshot taken midway
and the changes after it, both through JSON, gives the same state and the same decisions.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.policy import Action, ActionKind, PolicyState, decide
from bot.policy.news import NewsRules
from bot.policy.sanctions import MINUTE_MS, Measure, Rate, SanctionKind
from bot.policy.state import PublicAccount
from bot.replica.changelog import ChangeLog, ChangesGone
from bot.replica.protocol import (
    LOCAL_ONLY, PROTOCOL_VERSION, SPECS, ProtocolError, apply_change, apply_snapshot, codec_for, encode_state,
)

NOW = 1_700_000_000_000
USERS = ["@a:hs", "@b:hs", "@c:hs", "@mod:hs", "@far:remote"]
ROOMS = ["!1:hs", "!2:hs", "!3:hs", "!4:hs"]
RULES = [
    NewsRules.from_mapping({"news": [{"id": "gov", "keywords": ["国务院"]}]}),
    NewsRules.from_mapping({"news": [{"id": "wire", "keywords": ["新华社"], "domains": ["xinhuanet.com"]}],
                            "repost": {"identical_days": 1}}),
]
TEXTS = ["国务院 发布", "新华社 消息", "hello", "https://xinhuanet.com/a"]

users, rooms = st.sampled_from(USERS), st.sampled_from(ROOMS)
measures = st.builds(
    Measure, st.integers(1, 6), st.sampled_from(list(SanctionKind)),
    st.one_of(st.none(), st.integers(-60, 600).map(lambda m: NOW + m * MINUTE_MS)),
    st.one_of(st.none(), st.builds(Rate, st.integers(1, 3), st.sampled_from([MINUTE_MS, 60 * MINUTE_MS]))),
)
accounts = st.builds(PublicAccount, st.sampled_from(["media", "gov"]), st.text(max_size=5), st.text(max_size=5),
                     st.sampled_from([None, "publisher", "reposter"]))
STR_DICT_FIELDS = [n for n, s in SPECS.items()
                   if s.kind == "dict" and typing.get_type_hints(PolicyState)[n] == dict[str, str]]
SET_FIELDS = [n for n, s in SPECS.items() if s.kind == "set"]

# Each operation: a name and its arguments; ``mutate`` performs it on the bot's state.
operations = st.one_of(
    st.tuples(st.just("accept"), users, st.sampled_from(["1", "2"])),
    st.tuples(st.just("version"), st.sampled_from(["1", "2"])),
    st.tuples(st.just("moderators"), st.frozensets(users, max_size=2)),
    st.tuples(st.just("dm"), users, rooms),
    st.tuples(st.just("forget_dm"), rooms),
    st.tuples(st.just("dm_member"), rooms, users, st.sampled_from(["invite", "join", "leave", "ban", None])),
    st.tuples(st.just("measure"), users, measures),
    st.tuples(st.just("end_measure"), users, st.integers(1, 6)),
    st.tuples(st.just("post"), users, st.integers(0, 120), st.sampled_from([None, "$e1", "$e2", "$e3"])),
    st.tuples(st.just("account"), users, accounts),
    st.tuples(st.just("drop_account"), users),
    st.tuples(st.just("clear_accounts")),
    st.tuples(st.just("channel"), rooms, users),
    st.tuples(st.just("rules"), st.integers(0, 1)),
    st.tuples(st.just("scope"), st.sets(rooms, max_size=3)),
    st.tuples(st.just("join_rule"), rooms, st.sampled_from(["public", "invite", "restricted"]), st.booleans()),
    st.tuples(st.just("visibility"), rooms, st.sampled_from(["world_readable", "shared"]), st.booleans()),
    st.tuples(st.just("set_op"), st.sampled_from(SET_FIELDS), rooms, st.sampled_from(["add", "discard", "update",
                                                                                        "isub"])),
    st.tuples(st.just("private_news"), rooms, st.sampled_from(["gov", "wire"])),
    st.tuples(st.just("text"), st.sampled_from(TEXTS), users, st.integers(0, 3000)),
    st.tuples(st.just("str_dict"), st.sampled_from(STR_DICT_FIELDS), users, st.sampled_from(["x", "y", None])),
)


def mutate(state: PolicyState, op: tuple) -> None:
    name, *args = op
    match name:
        case "accept": state.record_acceptance(*args)
        case "version": state.agreement_version = args[0]
        case "moderators": state.moderators = args[0]
        case "dm": state.set_dm_room(*args)
        case "forget_dm": state.forget_dm_room(*args)
        case "dm_member": state.note_dm_member(*args)
        case "measure": state.add_measure(*args)
        case "end_measure": state.end_measure(*args)
        case "post": state.note_post(args[0], NOW + args[1] * 1000, args[2])
        case "account": state.public_accounts[args[0]] = args[1]
        case "drop_account": state.public_accounts.pop(args[0], None)
        case "clear_accounts": state.public_accounts.clear()
        case "channel": state.channels.update({args[0]: args[1]})
        case "rules": state.news_rules = RULES[args[0]]
        case "scope": state.news_scope = set(args[0])
        case "join_rule": state.note_join_rule(args[0], args[1], narrow=args[2])
        case "visibility": state.note_history_visibility(args[0], args[1], narrow=args[2])
        case "set_op":
            target = getattr(state, args[0])
            if args[2] == "isub":
                target -= {args[1]}
            else:
                getattr(target, args[2])({args[1]} if args[2] == "update" else args[1])
        case "private_news": state.private_news.setdefault(args[0], args[1])
        case "text": state.remember_text(args[0], args[1], NOW + args[2] * 1000)
        case "str_dict":
            target = getattr(state, args[0])
            if args[2] is None:
                target.pop(args[1], None)
            else:
                target[args[1]] = args[2]


def wire(value: object) -> object:
    return json.loads(json.dumps(value))


def comparable(state: PolicyState) -> dict:
    """Every field, sets sorted: two states that decide alike compare equal."""
    encoded = encode_state(state)
    return {name: json.dumps(value, sort_keys=True, default=sorted) if not isinstance(value, list)
            else sorted(map(str, value)) for name, value in encoded.items()}


def fresh() -> PolicyState:
    return PolicyState("@bot:hs", "hs", "2")


actions = st.builds(
    Action, st.sampled_from(list(ActionKind)), users, room_id=st.one_of(st.none(), rooms),
    body=st.one_of(st.none(), st.sampled_from(TEXTS)), target_user_id=st.one_of(st.none(), users),
)


def assert_replica_equals(document: dict, log: ChangeLog, bot: PolicyState, probes: list) -> None:
    """The snapshot plus the changes after its seq: the bot's state, and the same decisions."""
    replica = apply_snapshot(document)
    for change in wire(log.since(document["seq"])):
        apply_change(replica, change)
    assert comparable(replica) == comparable(bot)
    for action, at in probes:
        assert decide(action, replica, NOW + at * 1000) == decide(action, bot, NOW + at * 1000)


@settings(max_examples=300, deadline=None)
@given(before=st.lists(operations, max_size=25), after=st.lists(operations, max_size=40),
       probes=st.lists(st.tuples(actions, st.integers(0, 3000)), min_size=1, max_size=10))
def test_snapshot_plus_changes_rebuilds_the_state_and_its_decisions(before, after, probes) -> None:
    bot = fresh()
    log = ChangeLog(bot)
    for op in before:
        mutate(bot, op)
    document = wire(log.snapshot())
    for op in after:
        mutate(bot, op)
    assert_replica_equals(document, log, bot, probes)


def test_every_field_is_replicated_or_listed_as_local_only() -> None:
    """A new PolicyState field travels generically; one whose type has no codec fails here (list
    it in LOCAL_ONLY, with the reason, or give its type a codec)."""
    hints = typing.get_type_hints(PolicyState)
    for field in dataclasses.fields(PolicyState):
        if field.name in LOCAL_ONLY:
            continue
        assert field.name in SPECS, field.name
        codec_for(hints[field.name])  # TypeError names the type that cannot travel


def test_a_field_of_a_type_without_a_codec_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="no replica codec for"):
        codec_for(type("Opaque", (), {}))


def test_news_rules_travel_as_their_source_and_compile_alike() -> None:
    bot = fresh()
    bot.news_rules = RULES[1]
    replica = apply_snapshot(wire(encode_state(bot)))
    assert replica.news_rules.source == RULES[1].source
    assert replica.news_rules.classify("新华社 消息") == bot.news_rules.classify("新华社 消息")


def test_a_snapshot_of_another_version_or_lacking_identity_fields_is_refused() -> None:
    log = ChangeLog(fresh())
    document = wire(log.snapshot())
    with pytest.raises(ProtocolError, match=f"this replica reads {PROTOCOL_VERSION}"):
        apply_snapshot({**document, "version": PROTOCOL_VERSION + 1})
    with pytest.raises(ProtocolError, match="snapshot lacks bot_user_id"):
        apply_snapshot({"agreement_version": "1", "server_name": "hs"})
    with pytest.raises(ProtocolError, match="'sanctions' cannot be read"):
        apply_snapshot({**document["state"], "sanctions": {"@a:hs": {"measures": {"x": {}}}}})


def test_a_change_that_cannot_apply_is_refused_and_an_unknown_field_is_skipped() -> None:
    replica = fresh()
    with pytest.raises(ProtocolError, match="field 'agreement_version' has no keys"):
        apply_change(replica, {"seq": 1, "field": "agreement_version", "key": "x", "value": "3"})
    with pytest.raises(ProtocolError, match="change 2 to 'sanctions' cannot be applied"):
        apply_change(replica, {"seq": 2, "field": "sanctions", "key": "@a:hs", "value": {"measures": 3}})
    apply_change(replica, {"seq": 3, "field": "from_a_newer_bot", "key": None, "value": 1})
    assert comparable(replica) == comparable(fresh())


def test_changes_older_than_the_ring_or_from_another_epoch_are_gone() -> None:
    bot = fresh()
    log = ChangeLog(bot, ring_size=3)
    for index in range(5):
        bot.record_acceptance(f"@u{index}:hs", "2")
    assert [c["seq"] for c in log.since(2)] == [3, 4, 5]
    assert log.since(5) == []
    with pytest.raises(ChangesGone, match="no longer kept"):
        log.since(1)
    with pytest.raises(ChangesGone, match="not of this epoch"):
        log.since(6)


def test_a_change_carries_the_value_of_its_moment() -> None:
    bot = fresh()
    log = ChangeLog(bot)
    bot.record_acceptance("@a:hs", "1")
    bot.record_acceptance("@a:hs", "2")
    del bot.accepted["@a:hs"]
    assert [(c["key"], c.get("value"), c.get("deleted")) for c in log.since(0)] == [
        ("@a:hs", "1", None), ("@a:hs", "2", None), ("@a:hs", None, True)]


@settings(max_examples=200, deadline=None)
@given(before=st.lists(operations, max_size=30), during=st.lists(operations, max_size=30),
       after=st.lists(operations, max_size=10),
       probes=st.lists(st.tuples(actions, st.integers(0, 3000)), min_size=1, max_size=5))
def test_a_snapshot_made_in_pieces_while_the_state_changes_converges(before, during, after, probes) -> None:
    """The publisher lets the gate answer between a snapshot's pieces, so the state changes while
    it is made: the changes after its seq still bring a replica to the bot's state."""
    bot = fresh()
    log = ChangeLog(bot)
    for op in before:
        mutate(bot, op)
    pieces = []
    pending = list(during)
    for piece in log.snapshot_pieces(chunk=2):  # tiny pieces: big fields are cut into many
        pieces.append(piece)
        if pending:
            mutate(bot, pending.pop(0))
    for op in pending + after:
        mutate(bot, op)
    document = json.loads(b"".join(pieces))
    assert_replica_equals(document, log, bot, probes)


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(operations, max_size=30))
def test_pieces_of_an_unchanging_state_are_the_whole_snapshot(ops) -> None:
    bot = fresh()
    log = ChangeLog(bot)
    for op in ops:
        mutate(bot, op)
    assert json.loads(b"".join(log.snapshot_pieces(chunk=1))) == wire(log.snapshot())
