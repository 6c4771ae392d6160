"""Benchmark: the restart window, from exec to the gate's first answer.

    python bench/restart.py [--accounts 100000] [--runs 7]

The shipped module config fails closed, so while the bot restarts nobody on the server can post.
This starts ``python -m bot run`` against a store holding ``--accounts`` accounts (an acceptance
and a DM each, 1 % of them public accounts with a filing and a channel, 1,000 measures in force)
and times, from exec, the first ``200`` from ``POST /antispam/check_event_for_spam`` for an agreed
sender. The homeserver URL points at a closed port: the gate must answer from the database before
the Matrix login, so a homeserver that is slow or down does not lengthen the window.

Baselines measured in the same run, the same way (exec to first answer on the same port):
``python -c pass`` (exec alone) and a bare aiohttp server answering ``200 {}`` (exec, the
interpreter, aiohttp's import and a listening socket: what any Python gate costs). The bot's stop
(SIGTERM to exit) is timed too: the window of a restart is stop + start.

Then the same restart behind a socket that outlives the process (systemd socket activation,
config/systemd): a request sent the moment the old process has exited waits in the socket's
backlog; its answer (not a refusal) and its wait are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.devserver import free_port  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
SERVER = "bench.test"

BARE_SERVER = """
import sys
from aiohttp import web
async def allow(request):
    await request.read()
    return web.Response(body=b"{}", content_type="application/json")
app = web.Application()
app.router.add_post("/antispam/{callback}", allow)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def prepare_store(path: Path, accounts: int) -> None:
    from bot.store import Store

    store = await Store.open(path)
    users = [f"@user{i}:{SERVER}" for i in range(accounts)]
    async with store.db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO agreement_acceptances (user_id, version, text_sha256, accepted_at, event_id, room_id, method)"
            " VALUES (?, '1', ?, 1700000000000, ?, ?, 'command')",
            [(u, "0" * 64, f"$accept{i}", f"!dm{i}:{SERVER}") for i, u in enumerate(users)],
        )
        await conn.executemany("INSERT INTO dm_rooms (user_id, room_id, created_at) VALUES (?, ?, 0)",
                               [(u, f"!dm{i}:{SERVER}") for i, u in enumerate(users)])
        public = users[: max(1, accounts // 100)]
        await conn.executemany(
            "INSERT INTO applications (id, applicant, kind, category, name, created_at, decided_at, decided_by, decision)"
            " VALUES (?, ?, 'public', 'news', ?, 0, 0, '@mod:bench.test', 'approved')",
            [(i + 1, u, f"Account {i}") for i, u in enumerate(public)],
        )
        await conn.executemany(
            "INSERT INTO filings (filing_number, owner, category, name, reviewer, approved_at, application_id)"
            " VALUES (?, ?, 'news', ?, '@mod:bench.test', 0, ?)",
            [(f"F{i:08d}", u, f"Account {i}", i + 1) for i, u in enumerate(public)],
        )
        await conn.executemany("INSERT INTO channels (room_id, owner, added_at) VALUES (?, ?, 0)",
                               [(f"!channel{i}:{SERVER}", u) for i, u in enumerate(public)])
        far = 4_000_000_000_000  # measures in force, expiring long after the run
        await conn.executemany(
            "INSERT INTO cases (target, kind, actor, reason, created_at, expires_at) VALUES (?, 'restrict', '@mod:bench.test', 'bench', 0, ?)",
            [(u, far) for u in users[-1000:]],
        )
    await store.close()


def check_body() -> bytes:
    event = {"type": "m.room.message", "sender": f"@user1:{SERVER}", "room_id": f"!room:{SERVER}",
             "event_id": "$e", "content": {"msgtype": "m.text", "body": "hello"}}
    return json.dumps({"event": event}).encode()


STOPS: list[float] = []


def first_answer(argv: list[str], port: int, timeout: float = 60.0, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> float:
    """Seconds from exec to the first 200 on port (or to exit, for a process that serves nothing).
    The process's stop (SIGTERM to exit) is appended to STOPS."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/antispam/check_event_for_spam", data=check_body(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               pass_fds=pass_fds)
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                if port == 0:
                    return time.perf_counter() - started
                raise RuntimeError(f"{argv} exited with {process.returncode}")
            if port:
                try:
                    with urllib.request.urlopen(request, timeout=1) as resp:
                        if resp.status == 200:
                            return time.perf_counter() - started
                except (urllib.error.URLError, ConnectionError):
                    pass
            time.sleep(0.002)
        raise RuntimeError(f"{argv}: no answer within {timeout:.0f} s")
    finally:
        if process.poll() is None:
            stopping = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
                STOPS.append(time.perf_counter() - stopping)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


LAUNCH = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "bot", "run", "--config", sys.argv[2]])
"""


def held_socket_restart(config: Path, runs: int) -> list[float]:
    """Restarts behind a held listening socket: each time, a request sent right after the old
    process exited; seconds until it is answered (by the new process). A refusal raises."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    argv = [sys.executable, "-c", LAUNCH, str(listener.fileno()), str(config)]
    waits = []
    try:
        for _ in range(runs):
            process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       pass_fds=(listener.fileno(),))
            _until_answered(port)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
            with ThreadPoolExecutor(1) as pool:
                asked = time.perf_counter()
                pending = pool.submit(_until_answered, port, 1)
                process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           pass_fds=(listener.fileno(),))
                pending.result(timeout=60)
                waits.append(time.perf_counter() - asked)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    finally:
        listener.close()
    return waits


def _until_answered(port: int, tries: int = 10_000) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/antispam/check_event_for_spam", data=check_body(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            if attempt + 1 == tries:
                raise
            time.sleep(0.002)


def report(name: str, times: list[float]) -> None:
    print(f"  {name:<46} p50 {statistics.median(times) * 1000:7.0f} ms   max {max(times) * 1000:7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "bot.db"
        asyncio.run(prepare_store(db, args.accounts))
        port = free_port()
        config = {
            "homeserver": {"url": f"http://127.0.0.1:{free_port()}", "user_id": f"@bot:{SERVER}", "password": "pw"},
            "database": {"path": str(db)},
            "gate": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
            "language": "en",
            "log_level": "WARNING",
        }
        (work / "bot.yaml").write_text(json.dumps(config))  # JSON is YAML
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
        bot = [sys.executable, "-m", "bot", "run", "--config", str(work / "bot.yaml")]
        first_answer(bot, port, env=env)  # warm the page cache and the bytecode, as a restart finds them
        runs: dict[str, list[float]] = {"python -c pass (exec only)": [], "bare aiohttp server, first 200": [],
                                        f"bot, {args.accounts:,} accounts, first 200": []}
        bot_stops: list[float] = []
        for _ in range(args.runs):  # interleaved, so a burst of other work hits every kind alike
            runs["python -c pass (exec only)"].append(first_answer([sys.executable, "-c", "pass"], 0))
            runs["bare aiohttp server, first 200"].append(
                first_answer([sys.executable, "-c", BARE_SERVER, str(port)], port))
            runs[f"bot, {args.accounts:,} accounts, first 200"].append(first_answer(bot, port, env=env))
            bot_stops.append(STOPS[-1])
        print(f"restart window: exec to the first answer of check_event_for_spam, {args.runs} runs each")
        for name, times in runs.items():
            report(name, times)
        report("bot stop, SIGTERM to exit", bot_stops)
        bot_p50 = statistics.median(runs[f"bot, {args.accounts:,} accounts, first 200"])
        bare_p50 = statistics.median(runs["bare aiohttp server, first 200"])
        print(f"  bot / bare aiohttp server (p50): {bot_p50 / bare_p50:.1f}x")
        waits = held_socket_restart(work / "bot.yaml", args.runs)
        print(f"behind a held socket (systemd socket activation), {args.runs} restarts:")
        report("request sent as the old process exited: answered", waits)
        print("  refused: 0 (a refusal would have stopped the benchmark)")


if __name__ == "__main__":
    main()
