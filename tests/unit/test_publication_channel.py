"""A room published to the directory becomes its publisher's channel only where !channel add would
accept it: never another account's channel, the management room, a protected room, nor a room a
moderator (who has no public account) published. The room is listed all the same (news scope), and
the management room hears why it was not made a channel."""

from types import SimpleNamespace

import pytest

from bot.accounts import PublicAccounts
from bot.config import PublicAccountsConfig
from bot.i18n import Translator
from bot.policy import PolicyState
from bot.policy.state import PublicAccount

T0 = 1_700_000_000_000
OWNER, OTHER, MOD, BOT = "@news:hs", "@other:hs", "@mod:hs", "@bot:hs"


class Management:
    room_id = "!mgmt:hs"

    def __init__(self):
        self.posts = []

    async def post(self, text, key):
        self.posts.append(text)


def accounts_with(store):
    state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1", moderators=frozenset({MOD}))
    state.public_accounts[OWNER] = PublicAccount("news-website", "Daily", "F-1")
    state.public_accounts[OTHER] = PublicAccount("news-website", "Other", "F-2")
    client = SimpleNamespace(room_get_visibility=None)

    async def visibility(room_id):
        return SimpleNamespace(visibility="public")

    client.room_get_visibility = visibility
    management = Management()
    accounts = PublicAccounts(store, state, SimpleNamespace(client=client), None, management, Translator("en"),
                              SimpleNamespace(public_accounts=PublicAccountsConfig()), lambda: T0, lambda *a: None)
    accounts.protected = lambda: {"!lobby:hs"}
    changed = []

    async def on_changed(user):
        changed.append(user)

    accounts.on_changed = on_changed
    return accounts, state, management, changed


@pytest.mark.parametrize("user, room, why", [
    (OWNER, "!theirs:hs", "!theirs:hs is already the channel of another public account."),
    (OWNER, "!mgmt:hs", "!mgmt:hs is the moderators' management room; it cannot be a channel."),
    (OWNER, "!lobby:hs", "!lobby:hs is a room this bot protects for the whole server"),
    (MOD, "!any:hs", "@mod:hs has no public account."),
])
async def test_a_publication_that_channel_add_would_refuse_makes_no_channel(store, user, room, why):
    accounts, state, management, changed = accounts_with(store)
    await store.accounts.add_channel(OTHER, "!theirs:hs", T0)
    state.channels["!theirs:hs"] = OTHER
    await accounts._settle_publication(user, room)  # noqa: SLF001 — the step under test
    assert state.channels == {"!theirs:hs": OTHER}
    assert await store.accounts.channels() == {"!theirs:hs": OTHER}
    assert changed == []
    assert room in state.listed_rooms  # listed all the same: in news scope
    assert len(management.posts) == 1
    assert management.posts[0].startswith(f"{user} published {room} to the directory, but it was not made their channel: {why}")


async def test_a_public_account_publishing_its_own_room_gets_a_channel(store):
    accounts, state, management, changed = accounts_with(store)
    await accounts._settle_publication(OWNER, "!mine:hs")  # noqa: SLF001
    assert state.channels == {"!mine:hs": OWNER} and changed == [OWNER] and management.posts == []
