"""The gate: the HTTP server that ``synapse-http-antispam`` asks before Synapse accepts a local
user's event, invite, room creation or publication.

Answers come from memory through the pure policy core, so a decision costs a dictionary lookup
and the request parsing around it. ``200 {}`` allows; ``403 {"errcode": "M_FORBIDDEN", "error":
...}`` refuses, and Synapse shows ``error`` to the user as it is.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.gate.callbacks import (
    GATED, PASSTHROUGH, SCOPE_STATE, USERNAME_CALLBACK, SchemaError, opening_of, scope_setting,
)
from bot.gate.metrics import GateMetrics
from bot.directory import DirectoryGuard
from bot.i18n import Translator
from bot.policy import Action, ActionKind, Decision, PolicyState, decide
from bot.policy.decide import news_verdict

if TYPE_CHECKING:
    from bot.replica.publisher import ReplicaPublisher

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


def _allow() -> web.Response:
    # A new object each time: an aiohttp Response can be sent only once.
    return web.Response(body=b"{}", content_type="application/json")


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd's socket activation passes (fd 3, ``LISTEN_FDS``, for this
    ``LISTEN_PID``), if any. The variables are removed so no child process takes it too."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS", "").isdigit():
        return None
    if int(os.environ["LISTEN_FDS"]) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sock = socket.socket(fileno=3)
    sock.setblocking(False)
    return sock


class Gate:
    def __init__(
        self,
        state: PolicyState,
        translate: Translator,
        token: str,
        on_prompt: Callable[[str], None],
        health: Callable[[], dict[str, Any]] = lambda: {},
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
        on_publish: Callable[[str, str], None] = lambda user, room: None,
        new_rooms: DirectoryGuard | None = None,
    ) -> None:
        self._on_publish = on_publish
        # Follows the rooms accounts create: Synapse sends none of a new room's initial events
        # through check_event_for_spam, and lists a room created with visibility "public" without
        # asking user_may_publish_room (see bot.directory).
        self._new_rooms = new_rooms
        self.username_callback_seen = False
        self._state = state
        self._clock = clock
        self._t = translate
        self._token = f"Bearer {token}".encode()
        self._on_prompt = on_prompt
        self._health = health
        self.metrics = GateMetrics()
        # Refusal bodies depend only on the reason and a few parameters: render each once.
        self._refusals: dict[tuple[str | None, tuple[tuple[str, str], ...]], bytes] = {}
        self._runner: web.AppRunner | None = None
        # room -> how many join-rule or history-visibility changes the gate allowed there: a
        # read-back that narrows the scope is dropped if a newer change came meanwhile.
        self._scope_changes: dict[str, int] = {}
        # --- consent at registration (bot.consent) ---
        # Asked before refusing an account that has not agreed: True if it accepted the agreement
        # at registration (now recorded), so its first message is not refused; False if it did
        # not; None if that could not be checked now (the replica's /consent tells the asker,
        # who asks again sooner). Set by the service (bot.consent) or a standby (bot.standby).
        self.consent: Callable[[str], Awaitable[bool | None]] | None = None
        # issue 9: POST /identity/v1/verifications (bot.identity.assertion), set before start()
        self.identity_endpoint: Callable[[web.Request], Awaitable[web.Response]] | None = None
        # issue 11 (bot.ha): a standby whose replica is too stale to decide from says why here;
        # the gated callbacks then get a 503 with a plain-text body, which synapse-http-antispam
        # treats as an unreachable gate (its fail_open per callback). None: always decides.
        self.cannot_decide: Callable[[], str | None] | None = None
        # issue 10: the replica routes (bot.replica.publisher), set before start()
        self.replica: ReplicaPublisher | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/antispam/ping", self._ping)
        app.router.add_post("/antispam/{callback}", self._callback)
        app.router.add_get("/health", self._health_handler)
        app.router.add_get("/metrics", self._metrics)
        if self.identity_endpoint is not None:  # issue 9: signed, not bearer-authorised
            app.router.add_post("/identity/v1/verifications", self.identity_endpoint)
        if self.replica is not None:  # issue 10
            self.replica.add_routes(app)
            self.metrics.include(self.replica)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        inherited = inherited_socket()
        if inherited is not None:
            # Socket activation: the listening socket outlives this process, so what Synapse asks
            # while the bot restarts waits in its backlog and is answered, instead of refused.
            await web.SockSite(self._runner, inherited).start()
            log.info("gate listening on the socket it was given, %s:%d", *inherited.getsockname()[:2])
            return
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        log.info("gate listening on %s:%d", host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorised(self, request: web.Request) -> bool:
        # aiohttp decodes headers as UTF-8 with surrogateescape: the same bytes back, so a header
        # that is not UTF-8 is a wrong token (401), not an exception (500 on every route).
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return secrets.compare_digest(given, self._token)

    async def _read_json(self, request: web.Request) -> dict[str, Any] | web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, "M_TOO_LARGE", "request body is larger than 1 MiB")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "M_TOO_LARGE", "request body is larger than 1 MiB")
        try:
            body = orjson.loads(raw)  # several times faster than json on a 1 KB event: the gate's main cost
        except orjson.JSONDecodeError:
            return _error(400, "M_BAD_JSON", "request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "M_INVALID_PARAM", "request body must be a JSON object")
        return body

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "M_UNKNOWN_TOKEN", "missing or wrong bearer token")
        body = await self._read_json(request)
        if isinstance(body, web.Response):
            return body
        return web.json_response({"id": body.get("id"), "status": "ok"})

    async def _callback(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["callback"]
        if not self._authorised(request):
            self.metrics.count("-", "unauthorised")
            return _error(401, "M_UNKNOWN_TOKEN", "missing or wrong bearer token")
        to_action = GATED.get(name)
        if name == USERNAME_CALLBACK:
            return self._username_callback()
        if to_action is None and name not in PASSTHROUGH:
            self.metrics.count("-", "unknown")
            return _error(404, "M_UNRECOGNIZED", f"unknown callback {name[:64]!r}")
        body = await self._read_json(request)
        if isinstance(body, web.Response):
            self.metrics.count(name, "bad_request")
            return body
        if to_action is None:
            self.metrics.count(name, "allow")
            return _allow()
        why_not = self.cannot_decide() if self.cannot_decide is not None else None
        if why_not is not None:
            self.metrics.count(name, "cannot_decide")
            return web.Response(status=503, text=why_not)
        try:
            action = to_action(body)
            new_rooms = self._new_rooms
            if (new_rooms is not None and action.kind is ActionKind.SEND_EVENT
                    and new_rooms.unsettled(action.user_id, action.room_id)):
                await new_rooms.settle(action.user_id)  # perhaps the room it just created public
            now = self._clock()
            decision = decide(action, self._state, now)
            # --- consent at registration (bot.consent): cached per account, a short timeout ---
            if not decision.allowed and decision.prompt_agreement and self.consent is not None \
                    and await self.consent(action.user_id) is True:
                decision = decide(action, self._state, now)
            if decision.allowed and action.kind is ActionKind.CREATE_ROOM:
                await self.room_created(action.user_id)
        except SchemaError as exc:
            self.metrics.count(name, "bad_request")
            return _error(400, "M_INVALID_PARAM", str(exc))
        except Exception:
            # A body the parsers did not foresee must not become a 500 (or take the gate down):
            # the module reads any non-2xx with an errcode as a refusal, so this refuses safely.
            log.exception("the gate could not judge a %s request", name)
            self.metrics.count(name, "error")
            return _error(400, "M_INVALID_PARAM", "the request could not be judged")
        if decision.prompt_agreement:
            self._on_prompt(action.user_id)
        elif decision.count_post:
            # By event ID when the body has one: a callback sent again counts once.
            event = body.get("event")
            event_id = event.get("event_id") if isinstance(event, dict) else None
            self._state.note_post(action.user_id, now, event_id if isinstance(event_id, str) else None)
        if decision.allowed:
            if action.body and self._state.in_news_scope(action.room_id):
                self._state.remember_text(action.body, action.user_id, now)
            elif action.body and action.room_id is not None:
                self._note_private_news(action, now)
            elif action.kind is ActionKind.PUBLISH_ROOM and action.room_id is not None:
                self._on_publish(action.user_id, action.room_id)
            if action.room_id is not None and action.event_type in SCOPE_STATE:
                # In scope from the moment the room opens, not at the next refresh. Only widening:
                # Synapse's auth rules (power levels) may still refuse the event after this answer,
                # so a room leaves scope from what was stored: read back (admin token), seen by the
                # bot's sync, or at the refresh.
                self._scope_change(action.room_id, body)
        response = _allow() if decision.allowed else self._refusal(decision)
        self.metrics.count(name, "allow" if decision.allowed else "deny")
        self.metrics.observe(time.perf_counter() - started)
        return response

    def _scope_change(self, room_id: str, body: dict[str, Any]) -> None:
        event = body.get("event")
        setting = opening_of(event)
        self._scope_changes[room_id] = changes = self._scope_changes.get(room_id, 0) + 1
        if len(self._scope_changes) > 100_000:  # only a guard against growth: drop the oldest
            del self._scope_changes[next(iter(self._scope_changes))]
        if setting is None:
            if self._new_rooms is not None and scope_setting(event) is not None:
                self._new_rooms.follow_scope(room_id, lambda: self._scope_changes.get(room_id) == changes)
            return
        kind, value = setting
        if kind == "m.room.join_rules":
            self._state.note_join_rule(room_id, value, narrow=False)
        else:
            self._state.note_history_visibility(room_id, value, narrow=False)

    def _note_private_news(self, action: Action, now: int) -> None:
        """A post out of scope that would need a tier in scope: remember the room, so it cannot be
        opened while that news sits in its history (decide's PRIVATE_NEWS). Direct chats with the
        bot are never opened that way (only their account and the bot are in them)."""
        assert action.room_id is not None and action.body is not None
        if action.room_id in self._state.private_news or action.room_id in self._state.dm_user_by_room:
            return
        probe = Action(ActionKind.SEND_EVENT, action.user_id, room_id=action.room_id, event_type=action.event_type,
                       body=action.body, quotes_reply=action.quotes_reply)
        verdict = news_verdict(probe, self._state, now)
        if not verdict.allowed:
            self.remember_private_news(action.room_id, verdict.params.get("rule", ""))

    # --- replica (issue 10): what a module's decision leaves behind goes through these, the same
    # handlers as the gate's own decisions (bot.replica.publisher).
    @property
    def state(self) -> PolicyState:
        return self._state

    def authorised(self, request: web.Request) -> bool:
        return self._authorised(request)

    async def read_json(self, request: web.Request) -> dict[str, Any] | web.Response:
        return await self._read_json(request)

    def refusal(self, decision: Decision) -> web.Response:
        return self._refusal(decision)

    def on_prompt(self, user_id: str) -> None:
        self._on_prompt(user_id)

    def on_publish(self, user_id: str, room_id: str) -> None:
        self._on_publish(user_id, room_id)

    def scope_change(self, room_id: str, body: dict[str, Any]) -> None:
        self._scope_change(room_id, body)

    async def room_created(self, user_id: str) -> None:
        """An allowed room creation: the directory guard follows the new room."""
        if self._new_rooms is not None and self._state.is_local(user_id) and not self._state.is_exempt(user_id):
            await self._new_rooms.room_creation(user_id)

    async def room_reported(self, user_id: str, room_id: str | None, since: int) -> None:
        """A room creation reported after createRoom ran (a module's new_room item): the
        directory guard looks at that room, or at the account's rooms created since ``since``."""
        if self._new_rooms is not None and self._state.is_local(user_id) and not self._state.is_exempt(user_id):
            await self._new_rooms.room_reported(user_id, room_id, since)

    def remember_private_news(self, room_id: str, rule: str) -> None:
        """News posted out of scope in ``room_id`` (the first rule noted stays); never a DM with
        the bot, which is never opened."""
        if room_id not in self._state.private_news and room_id not in self._state.dm_user_by_room:
            self._state.private_news[room_id] = rule
    # --- end replica

    def _username_callback(self) -> web.Response:
        if not self.username_callback_seen:
            self.username_callback_seen = True
            log.error(
                "Synapse asks check_username_for_spam: with synapse-http-antispam every answer hides the "
                "user from user-directory search, so nobody can be found. Remove check_username_for_spam "
                "from the module's enabled_callbacks (see config/synapse-module.yaml)."
            )
        self.metrics.count(USERNAME_CALLBACK, "misconfigured")
        return _allow()

    def _refusal(self, decision: Decision) -> web.Response:
        key = (decision.message_key, tuple(sorted(decision.params.items())))
        body = self._refusals.get(key)
        if body is None:
            if len(self._refusals) > 10_000:  # parameters are few; this only guards against surprises
                self._refusals.clear()
            message = self._t.refusal(decision.message_key, decision.params)
            body = self._refusals[key] = json.dumps({"errcode": "M_FORBIDDEN", "error": message}).encode()
        return web.Response(body=body, status=403, content_type="application/json")

    async def _health_handler(self, request: web.Request) -> web.Response:
        health: dict[str, Any] = {"status": "ok", **self._health()}
        if self.username_callback_seen:
            # Added to the service's own warnings (bot.consent's version mismatch), not in their place.
            health["warnings"] = [*health.get("warnings", []),
                                  "check_username_for_spam is enabled in synapse-http-antispam: user search finds nobody"]
        # A loop that keeps failing (bot.supervise) makes the service "degraded": 503, so a
        # monitor that only reads status codes notices too.
        return web.json_response(health, status=200 if health["status"] == "ok" else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
