"""Onboarding: every account that has to agree gets a direct chat with the bot and the agreement.

Requests come from the gate (a first login, a refused attempt), from room mode and from start-up
after a version change. ``request`` never blocks the caller: it puts the user on a queue that one
worker drains in order, so a burst of new accounts is paced by the homeserver's rate limit
instead of flooding it. Each user is queued at most once at a time, and is prompted once per
agreement version per direct chat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from bot.agreement import AgreementDocument
from bot.config import Settings
from bot.i18n import Translator
from bot.matrix.client import Matrix, MatrixError, txn_id
from bot.policy import PolicyState
from bot.store import Store

log = logging.getLogger(__name__)

# The DM is where an account that may not post elsewhere still may (to agree, to appeal): it must
# stay between the account and the bot, so inviting needs more than the account's level 0 (the
# private_chat preset would let it invite at 0). No "users" key: in room version 12 the bot, as
# creator, is not listed there and Synapse refuses an override that names it.
DM_POWER_LEVELS = {"invite": 100}
# Set once every DM recorded before DMs were kept private has been looked at for third parties.
DMS_CHECKED_KEY = "dm_members_checked"


class Onboarding:
    def __init__(
        self,
        matrix: Matrix,
        store: Store,
        state: PolicyState,
        document: AgreementDocument,
        t: Translator,
        settings: Settings,
        clock: Callable[[], int],
    ) -> None:
        self._matrix = matrix
        self._store = store
        self._state = state
        self._document = document
        self._t = t
        self._settings = settings
        self._clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._notes: dict[str, list[tuple[str, str]]] = {}
        # Users already sent the current version in their current DM: lets the gate's hot path
        # skip the queue without touching the store.
        self._prompted: set[str] = set()
        # The onboarding worker and the effects executor both open DMs: one per user at a time.
        self._dm_locks: dict[str, asyncio.Lock] = {}
        # --- consent at registration (bot.consent) ---
        # True if the account accepted the agreement at registration (then recorded): no prompt.
        self.consent: Callable[[str], Awaitable[bool]] | None = None

    def request(self, user_id: str, note: tuple[str, str] | None = None) -> None:
        """Make sure ``user_id`` is asked to agree; ``note`` (text, txn key) is sent before it."""
        if note is None and user_id in self._prompted:
            return
        pending = user_id in self._notes
        self._notes.setdefault(user_id, [])
        if note is not None:
            self._notes[user_id].append(note)
        if not pending:
            self._queue.put_nowait(user_id)

    async def tell(self, user_id: str, text: str, key: str) -> None:
        """A notice in ``user_id``'s direct chat, journaled as an effect (in the caller's
        transaction, if one is open): it survives a crash and is sent once."""
        # The key names the user too: one outcome (a report's) is told to several reporters.
        await self._store.effects.add("dm", user_id, {"text": text}, f"dm/{user_id}/{key}")

    def forget(self, user_id: str) -> None:
        """The user left their DM: the next request makes a new one and prompts there."""
        self._prompted.discard(user_id)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        try:
            await self.check_old_dms()
        except Exception:  # the queue must be served all the same; the check runs again next start
            log.exception("checking the members of the existing direct chats failed")
        while True:
            user_id = await self._queue.get()
            notes = self._notes.pop(user_id, [])
            try:
                await self._onboard(user_id, notes)
            except MatrixError as exc:
                log.warning("could not onboard %s: %s", user_id, exc)
            except Exception:
                log.exception("onboarding %s failed", user_id)

    async def check_old_dms(self) -> None:
        """Once: DMs made before they were kept private may already hold a third party, whose
        arrival the router never saw. Such a DM loses its exemption and is left; the account gets a
        new one. Later arrivals reach the router as membership events."""
        if await self._store.get(DMS_CHECKED_KEY) is not None:
            return
        for user_id, room_id in list(self._state.dm_room_by_user.items()):
            try:
                events = await self._matrix.room_state(room_id)
            except MatrixError as exc:
                log.info("could not check the members of the direct chat %s: %s", room_id, exc)
                continue
            others = [
                e.get("state_key") for e in events
                if e.get("type") == "m.room.member" and isinstance(e.get("state_key"), str)
                and self._state.note_dm_member(room_id, e["state_key"], (e.get("content") or {}).get("membership"))
            ]
            if others:
                log.info("the direct chat %s of %s also holds %s; opening a new one", room_id, user_id, ", ".join(others))
                await self._store.rooms.forget_dm_room(room_id)
                self._state.forget_dm_room(room_id)
                self.forget(user_id)
                try:
                    await self._matrix.leave(room_id)
                except MatrixError as exc:
                    log.info("leaving the shared direct chat %s: %s", room_id, exc)
                self.request(user_id, (self._t("dm.reopened"), f"dm-reopened-{room_id}"))
        await self._store.put(DMS_CHECKED_KEY, str(self._clock()))

    async def dm_room(self, user_id: str) -> str:
        """The user's direct chat with the bot, created (and recorded) if there is none."""
        lock = self._dm_locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            room_id = self._state.dm_room_by_user.get(user_id)
            if room_id is None:
                room_id = await self._matrix.create_dm(user_id, power_levels=DM_POWER_LEVELS)
                await self._store.rooms.set_dm_room(user_id, room_id, self._clock())
                self._state.set_dm_room(user_id, room_id)
                log.info("opened a direct chat %s with %s", room_id, user_id)
        return room_id

    async def send_agreement(self, user_id: str, room_id: str, reply_to: str | None = None) -> None:
        """Journal the agreement (in the caller's transaction, if one is open: ``!rules`` commits it
        with the command's handled mark). The executor sends it and records the prompt with the
        sent event's ID, so a ✅ reaction to it counts; the key (and the transaction ID derived as
        before) is the cause's, so it is sent once."""
        key = reply_to or f"{room_id}/{self._document.version}"
        payload = {"room": room_id, "user": user_id, "version": self._document.version,
                   "text": self._document.render(self._t, self._settings), "reply_to": reply_to,
                   "txn": txn_id("agreement", user_id, key)}
        await self._store.effects.add("agreement_prompt", user_id, {k: v for k, v in payload.items() if v is not None},
                                      f"agreement/{user_id}/{key}")

    async def prompt_now(self, user_id: str) -> None:
        """The journaled form of ``request``: the executor's ``onboard`` effect calls this, so a
        prompt that a recorded violation asked for survives a crash before the queue got to it."""
        await self._onboard(user_id, [])

    async def _onboard(self, user_id: str, notes: list[tuple[str, str]]) -> None:
        if self._state.is_exempt(user_id):
            return
        needs_prompt = not self._state.has_agreed(user_id)
        if needs_prompt and self.consent is not None and await self.consent(user_id):
            needs_prompt = False  # accepted at registration (bot.consent), recorded just now
        if not notes and not needs_prompt:
            return
        room_id = await self.dm_room(user_id)
        # The notes and the prompt are journaled together (one target: sent in this order).
        async with self._store.unit():
            for text, key in notes:
                await self._store.effects.add("notice", user_id, {
                    "room": room_id, "text": text, "txn": txn_id("note", user_id, key)}, f"note/{user_id}/{key}")
            if needs_prompt:
                previous = await self._store.agreements.prompt_for(user_id, self._document.version)
                if previous is None or previous.room_id != room_id:
                    await self.send_agreement(user_id, room_id)
        if needs_prompt:
            self._prompted.add(user_id)
