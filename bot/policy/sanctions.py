"""Sanctions in the pure core: durations, rate caps, what is in force, and the escalation ladder.

Article 8: by severity, a warning, a posting restriction, a suspension of updates, up to closing
the account. Cases are append-only records; what is in force is derived from them and a clock
that the caller passes in.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

MINUTE_MS = 60_000
UNIT_MS = {"m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": 24 * 60 * MINUTE_MS, "w": 7 * 24 * 60 * MINUTE_MS}
PERMANENT_WORDS = frozenset({"permanent", "永久"})
# The longest timed measure, and the longest rate period: 520 weeks (about ten years). Longer than
# that is "permanent" in all but name, and a bound keeps every expiry a date that the store, the
# gate's messages and the exports can write (999999w overflowed datetime, so the gate answered 500).
MAX_DURATION_MS = 520 * UNIT_MS["w"]
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_RATE_RE = re.compile(r"^([1-9][0-9]{0,3})/([1-9][0-9]{0,5})?([mhdw])$")


class SanctionKind(enum.StrEnum):
    WARN = "warn"
    RESTRICT = "restrict"
    SUSPEND = "suspend"
    CLOSE = "close"


SEVERITY = {SanctionKind.WARN: 0, SanctionKind.RESTRICT: 1, SanctionKind.SUSPEND: 2, SanctionKind.CLOSE: 3}


def parse_duration(text: str) -> int | None:
    """``30m``, ``12h``, ``7d``, ``4w`` → milliseconds; ``permanent``/``永久`` → None.

    Raises ValueError for anything else.
    """
    text = text.strip().lower()
    if text in PERMANENT_WORDS:
        return None
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    ms = int(match.group(1)) * UNIT_MS[match.group(2)]
    if ms > MAX_DURATION_MS:
        raise ValueError(f"longer than {format_duration(MAX_DURATION_MS)}: {text!r}")
    return ms


def format_duration(ms: int | None) -> str:
    if ms is None:
        return "permanent"
    for unit in ("w", "d", "h", "m"):
        if ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]}{unit}"
    return f"{ms // MINUTE_MS}m"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` posts per ``period_ms``."""

    count: int
    period_ms: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """``3/1h``, ``10/d`` (a bare unit means one of it)."""
        match = _RATE_RE.match(text.strip().lower())
        if not match:
            raise ValueError(f"not a rate: {text!r}")
        period_ms = int(match.group(2) or 1) * UNIT_MS[match.group(3)]
        if period_ms > MAX_DURATION_MS:
            raise ValueError(f"period longer than {format_duration(MAX_DURATION_MS)}: {text!r}")
        return cls(int(match.group(1)), period_ms)

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.period_ms)}"


@dataclass(frozen=True, slots=True)
class Measure:
    """One case as far as enforcement is concerned."""

    case_id: int
    kind: SanctionKind
    expires_at: int | None  # ms; None: until lifted
    rate: Rate | None = None

    def in_force(self, now: int) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass
class ActiveSanctions:
    """The measures in force on one account, and its recent posts when a rate cap applies."""

    measures: dict[int, Measure] = field(default_factory=dict)
    recent_posts: list[int] = field(default_factory=list)
    # The event IDs of the posts in ``recent_posts`` (with their times): a post seen again (a
    # replayed sync batch, a gap read back over, a retried gate callback) is not counted twice.
    counted: dict[str, int] = field(default_factory=dict)

    def strongest(self, now: int) -> list[Measure]:
        """The measures in force, strictest first, in an order that does not depend on the order
        they were added in: by kind, a full restriction before a rate cap, the longest first."""
        return sorted(
            (m for m in self.measures.values() if m.in_force(now) and m.kind is not SanctionKind.WARN),
            key=strictness,
            reverse=True,
        )


def strictness(measure: Measure) -> tuple[int, bool, float, int]:
    """A total order on measures: the larger, the stricter (ties broken by the older case)."""
    expires = float("inf") if measure.expires_at is None else measure.expires_at
    return SEVERITY[measure.kind], measure.rate is None, expires, -measure.case_id


@dataclass(frozen=True)
class LadderRule:
    after: int
    of: SanctionKind
    within_ms: int
    then: SanctionKind
    duration_ms: int | None = None


@dataclass(frozen=True)
class CaseFact:
    """What the ladder needs to know about a past case."""

    case_id: int
    kind: SanctionKind
    created_at: int
    caused_by: tuple[int, ...] = ()
    # Lifted, or its appeal was granted: the case stands as a record but was withdrawn, so it
    # must not push the account up the ladder.
    withdrawn: bool = False


@dataclass(frozen=True)
class LadderStep:
    rule: LadderRule
    caused_by: tuple[int, ...]


def ladder_step(rules: list[LadderRule], history: list[CaseFact], new_kind: SanctionKind, now: int) -> LadderStep | None:
    """The escalation the newest case of ``new_kind`` triggers, if any.

    A case counts toward a rule once: cases already named as the cause of an earlier step are
    spent, so a fourth warning after an escalation starts a new count instead of escalating again.
    Withdrawn cases (lifted, or granted on appeal) never count; expired ones were served and do.
    """
    spent = {cause for fact in history for cause in fact.caused_by}
    for rule in rules:
        if rule.of is not new_kind:
            continue
        counted = tuple(
            fact.case_id
            for fact in history
            if fact.kind is rule.of and not fact.withdrawn and fact.case_id not in spent
            and now - fact.created_at <= rule.within_ms
        )
        if len(counted) >= rule.after:
            return LadderStep(rule, counted)
    return None
