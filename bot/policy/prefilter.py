"""A cheap test that a regular expression cannot match: the literals every match must contain.

Python's ``re`` scans a 1 KB text in about 5 µs for a pattern that starts with an alternation or
carries IGNORECASE, even when the text holds none of its letters; the gate runs the news rules'
patterns on every message, in two readings. ``required_literals`` reads the compiled pattern's
parse tree once, when the rules load, and finds a set of strings one of which every match must
contain (``(?:发布|印发).{0,10}通知`` needs 发布 or 印发). A text that holds none of them is skipped
with C-speed substring tests. Patterns whose required text cannot be found safely get no
prefilter and are always searched: the prefilter may only ever skip work, never a match.
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python 3.11+: the parser lives here; sre_parse is its deprecated alias
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

_LITERAL = sre_parse.LITERAL
_SUBPATTERN = sre_parse.SUBPATTERN
_BRANCH = sre_parse.BRANCH
_REPEATS = (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None))
_ATOMIC = getattr(sre_parse, "ATOMIC_GROUP", None)


def _caseless_safe(text: str) -> bool:
    """Literal text whose lower case is the same under Python's str.lower and re's IGNORECASE."""
    return all(c.isascii() or c.lower() == c.upper() for c in text)


def _sequence(items: Any) -> frozenset[str] | None:
    """Strings one of which any match of this sequence must contain; None if none is known."""
    run: list[str] = []
    best: frozenset[str] | None = None
    for op, av in items:
        if op is _LITERAL:
            run.append(chr(av))
            continue
        if run:
            best = _prefer(best, frozenset({"".join(run)}))
            run = []
        if op is _SUBPATTERN:
            best = _prefer(best, _sequence(av[-1]))
        elif op is _ATOMIC and _ATOMIC is not None:
            best = _prefer(best, _sequence(av))
        elif op is _BRANCH:
            options = [_sequence(branch) for branch in av[1]]
            if options and all(options):
                best = _prefer(best, frozenset().union(*options))  # type: ignore[arg-type]
        elif op in _REPEATS and op is not None and av[0] >= 1:
            best = _prefer(best, _sequence(av[2]))
    if run:
        best = _prefer(best, frozenset({"".join(run)}))
    return best


def _prefer(current: frozenset[str] | None, candidate: frozenset[str] | None) -> frozenset[str] | None:
    """Of two requirements (both must hold), keep the more selective: fewer, longer strings."""
    if not candidate or any(not s for s in candidate):
        return current
    if current is None:
        return candidate
    score = lambda lits: min(len(s) for s in lits) - len(lits)  # noqa: E731
    return candidate if score(candidate) > score(current) else current


def required_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Lower-cased strings one of which every match of ``pattern`` contains, or None.

    Only for patterns compiled with IGNORECASE (as the news rules are): the literals are compared
    against ``text.lower()``, so a literal with a non-ASCII cased letter, whose folding ``re`` may
    treat otherwise than ``str.lower``, disables the prefilter for the pattern. (``re`` also lets
    ASCII ``s`` and ``k`` match ``ſ`` and ``K``; the news rules search the folded reading too, where
    NFKD has turned those into ``s`` and ``k``.)
    """
    if not pattern.flags & re.IGNORECASE:
        return None
    try:
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # a pattern re compiled but this parser does not take: no prefilter
        return None
    found = _sequence(tree)
    if not found or not all(_caseless_safe(s) for s in found):
        return None
    return frozenset(s.lower() for s in found)


def may_match(literals: frozenset[str] | None, lowered_text: str) -> bool:
    """False only when the text (already lower-cased) holds none of the required literals."""
    return literals is None or any(literal in lowered_text for literal in literals)
