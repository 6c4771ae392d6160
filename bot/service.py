"""The running service: store, in-memory state, gate, Matrix client, sync loop and workers.

Start-up order matters: the gate answers Synapse first (from the store's state, before the Matrix
login), so the homeserver is never left waiting on a bot that is still connecting.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Awaitable, Callable

from nio import AsyncClient

from bot.accounts import PublicAccounts
from bot.agreement import AgreementDocument, AgreementService
from bot.commands import accounts as account_commands
from bot.commands import agreement as agreement_commands
from bot.commands import identity as identity_commands
from bot.commands import records as record_commands
from bot.commands import sanctions as sanction_commands
from bot.commands.context import Services
from bot.commands.dispatch import Dispatcher
from bot.commands.registry import Registry
from bot.config import Settings
from bot.consent.wiring import Consent
from bot.gatefirst import GateFirst
from bot.effects import Executor
from bot.gate.metrics import SyncGaps
from bot.gate.server import Gate
from bot.i18n import Refusal, Translator
from bot.matrix.admin import AdminApi
from bot.matrix.client import Matrix, MatrixError, client_config, connect
from bot.matrix.management import ManagementRoom
from bot.matrix.onboarding import Onboarding
from bot.matrix.roommode import RoomMode
from bot.matrix.sync import SyncLoop
from bot.labels import Labels
from bot.news import SCOPE_EVERY_S, News
from bot.reports import RETENTION_EVERY_S, Reports
from bot.router import Router
from bot.sanctions import MAX_SLEEP_S, Sanctions
from bot.store import Store
from bot.supervise import Supervisor

log = logging.getLogger(__name__)

# Login failures that no amount of retrying will fix.
FATAL_LOGIN_ERRORS = frozenset({"M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"})


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Service:
    def __init__(self, settings: Settings, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.t = Translator(settings.language)
        self.document = AgreementDocument.load(settings.agreement_path(), settings.agreement.version)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.store: Store | None = None
        self.gate: Gate | None = None
        self.client: AsyncClient | None = None
        self.sync: SyncLoop | None = None
        # Every long-running loop runs under the supervisor: it survives any exception, and
        # /health names a loop that keeps failing.
        self.supervisor = Supervisor(self.spawn)
        self.sync_gaps = SyncGaps()

    def spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the service owns: referenced, logged if it fails, cancelled on stop."""
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)

        def _done(finished: asyncio.Task[Any]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background task %s failed", name, exc_info=finished.exception())

        task.add_done_callback(_done)
        return task

    async def start(self, early: GateFirst | None = None) -> None:
        settings = self.settings
        # The store, the state and the gate come first (bot.gatefirst): the gate answers from the
        # store before anything of the Matrix side is built.
        self.early = early = early or await GateFirst.open(settings, self.t, self.clock)
        assert early.store is not None and early.state is not None and early.directory is not None
        self.store = store = early.store
        self.state = state = early.state
        self.gate = early.gate
        self.directory = early.directory
        hs = settings.homeserver

        self.client = AsyncClient(hs.url, hs.user_id, config=client_config())
        matrix = Matrix(self.client)
        self.admin = None if hs.admin_token is None else AdminApi(hs.url, hs.admin_token.get_secret_value())
        self.onboarding = Onboarding(matrix, store, state, self.document, self.t, settings, self.clock)
        self.room_mode = RoomMode(matrix, store, state, self.onboarding, self.t, self.clock, self._members)
        self.agreements = AgreementService(store, state, self.document, self.clock, self.room_mode.apply)
        store.effects.clock = self.clock
        self.management = ManagementRoom(store.effects)
        # --- identity (issue 9): opened with the gate; now the admin API and the management room ---
        assert early.identity is not None
        self.identity = early.identity
        self.identity.admin, self.identity.management = self.admin, self.management
        self._sso_checked: set[str] = set()
        # --- end identity ---
        # --- consent at registration (bot.consent): before the gate refuses or onboarding prompts ---
        self.consent = Consent(settings, state, self.agreements, self.management, self.t, self.clock)
        self.onboarding.consent = self.consent.accepted
        self.room_mode.consent = self.consent.accepted
        if self.gate is not None:
            self.gate.consent = self.consent.answer  # "could not check" reaches /replica/v1/consent
        self.sanctions = Sanctions(
            store, state, matrix, self.room_mode, self.onboarding, self.admin, self.management, self.t, settings,
            self.clock,
        )
        self.reports = Reports(
            store, matrix, self.sanctions, self.onboarding, self.admin, self.management, self.t, settings, self.clock
        )
        self.accounts = PublicAccounts(
            store, state, matrix, self.onboarding, self.management, self.t, settings, self.clock, self.spawn
        )
        # Measures in force and the register are in memory already (the gate answers from them);
        # these services read them again as their own, and end the overdue measures.
        await self.sanctions.load()
        await self.accounts.load()
        self.news = News(state, matrix, settings, None if hs.admin_token is None else hs.admin_token.get_secret_value(),
                         lambda: set(self.room_mode.protected))
        self.news.load()
        self.news.on_rooms = self.directory.sweep
        # A new room's initial name or topic that the core refuses: the bot clears it.
        self.directory.on_initial_text = self.room_mode.clear_initial_text
        self.directory.clock = self.clock
        self.labels = Labels(store, state, matrix, self.management, self.t, settings, self.clock,
                             lambda: set(self.room_mode.protected))
        self.accounts.on_changed = self.labels.refresh
        self.identity.on_changed = self.labels.on_verification  # review 9 #13: a revocation ends the label
        self.accounts.protected = lambda: set(self.room_mode.protected)
        registry = Registry([
            *agreement_commands.COMMANDS, *account_commands.COMMANDS, *sanction_commands.COMMANDS,
            *record_commands.COMMANDS, *identity_commands.COMMANDS,
        ])
        services = Services(
            self.t, state, store, self.agreements, self.onboarding, registry, self.sanctions, matrix, self.clock,
            self.reports, self.accounts, self.news, rules_path=settings.rules_path(), identity=early.identity,
        )
        self.router = Router(
            matrix, services, Dispatcher(registry, services, matrix), self.room_mode, self._room_name, self._members,
            self.management,
        )

        # What the gate saw meanwhile (accounts to prompt, rooms published) goes to the services now.
        early.bind(self.spawn, self._first_seen, self.accounts.on_published, self._health)  # issue 9: _first_seen
        self._tasks.update(early.take_tasks())
        if self.gate is not None:
            self.gate.metrics.include(self.supervisor)
            self.gate.metrics.include(self.sync_gaps)

        await self._login()
        if self.admin is not None:
            try:
                await self.admin.lift_ratelimit(hs.user_id)
                log.info("lifted the homeserver's message rate limit for %s", hs.user_id)
            except MatrixError as exc:
                log.warning("could not lift the bot's rate limit: %s", exc)
        self._matrix = matrix
        self.router.on_joined = self._joined_by_invite
        if not await self.join_configured_rooms():
            # Supervised too: a network error while resolving a room must not end the retries.
            self.supervisor.forever("join-rooms", lambda status: self._retry_rooms())
        # The journal's executor starts once the protected rooms and the management room are
        # known: it resumes what a previous run left pending (and what load() journaled).
        self.effects = Executor(
            store, matrix, self.t, admin=self.admin, dm_room=self.onboarding.dm_room,
            management_room=lambda: self.management.room_id, management_configured=bool(settings.management_room),
            bot_user_id=hs.user_id, clock=self.clock,
        )
        self.effects.after_done["unlist"] = self.directory.unlisted_done
        self.effects.onboard = self.onboarding.prompt_now
        if self.gate is not None:
            self.gate.metrics.include(self.effects)
        self.supervisor.forever("effects", self.effects.run)
        self.sync = SyncLoop(self.client, store, self.router.handle_batch, timeline_limit=settings.sync.timeline_limit,
                             gap_limit=settings.sync.gap_limit, gaps=self.sync_gaps, clock=self.clock)
        sync = self.sync
        self.room_mode.synced_at = lambda: sync.saved_at  # how far back a post may be judged at its own time
        supervise = self.supervisor
        # A sync long-polls 30 s: no successful one for 3 minutes is a failing sync loop.
        supervise.forever("sync", self.sync.run, period_s=60.0)
        supervise.forever("onboarding", lambda status: self.onboarding.run())
        supervise.every("expiry", self.sanctions.expire_due, MAX_SLEEP_S, wake=self.sanctions.wake, paced=True)
        supervise.every("retention", self.reports.purge_evidence, RETENTION_EVERY_S)
        if self.reports.poll_seconds is not None:
            supervise.every("homeserver-reports", self.reports.take_homeserver_reports, self.reports.poll_seconds)
        supervise.every("news-scope", self.news.refresh_scope, SCOPE_EVERY_S)
        if self.admin is not None and settings.identity.sso_providers:  # issue 9: SSO verifications kept current
            supervise.every("identity-sso", self.identity.sweep_sso, settings.identity.sso_sweep_seconds)
        # A changed agreement version: ask everyone who agreed to (or was shown) an older one.
        for user_id in await store.agreements.users_to_ask_again(self.document.version):
            self.onboarding.request(user_id)
        # --- consent at registration (bot.consent): Synapse's user_consent.version against ours ---
        self.spawn(self.consent.check_versions(), "consent-versions")
        log.info("started as %s (agreement version %s)", hs.user_id, self.document.version)

    # --- identity (issue 9) ---
    def _first_seen(self, user_id: str) -> None:
        """An account the gate asks a prompt for (its first login, a refused attempt): onboarding,
        and once per run an SSO check, so an account that signed in through a configured provider
        is verified before it ever meets the refusal."""
        self.onboarding.request(user_id)
        if self.admin is not None and self.settings.identity.sso_providers and user_id not in self._sso_checked:
            self._sso_checked.add(user_id)
            self.spawn(self.identity.check_sso(user_id), "identity-sso-check")
    # --- end identity ---

    async def _login(self) -> None:
        assert self.client is not None and self.store is not None
        backoff = 1.0
        while True:
            try:
                await connect(self.client, self.settings, self.store)
            except MatrixError as exc:
                if exc.errcode in FATAL_LOGIN_ERRORS:
                    raise
                log.warning("cannot log in yet (%s); retrying in %.0f s", exc, backoff)
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("homeserver not reachable (%s); retrying in %.0f s", exc, backoff)
            else:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

    async def join_configured_rooms(self) -> bool:
        """Resolve and join the protected rooms and the management room; True when all are joined.

        Idempotent: a room that does not exist yet, or has not invited the bot, is tried again later.
        """
        wanted = list(self.settings.protected_rooms)
        if self.settings.management_room:
            wanted.append(self.settings.management_room)
        complete = True
        for room in wanted:
            try:
                room_id = await self._matrix.resolve(room)
            except MatrixError as exc:
                log.warning("cannot resolve %s yet: %s", room, exc)
                complete = False
                continue
            if room in self.settings.protected_rooms:
                self.room_mode.protected.add(room_id)
            if room == self.settings.management_room:
                self.management.room_id = room_id
            if room_id in self.client.rooms:
                continue
            try:
                await self._matrix.join(room_id)
            except MatrixError as exc:
                log.warning("cannot join %s yet (%s); an invite will be accepted", room, exc)
                complete = False
        return complete

    async def _joined_by_invite(self) -> None:
        # A configured alias may exist only now, and a public room joined is news scope at once.
        await self.join_configured_rooms()
        await self.news.refresh_scope()

    async def _retry_rooms(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            if await self.join_configured_rooms():
                return

    def reload_rules(self) -> None:
        """SIGHUP: re-read the news rules; a bad file is logged and the old rules stay."""
        news = getattr(self, "news", None)
        if news is None:
            return
        try:
            news.reload()
        except Refusal:
            pass  # already logged with the reason; the previous rules stay

    def _members(self, room_id: str) -> set[str]:
        """Joined and invited members, as the last sync told."""
        room = self.client.rooms.get(room_id) if self.client is not None else None
        return set(room.users) if room is not None else set()

    def _room_name(self, room_id: str) -> str:
        room = self.client.rooms.get(room_id) if self.client is not None else None
        return room.display_name if room is not None and room.display_name else room_id

    def _health(self) -> dict[str, Any]:
        """For the gate's /health: "degraded" (HTTP 503) while a supervised loop keeps failing."""
        synced = self.sync is not None and self.sync.synced.is_set()
        consent_warnings = self.consent.warnings if getattr(self, "consent", None) is not None else []
        return {**self.supervisor.health(), "matrix": "synced" if synced else "connecting",
                "onboarding_queue": self.onboarding.queued,
                **({"warnings": list(consent_warnings)} if consent_warnings else {})}

    async def stop(self) -> None:
        # The batch in hand finishes and its token is saved before anything is cancelled; the
        # gate keeps answering meanwhile.
        if self.sync is not None:
            await self.sync.drain(self.settings.sync.stop_grace_seconds)
        if getattr(self, "early", None) is not None:
            self._tasks.update(self.early.take_tasks())  # a start-up that failed before it bound
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.gate is not None:
            await self.gate.stop()
        if self.client is not None:
            await self.client.close()
        if getattr(self, "admin", None) is not None:  # (set by start(), which may have failed first)
            await self.admin.close()
        if getattr(self, "consent", None) is not None:
            await self.consent.close()
        if getattr(self, "directory", None) is not None:
            await self.directory.close()
        if self.store is not None:
            await self.store.close()
        log.info("stopped")


async def run(settings: Settings, early: GateFirst | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly. ``early``: the gate already answering, and
    ``stop`` the event its signal handlers set (bot.gatefirst.run)."""
    # --- active/standby (issue 11): on PostgreSQL one process acts, the others stand by (bot.ha) ---
    if early is not None and stop is not None and settings.database.is_postgres:
        from bot import ha

        await ha.run(settings, early, stop)
        return
    if "ha" in settings.model_fields_set:
        log.warning("ha is configured, but with SQLite there is no standby: this process is the only bot")
    # --- end active/standby
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    service = Service(settings)
    loop.add_signal_handler(signal.SIGHUP, service.reload_rules)
    if early is not None:
        # stop() closes them, even if start() fails before it takes them over.
        service.early, service.store, service.gate, service.directory = early, early.store, early.gate, early.directory
    starting = asyncio.ensure_future(service.start(early))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # A signal during start-up (say, while the homeserver is still down) must stop it too.
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # start-up failed: raise its error
            await stopping
    finally:
        for task in (starting, stopping):
            task.cancel()
        await asyncio.gather(starting, stopping, return_exceptions=True)
        await service.stop()
