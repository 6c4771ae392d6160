"""``bot.synapse.RulesModule``: the rules decided inside Synapse, from a replica of the bot's state.

Load it in homeserver.yaml (config/synapse-module-inprocess.yaml). Every Synapse process that loads
modules (the main process, each worker) holds its own replica (bot.synapse.replica), decides each
callback with the core's ``decide()`` exactly as the gate does (bot.synapse.judge), and sends what
the bot must know in batches (bot.synapse.outbox). Only a post of an account under a rate cap asks
the bot while Synapse waits: the count of recent posts must be shared exactly by every process; and,
before a local account is refused for not having agreed, whether it accepted the agreement at
registration (Synapse's user_consent, which only the bot reads, with its admin token).

Import closure: the policy core, bot.replica.protocol, bot.i18n, and what Synapse ships (Twisted,
treq, prometheus_client). No aiohttp, nio, aiosqlite or pydantic-settings
(tests/unit/test_synapse_module_imports.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Literal

import treq
from prometheus_client import Counter, Gauge
from synapse.module_api import NOT_SPAM, ModuleApi, make_deferred_yieldable
from synapse.module_api.errors import Codes
from synapse.spam_checker_api import RegistrationBehaviour
from twisted.internet import reactor as _reactor
from twisted.web.client import HTTPConnectionPool

from bot.i18n import Translator
from bot.policy import ActionKind, Decision, PolicyState
from bot.policy.model import ALLOW_AND_COUNT
from bot.replica.protocol import CONSENT_PATH, consent_answer
from bot.synapse.config import ModuleConfig, parse_config
from bot.synapse.judge import (Judge, has_rate_cap, is_rate_decision, new_room_news, new_room_scope, opens,
                               registration_refusal, report)
from bot.synapse.outbox import Outbox
from bot.synapse.replica import Replica

log = logging.getLogger(__name__)

RATECAP_PATH = "/replica/v1/ratecap"
# An account the bot said had not accepted at registration is asked about again after this long:
# it may agree on Synapse's consent page meanwhile.
CONSENT_ASK_AGAIN_S = 60.0
# When the bot could not check (its admin API did not answer; {"unknown": true}) or did not answer at
# all: sooner, as the bot retries its own failed lookups (bot.consent.registration.FAILED_FOR_MS).
CONSENT_RETRY_S = 10.0
CONSENT_REMEMBERED = 100_000  # only a guard against growth
# How long after createRoom an opening is looked at as possibly the new room's (ms).
NEW_ROOM_WINDOW_MS = 60_000
# Bodies larger than this are parsed in a thread: a snapshot of 100,000 accounts is megabytes.
THREAD_PARSE_BYTES = 256 * 1024

STALENESS = Gauge("rulesbot_module_replica_staleness_seconds",
                  "Seconds the rules replica may be behind the bot (+Inf before the first snapshot)",
                  ["server_name"])
SEQ = Gauge("rulesbot_module_replica_seq", "The last change of the bot's state the replica applied", ["server_name"])
PENDING = Gauge("rulesbot_module_reports_pending", "Reports waiting to be sent to the bot", ["server_name"])
DECISIONS = Counter("rulesbot_module_decisions_total",
                    "Callbacks answered by the rules module, by outcome: allow, deny, or fail_open / "
                    "fail_closed while the replica cannot decide", ["server_name", "callback", "outcome"])
RATECAP = Counter("rulesbot_module_ratecap_total",
                  "Rate-cap questions to the bot: answered, or decided from the replica (fallback)",
                  ["server_name", "outcome"])
CONSENT = Counter("rulesbot_module_consent_total",
                  "Questions to the bot whether an account accepted the agreement at registration: "
                  "accepted, not_accepted, or fallback (no answer: refused as not agreed)",
                  ["server_name", "outcome"])

Refusal = tuple[Codes, dict[str, str]]


@dataclass
class NewRoom:
    """What createRoom made of the room an account just created (see RulesModule._new_room)."""

    since: int  # ms
    opened: bool  # an open join rule or world-readable history: in news scope
    listed: bool  # visibility public: in the directory
    news: tuple[str, str] | None  # (rule, text) of initial news held out of scope
    scope: dict[str, Any] = field(default_factory=dict)  # judge.new_room_scope, for the bot's report
    looked_at: set[str] = field(default_factory=set)


def _now_ms() -> int:
    return int(time.time() * 1000)


class RulesModule:
    """Synapse module: ``module: bot.synapse.RulesModule`` with the config of bot.synapse.config."""

    def __init__(self, config: ModuleConfig, api: ModuleApi) -> None:
        self.config = config
        self.api = api
        self.server_name = api.server_name
        self.judge = Judge(Translator(config.language))
        self._pool = HTTPConnectionPool(_reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        # The bot counts replicas by address and this id (a main process and its workers share a host).
        self._auth = {"Authorization": f"Bearer {config.token}", "X-Replica-Id": f"{self.server_name}/{os.getpid()}"}
        self.replica = Replica(self._fetch, api.sleep, poll_timeout=config.poll_timeout,
                               stale_after=config.stale_after, retry_max=config.snapshot_retry_max,
                               to_thread=api.defer_to_thread)
        self.outbox = Outbox(self._fetch, api.sleep, config.report_interval)
        # user -> the room it just created (NewRoom). Its ID is not known when createRoom is asked
        # about, and none of its initial events reach check_event_for_spam: the account's next
        # events in a room the replica has no scope for find it (see _new_room).
        self._new_rooms: dict[str, NewRoom] = {}
        # consent at registration: user -> when (monotonic s) it may be asked about again
        self._consent_ask_again: dict[str, float] = {}
        self.consent_clock: Callable[[], float] = time.monotonic
        STALENESS.labels(self.server_name).set_function(self.replica.staleness)
        SEQ.labels(self.server_name).set_function(lambda: self.replica.seq)
        PENDING.labels(self.server_name).set_function(lambda: len(self.outbox.pending))
        api.register_spam_checker_callbacks(
            check_event_for_spam=self.check_event_for_spam,
            user_may_invite=self.user_may_invite,
            user_may_send_3pid_invite=self.user_may_send_3pid_invite,
            user_may_create_room=self.user_may_create_room,
            user_may_publish_room=self.user_may_publish_room,
            user_may_join_room=self.user_may_join_room,
            check_login_for_spam=self.check_login_for_spam,
            check_registration_for_spam=self.check_registration_for_spam,  # identity.registration
        )
        api.run_as_background_process("rulesbot_replica", self.replica.run)
        api.run_as_background_process("rulesbot_reports", self.outbox.run)
        api.looping_background_call(self.replica.check_staleness, 1000, desc="rulesbot_staleness",
                                    run_on_all_instances=True)

    @staticmethod
    def parse_config(config: Any) -> ModuleConfig:
        """Synapse calls this at start-up; a ConfigError (a ValueError naming the key) stops it
        with that message."""
        return parse_config(config)

    # -- the network ---------------------------------------------------------------------------

    async def _fetch(self, method: str, path: str, *, params: dict[str, str] | None = None,
                     body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One request to the bot: (status, JSON body or None). Raises on network errors and
        timeouts. treq's Deferreds know nothing of Synapse's logcontexts: made yieldable."""
        # UTF-8, not \u escapes: a Chinese text is 3 bytes a character instead of 6 (the outbox
        # counts its batches' bytes the same way, under the gate's body limit).
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = dict(self._auth)
        if data is not None:
            headers["Content-Type"] = "application/json"
        response = await make_deferred_yieldable(treq.request(
            method, self.config.bot_url + path, params=params, data=data, headers=headers,
            timeout=timeout, pool=self._pool,
        ))
        raw = await make_deferred_yieldable(treq.content(response))
        if not raw:
            return response.code, None
        try:
            if len(raw) > THREAD_PARSE_BYTES:
                return response.code, await self.api.defer_to_thread(json.loads, raw)
            return response.code, json.loads(raw)
        except ValueError:
            return response.code, None

    # -- deciding ------------------------------------------------------------------------------

    def _state(self, callback: str) -> PolicyState | None:
        """The replica, if it may decide ``callback`` now: there is one, and it is not older than
        the callback's ``max_staleness``."""
        state = self.replica.state
        if state is None:
            return None
        limit = self.config.max_staleness.get(callback)
        if limit is not None and self.replica.staleness() > limit:
            return None
        return state

    def _cannot_decide(self, callback: str, kind: ActionKind) -> Literal["NOT_SPAM"] | Refusal:
        if self.config.fails_open(callback):
            DECISIONS.labels(self.server_name, callback, "fail_open").inc()
            return NOT_SPAM
        DECISIONS.labels(self.server_name, callback, "fail_closed").inc()
        return Codes.FORBIDDEN, {"error": self.judge.unavailable(kind)}

    def _answer(self, callback: str, decision: Decision) -> Literal["NOT_SPAM"] | Refusal:
        if decision.allowed:
            DECISIONS.labels(self.server_name, callback, "allow").inc()
            return NOT_SPAM
        DECISIONS.labels(self.server_name, callback, "deny").inc()
        # Synapse puts the additional fields over its own: the client shows this "error".
        return Codes.FORBIDDEN, {"error": self.judge.refusal(decision)}

    def _prompt(self, user_id: str, decision: Decision, now: int) -> None:
        if decision.prompt_agreement:
            # Each refusal asks, as the gate's do: the bot decides whether a prompt is due (a new
            # DM after the account left its old one, for one).
            self.outbox.add([report("prompt", None, user_id=user_id)])

    async def check_event_for_spam(self, event: Any) -> Literal["NOT_SPAM"] | Refusal:
        callback = "check_event_for_spam"
        state = self._state(callback)
        if state is None:
            return self._cannot_decide(callback, ActionKind.SEND_EVENT)
        content = event.get_dict()
        content["event_id"] = event.event_id
        now = _now_ms()
        if self._new_rooms and event.sender in self._new_rooms:
            await self._new_room(state, event.sender, event.room_id, now)
        action, decision = self.judge.event(state, content, now)
        if await self._accepted_at_registration(state, action.user_id, decision):
            action, decision = self.judge.event(state, content, now)
        counted_by_bot = False
        refused_by_bot: str | None = None
        if is_rate_decision(decision) and has_rate_cap(state, action.user_id, now):
            answer = await self._ratecap(action.user_id, event.event_id, now)
            if answer is not None:
                counted_by_bot = True
                if answer is True:
                    decision = decision if decision.allowed else ALLOW_AND_COUNT
                else:
                    refused_by_bot = answer
        if refused_by_bot is not None:
            DECISIONS.labels(self.server_name, callback, "deny").inc()
            return Codes.FORBIDDEN, {"error": refused_by_bot}
        items = self.judge.after_event(state, action, decision, content, now, counted_by_bot=counted_by_bot)
        if items:
            self.outbox.add(items)
        return self._answer(callback, decision)

    async def _ratecap(self, user_id: str, event_id: str, now: int) -> bool | str | None:
        """The bot's answer for a post of an account under a rate cap: True (allowed and counted),
        the refusal's text, or None (no answer within ``ratecap_timeout``: the replica decides, and
        the post is reported to the bot to be counted, by event ID, once it is back)."""
        try:
            status, body = await self._fetch("POST", RATECAP_PATH, body={"user_id": user_id, "event_id": event_id,
                                                                       "ts": now},
                                             timeout=self.config.ratecap_timeout)
        except Exception as exc:
            RATECAP.labels(self.server_name, "fallback").inc()
            log.warning("rules module: no rate-cap answer from the bot for %s (%s); deciding from the replica",
                        user_id, type(exc).__name__)
            return None
        # The bot answers as its gate does (bot.replica.publisher._ratecap): 200 {} allowed and
        # counted, 403 {"errcode", "error"} refused with the text to show.
        if status == 200:
            RATECAP.labels(self.server_name, "answered").inc()
            return True
        if status == 403 and isinstance(body, dict) and isinstance(body.get("error"), str):
            RATECAP.labels(self.server_name, "answered").inc()
            return body["error"]
        RATECAP.labels(self.server_name, "fallback").inc()
        log.warning("rules module: the bot answered the rate-cap question with %s; deciding from the replica", status)
        return None

    # --- consent at registration (bot.consent) ---
    async def _accepted_at_registration(self, state: PolicyState, user_id: str, decision: Decision) -> bool:
        """Before refusing ``user_id`` for not having agreed: ask the bot (synchronously, within
        ``consent_timeout``) whether it accepted the agreement at registration. True: the bot has
        recorded it, and the replica takes it at once (the change follows from the bot). A "no" is
        kept for CONSENT_ASK_AGAIN_S, "could not check" or no answer (fallback: refused as not
        agreed, as before) for CONSENT_RETRY_S, so a refused account does not cost a question per
        event and one that did agree is not refused for a minute by one failed lookup."""
        if decision.allowed or not decision.prompt_agreement or not state.is_local(user_id):
            return False
        clock = self.consent_clock
        if clock() < self._consent_ask_again.get(user_id, 0.0):
            return False
        if len(self._consent_ask_again) >= CONSENT_REMEMBERED:
            self._consent_ask_again.clear()
        self._consent_ask_again[user_id] = clock() + CONSENT_RETRY_S
        try:
            status, body = await self._fetch("POST", CONSENT_PATH, body={"user_id": user_id},
                                             timeout=self.config.consent_timeout)
        except Exception as exc:
            CONSENT.labels(self.server_name, "fallback").inc()
            log.warning("rules module: no answer from the bot whether %s accepted the agreement at registration (%s);"
                        " refused as not agreed", user_id, type(exc).__name__)
            return False
        answer, version = consent_answer(status, body)
        if answer is None:
            CONSENT.labels(self.server_name, "fallback").inc()
            log.warning("rules module: the bot could not check whether %s accepted the agreement at registration"
                        " (HTTP %s); refused as not agreed, asked again in %.0f s", user_id, status, CONSENT_RETRY_S)
            return False
        if not answer:
            CONSENT.labels(self.server_name, "not_accepted").inc()
            self._consent_ask_again[user_id] = clock() + CONSENT_ASK_AGAIN_S
            return False
        CONSENT.labels(self.server_name, "accepted").inc()
        del self._consent_ask_again[user_id]
        state.record_acceptance(user_id, version or state.agreement_version)
        return True

    async def _decide(self, callback: str, kind: ActionKind, user_id: str,
                      judge: Callable[[PolicyState, int], Decision],
                      follow_up: Callable[[PolicyState, int], None] | None = None) -> Literal["NOT_SPAM"] | Refusal:
        """One callback other than check_event_for_spam: the replica's decision (or ``fail``),
        asked again after the bot's answer about consent at registration, the agreement prompt it
        asks for, and ``follow_up`` when it allows."""
        state = self._state(callback)
        if state is None:
            return self._cannot_decide(callback, kind)
        now = _now_ms()
        decision = judge(state, now)
        if await self._accepted_at_registration(state, user_id, decision):
            decision = judge(state, now)
        self._prompt(user_id, decision, now)
        if decision.allowed and follow_up is not None:
            follow_up(state, now)
        return self._answer(callback, decision)

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> Literal["NOT_SPAM"] | Refusal:
        return await self._decide("user_may_invite", ActionKind.INVITE, inviter,
                                  lambda state, now: self.judge.invite(state, inviter, invitee, room_id, now))

    async def user_may_send_3pid_invite(self, inviter: str, medium: str, address: str,
                                        room_id: str) -> Literal["NOT_SPAM"] | Refusal:
        return await self._decide("user_may_send_3pid_invite", ActionKind.INVITE, inviter,
                                  lambda state, now: self.judge.threepid_invite(state, inviter, medium, address,
                                                                                room_id, now))

    async def user_may_join_room(self, user: str, room_id: str, is_invited: bool) -> Literal["NOT_SPAM"] | Refusal:
        return await self._decide("user_may_join_room", ActionKind.JOIN_ROOM, user,
                                  lambda state, now: self.judge.join(state, user, room_id, is_invited, now))

    async def _new_room(self, state: PolicyState, user_id: str, room_id: str, now: int) -> None:
        """``user_id`` acts in ``room_id`` soon after creating a room: if ``room_id`` is that room
        (created by the account since), give the replica what createRoom made of it at once: in
        scope if it was created public, noted (PRIVATE_NEWS) if its initial text is news it holds
        out of scope. The bot's directory guard does the same from the room_created report; this
        covers the moments before its change arrives. One read of the create event per room, only
        for an account that just created one."""
        new = self._new_rooms[user_id]
        if now - new.since > NEW_ROOM_WINDOW_MS:
            del self._new_rooms[user_id]
            return
        if room_id in new.looked_at or state.in_news_scope(room_id) or room_id in state.private_news:
            return
        new.looked_at.add(room_id)
        created = (await self.api.get_room_state(room_id, [("m.room.create", "")])).get(("m.room.create", ""))
        if created is None or created.sender != user_id or created.origin_server_ts < new.since - 1000:
            return
        if new.opened:
            state.open_rooms.add(room_id)
        if new.listed:
            state.listed_rooms.add(room_id)
        # The bot's directory guard classifies this room (the report made at creation could only
        # give a time), and the scope createRoom set reaches every replica through the bot.
        items = [report("new_room", room_id, user_id=user_id, room_id=room_id, since=new.since, scope=new.scope)]
        if new.news is not None:
            rule, body = new.news
            state.private_news[room_id] = rule
            items.append(report("private_news", room_id, room_id=room_id, rule=rule))
        self.outbox.add(items)

    async def user_may_create_room(self, user_id: str, room_config: dict[str, Any]) -> Literal["NOT_SPAM"] | Refusal:
        def follow_up(state: PolicyState, now: int) -> None:
            if state.is_local(user_id) and not state.is_exempt(user_id):
                # The bot's directory guard follows the new room (scope, private news in its history).
                # This report reaches it after createRoom ran: ``since`` tells the new room from the
                # account's older ones; the room's ID follows once this process sees it (_new_room).
                self.outbox.add([report("new_room", None, user_id=user_id, since=now)])
                self._new_rooms[user_id] = NewRoom(
                    since=now, opened=opens(room_config), listed=room_config.get("visibility") == "public",
                    news=new_room_news(state, user_id, room_config, now), scope=new_room_scope(room_config))

        return await self._decide("user_may_create_room", ActionKind.CREATE_ROOM, user_id,
                                  lambda state, now: self.judge.create_room(state, user_id, room_config, now),
                                  follow_up)

    async def user_may_publish_room(self, user_id: str, room_id: str) -> Literal["NOT_SPAM"] | Refusal:
        state = self.replica.state
        if state is not None and user_id in self._new_rooms:
            await self._new_room(state, user_id, room_id, _now_ms())
        def follow_up(state: PolicyState, now: int) -> None:
            # The bot reads the room's listing and keeps the account's channels in step.
            self.outbox.add([report("publish", f"{user_id}:{room_id}:{now}", user_id=user_id, room_id=room_id)])

        return await self._decide("user_may_publish_room", ActionKind.PUBLISH_ROOM, user_id,
                                  lambda state, now: self.judge.publish(state, user_id, room_id, now), follow_up)

    async def check_login_for_spam(self, user_id: str, device_id: str | None, initial_display_name: str | None,
                                   request_info: Collection[tuple[str | None, str]],
                                   auth_provider_id: str | None = None) -> Literal["NOT_SPAM"]:
        """A login only greets: never refused, never delayed (the prompt goes out in a batch)."""
        state = self._state("check_login_for_spam")
        if state is not None:
            now = _now_ms()
            self._prompt(user_id, self.judge.login(state, user_id, now), now)
        return NOT_SPAM

    # --- registration (identity.registration) ---
    async def check_registration_for_spam(self, email_threepid: dict[str, str] | None, username: str | None,
                                          request_info: Collection[tuple[str | None, str]],
                                          auth_provider_id: str | None = None) -> RegistrationBehaviour:
        """Refuses a registration the bot's identity.registration does not allow (a replica field).
        Synapse answers a refused one with 429 "Rate limited", never our text: the reason is in
        Synapse's log. Before the first snapshot (or past max_staleness) ``fail`` decides."""
        callback = "check_registration_for_spam"
        state = self._state(callback)
        if state is None:
            if self.config.fails_open(callback):
                DECISIONS.labels(self.server_name, callback, "fail_open").inc()
                return RegistrationBehaviour.ALLOW
            DECISIONS.labels(self.server_name, callback, "fail_closed").inc()
            log.warning("rules module: registration of %r refused: no current replica to decide from", username)
            return RegistrationBehaviour.DENY
        refusal = registration_refusal(state, auth_provider_id, request_info)
        if refusal is None:
            DECISIONS.labels(self.server_name, callback, "allow").inc()
            return RegistrationBehaviour.ALLOW
        DECISIONS.labels(self.server_name, callback, "deny").inc()
        log.info("rules module: %s (username %r)", refusal, username)
        return RegistrationBehaviour.DENY
    # --- end registration ---
