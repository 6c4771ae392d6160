"""Benchmark: what real-name verification costs the gate and the start-up.

    python bench/identity.py [--accounts 100000]

1. decide() on a post, per call, with ``identity.required_for`` empty (the baseline, measured in
   the same run) and with ``[post, public_account, news]`` for a verified and an unverified
   account: the ratio is the rule's cost on the gate's hot path.
2. Start-up: ``Identity.open`` on a database holding ``--accounts`` verified accounts (and a
   revocation for one in ten), against the agreements' start-up read of as many acceptances (the
   baseline: the gate already waits for it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.identity.service import Identity  # noqa: E402
from bot.policy import Action, ActionKind, PolicyState, decide  # noqa: E402
from bot.store import Store  # noqa: E402

NOW = 1_800_000_000_000


def state(required: frozenset[str]) -> PolicyState:
    s = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
    for user in ("@v:hs", "@u:hs"):
        s.record_acceptance(user, "1")
    s.verified["@v:hs"] = "L2"
    s.identity_required_for = required
    s.identity_instructions = "Verify at https://id.example.org."
    return s


def per_call_us(action: Action, s: PolicyState, number: int = 200_000) -> float:
    best = min(timeit.repeat(lambda: decide(action, s, NOW), number=number, repeat=5))
    return best / number * 1e6


async def startup(accounts: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(Path(folder) / "bot.db")
        try:
            async with store.db.transaction() as conn:
                await conn.executemany(
                    "INSERT INTO identity_records (user_id, kind, verifier, method, level, verified_at, recorded_at,"
                    " actor, subject_index) VALUES (?, 'verified', 'assertion', 'eid', 'L2', ?, ?, 'assertion', ?)",
                    [(f"@u{i}:hs", NOW, NOW, f"{i:064x}") for i in range(accounts)])
                await conn.executemany(
                    "INSERT INTO identity_records (user_id, kind, verifier, recorded_at, actor, note)"
                    " VALUES (?, 'revoked', 'manual', ?, '@mod:hs', 'x')",
                    [(f"@u{i}:hs", NOW) for i in range(0, accounts, 10)])
                await conn.executemany(
                    "INSERT INTO agreement_acceptances (user_id, version, text_sha256, accepted_at, event_id, room_id,"
                    " method) VALUES (?, '1', 'x', ?, ?, '!dm:hs', 'command')",
                    [(f"@u{i}:hs", NOW, f"$e{i}") for i in range(accounts)])
            settings = Settings(homeserver={"url": "http://hs", "user_id": "@bot:hs", "password": "x"},
                                gate={"enabled": False}, database={"path": str(Path(folder) / "bot.db")})
            started = time.perf_counter()
            await store.agreements.latest_versions()
            baseline = time.perf_counter() - started
            s = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1")
            started = time.perf_counter()
            await Identity.open(settings, store, s, lambda: NOW)
            loaded = time.perf_counter() - started
            return baseline, loaded, len(s.verified)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    args = parser.parse_args()
    post = lambda user: Action(ActionKind.SEND_EVENT, user, room_id="!room:hs", event_type="m.room.message",  # noqa: E731
                               body="hello")
    required = frozenset({"post", "public_account", "news"})
    baseline = per_call_us(post("@v:hs"), state(frozenset()))
    verified = per_call_us(post("@v:hs"), state(required))
    unverified = per_call_us(post("@u:hs"), state(required))
    print(f"decide() on a post: {baseline:.2f} us without identity rules (baseline)")
    print(f"  required_for [post, public_account, news], verified:   {verified:.2f} us ({verified / baseline:.2f}x)")
    print(f"  required_for [post, public_account, news], unverified: {unverified:.2f} us ({unverified / baseline:.2f}x)"
          " (a refusal)")
    base, loaded, count = asyncio.run(startup(args.accounts))
    print(f"start-up, {args.accounts} accounts: agreements read {base * 1000:.0f} ms (baseline); "
          f"Identity.open {loaded * 1000:.0f} ms ({loaded / base:.2f}x), {count} verified in memory")


if __name__ == "__main__":
    main()
