"""Gate metrics (and the sync loop's) kept as plain integers on the hot path, turned into Prometheus
families only when /metrics is scraped. prometheus_client's own Counter and Histogram take a lock and look up label
children on every call, which is most of what a gate decision costs."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class GateMetrics(Collector):
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self._bucket_counts = [0] * (len(BUCKETS) + 1)
        self._latency_sum = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def include(self, collector: Collector) -> None:
        """Show another part's metrics at the gate's /metrics (supervised loops, sync gaps)."""
        self.registry.register(collector)

    def count(self, callback: str, outcome: str) -> None:
        self.requests[callback, outcome] += 1

    def observe(self, seconds: float) -> None:
        self._bucket_counts[bisect_left(BUCKETS, seconds)] += 1
        self._latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("bot_gate_requests", "Gate requests by callback and outcome", labels=["callback", "outcome"])
        for (callback, outcome), value in sorted(self.requests.items()):
            requests.add_metric([callback, outcome], value)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self._bucket_counts):
            cumulative += count
            buckets.append((bound, cumulative))
        latency = HistogramMetricFamily("bot_gate_decision_seconds", "Time from request read to answer, per gated callback")
        latency.add_metric([], buckets, self._latency_sum)
        yield latency


@dataclass(eq=False)  # registered by identity
class SyncGaps(Collector):
    """Limited syncs back-filled with /messages (bot.matrix.sync), counted."""

    gaps: int = 0  # limited timelines read back
    recovered: int = 0  # events read back and handled
    truncated: int = 0  # gaps longer than the bound (or unreadable)
    dropped: int = 0  # events seen beyond the bound, not handled

    def collect(self) -> Iterator[Metric]:
        for name, value, text in (
            ("rulesbot_sync_gaps", self.gaps, "Limited sync timelines back-filled with /messages"),
            ("rulesbot_sync_gap_events_recovered", self.recovered, "Events read back from gaps and handled"),
            ("rulesbot_sync_gaps_truncated", self.truncated, "Gaps longer than sync.gap_limit, or unreadable"),
            ("rulesbot_sync_gap_events_dropped", self.dropped, "Events seen beyond sync.gap_limit, not handled"),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
