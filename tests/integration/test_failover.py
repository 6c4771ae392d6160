"""Two real bot processes on one PostgreSQL database (issue 11): one active, one hot standby whose
gate is the one Synapse asks. The standby's gate follows the active within a second and sends it
what it saw (the newcomer's login prompt); SIGKILL the active and the standby takes over within
10 s, answers every command exactly once, and its gate never stops answering."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from bot.devserver import free_port
from bot.store.pg import ACTIVE_LOCK
from tests.integration import harness
from tests.integration.harness import BotProcess, Moderation, new_user, until

pytestmark = pytest.mark.integration

STANDBY_LINE = "standby: the gate answers"
ASSERTION_SECRET = b"a" * 48


def signed_assertion(user_id: str, raw: bytes | None = None, timestamp: int | None = None) -> tuple[bytes, dict]:
    """A signed identity assertion (bot.identity.assertion), timestamped now (or ``timestamp``)."""
    raw = raw or json.dumps({"user_id": user_id, "subject": "110101199003074258", "method": "eid", "level": "L2",
                             "verified_at": int(time.time() * 1000) - 60_000,
                             "assertion_id": f"failover-{user_id}"}).encode()
    timestamp = str(timestamp or int(time.time()))
    signature = hmac.new(ASSERTION_SECRET, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {"X-Timestamp": timestamp, "X-Signature": f"sha256={signature}", "Content-Type": "application/json"}


def gate_body(user_id: str, room_id: str, n: int) -> dict:
    return {"event": {"sender": user_id, "room_id": room_id, "type": "m.room.message", "event_id": f"$probe{n}",
                      "content": {"msgtype": "m.text", "body": "probe"}}}


async def ask(session: aiohttp.ClientSession, url: str, token: str, body: dict,
              callback: str = "check_event_for_spam") -> int:
    async with session.post(f"{url}/antispam/{callback}", json=body,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=aiohttp.ClientTimeout(total=2)) as response:
        return response.status


def replies_to(user, room_id: str, bot_id: str, event_id: str) -> list[dict]:
    return [e for e in user.messages(room_id, bot_id)
            if e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id]


@dataclass
class Pair:
    first: BotProcess  # started first: the active one; its gate is not the one Synapse asks
    second: BotProcess  # the standby, on the gate port Synapse asks
    mod: Moderation
    urls: dict[str, str]
    dsn: str
    session: aiohttp.ClientSession


@pytest.fixture
async def pair(gated, pg_cluster, tmp_path, monkeypatch):
    hs, account = gated.hs, gated.bot
    dsn = await pg_cluster.fresh()
    moderator = await new_user(hs, "mod")
    alias = f"mods-{moderator.user_id[5:13]}"
    active_port = free_port()
    secret_file = tmp_path / "assertion.secret"
    secret_file.write_bytes(ASSERTION_SECRET)
    os.chmod(secret_file, 0o600)

    def config(port: int) -> dict:
        return {
            "homeserver": {"url": hs.url, "user_id": account.user_id, "password": account.password,
                           "admin_token": account.access_token},
            "database": {"url": dsn},
            "language": "en", "log_level": "INFO",
            "gate": {"enabled": True, "listen": f"127.0.0.1:{port}", "token": gated.gate_token},
            "moderators": [moderator.user_id], "management_room": f"#{alias}:{hs.server_name}",
            # Both processes of one database need the same identity key (the database keeps its
            # fingerprint, and a bot with another or none refuses to start).
            "identity": {"key_file": str(tmp_path / "identity.key"), "assertion_secret_file": str(secret_file),
                         # What a verification changes shows on both gates: a room of one's own.
                         "required_for": ["create_room"]},
        }

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = BotProcess(config(active_port), tmp_path / "a")
    second = BotProcess(config(gated.gate_port), tmp_path / "b")
    users = [moderator]
    session = aiohttp.ClientSession()
    try:
        first.start(timeout=60)
        monkeypatch.setattr(harness, "READY_LINE", STANDBY_LINE)
        second.start(timeout=60)
        monkeypatch.undo()
        status, room = await moderator.create_room(name="Moderators", room_alias_name=alias, invite=[account.user_id])
        assert status == 200, room
        mod = Moderation(first, account.user_id, moderator, room["room_id"], users)
        await mod.command("!cases", "No cases")
        yield Pair(first, second, mod, {"active": f"http://127.0.0.1:{active_port}",
                                        "standby": f"http://127.0.0.1:{gated.gate_port}"}, dsn, session)
    finally:
        for process in (first, second):
            process.stop()


async def test_the_standby_follows_and_takes_over_exactly_once(gated, pair):
    hs, account, mod, urls, session = gated.hs, gated.bot, pair.mod, pair.urls, pair.session
    first, second, moderator = pair.first, pair.second, pair.mod.moderator
    # A newcomer logs in: Synapse asks the standby's gate, which sends the prompt to the active.
    alice = await mod.member("alice", hs)
    agreed = time.monotonic()
    body = gate_body(alice.user_id, alice.dm, 0)
    while {name: await ask(session, url, gated.gate_token, body) for name, url in urls.items()} != \
            {"active": 200, "standby": 200}:
        assert time.monotonic() - agreed < 1.0, "a gate did not follow the agreement within 1 s"
        await asyncio.sleep(0.02)
    followed = time.monotonic() - agreed
    await mod.command(f"!warn {alice.user_id} first warning", "Recorded")
    # An identity assertion sent to the standby is recorded by the active (its gate, and the
    # standby's through the replica, let her create rooms at once), and usable once.
    async def may_create_room() -> dict[str, int]:
        return {name: await ask(session, url, gated.gate_token, {"user_id": alice.user_id}, "user_may_create_room")
                for name, url in urls.items()}

    assert await may_create_room() == {"active": 403, "standby": 403}
    raw, headers = signed_assertion(alice.user_id)
    async with session.post(f"{urls['standby']}/identity/v1/verifications", data=raw, headers=headers) as relayed:
        assert (relayed.status, await relayed.json()) == (200, {"user_id": alice.user_id, "verified": True})
    verified = time.monotonic()
    while await may_create_room() != {"active": 200, "standby": 200}:
        assert time.monotonic() - verified < 1.0, "a gate did not follow the verification within 1 s"
        await asyncio.sleep(0.02)
    records = await mod.bot.value("SELECT COUNT(*) FROM identity_records")
    # The very same request sent to the active gets its first answer and records nothing more (a
    # relay that timed out may have reached it); the assertion signed anew is a replay.
    async with session.post(f"{urls['active']}/identity/v1/verifications", data=raw, headers=headers) as resent:
        assert (resent.status, await resent.json()) == (200, {"user_id": alice.user_id, "verified": True})
    _, resigned = signed_assertion(alice.user_id, raw, int(headers["X-Timestamp"]) + 1)
    async with session.post(f"{urls['active']}/identity/v1/verifications", data=raw, headers=resigned) as replayed:
        assert replayed.status == 401 and (await replayed.json())["error"].startswith("assertion already used")
    assert await mod.bot.value("SELECT COUNT(*) FROM identity_records") == records

    # The standby's gate is asked throughout; every answer is counted.
    answers: list[object] = []

    async def probe() -> None:
        n = 1
        while True:
            try:
                answers.append(await ask(session, urls["standby"], gated.gate_token,
                                         gate_body(alice.user_id, alice.dm, n)))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                answers.append(exc)
            n += 1
            await asyncio.sleep(0.05)

    probing = asyncio.ensure_future(probe())
    offset = second.log_path.stat().st_size
    first.stop(signal.SIGKILL)
    killed = time.monotonic()
    during = await moderator.say(mod.room, f"!warn {alice.user_id} during the takeover")
    await until(lambda: "active: took over" in second.log(offset), timeout=10, interval=0.05,
                what="the standby taking over")
    took_over = time.monotonic() - killed
    assert took_over < 10
    await moderator.wait_for(lambda: replies_to(moderator, mod.room, account.user_id, during.event_id), 30,
                             "the reply to the command sent during the takeover")
    answered = time.monotonic() - killed
    after = await moderator.say(mod.room, f"!warn {alice.user_id} after the takeover")
    await moderator.wait_for(lambda: replies_to(moderator, mod.room, account.user_id, after.event_id), 20,
                             "the reply to the command sent after the takeover")
    await asyncio.sleep(3)  # time for a duplicate to show up, if one were coming
    await moderator.sync()
    await alice.sync()
    probing.cancel()
    await asyncio.gather(probing, return_exceptions=True)

    assert len(replies_to(moderator, mod.room, account.user_id, during.event_id)) == 1
    assert len(replies_to(moderator, mod.room, account.user_id, after.event_id)) == 1
    notices = [e for e in alice.messages(alice.dm, account.user_id) if "received a warning" in e["content"]["body"]]
    assert len(notices) == 3, [e["content"]["body"] for e in notices]
    failures = [a for a in answers if a != 200]
    assert not failures and len(answers) > 20, (failures[:5], len(answers))

    health = await (await session.get(f"{urls['standby']}/health")).json()
    assert health["role"] == "active" and health["leader"]["url"] == urls["standby"]
    metrics = await (await session.get(f"{urls['standby']}/metrics")).text()
    assert "rulesbot_ha_active 1.0" in metrics and "rulesbot_ha_takeovers_total 1.0" in metrics
    print(f"both gates allowed {followed * 1000:.0f} ms after the agreement's reply; takeover {took_over:.2f} s"
          f" after SIGKILL, first command answered after {answered:.2f} s")
    for process in (first, second):
        process.stop()  # nothing more is written: the records are final

    conn = await asyncpg.connect(pair.dsn)
    try:
        warnings = await conn.fetch("SELECT reason FROM cases WHERE target = $1 AND kind = 'warn' ORDER BY id",
                                    alice.user_id)  # (the ladder adds a restriction after the third)
        reasons = [r["reason"] for r in warnings]
        assert reasons == ["first warning", "during the takeover", "after the takeover"]
    finally:
        await conn.close()


async def test_an_active_that_loses_its_lock_stops_acting_and_stands_by(gated, pair):
    """The lock's connection cut (not the process): the active notices within two heartbeats,
    stops acting, and its gate answers on as a standby; the other takes over and answers."""
    account, mod, urls, session, moderator = gated.bot, pair.mod, pair.urls, pair.session, pair.mod.moderator
    offsets = [pair.first.log_path.stat().st_size, pair.second.log_path.stat().st_size]
    conn = await asyncpg.connect(pair.dsn)
    try:
        holder = await conn.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                                     ACTIVE_LOCK & 0xFFFFFFFF)
        assert holder is not None
        await conn.execute("SELECT pg_terminate_backend($1)", holder)
    finally:
        await conn.close()
    await until(lambda: "back to standby" in pair.first.log(offsets[0]), timeout=10, interval=0.05,
                what="the old active standing by")
    await until(lambda: "active: took over" in pair.second.log(offsets[1]), timeout=10, interval=0.05,
                what="the standby taking over")
    command = await moderator.say(mod.room, "!cases")
    await moderator.wait_for(lambda: replies_to(moderator, mod.room, account.user_id, command.event_id), 20,
                             "the new active's reply")
    await asyncio.sleep(3)
    await moderator.sync()
    assert len(replies_to(moderator, mod.room, account.user_id, command.event_id)) == 1
    old = await (await session.get(f"{urls['active']}/health")).json()
    new = await (await session.get(f"{urls['standby']}/health")).json()
    assert (old["role"], new["role"]) == ("standby", "active")
    assert old["leader"]["url"] == urls["standby"]
    metrics = await (await session.get(f"{urls['active']}/metrics")).text()
    assert "rulesbot_ha_active 0.0" in metrics and "rulesbot_ha_leadership_lost_total 1.0" in metrics
