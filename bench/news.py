"""Benchmark: classifying a 1 KB message against 10,000 news rules.

    python bench/news.py [--rules 10000] [--messages 2000]

Prints p50/p99 per message for the compiled classifier and, measured in the same run on the same
messages, a plain substring scan of the same keywords (the obvious way), and their ratio. Half
of the messages contain a keyword near the end (the worst case for an early exit), half none.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.policy.news import NewsRules  # noqa: E402


def make_rules(count: int, rng: random.Random) -> tuple[dict, list[str]]:
    keywords = set()
    while len(keywords) < count:
        if rng.random() < 0.5:  # Chinese-like keywords of 2-4 characters
            word = "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4)))
        else:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 12)))
        keywords.add(word)
    words = sorted(keywords)
    rules = [{"id": f"rule-{i}", "keywords": [word]} for i, word in enumerate(words)]
    return {"news": rules, "repost": {"markers": ["转载自"]}}, words


def make_messages(count: int, keywords: list[str], rng: random.Random) -> list[str]:
    messages = []
    for i in range(count):
        filler = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                          for _ in range(200))[:1000]
        if i % 2:
            filler = filler[:990] + " " + rng.choice(keywords)
        messages.append(filler[:1024])
    return messages


def timed(fn, messages: list[str]) -> list[float]:
    times = []
    for message in messages:
        start = time.perf_counter()
        fn(message)
        times.append(time.perf_counter() - start)
    return sorted(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(7)
    data, keywords = make_rules(args.rules, rng)
    started = time.perf_counter()
    rules = NewsRules.from_mapping(data)
    compile_s = time.perf_counter() - started
    messages = make_messages(args.messages, keywords, rng)
    folded = [k.casefold() for k in keywords]

    def substring_scan(message: str) -> str | None:
        text = message.casefold()
        return next((k for k in folded if k in text), None)

    # Both must agree on what is news before their speed means anything.
    for message in messages[:200]:
        assert (rules.classify(message) is None) == (substring_scan(message) is None)
    timed(rules.classify, messages[:200])  # warm-up
    compiled = timed(rules.classify, messages)
    baseline = timed(substring_scan, messages)

    def p(times: list[float], q: float) -> float:
        return times[min(len(times) - 1, int(len(times) * q))] * 1e6

    print(f"{args.rules:,} keyword rules, {len(messages):,} messages of ~1 KB; rules compiled in {compile_s:.2f} s")
    print(f"{'':22}{'p50':>10}{'p99':>10}{'mean':>10}")
    for name, times in (("compiled classifier", compiled), ("plain substring scan", baseline)):
        print(f"{name:22}{p(times, 0.5):>7.0f} µs{p(times, 0.99):>7.0f} µs{statistics.mean(times) * 1e6:>7.0f} µs")
    print(f"p99 ratio substring/compiled: {p(baseline, 0.99) / p(compiled, 0.99):.1f}x")
    ok = p(compiled, 0.99) < 1000
    print(f"  [{'ok' if ok else 'MISSED'}] p99 < 1 ms per message with {args.rules:,} rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
