"""Benchmark: a message send through Synapse with no module, with the HTTP gate
(synapse-http-antispam -> the bot's gate) and with the in-process module (bot.synapse), side by
side in one run; the propagation of an `!agree` to the module's replica; and the module's memory
with 100,000 accounts in its replica.

    python bench/inprocess.py [--sends 400] [--agrees 40] [--accounts 100000]

Three Synapse processes (all named ``localhost``, so one account is the same Matrix ID on each)
and one bot, whose gate serves both the HTTP module and the in-process module's replica. The
sender has agreed; it posts a ~400-character message to a public room (in news scope, so the news
rules classify every post) on each server in turn, the order shuffled each round, over one
keep-alive connection per server, each send timed from the request to the answer.

Propagation: each of ``--agrees`` new accounts sends `!agree` in its DM with the bot; from that
moment two loops try to post, one on the HTTP-gated server (the gate reads the bot's own memory:
the baseline) and one on the in-process server (the change must reach the replica), every 5 ms;
each loop's time to its first accepted post is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from bot.devserver import Homeserver, free_port, module_config, random_token  # noqa: E402
from tests.integration.harness import BotProcess, User, inprocess_modules, until  # noqa: E402

TEXT = ("Weekly community update: the garden cleanup moves to Saturday morning, bring gloves and "
        "water. The library extends its opening hours next month, and the bus line 12 detour ends "
        "on Friday. Thanks to everyone who volunteered at the market; photos are in the shared "
        "album. Next meeting: Tuesday 19:00 in the hall, agenda attached, questions welcome.")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def register(hs: Homeserver, localpart: str, password: str, admin: bool = False) -> User:
    return User(hs, await hs.register(localpart, password, admin=admin))


async def send(session: aiohttp.ClientSession, user: User, room_id: str, body: str) -> tuple[int, float]:
    url = f"{user.hs.url}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}"
    started = time.perf_counter()
    async with session.put(url, json={"msgtype": "m.text", "body": body},
                           headers={"Authorization": f"Bearer {user.client.access_token}"}) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - started


async def agree(user: User, bot_id: str) -> None:
    await user.login()
    user.dm = await user.wait_for_invite(bot_id, timeout=120)
    await user.join(user.dm)
    await user.wait_for_message(user.dm, bot_id, "!agree", timeout=120)


async def first_allowed(session: aiohttp.ClientSession, user: User, room_id: str, started: float) -> float:
    while True:
        status, _ = await send(session, user, room_id, "hello")
        if status == 200:
            return time.perf_counter() - started
        if time.perf_counter() - started > 10:
            raise RuntimeError(f"{user.user_id} still refused on {user.hs.url} after 10 s")
        await asyncio.sleep(0.005)


MEMORY_PROBE = r"""
import gc, json, resource, sys, time
sys.path.insert(0, sys.argv[2])
def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
import bot.synapse.module  # everything the module loads inside Synapse, before the replica
from bot.replica.protocol import apply_snapshot
raw = open(sys.argv[1], "rb").read()
gc.collect(); before = rss_kb()
started = time.perf_counter()
state = apply_snapshot(json.loads(raw))
elapsed = time.perf_counter() - started
del raw; gc.collect(); after = rss_kb()
print(json.dumps({"before_kb": before, "after_kb": after, "accounts": len(state.accepted), "decode_s": elapsed}))
"""


def memory(accounts: int, workdir: Path) -> dict:
    """The replica's memory with ``accounts`` accounts (each agreed, each with its DM; one in a
    hundred under a measure), in a fresh interpreter that has imported the module first."""
    from bot.policy import PolicyState
    from bot.policy.sanctions import Measure, SanctionKind
    from bot.replica.protocol import snapshot

    state = PolicyState(bot_user_id="@rulesbot:localhost", server_name="localhost", agreement_version="1")
    for i in range(accounts):
        user = f"@user{i:06d}:localhost"
        state.record_acceptance(user, "1")
        state.set_dm_room(user, f"!dm{i:06d}abcdefghijkl:localhost")
        if i % 100 == 0:
            state.add_measure(user, Measure(i, SanctionKind.RESTRICT, 1_900_000_000_000))
    path = workdir / "snapshot.json"
    path.write_bytes(json.dumps(snapshot(state, "bench", 1)).encode())
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(Path(__file__).resolve().parents[1])],
                           capture_output=True, text=True, check=True)
    result = json.loads(probe.stdout)
    result["snapshot_bytes"] = path.stat().st_size
    return result


def print_sends(timings: dict[str, list[float]], sends: int) -> None:
    base = statistics.median(timings["no module"])
    print(f"\nmessage send through Synapse, {sends} sends each, interleaved (ms):")
    print(f"{'':>12} {'p50':>8} {'p99':>8} {'p50 / no module':>16}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(f"{name:>12} {p50 * 1000:8.2f} {pct(values, 99) * 1000:8.2f} {p50 / base:16.3f}")
    print("goal: in-process p50 <= 1.01 x no module", flush=True)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    gate_port, token = free_port(), random_token()
    gate_url = f"http://127.0.0.1:{gate_port}"
    servers = {
        "no module": Homeserver(work / "plain"),
        "HTTP gate": Homeserver(work / "http", gate=(f"{gate_url}/antispam", token)),
        "in-process": Homeserver(work / "inprocess", extra_config={"modules": inprocess_modules(gate_url, token)}),
    }
    bot_process: BotProcess | None = None
    users: list[User] = []
    try:
        for hs in servers.values():
            hs.start()
        home = servers["HTTP gate"]
        bot = await home.register("rulesbot", "rulesbot-password", admin=True)
        owner_name, owner_password = "owner", "owner-password"
        bot_process = BotProcess({
            "homeserver": {"url": home.url, "user_id": bot.user_id, "password": bot.password,
                           "admin_token": bot.access_token},
            "database": {"path": str(work / "bot.db")}, "language": "en", "log_level": "INFO",
            "gate": {"enabled": True, "listen": f"127.0.0.1:{gate_port}", "token": token},
            "moderators": [f"@{owner_name}:localhost"],
        }, work)
        bot_process.start(timeout=60)
        log = servers["in-process"].log_path
        await until(lambda: "rules replica: snapshot at" in log.read_text(errors="replace"), 30, 0.1, "a replica")

        rooms: dict[str, str] = {}
        senders: dict[str, User] = {}
        for name, hs in servers.items():
            owner = await register(hs, owner_name, owner_password)
            users.append(owner)
            status, room = await owner.create_room(preset="public_chat", name="Bench square")
            assert status == 200, room
            rooms[name] = room["room_id"]
            senders[name] = await register(hs, "alice", "alice-password")
            users.append(senders[name])
            await senders[name].join(rooms[name])
        await agree(senders["HTTP gate"], bot.user_id)
        await senders["HTTP gate"].say(senders["HTTP gate"].dm, "!agree")
        await senders["HTTP gate"].wait_for_message(senders["HTTP gate"].dm, bot.user_id, "recorded")
        await asyncio.sleep(0.5)

        timings: dict[str, list[float]] = {name: [] for name in servers}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            order = list(servers)
            for _ in range(20):  # warm-up, not recorded
                for name in order:
                    await send(session, senders[name], rooms[name], TEXT)
            for i in range(args.sends):
                random.shuffle(order)
                for name in order:
                    status, seconds = await send(session, senders[name], rooms[name], f"{TEXT} #{i}")
                    if status != 200:
                        raise RuntimeError(f"{name}: send refused ({status})")
                    timings[name].append(seconds)

            print_sends(timings, args.sends)

            # Propagation of !agree.
            newcomers = []
            for i in range(args.agrees):
                name = f"new{i}-{uuid.uuid4().hex[:6]}"
                on_home = await register(home, name, "pw-" + name)
                on_inproc = await register(servers["in-process"], name, "pw-" + name)
                users += [on_home, on_inproc]
                await on_home.join(rooms["HTTP gate"])
                await on_inproc.join(rooms["in-process"])
                newcomers.append((on_home, on_inproc))
            for start in range(0, len(newcomers), 10):  # the bot greets new accounts a few at a time
                await asyncio.gather(*(agree(home_user, bot.user_id) for home_user, _ in newcomers[start:start + 10]))
            propagation: dict[str, list[float]] = {"HTTP gate": [], "in-process": []}
            for home_user, inproc_user in newcomers:
                started = time.perf_counter()
                await home_user.say(home_user.dm, "!agree")
                gate_s, module_s = await asyncio.gather(
                    first_allowed(session, home_user, rooms["HTTP gate"], started),
                    first_allowed(session, inproc_user, rooms["in-process"], started))
                propagation["HTTP gate"].append(gate_s)
                propagation["in-process"].append(module_s)
                lag = module_s - gate_s
                propagation.setdefault("lag", []).append(lag)

        mem = memory(args.accounts, work)
    finally:
        for user in users:
            await user.close()
        if bot_process is not None:
            try:
                bot_process.stop(timeout=5)
            except AssertionError:  # stop() killed it: a figure is not lost over a slow shutdown
                pass
        for hs in servers.values():
            hs.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n!agree -> first allowed post, {args.agrees} accounts (ms; from the !agree send):")
    for name in ("HTTP gate", "in-process"):
        values = propagation[name]
        print(f"{name:>12} p50 {statistics.median(values) * 1000:8.1f}  p99 {pct(values, 99) * 1000:8.1f}  "
              f"max {max(values) * 1000:8.1f}")
    lag = propagation["lag"]
    print(f"{'replica lag':>12} p50 {statistics.median(lag) * 1000:8.1f}  p99 {pct(lag, 99) * 1000:8.1f}  "
          f"(in-process minus HTTP gate, same account)")
    print("goal: in-process p99 < 200 ms")
    grown = (mem["after_kb"] - mem["before_kb"]) / 1024
    print(f"\nreplica memory with {mem['accounts']:,} accounts: +{grown:.1f} MB RSS (process {mem['after_kb'] / 1024:.0f} MB "
          f"with the module imported: {mem['before_kb'] / 1024:.0f} MB before the snapshot); snapshot "
          f"{mem['snapshot_bytes'] / 1e6:.1f} MB, decoded in {mem['decode_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--agrees", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
