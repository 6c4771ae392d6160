"""The bot's side of the replica, served by the gate's HTTP server (same token, same port).

- ``GET /replica/v1/snapshot``: the whole state at a sequence number (bot.replica.protocol).
- ``GET /replica/v1/changes?since=N[&epoch=E][&timeout=ms]``: the changes after N, long-polled.
- ``POST /replica/v1/reports``: what the modules' decisions leave for the bot (prompts, counted
  posts, texts in scope, private news, scope changes, new and published rooms), applied once per
  item id by the gate's own follow-up code.
- ``POST /replica/v1/ratecap``: the gate's answer to a post of an account under a rate cap,
  asked synchronously because the count is shared by every Synapse process.
- ``POST /replica/v1/consent``: did this account accept the agreement at registration (Synapse's
  user_consent, bot.consent)? Asked synchronously before a module refuses it for not having agreed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator

import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.consent.registration import FAILED_FOR_MS
from bot.policy import Action, ActionKind, decide
from bot.replica.changelog import ChangeLog, ChangesGone

if TYPE_CHECKING:
    from bot.gate.server import Gate

log = logging.getLogger(__name__)

MAX_POLL_MS = 30_000
DEFAULT_POLL_MS = 25_000
MAX_CHANGES = 10_000  # per answer: a replica far behind asks again from the last one
SEEN_IDS = 100_000  # report item ids remembered, so a retried batch is applied once
SUBSCRIBER_WINDOW_S = 90.0  # a replica that polled this recently counts as subscribed
MAX_ITEMS = 10_000
# A new_room item without 'since' (an older module, a standby's queue): rooms its account created
# this long before the item arrived are looked at as the new one (ms).
NEW_ROOM_LOOKBACK_MS = 60_000
FINGERPRINT = re.compile("[0-9a-f]{32}")  # bot.policy.news.fingerprint


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def _count(text: str | None) -> int | None:
    """A query's non-negative integer, or None: ASCII digits only (str.isdigit() takes '²', which
    int() refuses) and at most 18 of them (int() refuses 4,300 and more): a 400, never a 500."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


class ItemError(ValueError):
    """A report item the bot cannot apply; the message names it."""


def _text(item: dict[str, Any], key: str, index: int, optional: bool = False) -> Any:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ItemError(f"item {index}: '{key}' must be a non-empty string")
    return value


def _int(item: dict[str, Any], key: str, index: int) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ItemError(f"item {index}: '{key}' must be a non-negative integer (ms)")
    return value


class ReplicaPublisher(Collector):
    def __init__(self, changes: ChangeLog, gate: "Gate", clock: Callable[[], int]) -> None:
        self.changes = changes
        self._gate = gate
        self._clock = clock
        self._changed = asyncio.Event()
        self._waiting = 0
        # Set when the gate stops: no poll waits any more (see close()).
        self._closing = False
        changes.on_change = self._wake
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._subscribers: dict[str, float] = {}
        self.snapshots = 0
        self.snapshot_bytes = 0
        self.snapshot_seconds = 0.0
        self.snapshot_loop_seconds = 0.0  # the longest one piece of it held the event loop
        self.reports_applied = 0
        self.reports_duplicate = 0
        self.ratecap_questions = 0
        self.consent_questions = 0  # consent at registration (bot.consent)

    # -- wiring --------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/replica/v1/snapshot", self._snapshot)
        app.router.add_get("/replica/v1/changes", self._changes)
        app.router.add_post("/replica/v1/reports", self._reports)
        app.router.add_post("/replica/v1/ratecap", self._ratecap)
        app.router.add_post("/replica/v1/consent", self._consent)  # consent at registration (bot.consent)
        self._closing = False  # served again (a gate started after a stop): polls wait again
        # aiohttp calls this once the listener is closed, before it waits (up to 60 s) for the
        # requests in progress: the open long polls must end here, not at their 25 s timeout.
        app.on_shutdown.append(self._shutting_down)

    async def _shutting_down(self, app: web.Application) -> None:
        self.close()

    def close(self) -> None:
        """The bot stops: answer every waiting long poll now, and any later one without waiting.

        Each gets what its timeout would have brought (the changes since its ``since``, normally
        none, with this epoch), a success for the module: its staleness stays 0 (a 503 would make
        it count from its previous answer, up to a poll earlier), and it asks again at once, finds
        the listener closed, and retries every 0.5 s or more until the next process answers 410
        for the old epoch and it takes that process's snapshot. Meanwhile it decides from its
        replica as before. Without this, SIGTERM -> exit waited for each open poll (up to 25 s)
        while the HTTP gate refused every post."""
        self._closing = True
        self._changed.set()
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        # Called on every change, inside the mutation: only a flag when nobody waits.
        if self._waiting:
            self._changed.set()
            self._changed = asyncio.Event()

    def _refused(self, request: web.Request) -> web.Response | None:
        if not self._gate.authorised(request):
            return _error(401, "M_UNKNOWN_TOKEN", "missing or wrong bearer token")
        return None

    async def _authorised_json(self, request: web.Request) -> dict[str, Any] | web.Response:
        """A POST's JSON object, or the gate's refusal of the token or of the body."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        return await self._gate.read_json(request)

    # -- the state -----------------------------------------------------------------------------

    async def snapshot_pieces(self) -> AsyncIterator[bytes]:
        """The snapshot's JSON in pieces, the event loop free between them, so the gate keeps
        answering while a replica of 100,000 accounts is served (bench/replica.py). Streamed as
        they come: joining 29 MB into one body held the loop longer than any piece."""
        started, longest, size = time.perf_counter(), 0.0, 0
        making = self.changes.snapshot_pieces()
        while True:
            piece_started = time.perf_counter()
            piece = next(making, None)
            longest = max(longest, time.perf_counter() - piece_started)
            if piece is None:
                break
            size += len(piece)
            yield piece
            await asyncio.sleep(0)
        self.snapshots += 1
        self.snapshot_bytes = size
        self.snapshot_loop_seconds = longest
        self.snapshot_seconds = time.perf_counter() - started

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        self._subscribed(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        async for piece in self.snapshot_pieces():
            await response.write(piece)
        await response.write_eof()
        log.info("replica snapshot for %s: %d bytes in %.3f s (the loop held %.3f s at most)", request.remote,
                 self.snapshot_bytes, self.snapshot_seconds, self.snapshot_loop_seconds)
        return response

    async def _changes(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        query = request.query
        since, timeout_ms = _count(query.get("since")), _count(query.get("timeout", str(DEFAULT_POLL_MS)))
        if since is None:
            return _error(400, "M_INVALID_PARAM", "'since' must be the seq of the last change applied (an integer >= 0)")
        if timeout_ms is None:
            return _error(400, "M_INVALID_PARAM", f"'timeout' must be milliseconds (0 to {MAX_POLL_MS})")
        timeout_ms = min(timeout_ms, MAX_POLL_MS)
        epoch = query.get("epoch")
        if epoch is not None and epoch != self.changes.epoch:
            return _error(410, "M_REPLICA_GONE", f"the bot restarted (epoch {self.changes.epoch}): take a new snapshot")
        self._subscribed(request)
        try:
            if since == self.changes.seq and timeout_ms > 0:
                await self._wait(timeout_ms / 1000)
            records = self.changes.since(since, MAX_CHANGES)
        except ChangesGone as exc:
            return _error(410, "M_REPLICA_GONE", f"{exc}: take a new snapshot")
        # A page cut at MAX_CHANGES answers the seq of its last record, not the bot's newest: a
        # replica that took "seq" as its position would skip the rest for good.
        seq = records[-1]["seq"] if records else self.changes.seq
        body = orjson.dumps({"epoch": self.changes.epoch, "seq": seq, "changes": records})
        return web.Response(body=body, content_type="application/json")

    async def _wait(self, timeout_s: float) -> None:
        if self._closing:
            return
        changed = self._changed
        self._waiting += 1
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiting -= 1

    def _subscribed(self, request: web.Request) -> None:
        # A replica is named by its address and the id it may send (two workers on one host).
        name = f"{request.remote} {request.headers.get('X-Replica-Id', '')}"
        now = time.monotonic()
        self._subscribers[name] = now
        if len(self._subscribers) > 1_000:
            for stale in [n for n, t in self._subscribers.items() if now - t > SUBSCRIBER_WINDOW_S]:
                del self._subscribers[stale]

    @property
    def subscribers(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self._subscribers.values() if now - t <= SUBSCRIBER_WINDOW_S)

    # -- module -> bot -------------------------------------------------------------------------

    async def _reports(self, request: web.Request) -> web.Response:
        body = await self._authorised_json(request)
        if isinstance(body, web.Response):
            return body
        items = body.get("items")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            return _error(400, "M_INVALID_PARAM", f"'items' must be a list of at most {MAX_ITEMS} report items")
        try:
            steps = [self._step(item, index) for index, item in enumerate(items)]
        except ItemError as exc:
            return _error(400, "M_INVALID_PARAM", f"{exc}; nothing of this batch was applied")
        applied = duplicates = failed = 0
        for item_id, step in steps:
            if item_id in self._seen:
                duplicates += 1
                continue
            try:
                done = step()
                if asyncio.iscoroutine(done):  # the directory guard's follow-up of a new room
                    await done
            except Exception:
                # Not marked as seen: the module sends the batch again, and only this one is new.
                log.exception("a replica report (%s) could not be applied", item_id)
                failed += 1
                continue
            self._seen[item_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            applied += 1
        self.reports_applied += applied
        self.reports_duplicate += duplicates
        if failed:
            return web.json_response({"errcode": "M_UNKNOWN", "applied": applied, "duplicates": duplicates,
                                      "error": f"{failed} item(s) could not be applied: send the batch again"},
                                     status=503)
        return web.json_response({"applied": applied, "duplicates": duplicates})

    def _step(self, item: Any, index: int) -> tuple[str, Callable[[], Awaitable[None] | None]]:
        """Check one item and return its id and how to apply it: each kind is what the gate's
        callback handler does after the same decision (bot.gate.server), called, not copied."""
        if not isinstance(item, dict):
            raise ItemError(f"item {index} must be an object")
        item_id, kind = _text(item, "id", index), item.get("kind")
        gate, state = self._gate, self._gate.state
        now = self._clock()
        if kind == "prompt":
            user = _text(item, "user_id", index)
            return item_id, lambda: gate.on_prompt(user)
        if kind == "post":
            user, event_id = _text(item, "user_id", index), _text(item, "event_id", index, optional=True)
            at = min(_int(item, "ts", index), now)  # never counted in the future
            return item_id, lambda: state.note_post(user, at, event_id)
        if kind == "text":
            # A module sends the text's fingerprint (bot.policy.news.fingerprint), all the bot
            # keeps of it; one older than that sends the body, fingerprinted here.
            user, at = _text(item, "user_id", index), min(_int(item, "ts", index), now)
            if item.get("fingerprint") is None:
                text = _text(item, "body", index)
                return item_id, lambda: state.remember_text(text, user, at)
            key = _text(item, "fingerprint", index)
            if not FINGERPRINT.fullmatch(key):
                raise ItemError(f"item {index}: 'fingerprint' must be bot.policy.news.fingerprint's 32 hex digits")
            return item_id, lambda: state.remember_fingerprint(key, user, at)
        if kind == "private_news":
            room, rule = _text(item, "room_id", index), item.get("rule")
            if not isinstance(rule, str):
                raise ItemError(f"item {index}: 'rule' must be a string")
            return item_id, lambda: gate.remember_private_news(room, rule)
        if kind == "scope":
            room, event = _text(item, "room_id", index), item.get("event")
            if not isinstance(event, dict):
                raise ItemError(f"item {index}: 'event' must be the state event (an object)")
            return item_id, lambda: gate.scope_change(room, {"event": event})
        if kind == "publish":
            user, room = _text(item, "user_id", index), _text(item, "room_id", index)
            return item_id, lambda: gate.on_publish(user, room)
        if kind == "new_room":
            return item_id, self._new_room(item, index, now)
        raise ItemError(f"item {index}: unknown kind {str(kind)[:40]!r} (prompt, post, text, private_news, scope, "
                        "publish, new_room)")

    def _new_room(self, item: dict[str, Any], index: int, now: int) -> Callable[[], Awaitable[None]]:
        """A room a module allowed ``user_id`` to create, reported after createRoom ran: by its
        ``room_id`` once the module has seen it, else by ``since`` (ms, when the module allowed
        it; absent in an older module's or a standby's item: the last NEW_ROOM_LOOKBACK_MS). The
        directory guard classifies that room; ``scope`` (what createRoom's body set: join_rule,
        history_visibility, listed) opens it in every replica at once, only ever widening, as the
        gate's own scope follow-up does (the guard reads what was stored)."""
        user, room = _text(item, "user_id", index), _text(item, "room_id", index, optional=True)
        since = now - NEW_ROOM_LOOKBACK_MS if item.get("since") is None else min(_int(item, "since", index), now)
        scope = item.get("scope", {})
        if not isinstance(scope, dict) or not all(
                isinstance(scope.get(k), str) for k in ("join_rule", "history_visibility") if k in scope) \
                or not isinstance(scope.get("listed", False), bool):
            raise ItemError(f"item {index}: 'scope' must be an object of join_rule and history_visibility "
                            "(strings) and listed (a boolean)")
        if scope and room is None:
            raise ItemError(f"item {index}: 'scope' needs the 'room_id' it is of")
        state, gate = self._gate.state, self._gate

        async def apply() -> None:
            if room is not None:
                if "join_rule" in scope:
                    state.note_join_rule(room, scope["join_rule"], narrow=False)
                if "history_visibility" in scope:
                    state.note_history_visibility(room, scope["history_visibility"], narrow=False)
                if scope.get("listed"):
                    state.listed_rooms.add(room)
            await gate.room_reported(user, room, since)
        return apply

    async def _ratecap(self, request: web.Request) -> web.Response:
        """The gate's own answer to a post by ``user_id``: 200 {} (counted once by event ID) or
        403 with the refusal the gate would send."""
        body = await self._authorised_json(request)
        if isinstance(body, web.Response):
            return body
        try:
            user, event_id = _text(body, "user_id", 0), _text(body, "event_id", 0, optional=True)
            at = min(_int(body, "ts", 0), self._clock())
        except ItemError as exc:
            return _error(400, "M_INVALID_PARAM", str(exc).removeprefix("item 0: "))
        self.ratecap_questions += 1
        state = self._gate.state
        if event_id is not None and state.is_counted(user, event_id):
            return web.json_response({})  # asked again (a retry): it was allowed and counted
        decision = decide(Action(ActionKind.SEND_EVENT, user), state, at)
        if not decision.allowed:
            return self._gate.refusal(decision)
        if decision.count_post:
            state.note_post(user, at, event_id)
        return web.json_response({})

    # --- consent at registration (bot.consent) ---
    async def _consent(self, request: web.Request) -> web.Response:
        """200 {"accepted": true, "version": v} if ``user_id`` accepted the current agreement at
        registration (recorded now, so the change reaches every replica too), {"accepted": false}
        if not, and {"accepted": false, "unknown": true, "retry_after_ms"} if it could not be
        checked now: the gate's own cached, time-limited lookup."""
        body = await self._authorised_json(request)
        if isinstance(body, web.Response):
            return body
        try:
            user = _text(body, "user_id", 0)
        except ItemError as exc:
            return _error(400, "M_INVALID_PARAM", str(exc).removeprefix("item 0: "))
        self.consent_questions += 1
        ask = self._gate.consent  # None: no service yet (starting, or a takeover under way)
        answer = None if ask is None else await ask(user)
        if answer is None:
            return web.json_response({"accepted": False, "unknown": True, "retry_after_ms": FAILED_FOR_MS})
        if not answer:
            return web.json_response({"accepted": False})
        return web.json_response({"accepted": True, "version": self._gate.state.agreement_version})

    # -- /metrics ------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for name, value, text in (
            ("rulesbot_replica_subscribers", self.subscribers,
             f"Replicas (Synapse processes) that asked for the state in the last {SUBSCRIBER_WINDOW_S:.0f} s"),
            ("rulesbot_replica_polls_waiting", self._waiting, "Change long-polls waiting now"),
            ("rulesbot_replica_seq", self.changes.seq, "The newest change's sequence number"),
            ("rulesbot_replica_snapshot_bytes", self.snapshot_bytes, "Size of the last snapshot served"),
            ("rulesbot_replica_snapshot_seconds", self.snapshot_seconds, "Time to build and serialise the last snapshot"),
            ("rulesbot_replica_snapshot_loop_seconds", self.snapshot_loop_seconds,
             "The longest the event loop was held by one piece of the last snapshot"),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge
        for name, value, text in (
            ("rulesbot_replica_changes", self.changes.seq, "Changes emitted since the bot started"),
            ("rulesbot_replica_snapshots", self.snapshots, "Snapshots served"),
            ("rulesbot_replica_reports_applied", self.reports_applied, "Report items from modules applied"),
            ("rulesbot_replica_reports_duplicate", self.reports_duplicate, "Report items seen before, not applied again"),
            ("rulesbot_replica_ratecap_questions", self.ratecap_questions, "Rate-cap questions answered"),
            ("rulesbot_replica_consent_questions", self.consent_questions,
             "Questions from modules about an agreement accepted at registration"),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], value)
            yield counter
