"""Keeps the room directory to approved public accounts, on the path Synapse does not ask about.

``createRoom`` with ``visibility: public`` stores the room as listed before its first event is sent,
checks only ``room_list_publication_rules``, never calls ``user_may_publish_room``, and
synapse-http-antispam posts ``user_may_create_room`` with the user ID alone (no ``room_config``).
None of the new room's initial events reach ``check_event_for_spam`` either: they go straight to
``handle_new_client_event``. So the gate cannot refuse such a room; it can only say who is
creating one, and the bot takes it out of the directory once it exists.

A new room's initial name, topic and canonical alias are judged here too, as if the creator had
sent them: where the news rules apply and the core refuses one, the service journals that the bot
is made the room's admin (``make_room_admin``), the refused aliases removed and the text cleared
(``on_initial_text``).

How: when an account asks ``user_may_create_room``, the gate first has the guard note the rooms
the account is in (the new room cannot exist before the gate answers, so it will be the one not
in that list), then the guard polls the account's rooms (admin API) for a few seconds. Each new
room's join rule and listing go into news scope at once; a listed room created by an account
that may not publish is unlisted: an ``unlist`` effect in the journal (``bot.effects`` carries it
out with ``PUT /directory/list/room`` as a server admin, which Synapse allows for any room, and
retries it, after a restart too). An event the creating account sends in a
room not looked at yet makes the gate wait for that look (at most 2 s), so a room created public
is in scope from its first message. The in-process module (and a standby) tell of a creation only
after createRoom ran, when the new room exists already: ``room_reported`` looks at the room they
name, or at the account's rooms whose create event is not older than the time they give. The news-scope refresh passes the admin room list every
minute as a sweep, which also catches rooms created while the bot was down. Without an admin
token none of this is possible: the bot warns at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

from bot.policy import Action, ActionKind, Decision, PolicyState, decide
from bot.policy.decide import news_verdict
from bot.policy.text import event_text
from bot.store import Effect, Store

log = logging.getLogger(__name__)

# The initial state of a new room that shows text to everyone: judged once the room is made.
INITIAL_TEXT = ("m.room.name", "m.room.topic", "m.room.canonical_alias")
# (room, creator, refused state type -> the core's decision, why it cannot be cleared or None,
#  aliases to remove from the directory)
InitialTextHook = Callable[[str, str, dict[str, Decision], "str | None", list[str]], Awaitable[None]]

# Delays between looks at a creating account's rooms (s): createRoom takes tens to hundreds of
# milliseconds; the total covers a slow homeserver.
POLL_DELAYS = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.4, 0.8, 1.6, 3.2)
# A creation reported after the fact (room_reported): a room whose create event is older than the
# report's ``since`` by more than this is one the account had before (ms; the module's clock and
# Synapse's create event are the same host's, this only absorbs rounding and a slow request).
CREATED_BEFORE_SLACK_MS = 1_000


class DirectoryGuard:
    def __init__(self, state: PolicyState, url: str, admin_token: str | None,
                 spawn: Callable[[Awaitable[None], str], object]) -> None:
        self._state = state
        self._url = url.rstrip("/")
        self._token = admin_token
        self._spawn = spawn
        self._session: aiohttp.ClientSession | None = None
        self._watching: dict[str, int] = {}  # user -> creations asked about while being watched
        self._known: dict[str, set[str]] = {}  # user -> rooms already looked at
        # user -> the earliest creation reported after the fact and not looked at yet (ms): a room
        # created before it is not the new one (room_reported)
        self._since: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.unlisted: list[tuple[str, float]] = []  # (room, seconds after the gate's answer)
        self._unlisted: set[str] = set()
        self._judged: set[str] = set()  # new rooms whose initial name, topic and alias were judged
        # Given a new room whose initial text the core refuses, once the bot has been made its
        # admin (or why it could not be): the service clears the text and tells who needs to know.
        self.on_initial_text: InitialTextHook | None = None
        self.clock: Callable[[], int] = lambda: int(time.time() * 1000)
        # The effects journal the unlistings go to (the executor carries them out).
        self.store: Store | None = None
        self._unlist_asked: dict[str, float] = {}  # room -> when the gate answered (monotonic)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def warn_if_disabled(self) -> None:
        if not self.enabled:
            log.warning(
                "no homeserver.admin_token: a room created with visibility 'public' by an account that "
                "is not an approved public account stays in the room directory, and a room created "
                "public enters news scope only at the next refresh (Synapse does not ask the gate on "
                "that path); set admin_token so the bot can follow new rooms at once"
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the gate's signals --------------------------------------------------------------------

    async def room_creation(self, user_id: str) -> None:
        """The gate is about to allow ``user_id`` to create a room: note the rooms the account is
        in now (before the new one can exist, so the new one is recognised), then watch."""
        if not self.enabled:
            return
        if user_id not in self._known:
            try:
                async with asyncio.timeout(1.0):
                    self._known[user_id] = await self._joined(user_id)
            except Exception as exc:  # never the gate's verdict: the room is looked at all the same
                # Without the list every room of the account is looked at once: slower, still right.
                log.warning("listing the rooms of %s before a creation failed: %s", user_id, exc)
        self._watching[user_id] = self._watching.get(user_id, 0) + 1
        if self._watching[user_id] == 1:
            self._spawn(self._watch(user_id), f"new-room-watch-{user_id}")

    async def room_reported(self, user_id: str, room_id: str | None, since: int) -> None:
        """A room creation told after createRoom ran (the in-process module's report, a
        standby's queued item): the room may exist already, so the rooms the account is in now
        cannot tell it apart (room_creation would note it as known and never classify it). With
        its ID, that room is looked at; without, each room of the account not looked at yet
        whose create event is not older than ``since`` (ms) is. The first such report of an
        account reads the create event of each of its rooms once; later ones only the new."""
        if not self.enabled:
            return
        if room_id is not None:
            try:
                async with asyncio.timeout(2.0):
                    async with self._locks.setdefault(user_id, asyncio.Lock()):
                        known = self._known.setdefault(user_id, set())
                        if room_id in known or await self._classify(room_id, user_id, None, since):
                            known.add(room_id)
                            return
            except Exception as exc:  # the watch below looks again
                log.warning("looking at %s, created by %s, failed: %s", room_id, user_id, exc)
        self._since[user_id] = min(since, self._since.get(user_id, since))
        self._watching[user_id] = self._watching.get(user_id, 0) + 1
        if self._watching[user_id] == 1:
            self._spawn(self._watch(user_id), f"new-room-watch-{user_id}")

    def unsettled(self, user_id: str, room_id: str | None) -> bool:
        """An event from a creating account in a room not looked at yet: maybe the new room."""
        return user_id in self._watching and room_id is not None and room_id not in self._known.get(user_id, ())

    async def settle(self, user_id: str) -> None:
        """Look at the account's new rooms now (the gate waits for this, at most 2 s)."""
        try:
            async with asyncio.timeout(2.0):
                await self._look(user_id, None)
        except Exception as exc:  # the gate decides all the same, from what it knows
            log.warning("looking at the new rooms of %s failed: %s", user_id, exc)

    async def _watch(self, user_id: str) -> None:
        # Polls the whole schedule: another creation meanwhile starts it again.
        try:
            step, asked, started = 0, self._watching[user_id], time.monotonic()
            while step < len(POLL_DELAYS):
                await asyncio.sleep(POLL_DELAYS[step])
                step += 1
                if self._watching[user_id] != asked:
                    step, asked, started = 0, self._watching[user_id], time.monotonic()
                try:
                    await self._look(user_id, started)
                except (aiohttp.ClientError, asyncio.TimeoutError, LookupError, ValueError) as exc:
                    log.warning("looking at the rooms of %s failed (%s); trying again", user_id, exc)
        except Exception:
            log.exception("watching the rooms %s creates failed", user_id)
        finally:
            self._watching.pop(user_id, None)
            self._since.pop(user_id, None)

    async def _look(self, user_id: str, started: float | None) -> None:
        """Classify the account's rooms not looked at yet: news scope, and the directory."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            known = self._known.setdefault(user_id, set())
            for room_id in await self._joined(user_id) - known:
                if await self._classify(room_id, user_id, started, self._since.get(user_id)):
                    known.add(room_id)

    async def _classify(self, room_id: str, user_id: str, started: float | None, since: int | None = None) -> bool:
        """Put a room of the account in or out of scope, unlist it if it must not be listed; False
        while its initial state is incomplete (look again). With ``since`` (a creation reported
        after the fact), a room created before it is only noted as looked at."""
        # Current state straight from the state store: the admin room details come from room
        # statistics, which Synapse updates a moment later.
        data = await self._get(f"/_synapse/admin/v1/rooms/{quote(room_id)}/state")
        events = [e for e in data.get("state") or [] if isinstance(e, dict) and e.get("state_key") == ""]
        rule = next((e.get("content", {}).get("join_rule") for e in events if e.get("type") == "m.room.join_rules"), None)
        creator = next((e.get("sender") for e in events if e.get("type") == "m.room.create"), None)
        if since is not None:
            created = next((e.get("origin_server_ts") for e in events if e.get("type") == "m.room.create"), None)
            if isinstance(created, int) and created < since - CREATED_BEFORE_SLACK_MS:
                return True  # the account's room from before: not the one reported
        # Synapse persists the creator's join before the rest of the initial state: until the
        # join rule is there, the room is half made.
        if rule is not None:
            self._state.note_join_rule(room_id, rule)
        visibility = next((e.get("content", {}).get("history_visibility") for e in events
                           if e.get("type") == "m.room.history_visibility"), None)
        if visibility is not None:
            self._state.note_history_visibility(room_id, visibility)
        listed = await self._listed(room_id)
        log.debug("room %s of %s: join rule %s, %s", room_id, user_id, rule, "listed" if listed else "not listed")
        if listed:
            self._state.listed_rooms.add(room_id)
            if creator == user_id and room_id not in self._unlisted:
                await self._unlist(room_id, user_id, started)
        if rule is not None and creator == user_id and room_id not in self._judged:
            self._judged.add(room_id)
            await self._judge_initial_text(room_id, user_id, events)
        return rule is not None

    async def _judge_initial_text(self, room_id: str, creator: str, events: list[dict[str, Any]]) -> None:
        """Judge the new room's name, topic and canonical alias as if the creator had sent them
        (none of them passed check_event_for_spam). Out of scope, news among them keeps the room
        from being opened later (``private_news``); in scope, a refused one is cleared."""
        state, now = self._state, self.clock()
        refused: dict[str, Decision] = {}
        for event in events:
            kind = event.get("type")
            if kind not in INITIAL_TEXT:
                continue
            body, _ = event_text(kind, event.get("content"))
            if not body:
                continue
            action = Action(ActionKind.SEND_EVENT, creator, room_id=room_id, event_type=kind, body=body)
            decision = decide(action, state, now)
            if not decision.allowed:
                refused[kind] = decision
            elif not state.in_news_scope(room_id):
                verdict = news_verdict(action, state, now)
                if not verdict.allowed:
                    state.private_news.setdefault(room_id, verdict.params.get("rule", ""))
        if not refused:
            return
        log.info("the initial %s of %s, created by %s, is refused: clearing", ", ".join(refused), room_id, creator)
        aliases: list[str] = []
        if "m.room.canonical_alias" in refused:
            content = next((e.get("content") for e in events if e.get("type") == "m.room.canonical_alias"), None)
            if isinstance(content, dict):
                alt = content.get("alt_aliases")
                aliases = [a for a in [content.get("alias"), *(alt if isinstance(alt, list) else [])] if isinstance(a, str)]
        # The service journals what clears it (the bot made admin, aliases removed, text cleared).
        error = None if self.enabled else "no homeserver.admin_token"
        if self.on_initial_text is None:
            log.error("the initial text of %s is refused, and nothing is set up to clear it", room_id)
            return
        await self.on_initial_text(room_id, creator, refused, error, aliases)

    async def _joined(self, user_id: str) -> set[str]:
        data = await self._get(f"/_synapse/admin/v1/users/{quote(user_id)}/joined_rooms")
        return {r for r in data.get("joined_rooms") or [] if isinstance(r, str)}

    # -- scope after a change that may close a room ---------------------------------------------

    def follow_scope(self, room_id: str, still_current: Callable[[], bool],
                     delays: tuple[float, ...] = (0.3, 2.0)) -> None:
        """The gate allowed a join-rule or history-visibility change that closes ``room_id``; the
        gate does not narrow (Synapse's auth rules may still refuse the event), so read what was
        stored and narrow from that, unless ``still_current()`` says the room was opened again
        meanwhile. Without an admin token the sync (rooms the bot is in) and the refresh do it."""
        if self.enabled:
            self._spawn(self._follow_scope(room_id, still_current, delays), f"scope-follow-{room_id}")

    async def _follow_scope(self, room_id: str, still_current: Callable[[], bool], delays: tuple[float, ...]) -> None:
        for delay in delays:
            await asyncio.sleep(delay)
            try:
                data = await self._get(f"/_synapse/admin/v1/rooms/{quote(room_id)}/state")
            except (aiohttp.ClientError, asyncio.TimeoutError, LookupError, ValueError) as exc:
                log.warning("reading the state of %s failed: %s", room_id, exc)
                continue
            if not still_current():
                return
            for event in data.get("state") or []:
                if not isinstance(event, dict) or event.get("state_key") != "" or not isinstance(event.get("content"), dict):
                    continue
                if event.get("type") == "m.room.join_rules":
                    self._state.note_join_rule(room_id, event["content"].get("join_rule"))
                elif event.get("type") == "m.room.history_visibility":
                    self._state.note_history_visibility(room_id, event["content"].get("history_visibility"))

    # -- the periodic sweep --------------------------------------------------------------------

    def sweep(self, rooms: list[dict[str, Any]]) -> None:
        """Given the admin room list: unlist listed rooms whose local creator may not publish."""
        if not self.enabled:
            return
        for room in rooms:
            room_id, creator = room.get("room_id"), room.get("creator")
            if room.get("public") and isinstance(room_id, str) and isinstance(creator, str) and self.unwanted(room_id, creator):
                self._spawn(self._unlist(room_id, creator, None), f"directory-unlist-{room_id}")

    def unwanted(self, room_id: str, creator: str) -> bool:
        """A listed room that no one entitled to publish has published."""
        state = self._state
        return (state.is_local(creator) and not state.is_exempt(creator) and creator not in state.public_accounts
                and room_id not in state.channels)

    # -- Synapse -------------------------------------------------------------------------------

    async def _unlist(self, room_id: str, creator: str, started: float | None) -> None:
        """Journal the unlisting; ``unlisted_done`` follows once the executor has carried it out."""
        if not self.unwanted(room_id, creator):
            return
        if self.store is None:
            log.error("no effects journal yet: %s stays listed until the next sweep", room_id)
            return
        # One per listing seen: while one is pending the key finds it and nothing is added; once
        # done (or failed), a room seen listed again gets the next key in the chain.
        key = f"unlist/{room_id}"
        while (known := await self.store.effects.get(key)) is not None:
            if known.status == "pending":
                return
            key = f"unlist/{room_id}/after-{known.id}"
        if started is not None:
            self._unlist_asked.setdefault(room_id, started)
        if await self.store.effects.add("unlist", room_id, {"room": room_id, "creator": creator}, key):
            log.info("taking %s out of the room directory: created public by %s, who is not an approved public "
                     "account", room_id, creator)

    def unlisted_done(self, effect: Effect) -> None:
        """The executor took a room out of the directory: out of news scope by listing."""
        room_id = effect.payload["room"]
        self._state.listed_rooms.discard(room_id)
        self._unlisted.add(room_id)
        started = self._unlist_asked.pop(room_id, None)
        took = 0.0 if started is None else time.monotonic() - started
        self.unlisted.append((room_id, took))
        log.info("took %s out of the room directory (%.0f ms after the gate's answer)", room_id, took * 1000)

    async def _listed(self, room_id: str) -> bool:
        data = await self._get(f"/_matrix/client/v3/directory/list/room/{quote(room_id)}")
        return data.get("visibility") == "public"

    async def _get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path, None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"}, timeout=aiohttp.ClientTimeout(total=10),
            )
        async with self._session.request(method, self._url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(data, dict):
                raise LookupError(f"{method} {path}: HTTP {resp.status} {str(data)[:200]}")
            return data
