"""bot.replica.protocol's docstring is the protocol's reference (the module's authors read it, not
the code): the report kinds it names are exactly those the bot applies, with the fields it asks."""

from __future__ import annotations

import re

import pytest

import bot.replica.protocol as protocol
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.replica.changelog import ChangeLog
from bot.replica.publisher import ItemError, ReplicaPublisher

REPORTS = protocol.__doc__.split("POST /replica/v1/reports", 1)[1].split("POST /replica/v1/ratecap", 1)[0]
# "``kind {field, field?, ...}``" as the docstring writes each kind
DOCUMENTED = {kind: [f.strip().rstrip("?") for f in fields.split(",")]
              for kind, fields in re.findall(r"``(\w+) \{([^}]*)\}``", REPORTS)}
SAMPLE = {"user_id": "@a:hs.test", "event_id": "$e", "ts": 1, "fingerprint": "0" * 32, "room_id": "!r:hs.test",
          "rule": "gov", "event": {"type": "m.room.join_rules", "content": {"join_rule": "public"}}}


@pytest.fixture
def publisher() -> ReplicaPublisher:
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    gate = Gate(state, Translator("en"), "t" * 16, lambda user: None)
    return ReplicaPublisher(ChangeLog(state), gate, lambda: 1_700_000_000_000)


def test_the_reference_names_every_kind_the_bot_applies_and_no_other(publisher) -> None:
    with pytest.raises(ItemError) as refused:
        publisher._step({"id": "x", "kind": "no-such-kind"}, 0)
    applied = re.search(r"\(([^)]*)\)$", str(refused.value)).group(1).split(", ")
    assert sorted(DOCUMENTED) == sorted(applied) == sorted(
        ["prompt", "post", "text", "private_news", "scope", "publish", "new_room"])


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_an_item_with_the_documented_fields_is_accepted(publisher, kind) -> None:
    item = {"id": f"{kind}:1", "kind": kind, **{name: SAMPLE[name] for name in DOCUMENTED[kind]}}
    item_id, _apply = publisher._step(item, 0)
    assert item_id == f"{kind}:1"
