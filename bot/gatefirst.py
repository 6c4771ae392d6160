"""The gate first: the restart window made as short as it can be.

The shipped module config fails closed, so from the moment the bot stops until its gate answers
again nobody on the homeserver can post. ``python -m bot run`` therefore opens the store, reads
the state the gate decides from (one query per table), and starts the gate before anything of
the Matrix side is imported or built: matrix-nio and the bot's features are imported while the
gate already answers, and they plug into it (``bind``) once they exist. The homeserver being
slow or down, or the login, never lengthens the window.

Until ``bind``, a prompt for the agreement (an account that has not agreed, seen by the gate) and
a publication are kept and handed over then; background work the directory guard starts is owned
here and handed over too.

On PostgreSQL (``until_role_known``) another process may be the active bot while this one starts:
from its first answer the gate relays identity assertions to the active and asks it about consent
at registration, as a standby does (bot.standby), until bot.ha knows the role and keeps that
binding or replaces it (review 11b, break 1): a starting process never records an assertion or an
acceptance behind the active's back, and with no other process advertised it answers 503.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import time
from typing import Any, Awaitable, Callable

from bot.config import Settings, load_news_rules
from bot.directory import DirectoryGuard
from bot.gate.server import Gate
from bot.i18n import Translator
from bot.identity.assertion import identity_endpoint
from bot.identity.service import Identity
from bot.policy import PolicyState
from bot.policy.sanctions import Measure, Rate, SanctionKind
from bot.policy.state import PublicAccount
from bot.replica.changelog import ChangeLog  # issue 10
from bot.replica.publisher import ReplicaPublisher  # issue 10
from bot.store import Store

log = logging.getLogger(__name__)


class GateFirst:
    """Store, state, directory guard and gate, opened before the Matrix side exists."""

    def __init__(self, settings: Settings, translate: Translator, clock: Callable[[], int],
                 until_role_known: bool = False) -> None:
        self._settings = settings
        self._until_role_known = until_role_known
        # --- review 11b: the active asked from the first answer, until bot.ha knows the role ---
        self.standby: Any = None  # bot.standby.Standby
        self.consent_via_active: Any = None  # bot.standby.ConsentViaActive
        # --- end review 11b
        self._t = translate
        self._clock = clock
        self.store: Store | None = None
        self.state: PolicyState | None = None
        self.directory: DirectoryGuard | None = None
        self.gate: Gate | None = None
        self.identity: Identity | None = None  # issue 9
        self._prompts: list[str] = []
        self._published: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spawn: Callable[[Awaitable[Any], str], asyncio.Task[Any]] | None = None
        self._prompt: Callable[[str], None] | None = None
        self._publish: Callable[[str, str], None] | None = None
        self._health: Callable[[], dict[str, Any]] | None = None
        self._bound = asyncio.Event()

    @classmethod
    async def open(cls, settings: Settings, translate: Translator, clock: Callable[[], int], *,
                   until_role_known: bool = False) -> "GateFirst":
        """``until_role_known``: the process may be a standby (PostgreSQL, bot.ha follows)."""
        early = cls(settings, translate, clock, until_role_known)
        try:
            await early._open()
        except BaseException:
            await early.close()
            raise
        return early

    async def _open(self) -> None:
        started = time.perf_counter()
        settings, hs = self._settings, self._settings.homeserver
        self.store = store = await Store.open(settings.database.location(), settings.records.audit_head_file)
        self.state = state = PolicyState(
            bot_user_id=hs.user_id,
            server_name=hs.server_name,
            agreement_version=settings.agreement.version,
            moderators=frozenset(settings.moderators),
            accepted=await store.agreements.latest_versions(),
        )
        state.load_dm_rooms(await store.rooms.dm_rooms())
        # Measures in force (overdue ones are ended by the sanctions service once it exists; they
        # bind nobody meanwhile) and the public-account register.
        now = self._clock()
        for case in await store.cases.unended():
            if case.expires_at is None or case.expires_at > now:
                state.add_measure(case.target, measure_of(case))
        by_owner: dict[str, list[Any]] = {}
        for filing in await store.accounts.active_filings():
            by_owner.setdefault(filing.owner, []).append(filing)
        for owner, filings in by_owner.items():
            state.public_accounts[owner] = PublicAccount.from_filings(filings)
        state.channels.update(await store.accounts.channels())
        state.news_rules = load_news_rules(settings.rules_path())
        # issue 9: the identity key (refused here, before the gate answers, if unsafe) and the
        # verified accounts
        self.identity = await Identity.open(settings, store, state, self._clock)
        state.registration_only_through = settings.identity.registration_providers()  # identity.registration
        token = None if hs.admin_token is None else hs.admin_token.get_secret_value()
        self.directory = DirectoryGuard(state, hs.url, token, self.spawn)
        self.directory.on_initial_text = self._initial_text_later
        self.directory.clock = self._clock
        self.directory.store = store
        self.directory.warn_if_disabled()
        if settings.gate.enabled:
            assert settings.gate.token is not None
            self.gate = Gate(state, self._t, settings.gate.token.get_secret_value(), self.prompt, self.health,
                             self._clock, self.published, self.directory)
            self.gate.identity_endpoint = identity_endpoint(self.identity, settings, self._clock)  # issue 9
            # issue 10: from here on every change of the state is numbered for the Synapse modules'
            # replicas, served beside the gate (bot.replica)
            self.gate.replica = ReplicaPublisher(ChangeLog(state), self.gate, self._clock)
            if self._until_role_known:
                await self._ask_the_active_until_role_known(self.gate)
            await self.gate.start(settings.gate.host, settings.gate.port)
        log.info("gate answering from the store %.2f s after start-up began (%d accounts)",
                 time.perf_counter() - started, len(state.accepted))

    async def _ask_the_active_until_role_known(self, gate: Gate) -> None:
        """Bind what only the active may record (assertions, acceptances at registration) to the
        process advertised as the active, before the gate's first answer."""
        from bot.standby import ConsentViaActive, Standby  # only on PostgreSQL

        settings = self._settings
        assert self.store is not None
        token = "" if settings.gate.token is None else settings.gate.token.get_secret_value()
        self.standby = Standby(self.store, token, settings.gate.advertised, poll_seconds=settings.ha.poll_seconds)
        await self.standby.open()
        await self.standby._read_leader_or_keep()
        self.consent_via_active = ConsentViaActive(self.standby, lambda: gate.state)
        gate.consent = self.consent_via_active.answer
        endpoint = getattr(gate.identity_endpoint, "__self__", None)
        if endpoint is not None:
            endpoint.relay_to = self.standby

    # -- until the Matrix side binds -------------------------------------------------------------

    def spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        if self._spawn is not None:
            return self._spawn(work, name)
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def prompt(self, user_id: str) -> None:
        if self._prompt is not None:
            self._prompt(user_id)
        elif user_id not in self._prompts:
            self._prompts.append(user_id)

    def published(self, user_id: str, room_id: str) -> None:
        if self._publish is not None:
            self._publish(user_id, room_id)
        else:
            self._published.append((user_id, room_id))

    def health(self) -> dict[str, Any]:
        if self._health is not None:
            return self._health()
        return {"status": "ok", "loops": {}, "matrix": "connecting", "onboarding_queue": len(self._prompts)}

    def bind(
        self,
        spawn: Callable[[Awaitable[Any], str], asyncio.Task[Any]],
        prompt: Callable[[str], None],
        published: Callable[[str, str], None],
        health: Callable[[], dict[str, Any]],
    ) -> None:
        """The Matrix side exists: what the gate saw meanwhile goes to it."""
        self._spawn, self._prompt, self._publish, self._health = spawn, prompt, published, health
        for user_id in self._prompts:
            prompt(user_id)
        for user_id, room_id in self._published:
            published(user_id, room_id)
        self._prompts.clear()
        self._published.clear()
        self._bound.set()

    async def _initial_text_later(self, room_id: str, creator: str, refused: Any, error: str | None,
                                  aliases: list[str]) -> None:
        """A new room's refused initial text seen before the service binds: the service's own hook
        (set on the directory guard before ``bind``) clears it once it exists."""
        await self._bound.wait()
        assert self.directory is not None
        hook = self.directory.on_initial_text
        if hook is not None and hook != self._initial_text_later:
            await hook(room_id, creator, refused, error, aliases)

    def take_tasks(self) -> set[asyncio.Task[Any]]:
        """The background tasks started before ``bind``, for the service to own (and cancel)."""
        tasks, self._tasks = self._tasks, set()
        return tasks

    async def close(self) -> None:
        """Only for a start-up that failed before the service took these over."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.gate is not None:
            await self.gate.stop()
        if self.directory is not None:
            await self.directory.close()
        if self.standby is not None:
            await self.standby.close()
        if self.store is not None:
            await self.store.close()


def measure_of(case: Any) -> Measure:
    """A case of the store as the measure the policy core reads (as bot.sanctions does)."""
    return Measure(
        case_id=case.id,
        kind=SanctionKind(case.kind),
        expires_at=case.expires_at,
        rate=None if case.rate is None else Rate.parse(case.rate),
    )


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


async def run(settings: Settings) -> None:
    """``python -m bot run``: signals first, then the gate, then the rest (bot.service.run)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # On PostgreSQL bot.ha decides the role once imported; until then the gate asks the active.
    opening = asyncio.ensure_future(GateFirst.open(settings, Translator(settings.language), wall_clock_ms,
                                                   until_role_known=settings.database.is_postgres))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not opening.done():  # stopped while opening: nothing else has started
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        return
    stopping.cancel()
    early = opening.result()  # raises if the store or the gate could not be opened
    try:
        # matrix-nio and the features (a few hundred ms of imports) in a worker thread: the event
        # loop stays free to answer Synapse meanwhile, including what waited in the backlog.
        service = await asyncio.to_thread(importlib.import_module, "bot.service")
    except BaseException:
        await early.close()
        raise
    await service.run(settings, early=early, stop=stop)
