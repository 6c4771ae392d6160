"""News scope follows what was stored, both ways: the bot's sync (a join rule or history visibility
it sees) and the refresh (Synapse's room list) narrow and widen it; the gate only widens (see
test_gate_http). Open means anyone gets in without approval (public, restricted, knock_restricted)
or anyone reads without joining (world_readable)."""

from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.news import News
from bot.policy import PolicyState
from bot.router import Router


def _router(state):
    room_mode = SimpleNamespace(on_event=_nothing, on_member=_nothing, protected=set(), joining=set())
    services = SimpleNamespace(store=None, state=state, onboarding=None, agreements=None, t=None)
    return Router(None, services, SimpleNamespace(handle=_nothing), room_mode, lambda r: r, lambda r: set(),
                  SimpleNamespace(room_id=None))


async def _nothing(*args, **kwargs):
    return None


def state_event(kind, content, sender="@u:hs"):
    return {"event_id": f"${kind}{sorted(content.items())}", "sender": sender, "type": kind, "state_key": "", "content": content}


async def test_the_sync_narrows_and_widens_the_scope():
    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    router = _router(state)
    state.open_rooms.add("!r:hs")
    await router.on_event("!r:hs", state_event("m.room.join_rules", {"join_rule": "invite"}))
    assert not state.in_news_scope("!r:hs")
    await router.on_event("!r:hs", state_event("m.room.join_rules", {"join_rule": "knock_restricted"}))
    assert state.in_news_scope("!r:hs")
    await router.on_event("!r:hs", state_event("m.room.join_rules", {"join_rule": "knock"}))
    assert not state.in_news_scope("!r:hs")
    await router.on_event("!r:hs", state_event("m.room.history_visibility", {"history_visibility": "world_readable"}))
    assert state.in_news_scope("!r:hs")
    await router.on_event("!r:hs", state_event("m.room.history_visibility", {"history_visibility": "shared"}))
    assert not state.in_news_scope("!r:hs")


async def test_the_refresh_reads_restricted_and_world_readable_rooms():
    rooms = [
        {"room_id": "!public:hs", "join_rules": "public", "history_visibility": "shared", "joined_members": 5},
        {"room_id": "!restricted:hs", "join_rules": "restricted", "history_visibility": "shared", "joined_members": 5},
        {"room_id": "!readable:hs", "join_rules": "invite", "history_visibility": "world_readable", "joined_members": 5},
        {"room_id": "!private:hs", "join_rules": "invite", "history_visibility": "shared", "joined_members": 5},
    ]

    async def admin_rooms(request):
        return web.json_response({"rooms": rooms})

    async def public_rooms(request):
        return web.json_response({"chunk": []})

    app = web.Application()
    app.router.add_get("/_synapse/admin/v1/rooms", admin_rooms)
    app.router.add_get("/_matrix/client/v3/publicRooms", public_rooms)
    async with TestServer(app) as server:
        state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
        state.readable_rooms.add("!private:hs")  # stale: the room is no longer world-readable
        matrix = SimpleNamespace(client=SimpleNamespace(rooms={}, access_token="bot-token"))
        settings = SimpleNamespace(rules_path=lambda: None, homeserver=SimpleNamespace(url=str(server.make_url(""))))
        news = News(state, matrix, settings, "admin-token", set)
        await news.refresh_scope()
    assert {r["room_id"] for r in rooms if state.in_news_scope(r["room_id"])} == {
        "!public:hs", "!restricted:hs", "!readable:hs"}


async def test_the_guard_reads_back_a_closing_change_and_narrows_unless_a_newer_one_came():
    import asyncio

    from bot.directory import DirectoryGuard

    state = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    tasks = []
    guard = DirectoryGuard(state, "http://hs", "admin-token", lambda work, name: tasks.append(asyncio.ensure_future(work)))
    stored = {"join_rule": "invite"}

    async def call(method, path, body):
        return {"state": [{"type": "m.room.join_rules", "state_key": "", "content": dict(stored)},
                          {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}

    guard._call = call  # noqa: SLF001
    for room in ("!closed:hs", "!reopened:hs"):
        state.open_rooms.add(room)
        state.readable_rooms.add(room)
    guard.follow_scope("!closed:hs", lambda: True, delays=(0,))
    guard.follow_scope("!reopened:hs", lambda: False, delays=(0,))
    await asyncio.gather(*tasks)
    assert not state.in_news_scope("!closed:hs")
    assert state.in_news_scope("!reopened:hs")
    # Refused by Synapse's auth rules: the stored join rule is still public, the room stays in scope.
    stored["join_rule"] = "public"
    state.readable_rooms.clear()
    guard.follow_scope("!closed:hs", lambda: True, delays=(0,))
    state.open_rooms.add("!closed:hs")
    await asyncio.gather(*tasks)
    assert state.in_news_scope("!closed:hs")
    DirectoryGuard(state, "http://hs", None, lambda *a: 1 / 0).follow_scope("!x:hs", lambda: True)  # no token: nothing
