"""Current-affairs news (article 7 ¶2): what counts as news, and what counts as a repost.

Rules come from public_accounts.rules_file, by default bot/shipped/rules.yaml, and are compiled
once. Keywords, markers and domains are normalised when they load exactly as a text is before it
is matched (bot.policy.normalize: NFKC width, case, invisible characters, traditional script,
confusables, URL forms), so no spelling a reader does not notice gets past them. Every keyword
of every rule goes into one Aho–Corasick automaton (ahocorasick-rs; bench/news.py measures it
against pyahocorasick and the hand-written automaton this module had), so a message is scanned
once however many keywords there are.
Regular expressions see the raw text and its light folding (see bot.policy.normalize).
Classification is pure.
"""

from __future__ import annotations

import hashlib
import re
from itertools import chain as _chain
from dataclasses import dataclass, field
from typing import Any, Iterable

import ahocorasick_rs

from bot.policy.normalize import (
    domain_suffixes, fold, fold_light_variants, fold_variants, has_domain, link_hosts, normalise_domain, url_text,
    warm_up,
)
from bot.policy.prefilter import may_match, required_literals

DAY_MS = 24 * 3600 * 1000


class RulesError(ValueError):
    """The rules file is not valid; the message names the rule and the problem."""


class KeywordAutomaton:
    """All keywords found in one pass over the text: the Rust ``aho-corasick`` crate through
    ``ahocorasick-rs``, leftmost-longest. (pyahocorasick searches a node's children one by one: with
    thousands of Chinese keywords the root has thousands of children and a 1 KB text takes
    milliseconds; bench/news.py measures the three.)"""

    def __init__(self, keywords: Iterable[str]) -> None:
        # A DFA: the largest and slowest to build (~0.1 s for 10,000 keywords), the fastest to
        # search, and rules are compiled once.
        self._automaton = ahocorasick_rs.AhoCorasick(
            list(keywords), matchkind=ahocorasick_rs.MatchKind.LeftmostLongest,
            implementation=ahocorasick_rs.Implementation.DFA,
        )

    def find(self, text: str) -> str | None:
        """The keyword that starts first in the text; of those starting there, the longest."""
        matches = self._automaton.find_matches_as_strings(text, overlapping=False)
        return matches[0] if matches else None

    def find_at(self, text: str) -> tuple[str, int] | None:
        """As ``find``, with the index where the keyword starts: its first occurrence, since no
        match starts before the leftmost one. (``find_matches_as_indexes`` converts byte offsets
        to character offsets, which costs more than this search.)"""
        keyword = self.find(text)
        return None if keyword is None else (keyword, text.find(keyword))


@dataclass(frozen=True)
class NewsMatch:
    rule_id: str
    repost: bool


@dataclass
class NewsRules:
    keyword_rules: dict[str, str] = field(default_factory=dict)  # keyword (folded) -> rule id
    keywords: KeywordAutomaton | None = None
    regex_rules: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)
    # For each regex rule: strings one of which any match contains (bot.policy.prefilter), or None.
    regex_literals: list[frozenset[str] | None] = field(default_factory=list)
    domain_rules: dict[str, str] = field(default_factory=dict)  # domain (normalised) -> rule id
    source_domains: frozenset[str] = frozenset()
    markers: tuple[str, ...] = ()
    quote_replies: bool = True
    identical_ms: int = 7 * DAY_MS
    # The mapping these rules were compiled from: a replica (bot.replica) receives it and compiles
    # the same rules, since compiled automata and regexes do not travel.
    source: Any = None
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
        warm_up()  # the normalisation tables (~1 s, once per process): at load, not on a first message
        rules = cls(source=data)
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
                folded = fold(keyword)
                if not folded:
                    raise RulesError(f"news rule {rule_id!r}: keyword {keyword!r} is only invisible characters")
                rules.keyword_rules.setdefault(folded, rule_id)
            for pattern in _strings(rule, "regex", rule_id):
                try:
                    compiled = re.compile(pattern, re.IGNORECASE)
                    rules.regex_rules.append((rule_id, compiled))
                    rules.regex_literals.append(required_literals(compiled))
                except re.error as exc:
                    raise RulesError(f"news rule {rule_id!r}: {pattern!r} is not a valid regular expression ({exc})") from None
            for domain in _strings(rule, "domains", rule_id):
                normalised = normalise_domain(domain)
                if "." not in normalised.strip("."):
                    raise RulesError(f"news rule {rule_id!r}: {domain!r} is not a domain name")
                rules.domain_rules.setdefault(normalised, rule_id)
        if rules.keyword_rules:
            rules.keywords = KeywordAutomaton(rules.keyword_rules)
        repost = data.get("repost") or {}
        if not isinstance(repost, dict) or set(repost) - {"sources", "markers", "quote_replies", "identical_days"}:
            raise RulesError("repost takes sources, markers, quote_replies and identical_days")
        rules.source_domains = frozenset(normalise_domain(d) for d in _strings(repost, "sources", "repost"))
        rules.markers = tuple(m for m in (fold(m) for m in _strings(repost, "markers", "repost")) if m)
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

    def classify(self, body: str, *, quotes_a_reply: bool = False, seen_from_other: bool = False,
                 quoted: str | None = None) -> NewsMatch | None:
        """The news rule the text matches, and whether it is a repost; None if it is not news.

        ``body`` is what the event shows as its own; ``quoted`` what a reply quotes of another
        message (by default the ``quoted`` that bot.policy.text's ``ShownText`` carries). A repost
        is: text another account sent in scope (``seen_from_other``); a reply whose quote holds
        the same news (the keyword, the regex's match or the domain that matched); a marker
        anywhere in the text ("RT @x: ...", "…（来源：新华网）"); or a link to a source.
        """
        if quoted is None:
            quoted = getattr(body, "quoted", None)
        found = self._match(body)
        if found is None:
            return None
        rule_id, kind, needle, _before = found
        repost = (
            seen_from_other
            or (self.quote_replies and quotes_a_reply and (quoted is None or self._quotes(kind, needle, quoted)))
            # A marker is the account's declaration that it reposts, kept in the records with the
            # message. It counts wherever it stands: sources are named after the news as often as
            # before it ("…（来源：新华网）"), and no placement rule could tell a false declaration
            # ("RT @me <own scoop>") from a true one; a false one is the account's to answer for.
            or (bool(self.markers) and any(m in fold(body) for m in self.markers))
            or self._names_source(link_hosts(body), body)
        )
        return NewsMatch(rule_id, repost)

    def _match(self, body: str) -> tuple[str, str, str, str] | None:
        """(rule id, kind, what matched, the text before it) for the first rule kind that matches:
        keywords, then regular expressions, then link domains. Each text is read in every reading
        ``fold_variants`` gives."""
        if self.keywords is not None:
            for text in fold_variants(body):
                hit = self.keywords.find_at(text)
                if hit is not None:
                    return self.keyword_rules[hit[0]], "keyword", hit[0], text[:hit[1]]
        if self.regex_rules:
            texts = [body]
            for text in _chain(texts, fold_light_variants(body)):  # the second reading only if need be
                lowered = text.lower()
                for (rid, pattern), literals in zip(self.regex_rules, self.regex_literals):
                    if not may_match(literals, lowered):
                        continue  # holds none of the text every match needs
                    hit = pattern.search(text)
                    if hit is not None:
                        return rid, "regex", hit.group(0), text[:hit.start()]
        if self.domain_rules:
            found = self._domain_rule(link_hosts(body), body)
            if found is not None:
                rid, domain = found
                shown = url_text(body)
                at = shown.find(domain)
                # (A host found only in its xn-- form: no place to put a marker before; none counts.)
                return rid, "domain", domain, shown[:at] if at > 0 else ""
        return None

    def _quotes(self, kind: str, needle: str, quoted: str) -> bool:
        """Whether the quoted text holds the same news: the keyword, the regex's match, the domain."""
        if kind == "keyword":
            return any(needle in text for text in fold_variants(quoted))
        if kind == "regex":
            needle = fold(needle)
            return any(needle in fold(text) for text in _chain([quoted], fold_light_variants(quoted)))
        if not needle.isascii():
            return has_domain(url_text(quoted), needle)
        return any(d == needle for h in link_hosts(quoted) for d in domain_suffixes(h))

    def _domain_rule(self, hosts: list[str], body: str) -> tuple[str, str] | None:
        rules = self.domain_rules
        if len(hosts) > _MANY_HOSTS:
            found = _suffix_in(hosts, rules)
            found = None if found is None else (rules[found], found)
        else:
            found = next(((rules[d], d) for h in hosts for d in domain_suffixes(h) if d in rules), None)
        if found is None and any(not d.isascii() for d in rules):
            # A host in another script (新华网.中国) has no ASCII edges to find it by: search for it.
            shown = url_text(body)
            found = next(((rid, d) for d, rid in rules.items() if not d.isascii() and has_domain(shown, d)), None)
        return found

    def _names_source(self, hosts: list[str], body: str) -> bool:
        sources = self.source_domains
        if len(hosts) > _MANY_HOSTS:
            if _suffix_in(hosts, sources) is not None:
                return True
        elif any(d in sources for h in hosts for d in domain_suffixes(h)):
            return True
        return any(has_domain(url_text(body), d) for d in sources if not d.isascii())


_MANY_HOSTS = 64


def _suffix_in(hosts: list[str], domains: Iterable[str]) -> str | None:
    """The first domain of ``domains`` that one of many hosts is or ends with, searched in C over
    the hosts joined by lines (a Python loop over 10,000 hosts of a hostile text takes ~20 ms)."""
    ascii_domains = sorted((d for d in domains if d.isascii()), key=len, reverse=True)
    if not ascii_domains:
        return None
    pattern = re.compile(r"(?:^|\.)(" + "|".join(map(re.escape, ascii_domains)) + r")$", re.MULTILINE)
    found = pattern.search("\n".join(hosts))
    return None if found is None else found.group(1)


def _strings(mapping: dict[str, Any], key: str, owner: str) -> list[str]:
    values = mapping.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise RulesError(f"{owner}: {key} must be a list of non-empty strings")
    return values


def fingerprint(body: str) -> str:
    """Identical after normalising (width, case, invisible characters, script, confusables,
    whitespace): a copy respelled to look new is still the same text."""
    return hashlib.sha256(fold(body).encode("utf-8")).hexdigest()[:32]
