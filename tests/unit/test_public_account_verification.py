"""identity.required_for outside decide() (issue 9 review, breaks 13 and 14).

An approved public account whose owner must be verified and is not (any more) has no publication
or news tier in decide(); its label, its channels and the bot's acceptance of its invites follow
the same view (``bot.policy.decide.public_account``), and recording or revoking a verification
refreshes the label in the same transaction. Remote accounts are other providers' users:
required_for is for local accounts only.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bot.labels import LABEL_EVENT, Labels, label_state_key
from bot.policy import Action, ActionKind, PolicyState, Reason, decide
from bot.policy.model import Source
from bot.policy.state import PublicAccount
from bot.router import Router
from tests.unit.test_commands import CHAN, MOD, PUB, World
from tests.unit.test_router import FakeDispatcher, FakeRoomMode, _invite_batch, _member
from tests.unit.test_router import FakeMatrix as RouterMatrix

PROTECTED = "!lobby:hs"
NOT_VERIFIED_CHANNEL = ("This room cannot become your channel: this needs a verified real identity, and this account "
                        "is not verified. ")


def world_with_labels(store, tmp_path, required_for=("public_account", "news")) -> tuple[World, Labels]:
    """The command world with a publisher ``PUB`` and labels wired as bot.service wires them."""
    world = World(store, tmp_path, identity={"required_for": list(required_for)})
    world.state.public_accounts[PUB] = PublicAccount("media", "Daily", "F-1", tier="publisher",
                                                     news_filing_number="N-1")
    accounts = world.dispatcher._services.accounts
    labels = Labels(store, world.state, world.dispatcher._services.matrix, None, world.dispatcher._services.t,
                    world.settings, lambda: world.now, lambda: {PROTECTED})
    accounts.on_changed = labels.refresh
    world.identity.on_changed = labels.on_verification
    return world, labels


async def verify_manually(world: World, user: str):
    return await world.identity.verify(user_id=user, verifier="manual", method="passport", level="manual",
                                       subject=None, verified_at_ms=world.now, actor=MOD, note="seen")


async def label_writes(store) -> list[tuple[str, dict]]:
    """(room, content) of every label state event journaled, oldest first."""
    rows = await store.db.fetchall("SELECT payload FROM effects WHERE kind = 'state' ORDER BY id")
    payloads = [json.loads(row[0]) for row in rows]
    return [(p["room"], p["content"]) for p in payloads
            if p["type"] == LABEL_EVENT and p["state_key"] == label_state_key(PUB)]


async def audited_labels(store) -> list[tuple[str, str]]:
    rows = await store.db.fetchall("SELECT action, target FROM audit_log WHERE action LIKE 'label.%' ORDER BY id")
    return [(row[0], row[1]) for row in rows]


async def test_the_label_of_an_unverified_publisher_shows_no_tier(store, tmp_path):
    world, labels = world_with_labels(store, tmp_path)
    await labels.refresh(PUB)
    assert await label_writes(store) == [(PROTECTED, {})]
    assert await audited_labels(store) == [("label.remove", PUB)]


async def test_only_news_required_keeps_the_public_account_label_off(store, tmp_path):
    # Where only `news` needs a verification the account keeps its filing but not its tier, and a
    # label names a tier: none is shown.
    world, labels = world_with_labels(store, tmp_path, required_for=("news",))
    await labels.refresh(PUB)
    assert await label_writes(store) == [(PROTECTED, {})]


async def test_a_verification_and_its_revocation_relabel_in_their_own_transaction(store, tmp_path):
    world, labels = world_with_labels(store, tmp_path)
    assert (await verify_manually(world, PUB)).recorded
    [(room, content)] = await label_writes(store)
    assert room == PROTECTED and (content["tier"], content["filing_number"]) == ("publisher", "N-1")
    answer = await world.send(f"!unverify {PUB} papers were forged")
    assert PUB in answer and PUB not in world.state.verified
    assert (await label_writes(store))[1:] == [(PROTECTED, {})]
    assert await audited_labels(store) == [("label.set", PUB), ("label.remove", PUB)]


async def test_verifying_an_account_whose_privileges_do_not_change_writes_no_label(store, tmp_path):
    world, labels = world_with_labels(store, tmp_path)
    for user in ("@nobody:hs", MOD):  # no public account; a moderator's needs no verification
        if user == MOD:
            world.state.public_accounts[MOD] = PublicAccount("media", "Mods", "F-2", tier="publisher")
        assert (await verify_manually(world, user)).recorded
    assert await audited_labels(store) == []


async def test_a_revocation_that_rolls_back_takes_its_label_change_with_it(store, tmp_path):
    world, labels = world_with_labels(store, tmp_path)
    await verify_manually(world, PUB)
    with pytest.raises(RuntimeError):
        async with store.db.transaction():
            await world.identity.unverify(user_id=PUB, actor=MOD, reason="test")
            raise RuntimeError("the command failed later")
    assert PUB in world.state.verified
    assert await audited_labels(store) == [("label.set", PUB)]


async def test_an_unverified_owner_may_not_add_a_channel_nor_try_it(store, tmp_path):
    world, _ = world_with_labels(store, tmp_path)
    for body in (f"!channel add {CHAN} --dry-run", f"!channel add {CHAN}"):
        answer = await world.send(body, sender=PUB)
        assert answer.startswith(NOT_VERIFIED_CHANNEL), answer
        assert "How to verify your real identity on this server" in answer
    assert world.state.channels == {} and await store.accounts.channels() == {}
    assert await audited_labels(store) == []
    # Verified, it may.
    world.state.verified[PUB] = "manual"
    assert CHAN in await world.send(f"!channel add {CHAN}", sender=PUB)
    assert world.state.channels == {CHAN: PUB}


async def test_a_publication_by_an_unverified_owner_makes_no_channel(store, tmp_path):
    world, _ = world_with_labels(store, tmp_path)
    accounts = world.dispatcher._services.accounts
    refusal = accounts.channel_refusal(PUB, CHAN, CHAN)
    assert refusal is not None and world.dispatcher._services.t(refusal.key, **refusal.params).startswith(
        NOT_VERIFIED_CHANNEL)
    assert accounts.channel_refusal("@stranger:hs", CHAN, CHAN).key == "account.not_public"


async def test_the_bot_declines_the_invite_of_an_unverified_public_account():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.identity_required_for = frozenset({"public_account"})
    state.public_accounts["@news:hs"] = PublicAccount("media", "Daily", "F-1")
    matrix = RouterMatrix()
    services = SimpleNamespace(store=None, state=state, onboarding=None, agreements=None, t=None)
    router = Router(matrix, services, FakeDispatcher(), FakeRoomMode(), lambda r: r, lambda r: set(),
                    SimpleNamespace(room_id=None))
    await router.handle_batch(_invite_batch("!c1:hs", [_member("@news:hs")]), live=True)
    state.verified["@news:hs"] = "manual"
    await router.handle_batch(_invite_batch("!c2:hs", [_member("@news:hs")]), live=True)
    assert matrix.calls == [("leave", "!c1:hs"), ("join", "!c2:hs")]


# -- break 14: remote accounts are other providers' users ------------------------------------------

async def test_required_for_applies_to_local_accounts_only_in_room_mode_too(store, tmp_path):
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    state.identity_required_for = frozenset({"post"})
    local, remote = "@local:hs.test", "@visitor:matrix.example"

    def post(user: str):
        return decide(Action(ActionKind.SEND_EVENT, user, source=Source.ROOM, room_id="!room:hs.test",
                             event_type="m.room.message", body="hello"), state, 0)

    # Both are held to the agreement first.
    assert post(remote).reason is Reason.NOT_AGREED and post(local).reason is Reason.NOT_AGREED
    for user in (local, remote):
        state.record_acceptance(user, "1")
    assert post(local).reason is Reason.NOT_VERIFIED
    assert post(remote).allowed  # verified, if at all, by its own provider
    # …and it could not be verified here anyway.
    world = World(store, tmp_path, identity={"required_for": ["post"]})
    outcome = await verify_manually(world, remote)
    assert (outcome.recorded, outcome.refusal) == (False, "unknown_user")
