"""Supervised background work: every long-running loop of the service runs under one supervisor.

A loop that raises is logged with its traceback, backs off exponentially (with a cap) and goes on;
``CancelledError`` is the only way to end one. Each loop keeps a small record (consecutive
failures, last error, last success) that ``/health`` reads: a loop that keeps failing, or a
periodic one that has not succeeded for several of its periods, makes the service "degraded".

Two shapes of loop:
- ``every``: one pass (``step``) run periodically; the supervisor owns the sleeping, so a pass
  that raises is tried again after the back-off, and a pass that returns counts as a success.
  A ``paced`` step returns the seconds until its next pass (expiry knows when the next measure ends).
- ``forever``: a loop with its own rhythm (the sync loop, a queue worker); it receives its
  ``LoopStatus`` to report successes and the errors it survives itself, and is started again if
  it raises.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

FAILING_AFTER = 3  # consecutive failures that make a loop "failing"
STALE_PERIODS = 3  # a periodic loop with no success for this many periods is "failing" too
MAX_BACKOFF_S = 300.0

# Error text can carry a URL with a token or a password: these never reach /health.
_SECRETS = re.compile(r"(access_token=|Bearer\s+|password[\"']?\s*[:=]\s*[\"']?)[^\s&\"',]+", re.IGNORECASE)


def describe_error(exc: BaseException, limit: int = 160) -> str:
    """``Type: short message``, with anything that looks like a credential masked."""
    message = _SECRETS.sub(r"\1***", str(exc)).replace("\n", " ").strip()
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


@dataclass
class LoopStatus:
    """What one loop has done lately. ``ok`` and ``failed`` are all a loop body needs to call."""

    name: str
    period_s: float | None = None  # expected time between successes; None: no staleness check
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    failures: int = 0  # consecutive
    failures_total: int = 0
    last_error: str | None = None
    last_error_class: str | None = None
    last_success: float | None = None  # wall clock, seconds
    finished: bool = False
    _since: float = field(default=0.0, repr=False)  # monotonic: start, or the last success

    def __post_init__(self) -> None:
        self._since = self.monotonic()

    def ok(self) -> None:
        self.failures = 0
        self.last_success = self.wall()
        self._since = self.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.failures_total += 1
        self.last_error = describe_error(exc)
        self.last_error_class = type(exc).__name__

    def failing(self) -> bool:
        if self.finished:
            return False
        if self.failures >= FAILING_AFTER:
            return True
        return self.period_s is not None and self.monotonic() - self._since > STALE_PERIODS * self.period_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "failing" if self.failing() else ("finished" if self.finished else "ok"),
            "failures": self.failures,
            "last_error": self.last_error,
            "last_success": None if self.last_success is None else round(self.last_success, 3),
        }


class Supervisor(Collector):
    """Starts loops as owned background tasks (through ``spawn``) and keeps their records."""

    def __init__(
        self,
        spawn: Callable[[Awaitable[Any], str], asyncio.Task[Any]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_backoff_s: float = MAX_BACKOFF_S,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spawn = spawn
        self._sleep = sleep
        self._max_backoff = max_backoff_s
        self._wall = wall
        self._monotonic = monotonic
        self.loops: dict[str, LoopStatus] = {}

    def _status(self, name: str, period_s: float | None) -> LoopStatus:
        if name in self.loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        status = self.loops[name] = LoopStatus(name, period_s, self._wall, self._monotonic)
        return status

    def backoff(self, failures: int) -> float:
        return min(self._max_backoff, 2.0 ** max(0, failures - 1))

    async def _after_failure(self, status: LoopStatus, exc: Exception) -> None:
        status.failed(exc)
        delay = self.backoff(status.failures)
        log.error("loop %s failed (%d in a row); again in %.0f s", status.name, status.failures, delay, exc_info=exc)
        await self._sleep(delay)

    def every(
        self,
        name: str,
        step: Callable[[], Awaitable[Any]],
        period_s: float,
        wake: asyncio.Event | None = None,
        paced: bool = False,
    ) -> asyncio.Task[Any]:
        """Run ``step`` every ``period_s``, or as soon as ``wake`` is set. ``paced``: the step
        returns the seconds until its next pass (at most ``period_s`` is waited)."""
        status = self._status(name, period_s)

        async def loop() -> None:
            while True:
                if wake is not None:
                    wake.clear()  # before the pass: a wake-up set during it is not lost
                try:
                    wait = await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._after_failure(status, exc)
                    continue
                status.ok()
                delay = max(0.0, min(float(wait), period_s)) if paced else period_s
                if wake is None:
                    await self._sleep(delay)
                elif delay > 0:
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=delay)
                    except asyncio.TimeoutError:
                        pass

        return self._spawn(loop(), name)

    def forever(
        self,
        name: str,
        work: Callable[[LoopStatus], Awaitable[None]],
        period_s: float | None = None,
    ) -> asyncio.Task[Any]:
        """Run ``work(status)`` and start it again whenever it raises. A return means it has nothing
        to do (say, polling without an admin token): the loop is then "finished", not failing."""
        status = self._status(name, period_s)

        async def loop() -> None:
            while True:
                try:
                    await work(status)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._after_failure(status, exc)
                    continue
                status.finished = True
                log.info("loop %s has nothing (more) to do", name)
                return

        return self._spawn(loop(), name)

    def failing(self) -> list[LoopStatus]:
        return [status for status in self.loops.values() if status.failing()]

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "loops": {...}, "failing": [...]}`` for /health."""
        failing = self.failing()
        health: dict[str, Any] = {
            "status": "degraded" if failing else "ok",
            "loops": {name: status.as_dict() for name, status in sorted(self.loops.items())},
        }
        if failing:
            health["failing"] = [{"loop": s.name, "error": s.last_error_class or "no success", "failures": s.failures}
                                 for s in failing]
        return health

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily("rulesbot_loop_failures", "Failures of each supervised loop", labels=["loop"])
        row = GaugeMetricFamily("rulesbot_loop_consecutive_failures", "Failures since the loop's last success",
                                labels=["loop"])
        success = GaugeMetricFamily("rulesbot_loop_last_success_timestamp_seconds",
                                    "When the loop last succeeded (0: not yet)", labels=["loop"])
        failing = GaugeMetricFamily("rulesbot_loop_failing", "1 while the loop counts as failing", labels=["loop"])
        for name, status in sorted(self.loops.items()):
            failures.add_metric([name], status.failures_total)
            row.add_metric([name], status.failures)
            success.add_metric([name], status.last_success or 0)
            failing.add_metric([name], 1 if status.failing() else 0)
        yield from (failures, row, success, failing)
