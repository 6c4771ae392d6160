"""Benchmark: failover time, from SIGKILL of the active bot to the first command answered by the
standby that took over.

    python bench/failover.py [--runs 5]

A real Synapse (the gate module pointed at one bot's gate), a throw-away PostgreSQL cluster and
two ``python -m bot run`` processes on one database. Each run: SIGKILL the active process, send
``!cases`` in the management room at once, and time until the bot's reply to that command arrives
(as the moderator's client sees it); the log line of the takeover is timed too. The killed
process is then started again and comes up as the new standby, so the next run kills the other.
A command is answered exactly once per run or the run fails.

The parts of the time: the standby asks for the lock every ``ha.poll_seconds`` (1 s), then waits
``2 × ha.heartbeat_seconds + 0.2`` (2.2 s) so the old active has surely stopped, loads the state,
logs in with the stored token and syncs from the stored token; the command is in that sync.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.devserver import Homeserver, free_port, random_token  # noqa: E402
from tests import postgres  # noqa: E402
from tests.integration import harness  # noqa: E402
from tests.integration.harness import BotProcess, new_user  # noqa: E402

STANDBY_LINE = "standby: the gate answers"
TAKEOVER_LINE = "active: took over"


def start(process: BotProcess, ready: str) -> None:
    harness.READY_LINE, saved = ready, harness.READY_LINE
    try:
        process.start(timeout=90)
    finally:
        harness.READY_LINE = saved


def replies(user, room_id: str, bot_id: str, event_id: str) -> int:
    return sum(1 for e in user.messages(room_id, bot_id)
               if e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id)


async def bench(workdir: Path, runs: int) -> tuple[list[float], list[float]]:
    bin_dir = postgres.server_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL's server is not installed (apt-get install postgresql-15)")
    cluster = postgres.Cluster(bin_dir)
    cluster.start()
    token = random_token()
    ports = [free_port(), free_port()]
    balancer = await asyncio.start_server(lambda r, w: _forward(r, w, ports), "127.0.0.1", 0)
    balancer_port = balancer.sockets[0].getsockname()[1]
    hs = Homeserver(workdir / "hs", gate=(f"http://127.0.0.1:{balancer_port}/antispam", token))
    hs.start()
    bots: list[BotProcess] = []
    moderator = None
    try:
        await cluster.create_template()
        dsn = await cluster.fresh()
        account = await hs.register("rulesbot", "rulesbot-password", admin=True)
        moderator = await new_user(hs, "mod")
        alias = f"mods-{moderator.user_id[5:13]}"
        for index, port in enumerate(ports):
            (workdir / str(index)).mkdir()
            bots.append(BotProcess({
                "homeserver": {"url": hs.url, "user_id": account.user_id, "password": account.password,
                               "admin_token": account.access_token},
                "database": {"url": dsn}, "language": "en", "log_level": "INFO",
                "gate": {"enabled": True, "listen": f"127.0.0.1:{port}", "token": token},
                "moderators": [moderator.user_id], "management_room": f"#{alias}:{hs.server_name}",
            }, workdir / str(index)))
        start(bots[0], harness.READY_LINE)
        start(bots[1], STANDBY_LINE)
        status, room = await moderator.create_room(name="Moderators", room_alias_name=alias, invite=[account.user_id])
        assert status == 200, room
        room_id = room["room_id"]
        await moderator.say(room_id, "!cases")
        await moderator.wait_for_message(room_id, account.user_id, "No cases", timeout=60)
        answered, took_over = [], []
        active, standby = 0, 1
        for run in range(runs):
            offset = bots[standby].log_path.stat().st_size
            bots[active].stop(signal.SIGKILL)
            killed = time.perf_counter()
            takeover = asyncio.ensure_future(_logged(bots[standby], offset, TAKEOVER_LINE, killed))
            sent = await moderator.say(room_id, "!cases")
            await moderator.wait_for(lambda: replies(moderator, room_id, account.user_id, sent.event_id), 60,
                                     "the new active's reply")
            answered.append(time.perf_counter() - killed)
            took_over.append(await takeover)
            await asyncio.sleep(2)
            await moderator.sync()
            count = replies(moderator, room_id, account.user_id, sent.event_id)
            assert count == 1, f"run {run + 1}: the command was answered {count} times"
            print(f"  run {run + 1}: answered {answered[-1]:5.2f} s after SIGKILL"
                  f" (took over at {took_over[-1]:5.2f} s)",
                  flush=True)
            start(bots[active], STANDBY_LINE)  # the killed one comes back as the standby
            active, standby = standby, active
        return answered, took_over
    finally:
        for bot in bots:
            bot.stop()
        if moderator is not None:
            await moderator.close()
        hs.stop()
        cluster.stop()
        balancer.close()


async def _forward(client: asyncio.StreamReader, to_client: asyncio.StreamWriter, ports: list[int]) -> None:
    """Synapse's way to the gates: each connection goes to the first gate that accepts it, as a
    load balancer in front of both bot processes would (the killed one refuses at once)."""
    for port in ports:
        try:
            upstream, to_upstream = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            continue
    else:
        to_client.close()
        return

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    try:
        await asyncio.gather(pipe(client, to_upstream), pipe(upstream, to_client))
    except asyncio.CancelledError:
        pass  # the benchmark is over: asyncio.run cancels the connections still open


async def _logged(process: BotProcess, offset: int, line: str, since: float) -> float:
    """Seconds from ``since`` until ``line`` appears in the process's log (polled every 10 ms)."""
    deadline = time.perf_counter() + 60
    while line not in process.log(offset):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no {line!r} in the new active's log")
        await asyncio.sleep(0.01)
    return time.perf_counter() - since


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as workdir:
        answered, took_over = asyncio.run(bench(Path(workdir), args.runs))
    print(f"failover over {len(answered)} runs (SIGKILL of the active -> first command answered by the new active)")
    for name, values in (("command answered", answered), ("takeover logged", took_over)):
        print(f"  {name:<18} min {min(values):5.2f} s   median {statistics.median(values):5.2f} s   "
              f"max {max(values):5.2f} s")


if __name__ == "__main__":
    main()
