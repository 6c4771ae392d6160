"""The DM with the bot stays between the account and the bot: a third party ends its exemption at
once, the bot leaves and opens a new one; the bot's new DMs do not let the account invite."""

from types import SimpleNamespace

from bot.i18n import Translator
from bot.matrix.onboarding import DM_POWER_LEVELS, Onboarding
from bot.policy import Action, ActionKind, PolicyState, Reason, decide
from bot.policy.sanctions import Measure, SanctionKind
from bot.router import Router

USER, FRIEND, DM, NOW = "@u:hs", "@friend:other", "!dm:hs", 1_700_000_000_000


class FakeMatrix:
    def __init__(self):
        self.calls = []

    async def leave(self, room_id):
        self.calls.append(("leave", room_id))

    async def create_dm(self, user_id, power_levels=None):
        self.calls.append(("create_dm", user_id, power_levels))
        return "!new:hs"


class FakeRooms:
    def __init__(self):
        self.forgotten, self.recorded = [], []

    async def forget_dm_room(self, room_id):
        self.forgotten.append(room_id)

    async def set_dm_room(self, user_id, room_id, now):
        self.recorded.append((user_id, room_id))


class FakeOnboarding:
    def __init__(self):
        self.requests, self.forgot = [], []

    def request(self, user_id, note=None):
        self.requests.append((user_id, note))

    def forget(self, user_id):
        self.forgot.append(user_id)


def _setup():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.set_dm_room(USER, DM)
    state.add_measure(USER, Measure(1, SanctionKind.SUSPEND, None))
    matrix, rooms, onboarding = FakeMatrix(), FakeRooms(), FakeOnboarding()
    services = SimpleNamespace(store=SimpleNamespace(rooms=rooms), state=state, onboarding=onboarding, agreements=None,
                               t=Translator("en"))
    async def on_member(room_id, event, room_name):  # room mode's judging of display names: not this test's
        pass

    room_mode = SimpleNamespace(on_member=on_member, protected=set(), joining=set())
    router = Router(matrix, services, None, room_mode, lambda r: r, lambda r: set(), SimpleNamespace(room_id="!mgmt:hs"))
    return router, state, matrix, rooms, onboarding


def member(user_id, membership, sender=USER):
    return {"event_id": f"${user_id}{membership}", "sender": sender, "type": "m.room.member", "state_key": user_id,
            "content": {"membership": membership}}


def post(room=DM):
    return Action(ActionKind.SEND_EVENT, USER, room_id=room, event_type="m.room.message")


async def test_an_invited_third_party_ends_the_exemption_and_the_bot_moves_to_a_new_dm():
    router, state, matrix, rooms, onboarding = _setup()
    assert decide(post(), state, NOW).allowed  # suspended, but the clean DM stays open
    await router.on_event(DM, member(FRIEND, "invite"))
    refused = decide(post(), state, NOW)
    assert not refused.allowed and refused.reason is Reason.SUSPENDED
    assert rooms.forgotten == [DM] and matrix.calls == [("leave", DM)] and onboarding.forgot == [USER]
    assert not state.is_dm_of(DM, USER) and DM not in state.dm_others
    [(user, (text, key))] = onboarding.requests
    assert user == USER and key == f"dm-reopened-{DM}" and "someone else was invited to it or joined it" in text


async def test_a_third_party_joining_counts_too_even_when_it_sent_the_event():
    router, state, matrix, rooms, _ = _setup()
    await router.on_event(DM, member(FRIEND, "join", sender=FRIEND))
    assert not decide(post(), state, NOW).allowed and rooms.forgotten == [DM]


async def test_the_accounts_own_join_keeps_the_dm():
    router, state, matrix, rooms, onboarding = _setup()
    await router.on_event(DM, member(USER, "join"))
    assert decide(post(), state, NOW).allowed and rooms.forgotten == [] and matrix.calls == []


async def test_the_account_leaving_still_abandons_the_dm_without_a_new_one():
    router, state, matrix, rooms, onboarding = _setup()
    await router.on_event(DM, member(USER, "leave"))
    assert rooms.forgotten == [DM] and matrix.calls == [("leave", DM)] and onboarding.requests == []


def test_the_gate_refuses_invites_into_a_dm_and_joins_by_anyone_else():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", moderators=frozenset({"@mod:hs"}))
    state.record_acceptance(USER, "1")
    state.record_acceptance("@other:hs", "1")
    state.set_dm_room(USER, DM)
    invite = decide(Action(ActionKind.INVITE, USER, room_id=DM, target_user_id=FRIEND), state, NOW)
    assert not invite.allowed and invite.reason is Reason.DM_PRIVATE
    assert "Nobody else can be invited to it or join it" in Translator("en").refusal(invite.message_key, invite.params)
    join = decide(Action(ActionKind.JOIN_ROOM, "@other:hs", room_id=DM), state, NOW)
    assert not join.allowed and join.reason is Reason.DM_PRIVATE
    assert "您未能加入该房间" in Translator("zh-CN").refusal(join.message_key, join.params)
    assert decide(Action(ActionKind.JOIN_ROOM, USER, room_id=DM), state, NOW).allowed
    assert decide(Action(ActionKind.INVITE, USER, room_id="!elsewhere:hs", target_user_id=FRIEND), state, NOW).allowed


async def test_new_dms_need_more_than_the_accounts_level_to_invite():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    matrix, rooms = FakeMatrix(), FakeRooms()
    onboarding = Onboarding(matrix, SimpleNamespace(rooms=rooms), state, None, Translator("en"), None, lambda: NOW)
    assert await onboarding.dm_room(USER) == "!new:hs"
    assert matrix.calls == [("create_dm", USER, {"invite": 100})] and DM_POWER_LEVELS == {"invite": 100}
    # In room version 12 the creator (the bot) must not be named: Synapse refuses the override.
    assert "users" not in DM_POWER_LEVELS


class FakeStore:
    def __init__(self):
        self.rooms, self.kv = FakeRooms(), {}

    async def get(self, key):
        return self.kv.get(key)

    async def put(self, key, value):
        self.kv[key] = value


class StateMatrix(FakeMatrix):
    def __init__(self, states):
        super().__init__()
        self.states = states

    async def room_state(self, room_id):
        self.calls.append(("room_state", room_id))
        return self.states[room_id]


def joined(user_id, membership="join"):
    return {"type": "m.room.member", "state_key": user_id, "content": {"membership": membership}}


async def test_dms_made_before_are_checked_once_for_third_parties():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    state.set_dm_room(USER, DM)
    state.set_dm_room("@clean:hs", "!clean:hs")
    matrix = StateMatrix({
        DM: [joined("@bot:hs"), joined(USER), joined(FRIEND, "invite")],
        "!clean:hs": [joined("@bot:hs"), joined("@clean:hs"), joined("@gone:hs", "leave")],
    })
    store = FakeStore()
    onboarding = Onboarding(matrix, store, state, None, Translator("en"), None, lambda: NOW)
    await onboarding.check_old_dms()
    assert not state.is_dm_of(DM, USER) and store.rooms.forgotten == [DM] and ("leave", DM) in matrix.calls
    assert state.in_clean_dm("!clean:hs", "@clean:hs") and ("leave", "!clean:hs") not in matrix.calls
    assert onboarding._notes[USER][0][1] == f"dm-reopened-{DM}" and onboarding.queued == 1
    assert store.kv["dm_members_checked"] == str(NOW)
    calls = len(matrix.calls)
    await onboarding.check_old_dms()  # once only
    assert len(matrix.calls) == calls
