"""The module's replica of the bot's PolicyState: a snapshot, then the change stream.

Network-agnostic: ``fetch`` (an async ``(method, path, params, body, timeout) -> (status, json)``)
and ``sleep`` are given, so the unit tests drive it without Twisted; bot.synapse.module gives
treq and Synapse's clock.

- At start, and whenever the bot says the module's position is gone (410) or the bot restarted
  (another epoch), a snapshot: ``GET /replica/v1/snapshot``, retried with back-off (0.5 s doubling
  up to ``snapshot_retry_max``). Until the first one arrives there is no state: callbacks follow
  their ``fail`` setting.
- Then ``GET /replica/v1/changes?since=N&timeout=ms`` in a loop: the bot answers at once when it
  has changes, or after ``timeout`` with none. Each success, changes or not, is a "successful poll".
- While the bot is unreachable the state stays as it was: decisions go on from it (no outage, no
  bypass). ``staleness()`` is the time since the last successful poll (less the open poll's
  time, up to one timeout: the bot would answer it at once); callbacks compare it with
  their ``max_staleness``, and it is logged once it passes ``stale_after`` and exported as a metric.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Mapping

from bot.policy import PolicyState
from bot.replica.protocol import ProtocolError, apply_change, apply_snapshot, unknown_fields

log = logging.getLogger(__name__)

Fetch = Callable[..., Awaitable[tuple[int, Any]]]
Sleep = Callable[[float], Awaitable[None]]
ToThread = Callable[..., Awaitable[Any]]

SNAPSHOT_PATH = "/replica/v1/snapshot"
CHANGES_PATH = "/replica/v1/changes"
FIRST_RETRY = 0.5
APPLY_SLICE = 500  # records applied between two yields to the reactor (~5 ms of sanctions records)


class Gone(Exception):
    """The bot no longer has the changes after our position, or restarted: take a new snapshot."""


async def _inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


class Replica:
    def __init__(self, fetch: Fetch, sleep: Sleep, *, poll_timeout: float = 25.0, stale_after: float = 60.0,
                 retry_max: float = 30.0, to_thread: ToThread = _inline,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._sleep = sleep
        # Decoding a snapshot compiles the news rules (and builds the normalisation tables the
        # first time): work for a thread, not for Synapse's reactor.
        self._to_thread = to_thread
        self._monotonic = monotonic
        self.poll_timeout = poll_timeout
        self.stale_after = stale_after
        self.retry_max = retry_max
        self.state: PolicyState | None = None
        self.epoch: str | None = None
        self.seq = 0
        self.last_success: float | None = None  # monotonic time of the last successful poll
        self.snapshots = 0
        self.changes_applied = 0
        self._stale_logged = False
        self._stopped = False
        self._poll_started: float | None = None  # monotonic start of the long poll in flight
        self.on_change: Callable[[], None] = lambda: None  # after each applied batch (tests wait on it)

    def staleness(self) -> float:
        """Seconds the replica may be behind the bot: the time since the last successful poll,
        less how long the long poll in flight has been open, up to its timeout (a live bot answers
        it the moment something changes: 0 while the poll that followed a success is open);
        infinite before the first snapshot. Only the last success counts: a bot that takes
        connections but never answers must not look fresh again with each new poll."""
        if self.last_success is None:
            return float("inf")
        now = self._monotonic()
        since_success = now - self.last_success
        if self._poll_started is not None:
            return max(0.0, since_success - min(now - self._poll_started, self.poll_timeout))
        return since_success

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        """Snapshot, then follow the changes, until ``stop()``. Never raises: a failure is logged
        and retried, the state kept."""
        delay = FIRST_RETRY
        # A bot that answers 410 right after each snapshot must not be asked for megabytes in a
        # tight loop: from the second Gone in a row on, wait as after a failure.
        gone_in_a_row = 0
        while not self._stopped:
            try:
                if self.state is None or self.epoch is None:
                    await self.take_snapshot()
                else:
                    await self.poll_once()
                    gone_in_a_row = 0
                delay = FIRST_RETRY
            except Gone as exc:
                log.info("rules replica: %s; taking a new snapshot", exc)
                self.epoch = None
                gone_in_a_row += 1
                await self._sleep(0 if gone_in_a_row == 1 else delay)
                if gone_in_a_row > 1:
                    delay = min(delay * 2, self.retry_max)
                continue
            except Exception as exc:  # network, timeouts, a bot answering garbage: keep the state
                self._note_failure(exc)
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max)

    async def take_snapshot(self) -> None:
        status, body = await self._fetch("GET", SNAPSHOT_PATH, timeout=max(60.0, self.poll_timeout))
        if status != 200 or not isinstance(body, Mapping):
            raise RuntimeError(f"snapshot answered {status}: {_errcode(body)}")
        state = await self._to_thread(apply_snapshot, body)
        extra = unknown_fields(body)
        if extra:
            log.warning("rules replica: the bot sends fields this module does not know (%s): upgrade the module",
                        ", ".join(extra))
        self.state, self.epoch, self.seq = state, str(body["epoch"]), int(body["seq"])
        self.snapshots += 1
        self._succeeded()
        log.info("rules replica: snapshot at %s/%d (%d accounts agreed)", self.epoch, self.seq, len(state.accepted))
        self.on_change()

    async def poll_once(self) -> None:
        # With the epoch the bot answers 410 at once after a restart, instead of numbers that mean
        # something else now.
        params = {"since": str(self.seq), "timeout": str(int(self.poll_timeout * 1000)), "epoch": str(self.epoch)}
        self._poll_started = self._monotonic()
        try:
            status, body = await self._fetch("GET", CHANGES_PATH, params=params, timeout=self.poll_timeout + 10.0)
        finally:
            self._poll_started = None
        if status == 410:
            raise Gone(f"the bot no longer holds changes after {self.seq}")
        if status != 200 or not isinstance(body, Mapping):
            raise RuntimeError(f"changes answered {status}: {_errcode(body)}")
        if str(body.get("epoch")) != self.epoch:
            raise Gone(f"the bot restarted (epoch {body.get('epoch')!r}, was {self.epoch!r})")
        changes = body.get("changes") or []
        state = self.state
        assert state is not None
        try:
            for index, change in enumerate(changes):
                if index and index % APPLY_SLICE == 0:
                    # A page of 10,000 records held Synapse's reactor ~100 ms in one go: let it
                    # answer between slices. Callbacks meanwhile see the bot's state at a seq
                    # between the first and the last record: one the bot had, never a mix.
                    await self._sleep(0)
                if int(change["seq"]) <= self.seq:
                    continue  # already applied (an answer repeated after a lost response)
                if "news_rules" == change.get("field"):
                    # Compiling rules takes long: off the reactor, like a snapshot.
                    await self._to_thread(apply_change, state, change)
                else:
                    apply_change(state, change)
                self.seq = int(change["seq"])
                self.changes_applied += 1
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            # Half a batch applied: only a snapshot is known to be whole again.
            raise Gone(f"a change could not be applied ({exc})") from None
        # The position is the last change applied, never the answer's "seq": a bot that cut the
        # page (or an older one answering its newest seq) would make the rest be skipped for good.
        # Still behind, the next poll is answered at once.
        self._succeeded()
        if changes:
            self.on_change()

    def _succeeded(self) -> None:
        if self._stale_logged:
            if self.last_success is None:
                log.warning("rules replica: first snapshot from the bot; callbacks decide from it")
            else:
                log.warning("rules replica: in step with the bot again after %.1f s", self.staleness())
            self._stale_logged = False
        self.last_success = self._monotonic()

    def _note_failure(self, exc: Exception) -> None:
        stale = self.staleness()
        if not self._stale_logged and stale >= self.stale_after:
            self._stale_logged = True
            if self.state is None:
                log.error("rules replica: no snapshot from the bot yet (%s); callbacks follow their 'fail' setting", exc)
            else:
                log.error("rules replica: no word from the bot for %.0f s (%s); deciding from the last state "
                          "until each callback's max_staleness", stale, exc)
        else:
            log.debug("rules replica: %s", exc)

    def check_staleness(self) -> None:
        """Called periodically: log the moment the replica passes ``stale_after``, even while a
        long poll is still hanging (a bot that stopped answering without closing the connection)."""
        if not self._stale_logged and self.staleness() >= self.stale_after:
            self._note_failure(TimeoutError("no answer"))


def _errcode(body: Any) -> str:
    if isinstance(body, Mapping):
        return f"{body.get('errcode')}: {body.get('error')}"
    return repr(body)[:200]
