"""The one executor of the effects journal: it carries out what the services recorded.

Services never call Matrix to act: they commit intents (``bot.store.effects``) with the record
that causes them. This executor takes the oldest pending effect of each target (the account a
measure concerns, the room a reply goes to, the management room), carries it out, and marks it
done. Each kind is safe to carry out again after a crash between the call and the mark:

- sends and redactions use a transaction ID derived from the effect's key, which the homeserver
  deduplicates (same device, same ID → the same event) for as long as it remembers it (Synapse:
  in memory, under an hour, not across a restart); so a send also carries that ID in its content
  (``im.rulesbot.effect``), and a retry first looks for it among the bot's recent events in the room
  (a redaction done twice changes nothing);
- a mute reads the power levels first and changes nothing if the account already sits below the
  level needed to post; an unmute puts back only the level the bot itself set;
- a ban or unban reads the member's state first; the admin calls (suspend, unsuspend,
  deactivate) are idempotent at Synapse.

Transient failures (network, timeouts, 429, 5xx, a management room not joined yet) are retried
with back-off; a permanent one marks the effect ``failed`` and tells the management room once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.i18n import Translator
from bot.labels import retagged
from bot.matrix.admin import AdminApi
from bot.matrix.client import Matrix, MatrixError, txn_id
from bot.matrix.powers import level as _level
from bot.matrix.powers import level_needed_to_post, user_level
from bot.reports import describe_report
from bot.sanctions import describe_case
from bot.store import Effect, Mute, Prompt, Store
from bot.supervise import LoopStatus

log = logging.getLogger(__name__)

# Tests only: hold every effect pending, so a test can kill the bot between commit and call.
PAUSE_ENV = "BOT_TEST_EFFECTS_PAUSE"
MAX_BACKOFF_MS = 15 * 60_000
# An unexpected exception (a bug, not the network) is tried this often before the effect fails.
MAX_UNEXPECTED = 5
# Handled events and finished effects are kept this long (a replay reaches back hours at most).
KEEP_MS = 30 * 86_400_000
PRUNE_EVERY_MS = 3_600_000
# How often an effect that waits for the bot's own set-up (the management room joined) looks again.
WAITING_RETRY_MS = 30_000
_PERMANENT_HTTP = tuple(f"HTTP 4{n:02d}" for n in range(100) if n != 29)


class Transient(Exception):
    """Not now, later: e.g. the management room is not joined yet."""


class Refused(MatrixError):
    """A refusal worth its own words in the management room (e.g. "the bot could not join")."""

    def __init__(self, why: str) -> None:
        super().__init__(why, errcode=why)


def is_transient(exc: BaseException) -> bool:
    """Network trouble, timeouts, rate limits and server errors pass; a refusal does not."""
    if isinstance(exc, Refused):
        return False
    if isinstance(exc, (Transient, OSError, asyncio.TimeoutError, aiohttp.ClientError)):
        return True
    if isinstance(exc, MatrixError):
        code = exc.errcode
        status = getattr(exc, "status", None)
        if code is None or code in ("M_LIMIT_EXCEEDED", "M_UNKNOWN_TOKEN") or (status or 0) >= 500:
            return True  # M_UNKNOWN_TOKEN: the bot was logged out; wait until it is logged in again
        if code == "M_UNKNOWN":  # Synapse's answer to its internal errors (500), and to some 400s
            return status is None or not 400 <= status < 500
        code = str(code)
        if code.startswith("M_") or code.startswith(_PERMANENT_HTTP):
            return False
        return True  # HTTP 5xx, HTTP 429, an aiohttp error's name from the admin API
    return False


def backoff_ms(attempts: int) -> int:
    return min(MAX_BACKOFF_MS, 1000 * 2 ** min(attempts, 20))


class Executor(Collector):
    def __init__(
        self,
        store: Store,
        matrix: Matrix,
        t: Translator,
        *,
        admin: AdminApi | None,
        dm_room: Callable[[str], Awaitable[str]],
        management_room: Callable[[], str | None],
        management_configured: bool,
        bot_user_id: str,
        clock: Callable[[], int],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._t = t
        self._admin = admin
        self._dm_room = dm_room
        self._management_room = management_room
        self._management_configured = management_configured
        self._bot = bot_user_id
        self._clock = clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._pruned_at = 0
        # For /metrics: attempts by kind and outcome (done, retry, failed), and what is pending.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.pending = 0
        self._handlers: dict[str, Callable[[Effect], Awaitable[None]]] = {
            "notice": self._notice, "dm": self._dm, "management": self._management, "redact": self._redact,
            "mute": self._mute, "unmute": self._unmute, "ban": self._ban, "unban": self._unban,
            "admin": self._admin_call, "state": self._state, "topic_tag": self._topic_tag,
            "agreement_prompt": self._agreement_prompt, "unlist": self._unlist, "room_admin": self._room_admin,
            "alias_delete": self._alias_delete, "file": self._file, "onboard": self._onboard,
        }
        # Set by the service: make sure an account has its DM and the agreement prompt journaled.
        self.onboard: Callable[[str], Awaitable[None]] | None = None
        # Called with an effect of that kind once it is carried out (memory that follows the journal).
        self.after_done: dict[str, Callable[[Effect], None]] = {}
        store.effects.on_added = self._wake.set

    def wake(self) -> None:
        self._wake.set()

    async def run(self, status: LoopStatus | None = None) -> None:
        """Carry out pending effects until cancelled; resumes what a previous run left pending.

        A failing store is reported to ``status`` (``/health``) and retried with back-off; without
        a status the failure is raised, for the supervisor to see and restart the loop."""
        if os.environ.get(PAUSE_ENV):
            log.warning("%s is set: effects are recorded but not carried out (tests only)", PAUSE_ENV)
            await asyncio.Event().wait()
        failures = 0
        while True:
            self._wake.clear()
            try:
                worked = await self.run_due()
                await self._prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store itself failed (locked, disk): the effects stay pending; try again.
                if status is None:
                    raise
                status.failed(exc)
                failures += 1
                log.exception("the effects executor failed; retrying in %d s", backoff_ms(failures) // 1000)
                await self._sleep(backoff_ms(failures) / 1000)
                continue
            failures = 0
            if status is not None:
                status.ok()
            if worked:
                continue
            wait = 60.0
            next_at = await self._store.effects.next_attempt_at()
            if next_at is not None:
                wait = min(wait, max(0.05, (next_at - self._clock()) / 1000))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def run_due(self) -> int:
        """Carry out every effect that is due now, one per target per round; how many were tried."""
        tried = 0
        while True:
            due = await self._store.effects.due(self._clock())
            if not due:
                self.pending = await self._store.effects.count_pending()
                return tried
            for effect in due:
                await self.carry_out(effect)
                tried += 1

    async def carry_out(self, effect: Effect) -> None:
        handler = self._handlers.get(effect.kind)
        if await self._prerequisite_failed(effect):
            return
        await self._store.effects.begin_attempt(effect.id)
        try:
            if handler is None:
                raise ValueError(f"unknown effect kind {effect.kind!r}")
            await handler(effect)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed_attempt(effect, exc)
            return
        await self._store.effects.mark_done(effect.id, self._clock())
        self.outcomes[effect.kind, "done"] += 1
        hook = self.after_done.get(effect.kind)
        if hook is not None:
            try:
                hook(effect)
            except Exception:  # memory only: the journal already says done
                log.exception("after carrying out effect %d (%s)", effect.id, effect.key)

    async def _prerequisite_failed(self, effect: Effect) -> bool:
        """An effect that ``requires`` others (by key) is not carried out if one of them failed for
        good (the creator is not told a room text was cleared when the bot could not clear it); the
        failure was told already, so this one fails quietly."""
        for key in effect.payload.get("requires") or ():
            required = await self._store.effects.get(key)
            if required is not None and required.status == "failed":
                await self._store.effects.mark_failed(effect.id, self._clock(), f"requires {key}, which failed")
                self.outcomes[effect.kind, "failed"] += 1
                return True
        return False

    async def _failed_attempt(self, effect: Effect, exc: Exception) -> None:
        now = self._clock()
        error = _describe(exc)
        transient = is_transient(exc)
        if transient or (not isinstance(exc, MatrixError) and effect.attempts + 1 < MAX_UNEXPECTED):
            if not transient:
                log.exception("effect %d (%s) failed unexpectedly; will retry", effect.id, effect.key)
            else:
                log.warning("effect %d (%s) failed for now: %s", effect.id, effect.key, error)
            delay = backoff_ms(effect.attempts)
            if isinstance(exc, Transient):  # waiting for the bot's own set-up: look again soon
                delay = min(delay, WAITING_RETRY_MS)
            await self._store.effects.retry_later(effect.id, now + delay, error)
            self.outcomes[effect.kind, "retry"] += 1
            return
        log.error("effect %d (%s) failed for good: %s", effect.id, effect.key, error)
        self.outcomes[effect.kind, "failed"] += 1
        async with self._store.unit(now_ms=now):
            await self._store.effects.mark_failed(effect.id, now, error)
            if effect.kind != "management":
                told = effect.payload.get("failed_notice")  # the service's own words for this failure
                if isinstance(told, dict):
                    text = self._t(told["key"], **told.get("params", {}), error=error)
                else:
                    text = self._t("effect.failed", what=self._t(f"effect.kind.{effect.kind}"), target=effect.target,
                                   cause=effect.key, error=error)
                await self._store.effects.add("management", "management", {"text": text},
                                              f"effect-failed/{effect.id}", now_ms=now)

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "rulesbot_effects", "Effects carried out, by kind and outcome (done, retry, failed)", labels=["kind", "outcome"])
        for (kind, outcome), value in sorted(self.outcomes.items()):
            attempts.add_metric([kind, outcome], value)
        yield attempts
        pending = GaugeMetricFamily("rulesbot_effects_pending", "Effects recorded and not carried out yet")
        pending.add_metric([], self.pending)
        yield pending

    # -- the kinds ------------------------------------------------------------------------------

    def _txn(self, effect: Effect) -> str:
        return str(effect.payload.get("txn") or txn_id("effect", effect.key))

    async def _send_once(self, effect: Effect, room_id: str, send: Callable[[], Awaitable[str]]) -> str:
        """Send, unless an earlier attempt's message is in the room already. The transaction ID
        alone does not do: Synapse forgets it within the hour and at every restart. Each send
        carries its transaction ID in its content, so a retry looks among the bot's recent events."""
        if effect.attempts > 0:
            found = await self._matrix.find_sent(room_id, self._txn(effect))
            if found is not None:
                log.info("effect %d (%s) was sent before as %s", effect.id, effect.key, found)
                return found
        return await send()

    async def _notice(self, effect: Effect) -> None:
        p = effect.payload
        await self._send_once(effect, p["room"], lambda: self._matrix.send_notice(
            p["room"], p["text"], txn=self._txn(effect), reply_to=p.get("reply_to")))

    async def _onboard(self, effect: Effect) -> None:
        # Opens the account's DM and journals the prompt there (its own effect, keyed by user, room
        # and version, so doing this twice after a crash journals it once).
        if self.onboard is None:
            raise Transient("onboarding is not ready yet")
        await self.onboard(effect.target)

    async def _dm(self, effect: Effect) -> None:
        # ``user`` when the effect is ordered with another target's (a room's), else the target.
        room_id = await self._dm_room(str(effect.payload.get("user") or effect.target))
        await self._send_once(effect, room_id, lambda: self._matrix.send_notice(
            room_id, effect.payload["text"], txn=self._txn(effect)))

    async def _management(self, effect: Effect) -> None:
        room_id = self._management_room()
        if room_id is None:
            if self._management_configured:
                raise Transient("the management room is not joined yet")
            # The post may quote evidence (a report's message): the log gets only which post it was.
            log.info("no management room: post %s not sent", effect.key)
            return
        text = await self._management_text(effect.payload)
        await self._send_once(effect, room_id, lambda: self._matrix.send_notice(room_id, text, txn=self._txn(effect)))

    async def _management_text(self, payload: dict[str, Any]) -> str:
        """The post's text; a case or report is rendered now from the store (the journal keeps
        only its ID, so its evidence goes with the retention purge)."""
        if "text" in payload:
            return str(payload["text"])
        kind, record_id = payload.get("render"), int(payload["id"])
        if kind == "case" and (case := await self._store.cases.get(record_id)) is not None:
            return describe_case(self._t, case)
        if kind == "report" and (report := await self._store.reports.get(record_id)) is not None:
            return describe_report(self._t, report)
        raise ValueError(f"no {kind} #{record_id} to post")

    async def _file(self, effect: Effect) -> None:
        """Upload and send a staged export, then delete its file. No file: it was sent and deleted
        before the done mark committed (a crash), so there is nothing left to send."""
        p = effect.payload
        path = Path(p["path"])
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            log.warning("effect %d (%s): the file is gone; taken as sent", effect.id, effect.key)
            return
        if hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise Refused("the staged file was changed")
        await self._send_once(effect, p["room"], lambda: self._matrix.send_file(
            p["room"], io.BytesIO(data), len(data), p["filename"], p["mimetype"], txn=self._txn(effect)))
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _agreement_prompt(self, effect: Effect) -> None:
        """Send the agreement, then record the prompt with the sent event's ID (a ✅ reaction to it
        accepts). Again after a crash: the transaction ID gives back the same event, and the prompt
        row is kept once."""
        p = effect.payload
        event_id = await self._send_once(effect, p["room"], lambda: self._matrix.send_notice(
            p["room"], p["text"], txn=self._txn(effect), reply_to=p.get("reply_to")))
        await self._store.agreements.record_prompt(
            Prompt(user_id=p["user"], version=p["version"], event_id=event_id, room_id=p["room"], sent_at=self._clock()))

    async def _unlist(self, effect: Effect) -> None:
        if self._admin is None:
            log.info("no admin token: %s stays in the room directory", effect.target)
            return
        await self._admin.unlist_room(effect.payload["room"])

    async def _room_admin(self, effect: Effect) -> None:
        """make_room_admin (idempotent: the bot ends with the creator's power either way), then
        join: what follows for the room (clearing its state) needs the bot in it."""
        room_id = effect.payload["room"]
        if self._admin is None:
            raise Refused("no homeserver.admin_token")
        await self._admin.make_room_admin(room_id, self._bot)
        try:
            await self._matrix.join(room_id)
        except MatrixError as exc:
            if is_transient(exc):
                raise
            raise Refused(f"the bot could not join: {exc}") from exc

    async def _alias_delete(self, effect: Effect) -> None:
        if self._admin is None:
            raise Refused("no homeserver.admin_token")
        await self._admin.delete_alias(effect.payload["alias"])

    async def _redact(self, effect: Effect) -> None:
        p = effect.payload
        await self._matrix.redact(p["room"], p["event_id"], p.get("reason") or "", txn=self._txn(effect))

    async def _member(self, room_id: str, user_id: str) -> str | None:
        try:
            content = await self._matrix.state_content(room_id, "m.room.member", user_id)
        except MatrixError as exc:
            if exc.errcode == "M_NOT_FOUND":
                return None
            raise
        membership = content.get("membership")
        return membership if isinstance(membership, str) else None

    async def _ban(self, effect: Effect) -> None:
        room_id, user_id = effect.payload["room"], effect.target
        if await self._member(room_id, user_id) == "ban":
            return
        await self._matrix.ban(room_id, user_id, effect.payload.get("reason") or "")

    async def _unban(self, effect: Effect) -> None:
        room_id, user_id = effect.payload["room"], effect.target
        if await self._member(room_id, user_id) != "ban":
            return
        await self._matrix.unban(room_id, user_id)

    async def _mute(self, effect: Effect) -> None:
        """Read, then write: an account already below the posting level is left as it is."""
        room_id, user_id = effect.payload["room"], effect.target
        levels = await self._matrix.power_levels(room_id)
        needed = level_needed_to_post(levels)
        if user_level(levels, user_id) < needed:
            return
        users = dict(levels.get("users") or {})
        recorded = await self._store.rooms.mute_in(room_id, user_id)
        if recorded is None:
            previous = users.get(user_id)
            recorded = Mute(room_id=room_id, user_id=user_id,
                            previous_level=None if previous is None else _level(previous), muted_level=needed - 1,
                            reason=str(effect.payload.get("reason") or ""), muted_at=self._clock())
            # The record first: if the bot dies right after the change, the record to undo it exists.
            await self._store.rooms.record_mute(recorded, actor=self._bot)
        users[user_id] = needed - 1
        try:
            await self._matrix.set_power_levels(room_id, {**levels, "users": users})
        except MatrixError as exc:
            if not is_transient(exc):  # the bot may not change power levels here: no mute to undo
                await self._store.rooms.remove_mute(recorded, actor=self._bot, now_ms=self._clock(),
                                                    restored_level=recorded.previous_level)
            raise
        log.info("muted %s in %s (%s)", user_id, room_id, recorded.reason)

    async def _unmute(self, effect: Effect) -> None:
        room_id, user_id = effect.payload["room"], effect.target
        mute = await self._store.rooms.mute_in(room_id, user_id)
        if mute is None:
            return
        levels = await self._matrix.power_levels(room_id)
        users = dict(levels.get("users") or {})
        restored: int | None = None
        # Put back only what the bot itself set: a moderator's later change wins.
        if user_id in users and _level(users[user_id]) == mute.muted_level:
            if mute.previous_level is None:
                del users[user_id]
            else:
                users[user_id] = mute.previous_level
            restored = mute.previous_level
            await self._matrix.set_power_levels(room_id, {**levels, "users": users})
        await self._store.rooms.remove_mute(mute, actor=self._bot, now_ms=self._clock(), restored_level=restored)
        log.info("unmuted %s in %s", user_id, room_id)

    async def _admin_call(self, effect: Effect) -> None:
        if self._admin is None:
            log.info("no admin token: %s of %s is left to the operator", effect.payload.get("op"), effect.target)
            return
        op = effect.payload["op"]
        if op == "suspend":
            await self._admin.suspend(effect.target, True)
        elif op == "unsuspend":
            await self._admin.suspend(effect.target, False)
        elif op == "deactivate":
            await self._admin.deactivate(effect.target, bool(effect.payload.get("erase")))
        else:
            raise ValueError(f"unknown admin call {op!r}")

    async def _state(self, effect: Effect) -> None:
        p = effect.payload
        await self._matrix.put_state(p["room"], p["type"], p["content"], p.get("state_key", ""))

    async def _topic_tag(self, effect: Effect) -> None:
        """Read, then write: the topic as it is now, with the label's tag put in front or taken off."""
        p, room_id = effect.payload, effect.payload["room"]
        try:
            topic = (await self._matrix.state_content(room_id, "m.room.topic")).get("topic") or ""
        except MatrixError as exc:
            if exc.errcode != "M_NOT_FOUND":
                raise
            topic = ""
        wanted = retagged(str(topic), p.get("tier"), dict(p["tags"]))
        if wanted != topic:
            await self._matrix.put_state(room_id, "m.room.topic", {"topic": wanted}, "")

    async def _prune(self) -> None:
        now = self._clock()
        if now - self._pruned_at < PRUNE_EVERY_MS:
            return
        self._pruned_at = now
        removed = await self._store.effects.prune(now - KEEP_MS)
        if removed:
            log.info("forgot %d handled events and finished effects older than 30 days", removed)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Refused):
        return str(exc.errcode)
    if isinstance(exc, MatrixError) and exc.errcode:
        return str(exc.errcode)
    return type(exc).__name__


def effect_payload(**values: Any) -> dict[str, Any]:
    """A payload without None values (they carry no meaning and would only change its hash)."""
    return {k: v for k, v in values.items() if v is not None}
