"""The in-process module (bot.synapse.RulesModule): two Synapse processes, each loading the module
with its own replica, served by one bot. Both homeservers are named ``localhost``, so an account
registered on both under the same localpart is the same Matrix ID to the bot and to both replicas,
as on a main process and its worker."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from bot.devserver import RegisteredUser, free_port, random_token
from tests.integration.harness import InprocessServer, User, new_user, refused, sent, setup

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Iterator[tuple[InprocessServer, InprocessServer]]:
    """Two homeservers loading the module, both pointed at one gate port."""
    base: Path = tmp_path_factory.mktemp("inprocess")
    port, token = free_port(), random_token()
    servers = (InprocessServer(base / "one", port, token), InprocessServer(base / "two", port, token))
    for server in servers:
        server.hs.start()
        server.bot = asyncio.run(server.hs.register("rulesbot", "rulesbot-password", admin=True))
    yield servers
    for server in servers:
        server.hs.stop()


async def twin_user(user: User, other: InprocessServer) -> User:
    """The same Matrix ID on the second homeserver."""
    account = await other.hs.register(user.user_id[1:].split(":")[0], user.account.password)
    return User(other.hs, account)


async def first_allowed_send(user: User, room_id: str, timeout: float) -> float:
    """Seconds until a message of ``user`` in ``room_id`` is accepted (sending every 20 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = await user.say(room_id, "hello")
        if getattr(response, "event_id", None):
            return time.monotonic() - started
        refused(response, "!agree")
        await asyncio.sleep(0.02)
    raise AssertionError(f"{user.user_id} still refused after {timeout} s")


async def agree(user: User, bot_id: str) -> None:
    """The module reports the login: the bot opens the DM and prompts; the account agrees there."""
    await user.login()
    user.dm = await user.wait_for_invite(bot_id)
    await user.join(user.dm)
    await user.wait_for_message(user.dm, bot_id, "!agree")
    await user.say(user.dm, "!agree")
    await user.wait_for_message(user.dm, bot_id, "recorded")


async def test_one_bot_serves_two_synapse_processes(twin, make_bot):
    one, two = twin
    one.also = [two]
    mod = await setup(one.hs, one.bot, make_bot, gate=one)
    users: list[User] = list(mod.users)
    try:
        # The moderator exists on both servers (exempt everywhere) and opens a room on each.
        mod_two = await twin_user(mod.moderator, two)
        users.append(mod_two)
        rooms = {}
        for name, owner in (("one", mod.moderator), ("two", mod_two)):
            status, room = await owner.create_room(preset="public_chat", name=f"Square {name}")
            assert status == 200, room
            rooms[name] = room["room_id"]

        alice = await new_user(one.hs, "alice")
        alice_two = await twin_user(alice, two)
        users += [alice, alice_two]
        await alice.join(rooms["one"])
        await alice_two.join(rooms["two"])
        # Not agreed: both processes refuse, with the gate's translated reason.
        refused(await alice.say(rooms["one"], "hello"), "!agree", mod.bot_id)
        refused(await alice_two.say(rooms["two"], "hello"), "!agree", mod.bot_id)

        await agree(alice, mod.bot_id)
        # The acceptance is committed before the reply: from then on both replicas know it.
        waits = await asyncio.gather(first_allowed_send(alice, rooms["one"], 1.0),
                                     first_allowed_send(alice_two, rooms["two"], 1.0))
        assert max(waits) < 1.0, waits

        # A rate cap is counted by the bot for every process: of two posts at once, one through
        # each homeserver, one is sent and the other gets the bot's refusal.
        bob = await new_user(one.hs, "bob")
        bob_two = await twin_user(bob, two)
        users += [bob, bob_two]
        await bob.join(rooms["one"])
        await bob_two.join(rooms["two"])
        await agree(bob, mod.bot_id)
        await mod.command(f"!restrict {bob.user_id} 1h --rate 1/1h slow down", "Recorded and in effect")
        await asyncio.sleep(0.5)  # the change reaches both replicas (an open long poll answers in ms)
        answers = await asyncio.gather(bob.say(rooms["one"], "first"), bob_two.say(rooms["two"], "first too"))
        assert sorted(bool(getattr(answer, "event_id", None)) for answer in answers) == [False, True], answers
        refused(next(answer for answer in answers if not getattr(answer, "event_id", None)), "limited to 1/1h")

        # A restriction reaches both replicas; SIGKILLed, the bot answers nothing any more, and
        # both keep deciding from their last state: alice stays refused, a moderator still posts.
        await mod.command(f"!restrict {alice.user_id} 1h spam", "Recorded and in effect")

        async def refused_everywhere() -> bool:
            return all(getattr(r, "status_code", None) == "M_FORBIDDEN" for r in await asyncio.gather(
                alice.say(rooms["one"], "after"), alice_two.say(rooms["two"], "after")))

        deadline = time.monotonic() + 5
        while not await refused_everywhere():
            assert time.monotonic() < deadline, "the restriction did not reach both replicas"
            await asyncio.sleep(0.05)
        mod.bot.stop(signal.SIGKILL)
        for user, room in ((alice, rooms["one"]), (alice_two, rooms["two"])):
            refused(await user.say(room, "while the bot is down"), "restricted until")
        sent(await mod.moderator.say(rooms["one"], "still here"))
        sent(await mod_two.say(rooms["two"], "still here"))
        newcomer = await new_user(two.hs, "newcomer")
        users.append(newcomer)
        await newcomer.join(rooms["two"])
        refused(await newcomer.say(rooms["two"], "hi"), "!agree")
        # Synapse's log says the replica is stale once stale_after passes; not waited for here
        # (60 s): the unit tests show it with a fake clock.
    finally:
        for user in users:
            await user.close()


async def test_room_creation_and_state_are_judged_inside_synapse(inprocess_gated, make_bot):
    """What the HTTP module cannot show the gate: createRoom's body, and state sent with PUT."""
    server = inprocess_gated
    mod = await setup(server.hs, server.bot, make_bot, gate=server)
    try:
        alice = await mod.member("alice", server.hs)
        # visibility public publishes the room: an account that may not publish cannot create it so.
        status, body = await alice.create_room(visibility="public", name="Mine")
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
        assert body["error"].startswith("The room was not published to the directory: only approved public accounts")
        # A public room's initial topic is judged like a post in it.
        status, body = await alice.create_room(preset="public_chat", topic="国务院 今日发布 重要通知")
        assert status == 403 and "rule state-organs" in body["error"], body
        assert body["error"].startswith("The room was not created")
        # The same topic in a private room is allowed; the room then may not be opened.
        status, room = await alice.create_room(preset="private_chat", topic="国务院 今日发布 重要通知")
        assert status == 200, room
        status, body = await alice.api("PUT", f"/_matrix/client/v3/rooms/{room['room_id']}/state/m.room.join_rules/",
                                       {"join_rule": "public"})
        assert status == 403 and "rule state-organs" in body["error"], body
        # A topic sent later in a public room is judged too, with the translated reason.
        status, square = await alice.create_room(preset="public_chat", name="Square")
        assert status == 200, square
        status, body = await alice.api("PUT", f"/_matrix/client/v3/rooms/{square['room_id']}/state/m.room.topic/",
                                       {"topic": "国务院 今日发布"})
        assert status == 403 and "rule state-organs" in body["error"] and "!apply news" in body["error"], body

        # A restart with the module's long poll open (the shipped 25 s): the old bot answers the
        # poll as it stops instead of waiting for it, so SIGTERM -> exit is short (the HTTP gate's
        # sites refuse every post meanwhile), and start() returns once the module has the new
        # process's snapshot. The replica still decides from it: alice's topic is refused again.
        stopping = time.monotonic()
        mod.bot.stop()
        stopped_in = time.monotonic() - stopping
        assert stopped_in < 5, f"SIGTERM -> exit took {stopped_in:.1f} s"
        mod.bot.start()
        status, body = await alice.api("PUT", f"/_matrix/client/v3/rooms/{square['room_id']}/state/m.room.topic/",
                                       {"topic": "国务院 今日发布"})
        assert status == 403 and "rule state-organs" in body["error"], body
    finally:
        for user in mod.users:
            await user.close()
