"""Benchmark: judging a 1 KB message against 10,000 news rules, the whole text pipeline.

    python bench/news.py [--rules 10000] [--messages 3000] [--clock wall|cpu] [--repeat 5]

Each message is an ``m.room.message`` content of about 1 KB of text (English, Chinese, or both)
with a ``formatted_body`` carrying the same text as HTML. The figure is the whole pipeline the
gate runs: extraction (``event_text``, HTML parse included), normalisation (``fold``), matching
(``NewsRules.classify``) and the repost fingerprint. Half of the messages hold a keyword near the
end (the worst case for an early exit), some in traditional script, fullwidth or with a zero-width
space inside; half none.

Measured in the same run, on the same messages:
- matchers alone, on the same folded text: ahocorasick-rs (what news.py uses), pyahocorasick,
  and the hand-written Aho–Corasick automaton news.py had before (kept below as the baseline);
- the previous pipeline: ``body`` only, ``casefold``, the hand-written automaton (what the gate
  did before issue 12; it misses every disguised keyword, so it is faster and wrong).
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.policy.news import NewsRules, fingerprint  # noqa: E402
from bot.policy.normalize import fold  # noqa: E402
from bot.policy.text import event_text  # noqa: E402

GOAL_US = 200


class HandWrittenAutomaton:
    """The automaton news.py had before pyahocorasick: one dict step per character, in Python."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._out: list[str | None] = [None]
        self.longest = 0
        for keyword in keywords:
            self.longest = max(self.longest, len(keyword))
            state = 0
            for char in keyword:
                nxt = self._goto[state].get(char)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[state][char] = nxt
                    self._goto.append({})
                    self._out.append(None)
                state = nxt
            self._out[state] = keyword
        self._fail = [0] * len(self._goto)
        queue = deque(self._goto[0].values())
        while queue:
            state = queue.popleft()
            for char, nxt in self._goto[state].items():
                queue.append(nxt)
                fallback = self._fail[state]
                while fallback and char not in self._goto[fallback]:
                    fallback = self._fail[fallback]
                self._fail[nxt] = self._goto[fallback].get(char, 0)
                if self._out[nxt] is None:
                    self._out[nxt] = self._out[self._fail[nxt]]

    def find(self, text: str) -> str | None:
        goto, fail, out = self._goto, self._fail, self._out
        state, best, best_start, stop = 0, None, 0, len(text)
        for index, char in enumerate(text):
            if index > stop:
                break
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            found = out[state]
            if found is not None:
                start = index - len(found) + 1
                if best is None:
                    best, best_start, stop = found, start, index + self.longest
                elif start <= best_start and len(found) > len(best):
                    best, best_start = found, start
        return best


def make_rules(count: int, rng: random.Random) -> tuple[dict, list[str]]:
    keywords = set()
    while len(keywords) < count:
        if rng.random() < 0.5:  # Chinese keywords of 2-4 characters
            word = "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4)))
        else:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 12)))
        keywords.add(word)
    words = sorted(keywords)
    rules = [{"id": f"rule-{i}", "keywords": [word]} for i, word in enumerate(words)]
    rules.append({"id": "agencies", "domains": ["news.cn", "xinhuanet.com"]})
    rules.append({"id": "announcements", "regex": ["(?:发布|印发).{0,10}(?:通知|意见|决定|条例)"]})
    return {"news": rules, "repost": {"sources": ["news.cn"], "markers": ["转载自", "RT @"]}}, words


DISGUISES: list[Callable[[str], str]] = [
    lambda k: k,
    lambda k: k.upper(),
    lambda k: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in k),  # fullwidth
    lambda k: k[0] + "\u200b" + k[1:],  # zero-width space inside
    lambda k: k.replace("国", "國").replace("务", "務").replace("发", "發"),
]


def make_messages(count: int, keywords: list[str], rng: random.Random) -> list[dict]:
    messages = []
    for i in range(count):
        kind = i % 3
        if kind == 0:  # English
            words = [" ".join("".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(3, 9)))
                              for _ in range(rng.randint(5, 12))) + "." for _ in range(30)]
            filler = " ".join(words)[:1000]
        elif kind == 1:  # Chinese: ~330 characters are ~1 KB in UTF-8
            filler = "".join(chr(rng.randint(0x4E00, 0x9FA5)) if rng.random() < 0.95 else "，" for _ in range(330))
        else:  # both
            filler = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                              for _ in range(60))[:500] + "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(160))
        if i % 2:
            keyword = rng.choice(DISGUISES)(rng.choice(keywords))
            cut = len(filler) - 12
            filler = filler[:cut] + " " + keyword + " " + filler[cut:]
        sentences = filler.split(".")
        html = "".join(f"<p>{s[:20]}<b>{s[20:40]}</b>{s[40:]}</p>" for s in sentences if s)
        messages.append({"msgtype": "m.text", "body": filler, "format": "org.matrix.custom.html",
                         "formatted_body": html})
    return messages


CLOCK = time.perf_counter


def timed(fn: Callable[[dict], object], messages: list, repeat: int = 1) -> list[float]:
    """Each message's time, the least of ``repeat`` passes over all the messages: on a shared
    machine one run also measures whoever held the CPU meanwhile; the least of passes made at
    different moments is the work itself."""
    best = [float("inf")] * len(messages)
    for _ in range(repeat):
        for index, message in enumerate(messages):
            start = CLOCK()
            fn(message)
            best[index] = min(best[index], CLOCK() - start)
    return sorted(best)


def p(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(len(times) * q))] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=3_000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this thread's CPU time, which leaves out the time other processes "
                             "hold the CPU (on a shared machine the wall-clock p99 measures them)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="time every message in this many passes and keep its least (1: single runs)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    rng = random.Random(7)
    data, keywords = make_rules(args.rules, rng)
    started = time.perf_counter()
    rules = NewsRules.from_mapping(data)
    compile_s = time.perf_counter() - started  # includes building the normalisation tables once
    messages = make_messages(args.messages, keywords, rng)
    size = statistics.mean(len(m["body"].encode()) for m in messages)

    def pipeline(content: dict) -> object:
        text, quotes = event_text("m.room.message", content)
        assert text is not None
        match = rules.classify(text, quotes_a_reply=quotes)
        fingerprint(text)  # the repost check of decide() and remember_text
        return match

    hand = HandWrittenAutomaton(rules.keyword_rules)
    import ahocorasick  # pyahocorasick, in the dev extra

    pyac = ahocorasick.Automaton()
    for keyword in rules.keyword_rules:
        pyac.add_word(keyword, keyword)
    pyac.make_automaton()

    def pyac_first(text: str) -> object:
        return next(pyac.iter(text), None)

    folded = [fold(event_text("m.room.message", m)[0] or "") for m in messages]

    # The two automata must agree before their speed means anything, and every planted keyword,
    # however disguised, must be found.
    assert all(hand.find(t) == rules.keywords.find(t) for t in folded[:300])
    missed = sum(1 for i, m in enumerate(messages) if i % 2 and pipeline(m) is None)
    assert missed == 0, f"{missed} disguised keywords missed"

    old_rules = HandWrittenAutomaton(k.casefold() for k in keywords)

    def previous(content: dict) -> object:
        return old_rules.find(content["body"].casefold())

    # Each clock below would otherwise see the lru_cache of the one before: clear it.
    from bot.policy import normalize

    def fresh(fn):
        def run(arg):
            normalize._fold.cache_clear()
            normalize._url_text.cache_clear()
            return fn(arg)
        return run

    timed(fresh(pipeline), messages[:300])  # warm-up
    n = args.repeat
    whole = timed(fresh(pipeline), messages, n)
    whole_once = timed(fresh(pipeline), messages)
    before = timed(previous, messages, n)
    ac_lib = timed(rules.keywords.find, folded, n)
    ac_py = timed(pyac_first, folded, n)
    ac_hand = timed(hand.find, folded, n)

    print(f"{args.rules:,} keyword rules (+ a domain and a regex rule), {len(messages):,} messages of "
          f"{size:,.0f} bytes mean (+ HTML); rules compiled in {compile_s:.2f} s; {args.clock} clock")
    print(f"each message's figure is the least of {n} passes, except on the single-run line")
    print(f"{'':46}{'p50':>10}{'p99':>10}{'mean':>10}")
    for name, times in (
        ("whole pipeline (extract+HTML+fold+match+fp)", whole),
        ("  the same, single runs", whole_once),
        ("previous pipeline (body, casefold, Python AC)", before),
        ("matching only: ahocorasick-rs (in use)", ac_lib),
        ("matching only: pyahocorasick (first match)", ac_py),
        ("matching only: hand-written automaton", ac_hand),
    ):
        print(f"{name:46}{p(times, 0.5):>7.0f} µs{p(times, 0.99):>7.0f} µs{statistics.mean(times) * 1e6:>7.0f} µs")
    print(f"matching p99 ratios against ahocorasick-rs: hand-written {p(ac_hand, 0.99) / p(ac_lib, 0.99):.1f}x, "
          f"pyahocorasick {p(ac_py, 0.99) / p(ac_lib, 0.99):.1f}x")
    ok = p(whole, 0.99) < GOAL_US
    print(f"  [{'ok' if ok else 'MISSED'}] whole pipeline p99 < {GOAL_US} µs per 1 KB message with {args.rules:,} rules"
          f" (least of {n} passes, {args.clock} clock)")
    print(f"whole pipeline / previous pipeline, p99: {p(whole, 0.99) / p(before, 0.99):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
