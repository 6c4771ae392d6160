"""The in-memory picture the core decides from: a write-through copy of the store.

Pure data: the service fills it at start-up from the store and updates it after each commit.
Lookups are dictionary reads so the gate can answer in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from bot.policy.news import NewsRules, fingerprint
from bot.policy.sanctions import ActiveSanctions, Measure
from bot.policy.tracking import Sink, TrackedDict, TrackedSet, changed_keys

RECENT_TEXTS_LIMIT = 200_000
COUNTED_POSTS_LIMIT = 1_000  # event IDs of counted posts kept per account
# Join rules that let people in without anyone's approval: ``public`` lets anyone in; ``restricted``
# and ``knock_restricted`` let in every member of the rooms they allow (a public space, a square)
# with no invite. Counting them all as open is strict and needs no look at the allowed rooms.
OPEN_JOIN_RULES = frozenset({"public", "restricted", "knock_restricted"})


@dataclass(frozen=True)
class PublicAccount:
    """An approved public account, as the register says: its category, name, filing and news tier."""

    category: str
    name: str
    filing_number: str
    tier: str | None = None  # 'publisher' or 'reposter'
    news_filing_number: str | None = None

    @classmethod
    def from_filings(cls, filings: Sequence[Any]) -> "PublicAccount":
        """An owner's account from its filings in force, oldest first (the register's rows): the
        base filing, and the newest news tier if any."""
        base = next(f for f in filings if f.tier is None)
        news = next((f for f in reversed(filings) if f.tier is not None), None)
        return cls(base.category, base.name, base.filing_number,
                   None if news is None else news.tier, None if news is None else news.filing_number)


@dataclass
class PolicyState:
    bot_user_id: str
    server_name: str
    agreement_version: str
    moderators: frozenset[str] = frozenset()
    # user -> the newest agreement version that user accepted
    accepted: dict[str, str] = field(default_factory=dict)
    # user -> their direct chat with the bot, and the reverse
    dm_room_by_user: dict[str, str] = field(default_factory=dict)
    dm_user_by_room: dict[str, str] = field(default_factory=dict)
    # DM room -> the third parties invited to it or in it. The DM exemption is for a private talk
    # with the bot: it holds only while this has no entry for the room.
    dm_others: dict[str, set[str]] = field(default_factory=dict)
    # user -> measures in force (only accounts that have some)
    sanctions: dict[str, ActiveSanctions] = field(default_factory=dict)
    # user -> approved public account; room -> the public account whose channel it is
    public_accounts: dict[str, PublicAccount] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    # Current-affairs news: the rules, the rooms they apply in (besides channels), and recent
    # texts in those rooms (fingerprint -> first sender, time) to recognise identical reposts.
    news_rules: NewsRules = field(default_factory=NewsRules)
    news_scope: set[str] = field(default_factory=set)
    # Kept apart from news_scope (which the periodic refresh replaces) because the gate and the
    # sync change them the moment a room opens or is listed: rooms whose join rule is public,
    # and rooms in the directory.
    open_rooms: set[str] = field(default_factory=set)
    listed_rooms: set[str] = field(default_factory=set)
    # Rooms whose history anyone reads without joining (history_visibility world_readable).
    readable_rooms: set[str] = field(default_factory=set)
    # Rooms out of scope where an account without the tier posted what the news rules recognise
    # (room -> rule): opening such a room would serve that news to every new joiner, since a
    # room's old history stays readable under the visibility it was posted with. Memory only.
    private_news: dict[str, str] = field(default_factory=dict)
    recent_texts: dict[str, tuple[str, int]] = field(default_factory=dict)
    # --- identity (issue 9) ---
    # user -> level of the real-name verification in force (verified accounts only; never a subject)
    verified: dict[str, str] = field(default_factory=dict)
    # What needs a verified account (identity.required_for): post, invite, create_room,
    # public_account, news.
    identity_required_for: frozenset[str] = frozenset()
    # How to verify on this server, in the gate's language: every identity refusal ends with it.
    identity_instructions: str = ""
    # identity.registration: None, registration open; else the SSO providers (Synapse
    # auth_provider IDs) through which a client may register (the module's
    # check_registration_for_spam).
    registration_only_through: frozenset[str] | None = None
    # --- end identity ---

    # --- change tracking (bot.replica): every write reaches the sink, whatever code path made it.
    def track(self, sink: Sink) -> None:
        """From now on, report each change to ``sink(field, key)`` (``key`` None: the whole
        field). Dict and set fields become tracking containers (reads cost the same); a field
        assigned anew reports the keys that differ."""
        object.__setattr__(self, "_change_sink", sink)
        for name, value in list(vars(self).items()):
            if not name.startswith("_"):
                object.__setattr__(self, name, self._tracked(name, value, sink))

    @staticmethod
    def _tracked(name: str, value: Any, sink: Sink) -> Any:
        if type(value) is dict:
            return TrackedDict(name, sink, value)
        if type(value) is set:
            return TrackedSet(name, sink, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        sink = self.__dict__.get("_change_sink")
        if sink is None or name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        old = self.__dict__.get(name)
        object.__setattr__(self, name, self._tracked(name, value, sink))
        keys = changed_keys(old, value)
        if keys is None:
            sink(name, None)
        else:
            for key in keys:
                sink(name, key)

    def _touch(self, name: str, key: Any) -> None:
        """A value inside a container changed in place (a DM's third parties, an account's
        measures and counted posts): report its key."""
        sink = self.__dict__.get("_change_sink")
        if sink is not None:
            sink(name, key)
    # --- end of change tracking

    def is_exempt(self, user_id: str) -> bool:
        return user_id == self.bot_user_id or user_id in self.moderators

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def has_agreed(self, user_id: str) -> bool:
        return self.accepted.get(user_id) == self.agreement_version

    def is_verified(self, user_id: str) -> bool:  # issue 9
        return user_id in self.verified

    def record_acceptance(self, user_id: str, version: str) -> None:
        self.accepted[user_id] = version

    def set_dm_room(self, user_id: str, room_id: str) -> None:
        old = self.dm_room_by_user.pop(user_id, None)
        if old is not None:
            self.dm_user_by_room.pop(old, None)
        self.dm_room_by_user[user_id] = room_id
        self.dm_user_by_room[room_id] = user_id
        self.dm_others.pop(room_id, None)

    def load_dm_rooms(self, rooms: dict[str, str]) -> None:
        """All the store's DMs at start-up (user -> room, one each way, as the table keeps them):
        dictionary updates, not a call per account, while the gate waits."""
        self.dm_room_by_user.update(rooms)
        self.dm_user_by_room.update({room_id: user_id for user_id, room_id in rooms.items()})

    def forget_dm_room(self, room_id: str) -> str | None:
        user_id = self.dm_user_by_room.pop(room_id, None)
        self.dm_others.pop(room_id, None)
        if user_id is not None and self.dm_room_by_user.get(user_id) == room_id:
            del self.dm_room_by_user[user_id]
        return user_id

    def is_dm_of(self, room_id: str | None, user_id: str) -> bool:
        """The room is recorded as ``user_id``'s direct chat with the bot (clean or not)."""
        return room_id is not None and self.dm_user_by_room.get(room_id) == user_id

    def in_clean_dm(self, room_id: str | None, user_id: str) -> bool:
        """``user_id``'s direct chat with the bot, with nobody else invited or joined: the only room
        where an account that may not post elsewhere still may (to agree, to appeal)."""
        return self.is_dm_of(room_id, user_id) and room_id not in self.dm_others

    def note_dm_member(self, room_id: str, user_id: str, membership: str | None) -> bool:
        """Follow who else is in a DM room; True when ``user_id`` is a third party there now.

        The account and the bot are not third parties. Invited, knocking and joined count (an
        invitee can join at any moment); leaving or being banned ends it.
        """
        owner = self.dm_user_by_room.get(room_id)
        if owner is None or user_id in (owner, self.bot_user_id):
            return False
        others = self.dm_others.get(room_id)
        if membership in ("invite", "join", "knock"):
            self.dm_others.setdefault(room_id, set()).add(user_id)
            self._touch("dm_others", room_id)
            return True
        if others is not None:
            others.discard(user_id)
            if not others:
                del self.dm_others[room_id]
            else:
                self._touch("dm_others", room_id)
        return False

    def add_measure(self, user_id: str, measure: Measure) -> None:
        self.sanctions.setdefault(user_id, ActiveSanctions()).measures[measure.case_id] = measure
        self._touch("sanctions", user_id)

    def end_measure(self, user_id: str, case_id: int) -> Measure | None:
        active = self.sanctions.get(user_id)
        if active is None:
            return None
        measure = active.measures.pop(case_id, None)
        if not active.measures:
            del self.sanctions[user_id]
        elif measure is not None:
            self._touch("sanctions", user_id)
        return measure

    def is_counted(self, user_id: str, event_id: object) -> bool:
        """True if the post ``event_id`` of ``user_id`` is already counted against its rate cap."""
        active = self.sanctions.get(user_id)
        return active is not None and isinstance(event_id, str) and event_id in active.counted

    def note_post(self, user_id: str, now: int, event_id: str | None = None) -> None:
        """Count a post against the account's rate cap (the core asked for it with count_post).

        ``now`` is the time the post is counted at. A post whose ``event_id`` is already counted
        is not counted again."""
        active = self.sanctions.get(user_id)
        if active is None:
            return
        window = max((m.rate.period_ms for m in active.measures.values() if m.rate is not None), default=0)
        active.recent_posts[:] = [t for t in active.recent_posts if t > now - window]
        counted = active.counted
        for seen in [e for e, t in counted.items() if t <= now - window]:
            del counted[seen]
        if event_id is not None:
            if event_id in counted:
                return
            counted[event_id] = now
            while len(counted) > COUNTED_POSTS_LIMIT:  # only a guard: the window keeps it small
                del counted[next(iter(counted))]
        active.recent_posts.append(now)
        self._touch("sanctions", user_id)

    def in_news_scope(self, room_id: str | None) -> bool:
        return room_id is not None and (
            room_id in self.news_scope or room_id in self.channels or room_id in self.open_rooms
            or room_id in self.listed_rooms or room_id in self.readable_rooms
        )

    def note_join_rule(self, room_id: str, join_rule: object, narrow: bool = True) -> None:
        """A room's join rule changed (or was seen): ``OPEN_JOIN_RULES`` put it in scope.

        ``knock`` rooms admit people one by one, like invite-only rooms, so they follow the rules
        file's invite-only setting (the periodic refresh). With ``narrow=False`` (the gate, which
        sees an event before Synapse's auth rules may still refuse it) only widening happens:
        narrowing waits for the stored event (the sync) or the refresh.
        """
        if join_rule in OPEN_JOIN_RULES:
            self.open_rooms.add(room_id)
        elif narrow:
            self.open_rooms.discard(room_id)

    def note_history_visibility(self, room_id: str, visibility: object, narrow: bool = True) -> None:
        """A room's history visibility changed (or was seen): ``world_readable`` puts it in scope,
        since anyone reads it without joining. ``narrow`` as in ``note_join_rule``."""
        if visibility == "world_readable":
            self.readable_rooms.add(room_id)
        elif narrow:
            self.readable_rooms.discard(room_id)

    def seen_from_other(self, body: str, user_id: str, now: int) -> bool:
        first = self.recent_texts.get(fingerprint(body))
        return first is not None and first[0] != user_id and now - first[1] <= self.news_rules.identical_ms

    def remember_text(self, body: str, user_id: str, now: int) -> None:
        """Keep the first sender of each text seen in scope (bounded: the oldest go first)."""
        self.remember_fingerprint(fingerprint(body), user_id, now)

    def remember_fingerprint(self, key: str, user_id: str, now: int) -> None:
        """remember_text for a text known by its fingerprint only (a module's report: the bot
        needs no more of a text than this, and a module holds thousands of reports)."""
        first = self.recent_texts.get(key)
        if first is None or now - first[1] > self.news_rules.identical_ms:
            self.recent_texts.pop(key, None)
            self.recent_texts[key] = (user_id, now)
            while len(self.recent_texts) > RECENT_TEXTS_LIMIT:
                del self.recent_texts[next(iter(self.recent_texts))]
