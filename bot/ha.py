"""``python -m bot run`` on PostgreSQL: standby until this process holds the active bot's lock,
then the whole service; back to standby if the lock is lost.

Standby: the gate (already answering, bot.gatefirst) decides from a replica of the active's state
and sends the active what it saw (bot.standby). Takeover: the lock (bot.leader), a grace period so
the old active has surely stopped, the state loaded fresh from the store, the address advertised
in kv, then the service starts as after any restart: sync from the stored token (events handled
before are skipped by event ID) and the effects journal resumes what was pending, so nothing is
lost or done twice. The gate answers throughout: only what it decides from changes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Iterator

import asyncpg
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.config import Settings
from bot.gatefirst import GateFirst, wall_clock_ms
from bot.i18n import Translator
from bot.leader import Leadership, NotHolding, instance_name
from bot.service import Service
from bot.standby import LEADER_KEY, ConsentViaActive, GateBinding, Standby
from bot.store.pg import INSTANCE, PgConnection

log = logging.getLogger(__name__)


class HaMetrics(Collector):
    def __init__(self) -> None:
        self.active = False
        self.takeovers = 0
        self.demotions = 0

    def collect(self) -> Iterator[Metric]:
        role = GaugeMetricFamily("rulesbot_ha_active", "1 while this process is the active bot, 0 while standby")
        role.add_metric([], 1 if self.active else 0)
        yield role
        for name, value, text in (
            ("rulesbot_ha_takeovers", self.takeovers, "Times this process took over as the active bot"),
            ("rulesbot_ha_leadership_lost", self.demotions,
             "Times this process lost the lock and went back to standby"),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], value)
            yield counter


async def _first(*aws: Any) -> set[asyncio.Future[Any]]:
    futures = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future in pending:
        future.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return done


class HighAvailability:
    def __init__(self, settings: Settings, early: GateFirst, stop: asyncio.Event) -> None:
        self.settings = settings
        self.early = early
        self.stop = stop
        dsn = settings.database.location()
        assert isinstance(dsn, str)
        self.leadership = Leadership(dsn, poll_seconds=settings.ha.poll_seconds,
                                     heartbeat_seconds=settings.ha.heartbeat_seconds)
        self.metrics = HaMetrics()
        self._service_stopped_last = False  # the active's service.stop() said "stopped" already
        self.gate = early.gate
        self.binding = None if self.gate is None else GateBinding(self.gate)
        self.own_url = settings.gate.advertised
        assert early.store is not None
        token = settings.gate.token.get_secret_value() if settings.gate.token is not None else ""
        # The gate may have asked the active from its first answer (bot.gatefirst, until_role_known):
        # the same follower and consent cache go on.
        self.standby = getattr(early, "standby", None) or Standby(early.store, token, self.own_url,
                                                                  poll_seconds=settings.ha.poll_seconds)
        # One for the process's life: its answers are kept across the replica's snapshots.
        gate = self.gate
        self.consent = getattr(early, "consent_via_active", None) or (
            None if gate is None else ConsentViaActive(self.standby, lambda: gate.state))
        self.advertised: dict[str, Any] | None = None
        self._following: asyncio.Task[Any] | None = None
        self._delivering: asyncio.Task[Any] | None = None
        self._bound_state: Any = None
        self._bound_at = time.monotonic()
        self.epoch: int | None = None  # the leadership epoch of this process's last takeover

    # -- standby -------------------------------------------------------------------------------

    def _staleness(self) -> float:
        """Seconds the state the standby's gate decides from may be behind the active's: since the
        replica last heard from the active, or since the state was bound if that is later (the
        state loaded at start, or this process's own as the active it was until then)."""
        return min(self.standby.replica.staleness(), time.monotonic() - self._bound_at)

    def _cannot_decide(self) -> str | None:
        stale, limit = self._staleness(), self.settings.ha.max_staleness_seconds
        if stale <= limit:
            return None
        return (f"standby cut off from the active bot: its state is {min(stale, 1e9):.0f} s old "
                f"(ha.max_staleness_seconds {limit:g})")

    def _standby_health(self) -> dict[str, Any]:
        replica = self.standby.replica
        why_not = self._cannot_decide()
        health: dict[str, Any] = {
            "status": "ok" if why_not is None else "degraded", "role": "standby", "leader": self.standby.leader,
            "replica": {"seq": replica.seq, "staleness_s": round(min(self._staleness(), 1e9), 3),
                        "outbox": len(self.standby.outbox.items)}}
        if why_not is not None:
            health["warnings"] = [why_not]
        return health

    def _bind_standby(self, state: Any) -> None:
        assert self.binding is not None
        self._bound_state, self._bound_at = state, time.monotonic()
        self.binding.standby(state, self.standby.outbox, self._standby_health, self._cannot_decide,
                             consent=self.consent, relay_to=self.standby)

    def _follow_replica(self) -> None:
        # Each snapshot is a new state object: the gate decides from it from now on.
        state = self.standby.replica.state
        if self.binding is not None and state is not None and state is not self._bound_state:
            self._bind_standby(state)

    async def _stand_by(self, state: Any) -> None:
        self.metrics.active = False
        if self.binding is not None:
            # Until the first snapshot, the newest state this process has: loaded from the store
            # at start, or its own as the active one it was until now.
            self._bind_standby(state)
            self.standby.following = True
            self.standby.replica.on_change = self._follow_replica
            self._following = asyncio.ensure_future(self.standby.follow())
        log.info("standby: the gate answers from the active bot's state; waiting for the active bot's lock")

    # -- active --------------------------------------------------------------------------------

    async def _take_over(self) -> GateFirst | None:
        """The service's store and state, fresh; None if the lock was lost meanwhile."""
        log.info("holding the active bot's lock; taking over in %.1f s (the old active stops first)",
                 self.leadership.takeover_grace)
        await asyncio.sleep(self.leadership.takeover_grace)
        if not self.leadership.held:
            return None
        try:
            await self._fence_out_the_old_active()
        except (NotHolding, OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot take over: %s: %s", type(exc).__name__, exc)
            return None
        # The gate answers already; only the store and the state it decides from are opened anew.
        no_gate = self.settings.gate.model_copy(update={"enabled": False})
        without_gate = self.settings.model_copy(update={"gate": no_gate})
        fresh = await GateFirst.open(without_gate, Translator(self.settings.language), wall_clock_ms)
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
            self._following = None
        fresh.gate = self.gate
        assert fresh.store is not None
        for store in (fresh.store, self.early.store):
            _fence(store, self.epoch)
        self.advertised = {"url": self.own_url, "name": instance_name(), "instance": INSTANCE,
                           "epoch": self.epoch, "since": wall_clock_ms()}
        await fresh.store.put(LEADER_KEY, orjson.dumps(self.advertised).decode())
        if self.binding is not None:
            self.binding.active(fresh, lambda: {**fresh.health(), "role": "active", "leader": self.advertised})
        self.standby.following = False  # items not delivered yet go to this process's own gate now
        self.standby.outbox.ready.set()
        self.metrics.active = True
        self.metrics.takeovers += 1
        log.info("active: took over as %s", self.own_url)
        return fresh

    async def _fence_out_the_old_active(self) -> None:
        """Before this process reads or writes anything as the active: the old active's sessions
        are ended (one frozen inside a write transaction holds the writer lock for as long as it
        stays frozen), and the epoch claimed, so whatever it tries to commit later is refused."""
        await self.standby._read_leader_or_keep()
        old = self.standby.leader or {}
        instance = old.get("instance")
        if isinstance(instance, str) and instance != INSTANCE:
            ended = await self.leadership.end_sessions_of(instance)
            if ended:
                log.warning("ended %d PostgreSQL sessions of the old active bot %s", ended, old.get("name"))
        self.epoch = await self.leadership.claim_epoch()
        log.info("leadership epoch %d: writes of any earlier active are refused from now on", self.epoch)

    async def _act(self, fresh: GateFirst) -> bool:
        """Run the service until stop (True) or until the lock is lost (False)."""
        service = Service(self.settings)
        service.early, service.store, service.gate, service.directory = fresh, fresh.store, fresh.gate, fresh.directory
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, service.reload_rules)
        starting = asyncio.ensure_future(service.start(fresh))
        try:
            stopping, losing = asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(self.leadership.hold())
            waiting = {stopping, losing, starting}
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if starting in done:
                    starting.result()  # start-up failed: raise its error (the finally stops what started)
                if stopping in done or losing in done:
                    break
            lost = losing in done and not stopping in done
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
        if lost:
            self.metrics.active = False
            self.metrics.demotions += 1
            # Another process may act already: nothing more is sent or saved, the batch in hand
            # included (no drain; it is handled again by whoever acts). The gate keeps answering.
            service.sync = None
            service.gate = None
            if self.gate is not None:
                # The next takeover's service registers its own (a name registered twice is an error).
                for part in (service.supervisor, service.sync_gaps, getattr(service, "effects", None)):
                    if part is not None:
                        try:
                            self.gate.metrics.registry.unregister(part)
                        except KeyError:
                            pass  # start-up had not got as far as registering it
        await service.stop()  # logs "stopped"
        self._service_stopped_last = not lost
        return not lost

    # -- the whole life ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.standby.open()
        if self.gate is not None:
            self.gate.metrics.include(self.metrics)
        self._delivering = asyncio.ensure_future(self.standby.deliver())
        try:
            state = self.early.state
            while not self.stop.is_set():
                await self._stand_by(state)
                if self.metrics.demotions:
                    # Whatever cut this process off may not be over: a standby in good health
                    # takes the lock first if there is one.
                    await _first(asyncio.sleep(3 * self.leadership.poll_seconds), self.stop.wait())
                await _first(self.leadership.acquire(), self.stop.wait())
                if self.stop.is_set():
                    return
                fresh = await self._take_over()
                if fresh is None:
                    log.warning("lost the lock before taking over: still standby")
                    continue
                if await self._act(fresh):
                    return
                state = fresh.state
                log.warning("back to standby")
        finally:
            for task in (self._following, self._delivering):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (self._following, self._delivering) if t is not None),
                                 return_exceptions=True)
            await self.leadership.release()
            await self.standby.close()
            await self.early.close()
            if not self._service_stopped_last:
                # A process stopped as a standby (or during start-up) says so too: operators and
                # supervisors look for the line, as they do after a single bot's stop.
                log.info("stopped")


def _fence(store: Any, epoch: int | None) -> None:
    """The store's writes from now on only while ``epoch`` is the current one (bot.store.pg)."""
    conn = getattr(getattr(store, "db", None), "conn", None)
    if isinstance(conn, PgConnection):
        conn.epoch = epoch


async def run(settings: Settings, early: GateFirst, stop: asyncio.Event) -> None:
    await HighAvailability(settings, early, stop).run()
