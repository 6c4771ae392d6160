"""Public accounts (article 7 ¶1): applications, review, the filing register, channels.

A user applies for a public account in a category, then (optionally) for a news tier for it.
Moderators approve, giving a filing number, or reject; the applicant is told either way. Only an
approved public account may publish a room to the directory; the rooms it publishes become its
channels. Revoking ends every filing of the account at once.

Channels follow the account's privileges as they stand, not the bare register: where
``identity.required_for`` lists ``public_account``, an owner who is not verified (any more) may
not add a channel, as it may not publish (``bot.policy.decide.public_account``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from bot.config import Settings
from bot.i18n import Refusal, Translator
from bot.matrix import powers
from bot.matrix.client import Matrix, MatrixError
from bot.matrix.management import ManagementRoom
from bot.matrix.onboarding import Onboarding
from bot.policy import PolicyState
from bot.policy.decide import identity_refusal, public_account
from bot.policy.state import PublicAccount
from bot.store import AlreadyPending, Application, Filing, Store

log = logging.getLogger(__name__)

_REMOVE: Any = object()  # _put's "no value": take the key out

TIERS = ("publisher", "reposter")


class PublicAccounts:
    def __init__(
        self,
        store: Store,
        state: PolicyState,
        matrix: Matrix,
        onboarding: Onboarding,
        management: ManagementRoom,
        t: Translator,
        settings: Settings,
        clock: Callable[[], int],
        spawn: Callable[[Awaitable[None], str], object],
    ) -> None:
        self._spawn = spawn
        self._store = store
        self._state = state
        self._matrix = matrix
        self._onboarding = onboarding
        self._management = management
        self._t = t
        self._clock = clock
        self.categories = list(settings.public_accounts.categories)
        self._category_names = settings.public_accounts
        self._format = settings.public_accounts.filing_number_format
        # The rooms the bot protects for everyone (resolved at start-up): never one account's channel.
        self.protected: Callable[[], set[str]] = set
        # Called after anything that changes how an account is labelled (tier, channels).
        self.on_changed: Callable[[str], Awaitable[None]] | None = None

    def _put(self, mapping: dict[str, Any], key: str, value: Any = _REMOVE) -> None:
        """Set (without ``value``: remove) ``mapping[key]`` in memory now, since what follows in
        the unit (labels, room mode) decides from it, and put it back if the unit rolls back:
        memory must never say what the store does not."""
        had, old = key in mapping, mapping.get(key)
        if value is _REMOVE:
            mapping.pop(key, None)
        else:
            mapping[key] = value
        self._store.db.on_rollback(lambda: _restore(mapping, key, had, old))

    async def _changed(self, user: str) -> None:
        if self.on_changed is not None:
            await self.on_changed(user)

    async def load(self) -> None:
        """The register's live picture into memory (before the gate answers)."""
        # One query for the whole register (not one per owner): it is read while the gate waits.
        by_owner: dict[str, list[Filing]] = {}
        for filing in await self._store.accounts.active_filings():
            by_owner.setdefault(filing.owner, []).append(filing)
        self._state.public_accounts.clear()
        for owner, filings in by_owner.items():
            self._state.public_accounts[owner] = PublicAccount.from_filings(filings)
        self._state.channels.update(await self._store.accounts.channels())

    async def _account_of(self, owner: str) -> PublicAccount:
        return PublicAccount.from_filings(await self._store.accounts.active_filings(owner))

    # -- applying ------------------------------------------------------------------------------

    def category_of(self, word: str) -> str:
        """The category key a typed word means, in either language (`enterprise`, `企业`); the
        refusal, listing the categories by their names in the reader's language, otherwise."""
        key = self._category_names.category_key(word)
        if key is None:
            names = ", ".join(self.category_name(c) for c in self.categories)
            raise Refusal("account.unknown_category", category=word, categories=names)
        return key

    def category_name(self, key: str) -> str:
        """How a stored category key is shown to the reader."""
        return self._category_names.category_name(key, self._t.language)

    def verification_refusal(self, user: str, kind: str) -> Refusal | None:
        """identity.required_for (issue 9) for an application of ``kind`` (public or news): the
        refusal the applicant reads, saying how to verify here; None if nothing stands in the way."""
        return self._unverified(user, "public_account" if kind == "public" else "news")

    def _unverified(self, user: str, what: str) -> Refusal | None:
        """The refusal saying how to verify, headed by ``action.<what>``, when ``user`` must be
        verified for ``public_account`` (channels too) or ``news`` and is not; else None."""
        decision = identity_refusal(self._state, user, "news" if what == "news" else "public_account")
        if decision is None or decision.message_key is None:
            return None
        params = dict(decision.params)
        params.pop("action")
        return Refusal(decision.message_key, what=self._t(f"action.{what}"), **params)

    def _check_verified(self, user: str, kind: str) -> None:
        refusal = self.verification_refusal(user, kind)
        if refusal is not None:
            raise refusal

    async def apply_public(self, user: str, category: str, name: str) -> Application:
        category = self.category_of(category)
        account = self._state.public_accounts.get(user)
        if account is not None:
            raise Refusal("account.already_public", name=account.name, filing=account.filing_number)
        self._check_verified(user, "public")
        return await self._apply(user, "public", category=category, name=name)

    async def apply_news(self, user: str, tier: str, licence: str) -> Application:
        account = self._state.public_accounts.get(user)
        if account is None:
            raise Refusal("account.needs_public")
        if account.tier == tier or account.tier == "publisher":
            raise Refusal("account.already_tier", tier=self._t(f"tier.{account.tier}"))
        self._check_verified(user, "news")
        return await self._apply(user, "news", tier=tier, licence=licence)

    async def _apply(self, user: str, kind: str, **fields: str) -> Application:
        try:
            application = await self._store.accounts.apply(applicant=user, kind=kind, now=self._clock(), **fields)
        except AlreadyPending:
            raise Refusal("account.pending", kind=kind) from None
        await self._management.post(
            self._t("account.announce", application=application.id, user=user, summary=self.summary(application)),
            f"application-{application.id}",
        )
        return application

    def summary(self, application: Application) -> str:
        if application.kind == "public":
            return self._t("account.summary_public", category=self.category_name(application.category or ""),
                           name=application.name)
        return self._t("account.summary_news", tier=self._t(f"tier.{application.tier}"), licence=application.licence)

    # -- review --------------------------------------------------------------------------------

    async def _pending(self, application_id: int) -> Application:
        application = await self._store.accounts.application(application_id)
        if application is None:
            raise Refusal("account.no_such", application=application_id)
        if application.decided_at is not None:
            raise Refusal("account.already_decided", application=application_id)
        return application

    def filing_number(self, category: str, sequence: int, now: int) -> str:
        year = datetime.fromtimestamp(now / 1000, tz=timezone.utc).year
        position = self.categories.index(category) + 1 if category in self.categories else 0
        return self._format.format(year=year, category=f"{position:02d}", seq=sequence)

    def approval_refusal(self, application: Application) -> Refusal | None:
        """The applicant must (still) be verified where identity.required_for asks it: the
        verification may have been revoked while the application waited."""
        if self.verification_refusal(application.applicant, application.kind) is None:
            return None
        purpose = "public_account" if application.kind == "public" else "news"
        return Refusal("account.approve_unverified", application=application.id, user=application.applicant,
                       purpose=purpose)

    async def approve(self, application_id: int, moderator: str, note: str) -> Filing:
        application = await self._pending(application_id)
        refusal = self.approval_refusal(application)
        if refusal is not None:
            raise refusal
        now = self._clock()
        if application.kind == "public":
            category, name = application.category or "", application.name or ""
        else:
            account = self._state.public_accounts.get(application.applicant)
            if account is None:  # revoked while the news application waited
                raise Refusal("account.needs_public")
            category, name = account.category, account.name
        number = self.filing_number(category, await self._store.accounts.next_sequence(), now)
        filing = await self._store.accounts.approve(application, by=moderator, note=note, now=now,
                                                    filing_number=number, category=category, name=name)
        if filing is None:
            raise Refusal("account.already_decided", application=application_id)
        self._put(self._state.public_accounts, application.applicant, await self._account_of(application.applicant))
        if application.kind == "news":
            await self._changed(application.applicant)
        await self._onboarding.tell(
            application.applicant, self._t("account.told_approved", application=application_id, filing=number, note=note),
            f"application-{application_id}",
        )
        return filing

    async def reject(self, application_id: int, moderator: str, reason: str) -> Application:
        application = await self._pending(application_id)
        if not await self._store.accounts.reject(application_id, by=moderator, reason=reason, now=self._clock()):
            raise Refusal("account.already_decided", application=application_id)
        await self._onboarding.tell(
            application.applicant, self._t("account.told_rejected", application=application_id, reason=reason),
            f"application-{application_id}",
        )
        return application

    async def revoke(self, user: str, moderator: str, reason: str) -> list[Filing]:
        revoked = await self._store.accounts.revoke_all(user, by=moderator, reason=reason, now=self._clock())
        if not revoked:
            raise Refusal("account.not_public", user=user)
        self._put(self._state.public_accounts, user)
        await self._changed(user)
        numbers = ", ".join(f.filing_number for f in revoked)
        await self._onboarding.tell(user, self._t("account.told_revoked", filings=numbers, reason=reason),
                                    f"revoke-{revoked[0].id}")
        return revoked

    # -- channels ------------------------------------------------------------------------------

    async def add_channel(self, owner: str, room: str) -> str:
        """Make ``room`` a channel of ``owner``'s public account, after checking it may be one.

        A channel is labelled (the bot rewrites its name and topic) and is in news scope, so it
        must be a public room (join rule ``public`` or listed in the directory) that the owner
        runs (a member with the power to set state), that the bot is in, and that is nobody
        else's: not another account's channel, the management room or a protected room.
        """
        refusal = self.owner_refusal(owner)
        if refusal is not None:
            raise refusal
        try:
            room_id = await self._matrix.resolve(room)
        except MatrixError:
            raise Refusal("channel.unknown_room", room=room) from None
        refusal = self.channel_refusal(owner, room_id, room)
        if refusal is not None:
            raise refusal
        await self.check_room(owner, room, room_id)
        await self._store.accounts.add_channel(owner, room_id, self._clock())
        self._put(self._state.channels, room_id, owner)
        await self._changed(owner)
        return room_id

    async def check_room(self, owner: str, room: str, room_id: str) -> None:
        bot = self._state.bot_user_id
        try:
            state = await self._matrix.room_state(room_id)
        except MatrixError:
            state = []
        # A world-readable room shows its state to anyone: the bot's own membership decides.
        if powers.membership(state, bot) != "join":
            raise Refusal("channel.bot_not_in_room", room=room, bot=bot)
        if powers.membership(state, owner) != "join":
            raise Refusal("channel.not_member", room=room)
        have, needed = powers.state_power(state, owner)
        if have < needed:
            raise Refusal("channel.no_power", room=room, level=int(have), needed=needed)
        rule = powers.join_rule(state)
        if rule != "public" and await self._matrix.directory_visibility(room_id) != "public":
            raise Refusal("channel.not_public", room=room, rule=rule)

    async def remove_channel(self, owner: str, room: str) -> str:
        try:
            room_id = await self._matrix.resolve(room)
        except MatrixError:
            raise Refusal("channel.unknown_room", room=room) from None
        if not await self._store.accounts.remove_channel(owner, room_id, self._clock()):
            raise Refusal("channel.not_yours", room=room)
        self._put(self._state.channels, room_id)
        await self._changed(owner)
        return room_id

    def on_published(self, user: str, room_id: str) -> None:
        """The gate let an account change a room's directory listing; follow it up.

        The callback does not say publish or unpublish, so the room enters news scope at once (the
        strict guess) and leaves it if the directory says it was unpublished.
        """
        self._state.listed_rooms.add(room_id)
        self._spawn(self._follow_publication(user, room_id), f"follow-publication-{room_id}")

    async def _follow_publication(self, user: str, room_id: str, delays: tuple[float, ...] = (0.3, 2.0)) -> None:
        # The callback comes before Synapse applies the change: look at the directory once the
        # change is done, and once more in case Synapse was slow.
        for delay in delays:
            await asyncio.sleep(delay)
            await self._settle_publication(user, room_id)

    async def _settle_publication(self, user: str, room_id: str) -> None:
        try:
            response = await self._matrix.client.room_get_visibility(room_id)
            if getattr(response, "visibility", None) not in ("public", "private"):
                return  # not answered: keep the strict guess rather than drop the room from scope
            public = response.visibility == "public"
            if public:
                self._state.listed_rooms.add(room_id)
            else:
                self._state.listed_rooms.discard(room_id)
            if public and self._state.channels.get(room_id) != user:
                refusal = self.channel_refusal(user, room_id, room_id)
                if refusal is not None:
                    # Listed all the same (the directory is Synapse's), but not made a channel, as
                    # !channel add would refuse: the moderators hear of it.
                    why = self._t(refusal.key, **refusal.params)
                    await self._management.post(self._t("channel.publication_refused_mgmt", user=user, room=room_id,
                                                        why=why), f"publication-refused/{room_id}/{user}")
                    return
                await self._store.accounts.add_channel(user, room_id, self._clock())
                self._put(self._state.channels, room_id, user)
                await self._changed(user)
            elif not public and self._state.channels.get(room_id) == user:
                await self._store.accounts.remove_channel(user, room_id, self._clock())
                self._put(self._state.channels, room_id)
                await self._changed(user)
        except Exception:
            log.exception("following the publication of %s by %s failed", room_id, user)

    def channel_refusal(self, owner: str, room_id: str, shown: str) -> Refusal | None:
        """Why ``room_id`` may not become ``owner``'s channel, from what the bot knows without asking
        the room (``check_room`` asks it); None if nothing here stands in the way. One rule for
        ``!channel add``, its dry run and a publication, so they cannot drift apart."""
        refusal = self.owner_refusal(owner)
        if refusal is not None:
            return refusal
        if room_id == self._management.room_id:
            return Refusal("channel.management", room=shown)
        if room_id in self.protected():
            return Refusal("channel.protected", room=shown)
        holder = self._state.channels.get(room_id)
        if holder is not None and holder != owner:
            return Refusal("channel.taken", room=shown)
        return None

    def owner_refusal(self, owner: str) -> Refusal | None:
        """Why ``owner`` may not hold channels: no approved public account (e.g. a moderator
        publishing a room), or one whose owner must be verified and is not; None otherwise."""
        if owner not in self._state.public_accounts:
            return Refusal("account.not_public", user=owner)
        if public_account(self._state, owner) is None:
            return self._unverified(owner, "channel")
        return None

    # -- reading -------------------------------------------------------------------------------

    def whois(self, user: str) -> str:
        account = self._state.public_accounts.get(user)
        if account is None:
            return self._t("whois.none", user=user)
        lines = [self._t("whois.public", user=user, name=account.name, category=self.category_name(account.category),
                         filing=account.filing_number)]
        if account.tier is not None:
            lines.append(self._t("whois.tier", tier=self._t(f"tier.{account.tier}"), filing=account.news_filing_number))
        else:
            lines.append(self._t("whois.no_tier"))
        channels = sorted(room for room, owner in self._state.channels.items() if owner == user)
        if channels:
            lines.append(self._t("whois.channels", channels=", ".join(channels)))
        return "\n".join(lines)


def _restore(mapping: dict[str, Any], key: str, had: bool, old: Any) -> None:
    if had:
        mapping[key] = old
    else:
        mapping.pop(key, None)
