"""Benchmark: the store on PostgreSQL against SQLite (issue 11).

    python bench/store.py [--accounts 100000] [--audit-rows 1000000] [--runs 3] [--seconds 5]

1. The gate with ``--accounts`` accounts on each backend (bench/gate.py's store and load
   generator): how long loading its state from the store takes, then p50/p99 at 1,000 req/s,
   beside a no-op aiohttp handler measured in the same run. The gate answers from memory, so the
   per-request figures should match; what the backend changes is the load at start-up.
2. Start-up with ``--audit-rows`` audit rows (the chain computed as the bot computes it, inserted
   in bulk): exec of ``python -m bot run`` to the gate's first answer (bench/restart.py's measure)
   on each backend, beside a bare aiohttp server's first answer and the same store without the rows.
3. On the way: ``migrate-db`` of both stores from SQLite into PostgreSQL (COPY, then the chain
   verified before the commit), and ``audit verify`` of the big chain on each backend.
4. The leadership fence's cost per write (issue 11, bot.store.pg ``_fence_check``): a write
   transaction on PostgreSQL with the fence and without, ``--fence-writes`` of each, alternating on
   one connection in the same run; a kv write (the smallest transaction, where the fence weighs
   most) and an audit record (the chain's head read and one row, as most of the bot's writes).
   ``--fence-only`` runs just this part (seconds, not minutes).

PostgreSQL is a throw-away cluster of the machine's server (tests/postgres.py) on a unix socket,
fsync off like the tests': the figures are reads and start-up, not durable writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import gate as gate_bench  # noqa: E402  (bench/gate.py)
import restart as restart_bench  # noqa: E402  (bench/restart.py)

from bot.devserver import free_port  # noqa: E402
from tests.postgres import Cluster, server_bin  # noqa: E402

SERVER = gate_bench.SERVER


async def add_audit_rows(path: Path, rows: int) -> None:
    """``rows`` chained audit rows, as audit.append would write them, in one bulk insert."""
    from bot.store import Store
    from bot.store.audit import GENESIS, HEAD_KEY, Head, HeadFile, canonical_json, default_head_file, row_hash

    store = await Store.open(path)
    batch, prev = [], GENESIS
    for row_id in range(1, rows + 1):
        at, target = 1_700_000_000_000 + row_id, f"@user{row_id % 100_000}:{SERVER}"
        details = canonical_json({"version": "1", "event_id": f"$a{row_id}"})
        digest = row_hash(prev, row_id, at, "@bench:bench.test", "agreement.accept", target, details)
        batch.append((row_id, at, "@bench:bench.test", "agreement.accept", target, details, prev, digest))
        prev = digest
    async with store.db.transaction() as conn:
        await conn.executemany("INSERT INTO audit_log (id, created_at, actor, action, target, details, prev_hash, hash)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        await conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                           (HEAD_KEY, canonical_json({"id": rows, "hash": prev, "created_at": batch[-1][1]})))
    await store.close()
    # The head file the bot would have appended to, so `audit verify` has its witness.
    HeadFile(default_head_file(path)).write(Head(rows, prev, batch[-1][1]))


def migrate(source: Path, target: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bot", "migrate-db", "--from", str(source), "--to", target],
                            cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return time.perf_counter() - started


def gate_figures(locations: dict[str, str], accounts: int, seconds: float) -> None:
    bodies = gate_bench.requests_for(accounts)
    noop_port = free_port()
    noop = gate_bench._start(gate_bench._serve_noop, noop_port)
    try:
        rows = {"no-op aiohttp handler": asyncio.run(gate_bench.latency(noop_port, bodies, seconds))}
        for name, location in locations.items():
            port = free_port()
            print(f"  {name}:", end="", flush=True)
            served = gate_bench._start(gate_bench._serve_gate, location, port)  # prints its load time
            try:
                rows[f"gate on {name}"] = asyncio.run(gate_bench.latency(port, bodies, seconds))
            finally:
                served.terminate()
    finally:
        noop.terminate()
    print(f"  {'':28}{'p50 @1k/s':>12}{'p99 @1k/s':>12}")
    for name, r in rows.items():
        print(f"  {name:28}{r['p50_ms']:>9.3f} ms{r['p99_ms']:>9.3f} ms   {r['statuses']}")


def bot_config(work: Path, name: str, database: dict, port: int, head_file: Path | None = None) -> Path:
    config: dict = {
        "homeserver": {"url": f"http://127.0.0.1:{free_port()}", "user_id": f"@bot:{SERVER}", "password": "pw"},
        "database": database,
        "gate": {"listen": f"127.0.0.1:{port}", "token": restart_bench.TOKEN},
        "language": "en",
        "log_level": "WARNING",
    }
    if head_file is not None:
        config["records"] = {"audit_head_file": str(head_file)}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def startup_figures(configs: dict[str, Path], port: int, runs: int) -> None:
    argv = {name: [sys.executable, "-m", "bot", "run", "--config", str(path)] for name, path in configs.items()}
    for command in argv.values():
        restart_bench.first_answer(command, port)  # warm the page cache and the bytecode
    times: dict[str, list[float]] = {"bare aiohttp server (baseline)": []} | {name: [] for name in argv}
    for _ in range(runs):  # interleaved, so a burst of other work hits every kind alike
        times["bare aiohttp server (baseline)"].append(
            restart_bench.first_answer([sys.executable, "-c", restart_bench.BARE_SERVER, str(port)], port))
        for name, command in argv.items():
            times[name].append(restart_bench.first_answer(command, port))
    for name, measured in times.items():
        restart_bench.report(name, measured)


# `python -m bot audit verify`, then its own peak RSS (kB) on stderr's last line: VmHWM, since
# getrusage's ru_maxrss keeps the high-water mark of the forking parent (this benchmark) across exec.
MEASURED_VERIFY = """
import runpy, sys
sys.argv = ["bot", "audit", "verify", "--config", sys.argv[1]]
try:
    runpy.run_module("bot", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        print(next(line.split()[1] for line in status if line.startswith("VmHWM")), file=sys.stderr)
"""


def verify_figures(configs: dict[str, Path]) -> None:
    for name, config in configs.items():
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", MEASURED_VERIFY, str(config)],
                                cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        peak_mb = int(result.stderr.strip().splitlines()[-1]) / 1024
        outcome = result.stdout.strip().splitlines()[0] if result.returncode == 0 else f"FAILED: {result.stdout}{result.stderr}"
        print(f"  {name:<42} {seconds:6.1f} s, peak RSS {peak_mb:,.0f} MB: {outcome}")


def percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * pct // 100)]


async def fence_figures(dsn: str, head_file: Path, writes: int, warmup: int = 200) -> dict[str, dict[str, list[float]]]:
    """Seconds per write transaction, by kind of write, "fenced" and "unfenced": the same store and
    connection, the fence switched on and off (PgConnection.epoch, as bot.ha sets it) before each
    write, in alternating order, so a burst of other load on the machine hits both alike."""
    from bot.store import Store
    from bot.store.pg import EPOCH_KEY, NotActive

    store = await Store.open(dsn, head_file)
    try:
        conn = store.db.conn
        await store.put(EPOCH_KEY, "7")
        # The fence is really on when it is set: a write in an epoch that is over is refused.
        conn.epoch = 6
        try:
            await store.put("bench.fence", "refused")
            raise RuntimeError("a write under an old leadership epoch went through: the fence is not on")
        except NotActive:
            pass
        kinds = {
            "kv write": lambda n: store.put("bench.fence", str(n)),
            "audit record": lambda n: store.record(now_ms=1_700_000_000_000 + n, actor="@bench:bench.test",
                                                   action="bench.fence", target="@user:bench.test", details={"n": n}),
        }
        times: dict[str, dict[str, list[float]]] = {kind: {"unfenced": [], "fenced": []} for kind in kinds}
        for n in range(warmup + writes):
            for kind, write in kinds.items():
                for epoch in ((7, None) if n % 2 else (None, 7)):
                    conn.epoch = epoch
                    started = time.perf_counter()
                    await write(n)
                    if n >= warmup:
                        times[kind]["unfenced" if epoch is None else "fenced"].append(time.perf_counter() - started)
        return times
    finally:
        await store.close()


def print_fence_figures(times: dict[str, dict[str, list[float]]]) -> None:
    print(f"  {'':16}{'':10}{'p50':>10}{'p99':>10}")
    for kind, by in times.items():
        p50 = {name: statistics.median(values) * 1e3 for name, values in by.items()}
        p99 = {name: percentile(values, 99) * 1e3 for name, values in by.items()}
        for name in ("unfenced", "fenced"):
            print(f"  {kind:16}{name:10}{p50[name]:>7.3f} ms{p99[name]:>7.3f} ms")
        print(f"  {kind:16}{'fence adds':10}{p50['fenced'] - p50['unfenced']:>+7.3f} ms"
              f"{p99['fenced'] - p99['unfenced']:>+7.3f} ms"
              f"   ({(p50['fenced'] / p50['unfenced'] - 1) * 100:+.0f} % at p50, {len(by['fenced']):,} writes each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    parser.add_argument("--fence-writes", type=int, default=3_000, help="write transactions of each kind, fenced and not")
    parser.add_argument("--fence-only", action="store_true", help="measure only the leadership fence's cost per write")
    args = parser.parse_args()
    multiprocessing.set_start_method("spawn")
    bin_dir = server_bin()
    if bin_dir is None:
        print("PostgreSQL's server is not installed (apt-get install postgresql-15)", file=sys.stderr)
        return 2
    cluster = Cluster(bin_dir)
    cluster.start()
    try:
        asyncio.run(cluster.create_template())
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(f"leadership fence per write transaction on PostgreSQL (unix socket, fsync off), {os.cpu_count()} cores:")
            fence_dsn = asyncio.run(cluster.fresh())
            print_fence_figures(asyncio.run(fence_figures(fence_dsn, work / "fence.audit-head", args.fence_writes)))
            if args.fence_only:
                return 0
            accounts_db = work / "accounts.db"
            asyncio.run(gate_bench._prepare_store(accounts_db, args.accounts))
            accounts_pg = asyncio.run(cluster.fresh())
            print(f"migrate-db of {args.accounts:,} accounts SQLite -> PostgreSQL: {migrate(accounts_db, accounts_pg):.1f} s")
            print(f"gate, {args.accounts:,} accounts, {os.cpu_count()} cores:")
            gate_figures({"SQLite": str(accounts_db), "PostgreSQL": accounts_pg}, args.accounts, args.seconds)

            big_db = work / "big.db"
            asyncio.run(restart_bench.prepare_store(big_db, args.accounts))
            empty_db = work / "empty.db"
            asyncio.run(restart_bench.prepare_store(empty_db, args.accounts))
            started = time.perf_counter()
            asyncio.run(add_audit_rows(big_db, args.audit_rows))
            print(f"{args.audit_rows:,} audit rows chained and bulk-inserted into SQLite in {time.perf_counter() - started:.1f} s")
            big_pg, empty_pg = asyncio.run(cluster.fresh()), asyncio.run(cluster.fresh())
            print(f"migrate-db of them SQLite -> PostgreSQL (COPY, chain verified before the commit):"
                  f" {migrate(big_db, big_pg):.1f} s")
            migrate(empty_db, empty_pg)
            # The same chain, so the same heads: the PostgreSQL bot gets a copy of the head file.
            pg_head_file = work / "pg-big.audit-head"
            shutil.copy(big_db.with_name("big.db.audit-head"), pg_head_file)
            port = free_port()
            configs = {
                "bot on SQLite, no audit rows": bot_config(work, "sqlite-empty", {"path": str(empty_db)}, port),
                f"bot on SQLite, {args.audit_rows:,} audit rows": bot_config(work, "sqlite-big", {"path": str(big_db)}, port),
                "bot on PostgreSQL, no audit rows": bot_config(work, "pg-empty", {"url": empty_pg}, port),
                f"bot on PostgreSQL, {args.audit_rows:,} audit rows": bot_config(work, "pg-big", {"url": big_pg}, port,
                                                                       pg_head_file),
            }
            print(f"start-up: exec to the gate's first answer, {args.accounts:,} accounts, {args.runs} runs each")
            startup_figures(configs, port, args.runs)
            print("audit verify (the empty logs are the baseline: the bot's imports):")
            verify_figures(configs)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
