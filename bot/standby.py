"""A hot standby's gate: it answers from a replica of the active bot's state, and sends the
active what its decisions leave behind.

The replica follows the active's replica stream (``/replica/v1/snapshot`` then the long-polled
``/replica/v1/changes``, bot.synapse.replica's client over aiohttp), found through the URL the
active advertises in the database's kv (``ha.leader``) when it takes over. The stream was chosen
over PostgreSQL's LISTEN/NOTIFY because it already exists, carries every field of the state
(NOTIFY payloads stop at 8 kB and would need a second encoding), and the Synapse modules use the
same code, so one path is tested by both.

What a gate decision leaves behind (an agreement prompt, a counted post, a text in news scope,
private news, a scope change, a published or new room) needs the active bot: the standby applies
what touches its own replica at once (a rate cap counts here too) and queues an item for the
active's ``/replica/v1/reports``, the intake the Synapse module uses; the ids make a retried batch
count once. Items not yet delivered when this process takes over are delivered to itself.

Two questions only the active can answer are sent on to it as they come (issue 11, gaps 1 and 2):
whether an account accepted the agreement at registration (``/replica/v1/consent``, as the Synapse
module asks it), and a signed identity assertion (relayed unchanged, bot.identity.assertion): both
record something, and only the active's records reach its memory and every replica.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Callable, Mapping

import aiohttp
import orjson

from bot.consent.registration import FAILED_FOR_MS, LOOKUP_TIMEOUT_S, NEGATIVE_FOR_MS, RegistrationConsent
from bot.gate.server import Gate
from bot.identity.assertion import NoActiveBot
from bot.policy import PolicyState
from bot.replica.changelog import ChangeLog
from bot.replica.protocol import CONSENT_PATH, consent_answer
from bot.synapse.replica import Replica
from bot.store import Store

log = logging.getLogger(__name__)

LEADER_KEY = "ha.leader"
DELIVER_BATCH = 1_000
# Items kept while no active bot answers: with none for long, the oldest (counted posts and texts
# of long ago, prompts the active's own sweep finds again) matter least.
OUTBOX_LIMIT = 100_000


class Outbox:
    """Report items for the active bot, delivered in order, kept until it says it has them."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self.items: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._prefix = f"standby-{os.getpid()}-{os.urandom(3).hex()}"
        self.ready = asyncio.Event()
        self.delivered = 0

    def put(self, kind: str, **fields: Any) -> None:
        self.items.append({"id": f"{self._prefix}-{next(self._ids)}", "kind": kind, **fields})
        if len(self.items) > self.limit:
            if not self.dropped:
                log.error("no active bot has taken report items for a while: %d kept, the oldest dropped", self.limit)
            del self.items[0]
            self.dropped += 1
        self.ready.set()


class ConsentViaActive(RegistrationConsent):
    """Consent at registration on a standby's gate: the active bot is asked (``/replica/v1/consent``,
    the question the Synapse module asks), since only it records the acceptance that its onboarding
    and every replica then see. The caching and the time limit are the active's own lookup's
    (RegistrationConsent: one question per account at a time, ``LOOKUP_TIMEOUT_S`` at most, a "no"
    kept ``NEGATIVE_FOR_MS``, no answer ``FAILED_FOR_MS``); a yes goes into the state the gate
    decides from at once, before the active's change comes back through the replica."""

    def __init__(self, standby: "Standby", state: Callable[[], PolicyState],
                 timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        super().__init__(self._ask_active, self._record_here, lambda: state().agreement_version,
                         lambda user_id: state().is_local(user_id), lambda: int(time.monotonic() * 1000))
        self._standby = standby
        self._state = state
        self.timeout_s = timeout_s

    async def _ask_active(self, user_id: str) -> tuple[int, Any]:
        return await self._standby._fetch("POST", CONSENT_PATH, body={"user_id": user_id}, timeout=self.timeout_s)

    async def _record_here(self, user_id: str, version: str, accepted_at: int | None) -> bool:
        self._state().record_acceptance(user_id, version)
        return True

    async def _ask(self, user_id: str) -> bool | None:
        """The active's answer (None: it could not check, or did not answer); never raises (the
        gate's refusal stands when there is no yes)."""
        self.lookups += 1
        try:
            status, body = await self._ask_active(user_id)
        except Exception as exc:  # unreachable, too slow, not JSON, no active advertised yet
            log.warning("standby: no answer from the active bot (%s) whether %s accepted the agreement at"
                        " registration (%s: %s); refused as not agreed for now, asked again in %d s",
                        self._standby.leader_url, user_id, type(exc).__name__, exc, FAILED_FOR_MS // 1000)
            self._remember_no(user_id, FAILED_FOR_MS, unknown=True)
            return None
        answer, version = consent_answer(status, body)
        if answer is None:
            # The active could not check (its admin API did not answer, its service is not up
            # yet) or answered an error: asked again as soon as the active would ask itself.
            log.info("standby: the active bot (%s) could not say (HTTP %s) whether %s accepted the agreement at"
                     " registration; refused as not agreed for now, asked again in %d s",
                     self._standby.leader_url, status, user_id, FAILED_FOR_MS // 1000)
            self._remember_no(user_id, FAILED_FOR_MS, unknown=True)
            return None
        if not answer:
            self._remember_no(user_id, NEGATIVE_FOR_MS)
            return False
        await self._record_here(user_id, version or self._version(), None)
        self._ask_again_at.pop(user_id, None)
        log.info("%s accepted the agreement at registration (the active bot %s recorded it)",
                 user_id, self._standby.leader_url)
        return True


class GateBinding:
    """Points the gate at a state and at what follows its decisions.

    The gate's decision code stays the one code path; only what it decides from (``_state``) and
    the hooks it calls afterwards change with the role. Standby: the replica, with each follow-up
    applied to the replica and queued for the active. Active: the state loaded from the store,
    with the gate's own follow-up code (``restore``)."""

    _METHODS = ("remember_private_news", "_scope_change", "room_created")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def standby(self, state: PolicyState, outbox: Outbox, health: Callable[[], dict[str, Any]],
                cannot_decide: Callable[[], str | None] | None = None, *,
                consent: ConsentViaActive | None = None, relay_to: "Standby | None" = None) -> None:
        """``cannot_decide``: why the replica is too stale to decide from now (None: it is not).
        ``consent``: how the active is asked about consent at registration (None: never asked, the
        refusal stands); ``relay_to``: where identity assertions are sent on (None: refused here)."""
        gate = self.gate
        gate.cannot_decide = cannot_decide
        note_post, remember_text = state.note_post, state.remember_text

        def post(user_id: str, now: int, event_id: str | None = None) -> None:
            note_post(user_id, now, event_id)  # the cap binds on this gate at once
            outbox.put("post", user_id=user_id, ts=now, **({"event_id": event_id} if event_id else {}))

        def text(body: str, user_id: str, now: int) -> None:
            remember_text(body, user_id, now)
            outbox.put("text", user_id=user_id, body=body, ts=now)

        def private_news(room_id: str, rule: str) -> None:
            Gate.remember_private_news(gate, room_id, rule)
            outbox.put("private_news", room_id=room_id, rule=rule)

        def scope(room_id: str, body: dict[str, Any]) -> None:
            Gate._scope_change(gate, room_id, body)
            if isinstance(body.get("event"), dict):
                outbox.put("scope", room_id=room_id, event=body["event"])

        async def new_room(user_id: str) -> None:
            outbox.put("new_room", user_id=user_id)

        # Instance attributes shadow the methods for this replica object only.
        object.__setattr__(state, "note_post", post)
        object.__setattr__(state, "remember_text", text)
        gate._state = state
        gate._new_rooms = None  # the active's directory guard follows new rooms (new_room items)
        gate._on_prompt = lambda user_id: outbox.put("prompt", user_id=user_id)
        gate._on_publish = lambda user_id, room_id: outbox.put("publish", user_id=user_id, room_id=room_id)
        gate._health = health
        # Consent at registration is the active's to record (its onboarding asks Synapse before it
        # prompts): it is asked, never this process's own service (stopped now, if it ran).
        gate.consent = None if consent is None else consent.answer
        self._identity_relay(relay_to)
        gate.remember_private_news, gate._scope_change, gate.room_created = private_news, scope, new_room
        self._serve(state)

    def active(self, early: Any, health: Callable[[], dict[str, Any]]) -> None:
        """The gate decides from ``early``'s state (fresh from the store) with its own follow-ups."""
        gate = self.gate
        gate.cannot_decide = None  # the active decides from the store's state, never stale
        # The service about to start sets its own; until then no question goes to the old active.
        gate.consent = None
        self._identity_relay(None)  # assertions are recorded here from now on
        for name in self._METHODS:
            gate.__dict__.pop(name, None)
        gate._state = early.state
        gate._new_rooms = early.directory
        gate._on_prompt, gate._on_publish, gate._health = early.prompt, early.published, health
        # The identity endpoint (issue 9) records verifications into its service's state: the new one.
        endpoint = getattr(gate.identity_endpoint, "__self__", None)
        if endpoint is not None and getattr(early, "identity", None) is not None:
            endpoint._identity = early.identity
        self._serve(early.state)

    def _identity_relay(self, standby: "Standby | None") -> None:
        # The route was bound when the gate started: the endpoint object itself switches.
        endpoint = getattr(self.gate.identity_endpoint, "__self__", None)
        if endpoint is not None:
            endpoint.relay_to = standby

    def _serve(self, state: PolicyState) -> None:
        # The Synapse modules that read this gate's replica routes follow the new state: a new
        # change log means a new epoch, so they take a new snapshot.
        publisher = self.gate.replica
        if publisher is not None:
            publisher.changes = ChangeLog(state)
            publisher.changes.on_change = publisher._wake


class Standby:
    """Follows the active bot (found in kv) and delivers the outbox to it."""

    def __init__(self, store: Store, token: str, own_url: str, *, poll_seconds: float = 1.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._store = store
        self._auth = {"Authorization": f"Bearer {token}"}
        self._own_url = own_url
        self.poll_seconds = poll_seconds
        self._session = session
        self.leader: dict[str, Any] | None = None
        self.outbox = Outbox()
        self.replica = Replica(self._fetch, asyncio.sleep, poll_timeout=20.0, retry_max=poll_seconds,
                               to_thread=asyncio.to_thread)
        self.following = True

    @property
    def leader_url(self) -> str | None:
        return None if self.leader is None else self.leader.get("url")

    async def _fetch(self, method: str, path: str, params: dict[str, str] | None = None,
                     body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        url = self.leader_url
        if url is None or url == self._own_url:
            raise ConnectionError("no active bot advertised yet")
        assert self._session is not None
        async with self._session.request(method, url + path, params=params, headers=self._auth,
                                         data=None if body is None else orjson.dumps(body),
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.json(loads=orjson.loads, content_type=None)

    async def relay(self, path: str, raw: bytes, headers: Mapping[str, str],
                    timeout: float = 10.0) -> tuple[int, bytes, str]:
        """POST ``raw`` unchanged to the active bot's ``path``: its status, body and content type.
        NoActiveBot when no other process is advertised as the active (nothing was sent);
        aiohttp's errors and TimeoutError when it does not answer."""
        url = self.leader_url
        if url is None or url == self._own_url:
            raise NoActiveBot("no active bot advertised yet")
        assert self._session is not None
        async with self._session.post(url + path, data=raw, headers=dict(headers),
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.read(), response.content_type

    async def read_leader(self) -> None:
        text = await self._store.get(LEADER_KEY)
        try:
            leader = None if text is None else orjson.loads(text)
        except orjson.JSONDecodeError:
            leader = None
        if leader != self.leader:
            log.info("the active bot is %s", leader)
            if self.leader is not None:
                self.replica.epoch = None  # another process: its numbering starts anew
        self.leader = leader

    async def _read_leader_or_keep(self) -> None:
        try:
            await self.read_leader()
        except Exception as exc:  # the store's PostgreSQL away: keep following the last one
            log.warning("cannot read the active bot's address: %s", exc)

    async def watch_leader(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self._read_leader_or_keep()

    async def deliver(self) -> None:
        """Send queued items in order to the active bot (to this process once it is the active)."""
        while True:
            await self.outbox.ready.wait()
            batch = self.outbox.items[:DELIVER_BATCH]
            if not batch:
                self.outbox.ready.clear()
                continue
            url = self._own_url if not self.following else self.leader_url
            try:
                if url is None:
                    raise ConnectionError("no active bot advertised yet")
                assert self._session is not None
                async with self._session.post(url + "/replica/v1/reports", data=orjson.dumps({"items": batch}),
                                              headers={**self._auth, "Content-Type": "application/json"},
                                              timeout=aiohttp.ClientTimeout(total=10)) as response:
                    answer = await response.json(loads=orjson.loads, content_type=None)
                    if response.status == 400:
                        # A bad item is ours, not the active's: logged, dropped, the rest kept.
                        log.error("the active bot refused report items: %s", answer)
                    elif response.status != 200:
                        raise ConnectionError(f"reports answered {response.status}: {answer}")
                del self.outbox.items[:len(batch)]
                self.outbox.delivered += len(batch)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
                log.debug("report items wait for the active bot: %s", exc)
                await asyncio.sleep(min(self.poll_seconds, 0.5))

    async def follow(self) -> None:
        """Follow the active bot (its address, then its state) until cancelled."""
        await self._read_leader_or_keep()  # before the first snapshot is asked for
        await asyncio.gather(self.watch_leader(), self.replica.run())

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
