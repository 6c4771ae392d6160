"""Current-affairs news (article 7 ¶2): what counts as news, and what counts as a repost.

Rules come from config/rules.yaml and are compiled once: every keyword of every rule goes into
one Aho–Corasick automaton, so a message is scanned once however many keywords there are.
Classification is pure.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

URL_HOST = re.compile(r"https?://([^/\s?#:]+)", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")
DAY_MS = 24 * 3600 * 1000


class RulesError(ValueError):
    """The rules file is not valid; the message names the rule and the problem."""


class KeywordAutomaton:
    """Aho–Corasick: all keywords found in one pass over the text, one dict step per character.

    (A regular expression built from the keywords is no good here: Python's engine tries the
    alternatives of a branch one after another, thousands of them at every position.)
    """

    def __init__(self, keywords: Iterable[str]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._out: list[str | None] = [None]  # the longest keyword ending in this state
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
        """The keyword found first; of those starting where it starts, the longest."""
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


@dataclass(frozen=True)
class NewsMatch:
    rule_id: str
    repost: bool


@dataclass
class NewsRules:
    keyword_rules: dict[str, str] = field(default_factory=dict)  # keyword (casefolded) -> rule id
    keywords: KeywordAutomaton | None = None
    regex_rules: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)
    domain_rules: dict[str, str] = field(default_factory=dict)  # domain -> rule id
    source_domains: frozenset[str] = frozenset()
    markers: tuple[str, ...] = ()
    quote_replies: bool = True
    identical_ms: int = 7 * DAY_MS
    direct_chats: bool = False
    invite_only: bool = False

    @classmethod
    def from_mapping(cls, data: Any) -> "NewsRules":
        """Validate and compile; RulesError names the first problem."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RulesError("the rules file must hold a mapping with 'news', 'repost' and 'scope'")
        unknown = set(data) - {"news", "repost", "scope"}
        if unknown:
            raise RulesError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        rules = cls()
        seen: set[str] = set()
        for index, rule in enumerate(data.get("news") or []):
            if not isinstance(rule, dict) or not isinstance(rule.get("id"), str) or not rule["id"].strip():
                raise RulesError(f"news rule #{index + 1} needs an id")
            rule_id = rule["id"]
            if rule_id in seen:
                raise RulesError(f"news rule {rule_id!r} is declared twice")
            seen.add(rule_id)
            extra = set(rule) - {"id", "keywords", "regex", "domains"}
            if extra or len(rule) < 2:
                raise RulesError(f"news rule {rule_id!r} needs keywords, regex or domains (and nothing else)")
            for keyword in _strings(rule, "keywords", rule_id):
                rules.keyword_rules.setdefault(keyword.casefold(), rule_id)
            for pattern in _strings(rule, "regex", rule_id):
                try:
                    rules.regex_rules.append((rule_id, re.compile(pattern, re.IGNORECASE)))
                except re.error as exc:
                    raise RulesError(f"news rule {rule_id!r}: {pattern!r} is not a valid regular expression ({exc})") from None
            for domain in _strings(rule, "domains", rule_id):
                rules.domain_rules.setdefault(domain.casefold().lstrip("."), rule_id)
        if rules.keyword_rules:
            rules.keywords = KeywordAutomaton(rules.keyword_rules)
        repost = data.get("repost") or {}
        if not isinstance(repost, dict) or set(repost) - {"sources", "markers", "quote_replies", "identical_days"}:
            raise RulesError("repost takes sources, markers, quote_replies and identical_days")
        rules.source_domains = frozenset(d.casefold().lstrip(".") for d in _strings(repost, "sources", "repost"))
        rules.markers = tuple(m.casefold() for m in _strings(repost, "markers", "repost"))
        rules.quote_replies = bool(repost.get("quote_replies", True))
        days = repost.get("identical_days", 7)
        if not isinstance(days, int) or not 0 <= days <= 365:
            raise RulesError("repost.identical_days must be a whole number of days from 0 to 365")
        rules.identical_ms = days * DAY_MS
        scope = data.get("scope") or {}
        if not isinstance(scope, dict) or set(scope) - {"direct_chats", "invite_only"}:
            raise RulesError("scope takes direct_chats and invite_only")
        rules.direct_chats = bool(scope.get("direct_chats", False))
        rules.invite_only = bool(scope.get("invite_only", False))
        return rules

    def classify(self, body: str, *, quotes_a_reply: bool = False, seen_from_other: bool = False) -> NewsMatch | None:
        """The news rule the text matches, and whether it is a repost; None if it is not news."""
        text = body.casefold()
        rule_id = None
        hosts = [h.casefold() for h in URL_HOST.findall(body)]
        if self.keywords is not None:
            found = self.keywords.find(text)
            if found is not None:
                rule_id = self.keyword_rules[found]
        if rule_id is None:
            rule_id = next((rid for rid, pattern in self.regex_rules if pattern.search(body)), None)
        if rule_id is None:
            rule_id = next((self.domain_rules[d] for h in hosts for d in _suffixes(h) if d in self.domain_rules), None)
        if rule_id is None:
            return None
        repost = (
            seen_from_other
            or (self.quote_replies and quotes_a_reply)
            or any(d in self.source_domains for h in hosts for d in _suffixes(h))
            or any(marker in text for marker in self.markers)
        )
        return NewsMatch(rule_id, repost)


def _strings(mapping: dict[str, Any], key: str, owner: str) -> list[str]:
    values = mapping.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise RulesError(f"{owner}: {key} must be a list of non-empty strings")
    return values


def _suffixes(host: str) -> Iterable[str]:
    parts = host.split(".")
    return (".".join(parts[i:]) for i in range(len(parts) - 1))


def message_text(content: Any) -> tuple[str | None, bool]:
    """A message's text, and whether it is a reply that quotes the message it answers."""
    if not isinstance(content, dict):
        return None, False
    body = content.get("body")
    if not isinstance(body, str):
        return None, False
    relates = content.get("m.relates_to")
    return body, body.startswith("> ") and isinstance(relates, dict) and "m.in_reply_to" in relates


def fingerprint(body: str) -> str:
    """Identical after normalising whitespace and case."""
    return hashlib.sha256(WHITESPACE.sub(" ", body.strip()).casefold().encode("utf-8")).hexdigest()[:32]
