"""Benchmark: the replica's snapshot, its memory in a module, and what tracking costs the gate.

    python bench/replica.py [--accounts 100000]

A bot state the size of a large homeserver: ``--accounts`` acceptances and DMs, one account in
a hundred under a measure, one in a hundred a public account, the identical-repost memory full
(200,000 texts), 1,000 rooms in scope. Measured in this run:

- the snapshot: bytes, time to build it, and how long the event loop is held meanwhile (the
  longest gap a 1 ms ticker sees while the publisher serves it);
- the replica: time to read and apply the snapshot, and the memory it holds (a fresh process, as
  inside Synapse: RSS before and after);
- a change reaching a waiting long poll (loopback HTTP, the client's read included);
- tracking: a gate decision (``decide``) and a write on a tracked state against an untracked one,
  and bench/gate.py's gate over HTTP without tracking against the gate as the bot now runs it
  (change log and replica routes attached): latency at 1,000 requests/s and interleaved
  saturation pairs, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.policy import Action, ActionKind, PolicyState, decide  # noqa: E402
from bot.policy.news import NewsRules  # noqa: E402
from bot.policy.sanctions import Measure, Rate, SanctionKind  # noqa: E402
from bot.policy.state import RECENT_TEXTS_LIMIT, PublicAccount  # noqa: E402

SERVER = "bench.test"
NOW = 1_700_000_000_000
RULES = Path(__file__).resolve().parent.parent / "bot" / "shipped" / "rules.yaml"


def big_state(accounts: int) -> PolicyState:
    import yaml

    state = PolicyState(bot_user_id=f"@bot:{SERVER}", server_name=SERVER, agreement_version="1")
    users = [f"@user{i}:{SERVER}" for i in range(accounts)]
    state.accepted.update((u, "1") for u in users)
    state.load_dm_rooms({u: f"!dm{i}:{SERVER}" for i, u in enumerate(users)})
    for i in range(0, accounts, 100):
        state.add_measure(users[i], Measure(i + 1, SanctionKind.RESTRICT, NOW + 3_600_000, Rate(3, 3_600_000)))
        state.public_accounts[users[i + 1]] = PublicAccount("media", f"Outlet {i}", f"IM-{i}", "publisher")
        state.channels[f"!chan{i}:{SERVER}"] = users[i + 1]
    state.news_scope = {f"!room{i}:{SERVER}" for i in range(1000)}
    state.news_rules = NewsRules.from_mapping(yaml.safe_load(RULES.read_text(encoding="utf-8")))
    for i in range(RECENT_TEXTS_LIMIT):
        state.recent_texts[f"{i:040x}"] = (users[i % accounts], NOW - i)
    return state


async def snapshot_stall(state: PolicyState) -> dict:
    """Serve snapshots through the publisher while a 1 ms ticker measures the loop's longest gap."""
    from bot.replica.changelog import ChangeLog
    from bot.replica.publisher import ReplicaPublisher

    log = ChangeLog(state)
    publisher = ReplicaPublisher(log, gate=None, clock=lambda: NOW)  # type: ignore[arg-type]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    idle = []
    for _ in range(5):  # the same ticker with nothing else to do: what the machine itself costs
        gaps.clear()
        await asyncio.sleep(0.5)
        idle.append(max(gaps, default=0.0))
    runs = []
    for _ in range(5):
        gaps.clear()
        pieces = [piece async for piece in publisher.snapshot_pieces()]  # as the route streams them
        runs.append((publisher.snapshot_seconds, publisher.snapshot_loop_seconds, max(gaps, default=0.0),
                     publisher.snapshot_bytes))
    stop.set()
    await tick
    return {
        "bytes": runs[-1][3],
        "total_s": statistics.median(r[0] for r in runs),
        "longest_piece_s": statistics.median(r[1] for r in runs),
        "longest_loop_gap_s": statistics.median(r[2] for r in runs),
        "idle_loop_gap_s": statistics.median(idle),
        "body": b"".join(pieces),
    }


async def poll_wake(trials: int = 200) -> list[float]:
    """From a change on the bot to a waiting long poll's answer read by its client (loopback HTTP)."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.gate.server import Gate
    from bot.i18n import Translator
    from bot.replica.changelog import ChangeLog
    from bot.replica.publisher import ReplicaPublisher

    token = "bench-token-0123456789abcdef"
    state = PolicyState(bot_user_id=f"@bot:{SERVER}", server_name=SERVER, agreement_version="1")
    gate = Gate(state, Translator("en"), token, lambda user: None)
    gate.replica = publisher = ReplicaPublisher(ChangeLog(state), gate, lambda: NOW)
    waits = []
    async with TestClient(TestServer(gate.app())) as client:
        for index in range(trials):
            poll = asyncio.ensure_future(client.get(
                f"/replica/v1/changes?since={publisher.changes.seq}&timeout=20000",
                headers={"Authorization": f"Bearer {token}"}))
            await asyncio.sleep(0.005)  # the poll is waiting
            changed = time.perf_counter()
            state.record_acceptance(f"@user{index}:{SERVER}", "1")
            await (await poll).json()
            waits.append(time.perf_counter() - changed)
    return sorted(waits)


def _replica_process(path: str, queue: multiprocessing.Queue) -> None:
    """As inside Synapse: only the protocol and the policy core, a fresh process."""
    import gc

    from bot.replica.protocol import apply_snapshot

    gc.collect()
    before = _rss_kib()
    started = time.perf_counter()
    document = json.loads(Path(path).read_bytes())
    state = apply_snapshot(document)
    del document
    gc.collect()
    queue.put({"apply_s": time.perf_counter() - started, "rss_mib": (_rss_kib() - before) / 1024,
               "accounts": len(state.accepted)})


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def per_call_ns(fn, repeat: int = 7, number: int = 200_000) -> float:
    best = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best.append((time.perf_counter_ns() - started) / number)
    return statistics.median(best)


def tracking_cost(accounts: int) -> dict:
    from bot.replica.changelog import ChangeLog

    plain, tracked = big_state(accounts), big_state(accounts)
    ChangeLog(tracked)
    agreed = Action(ActionKind.SEND_EVENT, f"@user{accounts // 2 + 3}:{SERVER}", room_id=f"!x:{SERVER}",
                    event_type="m.room.message", body="hello")
    stranger = Action(ActionKind.SEND_EVENT, f"@stranger:{SERVER}", room_id=f"!x:{SERVER}",
                      event_type="m.room.message", body="hello")
    samples: dict[str, list[float]] = {}
    counter = iter(range(10**9))
    for _ in range(5):  # alternated, so drift on a shared machine hits both alike
        for name, state in (("untracked", plain), ("tracked", tracked)):
            for key, fn, number in (
                ("decide_agreed", lambda: decide(agreed, state, NOW), 100_000),
                ("decide_stranger", lambda: decide(stranger, state, NOW), 100_000),
                ("remember_text", lambda: state.remember_text(f"text {next(counter)}", agreed.user_id, NOW), 10_000),
            ):
                samples.setdefault(f"{key}_{name}_ns", []).append(per_call_ns(fn, repeat=1, number=number))
    out = {key: statistics.median(values) for key, values in samples.items()}
    return out


def _serve_tracked_gate(db_path: str, port: int, ready) -> None:
    """bench/gate.py's gate, with the change log and replica routes attached as bot.gatefirst does."""
    import gate as gate_bench

    from bot.gate.server import Gate
    from bot.replica.changelog import ChangeLog
    from bot.replica.publisher import ReplicaPublisher

    start = Gate.start

    async def start_tracked(self: Gate, host: str, port: int) -> None:
        self.replica = ReplicaPublisher(ChangeLog(self.state), self, self._clock)
        await start(self, host, port)

    Gate.start = start_tracked  # type: ignore[method-assign]
    gate_bench._serve_gate(db_path, port, ready)


def gate_with_and_without_tracking(accounts: int, seconds: float, rounds: int) -> None:
    import tempfile

    import gate as gate_bench

    from bot.devserver import free_port

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        asyncio.run(gate_bench._prepare_store(db, accounts))
        bodies = gate_bench.requests_for(accounts)
        plain_port, tracked_port = free_port(), free_port()
        plain = gate_bench._start(gate_bench._serve_gate, str(db), plain_port)
        tracked = gate_bench._start(_serve_tracked_gate, str(db), tracked_port)
        try:
            before = asyncio.run(gate_bench.latency(plain_port, bodies, seconds))
            after = asyncio.run(gate_bench.latency(tracked_port, bodies, seconds))
            plain_rps, tracked_rps, ratio = asyncio.run(
                gate_bench.paired_saturation(plain_port, tracked_port, bodies, rounds, 1.0))
        finally:
            plain.terminate()
            tracked.terminate()
    print(f"{'gate (bench/gate.py)':28}{'p50 @1k/s':>12}{'p99 @1k/s':>12}{'saturation':>14}")
    for name, r, rps in (("without tracking", before, plain_rps), ("with tracking + routes", after, tracked_rps)):
        print(f"{name:28}{r['p50_ms']:>9.3f} ms{r['p99_ms']:>9.3f} ms{rps:>10,.0f} r/s")
    print(f"saturation ratio tracked/untracked: {ratio:.0%} (median of {rounds} interleaved 1 s pairs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each gate latency run")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved gate saturation pairs")
    args = parser.parse_args()
    multiprocessing.set_start_method("spawn")
    started = time.perf_counter()
    state = big_state(args.accounts)
    print(f"state: {args.accounts:,} accounts, {len(state.sanctions):,} under measures, "
          f"{len(state.public_accounts):,} public accounts, {len(state.recent_texts):,} remembered texts "
          f"(built in {time.perf_counter() - started:.1f} s)")
    snap = asyncio.run(snapshot_stall(state))
    print(f"snapshot: {snap['bytes'] / 1e6:.1f} MB in {snap['total_s'] * 1000:.0f} ms; "
          f"{snap['longest_piece_s'] * 1000:.1f} ms the longest piece held the loop; longest loop gap meanwhile "
          f"{snap['longest_loop_gap_s'] * 1000:.0f} ms, and {snap['idle_loop_gap_s'] * 1000:.0f} ms in 0.5 s with nothing "
          "to do (medians of 5)")
    path = Path("/tmp") / f"replica-snapshot-{args.accounts}.json"
    path.write_bytes(snap["body"])
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_replica_process, args=(str(path), queue))
    process.start()
    replica = queue.get(timeout=600)
    process.join()
    path.unlink()
    print(f"replica (a fresh process, stdlib json): applied in {replica['apply_s']:.2f} s, "
          f"holds {replica['rss_mib']:.0f} MiB for {replica['accounts']:,} accounts")
    waits = asyncio.run(poll_wake())
    print(f"a change to a waiting long poll's answer: p50 {waits[len(waits) // 2] * 1000:.2f} ms, "
          f"p99 {waits[int(len(waits) * 0.99)] * 1000:.2f} ms ({len(waits)} changes)")
    costs = tracking_cost(args.accounts)
    print(f"{'':28}{'untracked':>12}{'tracked':>12}")
    for label, key in (("decide, agreed account", "decide_agreed"), ("decide, stranger", "decide_stranger"),
                       ("remember_text (a write)", "remember_text")):
        print(f"{label:28}{costs[key + '_untracked_ns']:>9.0f} ns{costs[key + '_tracked_ns']:>9.0f} ns")
    gate_with_and_without_tracking(args.accounts, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
