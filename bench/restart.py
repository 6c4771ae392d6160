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
interpreter, aiohttp's import and a listening socket: what any Python gate costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


def first_answer(argv: list[str], port: int, timeout: float = 60.0, env: dict[str, str] | None = None) -> float:
    """Seconds from exec to the first 200 on port (or to exit, for a process that serves nothing)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/antispam/check_event_for_spam", data=check_body(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
        for _ in range(args.runs):  # interleaved, so a burst of other work hits every kind alike
            runs["python -c pass (exec only)"].append(first_answer([sys.executable, "-c", "pass"], 0))
            runs["bare aiohttp server, first 200"].append(
                first_answer([sys.executable, "-c", BARE_SERVER, str(port)], port))
            runs[f"bot, {args.accounts:,} accounts, first 200"].append(first_answer(bot, port, env=env))
        print(f"restart window: exec to the first answer of check_event_for_spam, {args.runs} runs each")
        for name, times in runs.items():
            report(name, times)
        bot_p50 = statistics.median(runs[f"bot, {args.accounts:,} accounts, first 200"])
        bare_p50 = statistics.median(runs["bare aiohttp server, first 200"])
        print(f"  bot / bare aiohttp server (p50): {bot_p50 / bare_p50:.1f}x")


if __name__ == "__main__":
    main()
