"""The filing register: one pending application per kind, approval files, revocation ends all."""

import pytest

from bot.config import PublicAccountsConfig
from bot.store import AlreadyPending

T0 = 1_790_000_000_000


async def test_apply_approve_revoke(store):
    application = await store.accounts.apply(applicant="@a:hs", kind="public", category="enterprise", name="ACME",
                                             now=T0)
    with pytest.raises(AlreadyPending):
        await store.accounts.apply(applicant="@a:hs", kind="public", category="enterprise", name="ACME 2", now=T0)
    assert [a.id for a in await store.accounts.pending()] == [application.id]
    filing = await store.accounts.approve(application, by="@mod:hs", note="", now=T0 + 1, filing_number="F-1",
                                          category="enterprise", name="ACME")
    assert (filing.owner, filing.filing_number, filing.reviewer, filing.tier) == ("@a:hs", "F-1", "@mod:hs", None)
    assert await store.accounts.approve(application, by="@mod:hs", note="", now=T0, filing_number="F-2",
                                        category="enterprise", name="ACME") is None  # decided once
    news = await store.accounts.apply(applicant="@a:hs", kind="news", tier="reposter", licence="L-9", now=T0 + 2)
    await store.accounts.approve(news, by="@mod:hs", note="", now=T0 + 3, filing_number="F-2",
                                 category="enterprise", name="ACME")
    assert [f.filing_number for f in await store.accounts.active_filings("@a:hs")] == ["F-1", "F-2"]
    assert await store.accounts.next_sequence() == 3
    revoked = await store.accounts.revoke_all("@a:hs", by="@mod:hs", reason="abuse", now=T0 + 4)
    assert [f.filing_number for f in revoked] == ["F-1", "F-2"]
    assert await store.accounts.active_filings("@a:hs") == []
    assert await store.accounts.revoke_all("@a:hs", by="@mod:hs", reason="again", now=T0) == []


async def test_channels(store):
    assert await store.accounts.add_channel("@a:hs", "!c:hs", T0)
    assert not await store.accounts.add_channel("@a:hs", "!c:hs", T0)
    assert await store.accounts.channels("@a:hs") == {"!c:hs": "@a:hs"}
    assert not await store.accounts.remove_channel("@b:hs", "!c:hs", T0)  # not the owner
    assert await store.accounts.remove_channel("@a:hs", "!c:hs", T0)


def test_filing_number_format_is_validated():
    assert PublicAccountsConfig().filing_number_format.format(year=2026, category="03", seq=7) == "IM2026-03-000007"
    with pytest.raises(ValueError, match="must contain"):
        PublicAccountsConfig(filing_number_format="IM-{year}")
    with pytest.raises(ValueError, match="not a filing number format"):
        PublicAccountsConfig(filing_number_format="IM-{nope}")


# -- !channel add: only a public room the owner runs, the bot is in, and nobody else holds -------

from types import SimpleNamespace  # noqa: E402

from bot.accounts import PublicAccounts  # noqa: E402
from bot.i18n import Refusal, Translator  # noqa: E402
from bot.matrix.client import MatrixError  # noqa: E402
from bot.policy import PolicyState  # noqa: E402
from bot.policy.state import PublicAccount  # noqa: E402

OWNER, BOT = "@news:hs", "@bot:hs"


def room_state(*, creator="@admin:hs", version="10", members=(OWNER, BOT), join_rule="public", users=None):
    state = [
        {"type": "m.room.create", "state_key": "", "sender": creator, "content": {"room_version": version}},
        {"type": "m.room.join_rules", "state_key": "", "sender": creator, "content": {"join_rule": join_rule}},
        {"type": "m.room.power_levels", "state_key": "", "sender": creator,
         "content": {"users": {creator: 100, OWNER: 50} if users is None else users, "state_default": 50}},
    ]
    state += [{"type": "m.room.member", "state_key": m, "sender": m, "content": {"membership": "join"}} for m in members]
    return state


class FakeMatrix:
    def __init__(self, rooms, listed=()):
        self.rooms, self.listed = rooms, set(listed)

    async def resolve(self, room):
        if room.startswith("!"):
            return room
        raise MatrixError("resolve", errcode="M_NOT_FOUND")

    async def room_state(self, room_id):
        if room_id not in self.rooms:
            raise MatrixError("state", errcode="M_FORBIDDEN")
        return self.rooms[room_id]

    async def directory_visibility(self, room_id):
        return "public" if room_id in self.listed else "private"


def accounts_with(store, matrix):
    state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1")
    state.public_accounts[OWNER] = PublicAccount("news-website", "Daily", "F-1")
    state.public_accounts["@other:hs"] = PublicAccount("news-website", "Other", "F-2")
    settings = SimpleNamespace(public_accounts=PublicAccountsConfig())
    accounts = PublicAccounts(store, state, matrix, None, SimpleNamespace(room_id="!mgmt:hs"), Translator("en"),
                              settings, lambda: T0, lambda *a: None)
    accounts.protected = lambda: {"!lobby:hs"}
    changed = []

    async def on_changed(user):
        changed.append(user)

    accounts.on_changed = on_changed
    return accounts, state, changed


async def refused(accounts, room):
    with pytest.raises(Refusal) as caught:
        await accounts.add_channel(OWNER, room)
    exc = caught.value
    return exc.key, Translator("en")(exc.key, **exc.params), Translator("zh-CN")(exc.key, **exc.params)


async def test_channel_add_refuses_other_accounts_channel_and_the_bots_own_rooms(store):
    rooms = {r: room_state() for r in ("!mgmt:hs", "!lobby:hs", "!theirs:hs")}
    accounts, state, changed = accounts_with(store, FakeMatrix(rooms))
    await store.accounts.add_channel("@other:hs", "!theirs:hs", T0)
    state.channels["!theirs:hs"] = "@other:hs"

    assert await refused(accounts, "!mgmt:hs") == (
        "channel.management", "!mgmt:hs is the moderators' management room; it cannot be a channel.",
        "!mgmt:hs 是管理员的管理房间，不能作为频道。")
    assert await refused(accounts, "!lobby:hs") == (
        "channel.protected",
        "!lobby:hs is a room this bot protects for the whole server; it cannot be one account's channel.",
        "!lobby:hs 是本机器人为全站保护的房间，不能作为某个账号的频道。")
    key, en, zh = await refused(accounts, "!theirs:hs")
    assert key == "channel.taken"
    assert en.startswith("!theirs:hs is already the channel of another public account.")
    assert zh.startswith("!theirs:hs 已是另一个公众账号的频道")
    # Memory and the register still agree, and nothing was relabelled.
    assert state.channels == {"!theirs:hs": "@other:hs"}
    assert await store.accounts.channels() == {"!theirs:hs": "@other:hs"}
    assert changed == []


async def test_channel_add_needs_the_bot_in_the_room_and_the_owner_with_power_there(store):
    rooms = {
        "!no-bot:hs": room_state(members=(OWNER,)),  # world-readable: state visible, bot not joined
        "!not-member:hs": room_state(members=(BOT,)),
        "!low:hs": room_state(users={"@admin:hs": 100}),
    }
    accounts, state, changed = accounts_with(store, FakeMatrix(rooms))
    for room in ("!no-bot:hs", "!unknown-to-bot:hs"):
        assert await refused(accounts, room) == (
            "channel.bot_not_in_room",
            f"I am not in {room}, so I can neither check nor label it. Invite me (@bot:hs) to the room, "
            "then send the command again.",
            f"我不在 {room} 中，无法核实或标注该房间。请先邀请我（@bot:hs）加入该房间，然后再次发送此命令。")
    key, en, zh = await refused(accounts, "!not-member:hs")
    assert (key, en) == ("channel.not_member", "You are not a member of !not-member:hs. Only a member with the power "
                         "to change the room's settings can make it a channel.")
    assert zh.startswith("您不是 !not-member:hs 的成员")
    key, en, zh = await refused(accounts, "!low:hs")
    assert key == "channel.no_power"
    assert en.startswith("Your power level in !low:hs is 0; changing the room's settings needs 50.")
    assert zh.startswith("您在 !low:hs 的权限等级为 0，修改房间设置需要 50。")
    key, en, _ = await refused(accounts, "#nowhere:hs")
    assert (key, en) == ("channel.unknown_room",
                         "I cannot find the room #nowhere:hs. Give its ID (!…:server) or an alias that exists.")
    assert state.channels == {} and await store.accounts.channels() == {} and changed == []


async def test_a_private_room_is_refused_a_listed_or_public_one_accepted(store):
    rooms = {
        "!private:hs": room_state(join_rule="invite"),
        "!listed:hs": room_state(join_rule="invite"),
        "!open:hs": room_state(),
        # Room version 12: the creator is not in `users` and still has unlimited power.
        "!v12:hs": room_state(creator=OWNER, version="12", users={}),
    }
    accounts, state, changed = accounts_with(store, FakeMatrix(rooms, listed={"!listed:hs"}))
    key, en, zh = await refused(accounts, "!private:hs")
    assert key == "channel.not_public"
    assert en.startswith('!private:hs is not public (its join rule is "invite" and it is not in the room directory).')
    assert zh.startswith("!private:hs 不是公开房间（加入规则为“invite”，且未列入房间目录）。")
    for room in ("!listed:hs", "!open:hs", "!v12:hs"):
        assert await accounts.add_channel(OWNER, room) == room
    assert state.channels == {r: OWNER for r in ("!listed:hs", "!open:hs", "!v12:hs")}
    assert await store.accounts.channels() == state.channels
    assert changed == [OWNER] * 3
