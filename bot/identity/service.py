"""Real-name verification (article 6 ¶1): "real name in the back end, voluntary in the front end".

Three verifiers record into one append-only table: a signed assertion from the operator's identity
service (bot.identity.assertion), single sign-on (an external ID Synapse holds for a configured
auth provider), and a moderator's manual check. The platform keeps that a person was verified,
how, at what level and when; the subject only as a blind index (to count accounts per person and
to honour the blacklist); attributes the operator must keep only encrypted.

Memory (``PolicyState.verified``) follows the store: it changes after the commit, so the gate
never lets an account through on a verification that was rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal

from bot.config import Settings
from bot.i18n import Translator
from bot.identity.keys import IdentityKeys, KeyFileError
from bot.policy import PolicyState
from bot.store import Store
from bot.store.identity import KEY_FINGERPRINT, BlacklistEntry, IdentityRecord, SpentAssertion

if TYPE_CHECKING:
    from bot.matrix.admin import AdminApi
    from bot.matrix.management import ManagementRoom

log = logging.getLogger(__name__)

VERIFIERS = ("assertion", "sso", "manual")
Verifier = Literal["assertion", "sso", "manual"]
# Between two accounts' admin-API reads in the SSO sweep: 100,000 accounts in under 3 hours,
# without hammering the homeserver.
SSO_SWEEP_PAUSE_S = 0.1


@dataclass(frozen=True)
class VerifyOutcome:
    """``recorded``: the verification is committed. Otherwise ``refusal`` says why:
    'blacklisted', 'too_many_accounts', 'unknown_user' (not a local account), 'replayed', or
    'held' (single sign-on would verify, but a moderator revoked the account's verification)."""

    recorded: bool
    refusal: str | None = None


@dataclass(frozen=True)
class Blacklisted:
    """What ``Identity.blacklist`` did: how many identities it listed (0: the account named none)
    and the other accounts verified with them, whose verifications it revoked."""

    identities: int
    revoked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    """A row of an account's identity history, as moderators may see it: never the subject."""

    kind: str  # 'verified' or 'revoked'
    verifier: str
    method: str | None
    level: str | None
    verified_at: int | None
    recorded_at: int
    actor: str
    note: str | None

    @classmethod
    def of(cls, record: IdentityRecord) -> "Verification":
        return cls(record.kind, record.verifier, record.method, record.level, record.verified_at,
                   record.recorded_at, record.actor, record.note)


class Identity:
    def __init__(self, store: Store, state: PolicyState, keys: IdentityKeys, settings: Settings,
                 clock: Callable[[], int]) -> None:
        self._store = store
        self._repo = store.identity
        self._state = state
        self._keys = keys
        self._settings = settings
        self._config = settings.identity
        self._clock = clock
        self._keep = frozenset(self._config.keep_attributes)
        # Set by the service once it exists (the gate answers before): the admin API for the
        # SSO verifier and for telling known accounts from unknown ones.
        self.admin: "AdminApi | None" = None
        self.management: "ManagementRoom | None" = None
        # --- labels (review 9 #13): told of each verification recorded (True) or revoked (False),
        # inside its transaction, before memory follows; the service points it at Labels.
        self.on_changed: Callable[[str, bool], Awaitable[None]] | None = None
        # --- end labels ---

    @classmethod
    async def open(cls, settings: Settings, store: Store, state: PolicyState, clock: Callable[[], int]) -> "Identity":
        """The key (created on first start; KeyFileError if unusable) and the verified accounts
        into memory: one scan of the table, then dictionary updates."""
        keys = await _key_of_the_records(settings, store)  # review 9 #2: never a new key for old records
        identity = cls(store, state, keys, settings, clock)
        state.verified.update(await store.identity.verified_levels())
        state.identity_required_for = frozenset(settings.identity.required_for)
        state.identity_instructions = identity.how_to_verify(settings.language)
        return identity

    # -- the interface the commands use ------------------------------------------------------------

    async def verify(
        self, *, user_id: str, verifier: Verifier, method: str, level: str, subject: str | None,
        verified_at_ms: int, actor: str, attributes: dict[str, Any] | None = None, note: str | None = None,
        assertion_key: str | None = None, assertion_expires_at: int | None = None,
        assertion_signature: str | None = None,
    ) -> VerifyOutcome:
        """Record that ``user_id`` was verified, unless the subject is blacklisted (the moderators
        are told) or already has ``identity.accounts_per_subject`` other accounts verified.

        ``assertion_key`` (the assertion verifier) is marked used in the same transaction: a
        replay records nothing and returns refusal 'replayed'; ``assertion_signature`` is kept with
        it and the outcome, so the same request sent again is answered as it was (review 11b).
        Joins the caller's transaction, if any.
        """
        if verifier not in VERIFIERS:
            raise ValueError(f"unknown verifier {verifier!r}")
        if subject is None and verifier != "manual":
            raise ValueError(f"a {verifier} verification needs a subject")
        if not self._state.is_local(user_id):
            return VerifyOutcome(False, "unknown_user")
        # SSO subjects are machine-issued and case-sensitive: indexed exactly (review 9 #5).
        index = None if subject is None else self._keys.blind_index(subject, exact=verifier == "sso")
        kept = {name: value for name, value in (attributes or {}).items() if name in self._keep}
        now = self._clock()
        async with self._store.db.transaction():
            # Inside the write transaction: two verifications of one subject cannot both see
            # room for one more account.
            refusal = None if index is None else await self._subject_refusal(index, user_id)
            if refusal is not None:
                # review 9 #10: a refused assertion is spent too, in the refusal's transaction, so
                # a replay (say, once a slot has freed) neither verifies nor writes another record.
                if assertion_key is not None:
                    assert assertion_expires_at is not None
                    if not await self._repo.spend_assertion(assertion_key, now_ms=now,
                                                            expires_at=assertion_expires_at,
                                                            signature=assertion_signature, outcome=refusal[0]):
                        return VerifyOutcome(False, "replayed")
                await self._refused(user_id, verifier, method, refusal, actor, now, verified_at_ms)
                return VerifyOutcome(False, refusal[0])
            record_id = await self._repo.record_verification(
                user_id=user_id, verifier=verifier, method=method, level=level, verified_at=verified_at_ms,
                recorded_at=now, actor=actor, subject_index=index,
                attributes=self._keys.encrypt(user_id, kept) if kept else None, note=note,
                assertion_key=assertion_key, assertion_expires_at=assertion_expires_at,
                assertion_signature=assertion_signature,
            )
            if record_id is None:
                return VerifyOutcome(False, "replayed")
            await self._changed(user_id, True)  # labels (review 9 #13)
            self._store.db.after_commit(lambda: self._state.verified.__setitem__(user_id, level))
        log.info("%s verified (%s, %s, level %s) by %s", user_id, verifier, method, level, actor)
        return VerifyOutcome(True)

    async def unverify(self, *, user_id: str, actor: str, reason: str, verifier: Verifier = "manual") -> bool:
        """Revoke the verification in force; False when the account has none."""
        async with self._store.db.transaction():
            if await self._repo.current(user_id) is None:
                return False
            await self._repo.record_revocation(user_id=user_id, verifier=verifier, actor=actor, reason=reason,
                                               now_ms=self._clock())
            await self._changed(user_id, False)  # labels (review 9 #13)
            self._store.db.after_commit(lambda: self._state.verified.pop(user_id, None))
        log.info("%s no longer verified (%s by %s)", user_id, verifier, actor)
        return True

    # --- labels (review 9 #13) ---
    async def _changed(self, user_id: str, verified: bool) -> None:
        if self.on_changed is not None:
            await self.on_changed(user_id, verified)
    # --- end labels ---

    async def assertion_used(self, assertion_key: str) -> bool:
        return await self._repo.is_assertion_used(assertion_key)

    async def spent_assertion(self, assertion_key: str) -> SpentAssertion | None:
        return await self._repo.spent_assertion(assertion_key)

    async def answered_before(self, assertion_key: str, user_id: str, *, subject: str, method: str, level: str,
                              verified_at_ms: int) -> tuple[SpentAssertion | None, bool]:
        """How a used assertion was answered (None: not used) and whether the verification it made
        is the one in force now, read under the write lock: a first request still being recorded
        (on this process or another) commits before this looks, so a resend never reads its row
        half-way (review 11c, break 1). The record in force is the assertion's own only if it has
        its subject, method, level and time: a verification made since by other means is not."""
        async with self._store.db.transaction():
            spent = await self._repo.spent_assertion(assertion_key)
            if spent is None:
                return None, False
            record = await self._repo.current(user_id)
        own = (record is not None and record.verifier == "assertion" and record.method == method
               and record.level == level and record.verified_at == verified_at_ms
               and record.subject_index == self._keys.blind_index(subject, exact=False))
        return spent, own

    def is_verified(self, user_id: str) -> bool:
        return self._state.is_verified(user_id)

    async def current(self, user_id: str) -> Verification | None:
        record = await self._repo.current(user_id)
        return None if record is None else Verification.of(record)

    async def history(self, user_id: str) -> list[Verification]:
        return [Verification.of(record) for record in await self._repo.history(user_id)]

    async def blacklist(self, user_id: str, *, case_id: int | None, actor: str) -> Blacklisted:
        """Put every subject the account was ever verified with on the blacklist (even one revoked
        since: closing an account often comes after; an eID stays the person's after an SSO
        re-verification), and revoke the verification of every other account verified now with
        one of them: the same person's spare accounts (review 9 #1, #3). The account itself keeps
        its records as they are, so lifting its closure leaves it as it was. One transaction (the
        caller's, if open)."""
        indexes = await self._repo.subject_indexes(user_id)
        if not indexes:
            return Blacklisted(0)
        reason = Translator(self._settings.language)("identity.blacklist_revoked", case="?" if case_id is None else case_id)
        async with self._store.db.transaction():
            await self._repo.add_to_blacklist(subject_indexes=indexes, user_id=user_id, case_id=case_id, actor=actor,
                                              now_ms=self._clock())
            siblings: set[str] = set()
            for index in indexes:
                siblings |= await self._repo.accounts_with_subject(index)
            siblings.discard(user_id)
            for sibling in sorted(siblings):
                await self.unverify(user_id=sibling, actor=actor, reason=reason)
        return Blacklisted(len(indexes), tuple(sorted(siblings)))

    def how_to_verify(self, language: str) -> str:
        """``identity.instructions`` for ``language``, or a text naming the methods enabled."""
        given = self._config.instructions.get(language)  # type: ignore[call-overload]
        if given:
            return given
        t = Translator(language)
        lines = [t("identity.how.intro")]
        if self._config.sso_providers:
            lines.append(t("identity.how.sso", providers=", ".join(self._config.sso_providers)))
        if self._config.assertion_secret_file is not None:
            url = self._config.service_url
            lines.append(t("identity.how.service", url=f" ({url})" if url else ""))
        lines.append(t("identity.how.manual", bot=self._state.bot_user_id))
        return "\n".join(lines)

    # -- who exists --------------------------------------------------------------------------------

    async def known_user(self, user_id: str) -> bool:
        """A local account that exists: the admin API says so (an active account), or, without an
        admin token, the bot has seen it (it agreed, has a DM with the bot, or has identity
        records). Raises MatrixError when the admin API cannot answer now."""
        if not self._state.is_local(user_id):
            return False
        if self.admin is not None:
            record = await self.admin.user_record(user_id)
            return record is not None and not record.get("deactivated")
        state = self._state
        if user_id in state.accepted or user_id in state.dm_room_by_user or user_id in state.verified:
            return True
        return bool(await self._repo.history(user_id))

    # -- single sign-on ----------------------------------------------------------------------------

    async def check_sso(self, user_id: str, *, moderator: str | None = None) -> VerifyOutcome | None:
        """Verify ``user_id`` by its external ID of a configured provider, or revoke an SSO
        verification whose external ID is gone. None when nothing changed (or nothing to check).

        A verification by another verifier (an eID assertion, a moderator's check) is left alone:
        replacing it would drop its level and free its subject's slot (review 9 #4). A moderator's
        revocation holds: refusal 'held', nothing recorded, until a moderator asks again
        (``moderator``: their user ID, recorded as the actor) (review 9 #9)."""
        if self.admin is None or not self._config.sso_providers or not self._state.is_local(user_id):
            return None
        record = await self.admin.user_record(user_id)
        external = _provider_ids(record, self._config.sso_providers)
        current = await self._repo.current(user_id)
        if not external:
            if current is not None and current.verifier == "sso":
                await self.unverify(user_id=user_id, actor="sso", reason="external ID removed", verifier="sso")
                return VerifyOutcome(False)
            return None
        if current is not None and current.verifier != "sso":
            return None
        if current is None and moderator is None and await self._repo.held_by_moderator(user_id):
            return VerifyOutcome(False, "held")
        provider, external_id = external[0]
        # The provider is part of the subject: the same ID string at two providers is two people.
        subject = f"{provider}:{external_id}"
        if current is not None and current.subject_index == self._keys.blind_index(subject, exact=True):
            return None
        return await self.verify(user_id=user_id, verifier="sso", method=provider, level=self._config.sso_level,
                                 subject=subject, verified_at_ms=self._clock(), actor=moderator or "sso")

    @property
    def verifies_by_sso(self) -> bool:
        """Whether single sign-on verifies here: providers configured and the admin API to ask."""
        return self.admin is not None and bool(self._config.sso_providers)

    async def sweep_sso(self) -> None:
        """Check every account the bot knows of (and every SSO-verified one) against the admin API."""
        if self.admin is None or not self._config.sso_providers:
            return
        from bot.matrix.client import MatrixError

        users = set(self._state.accepted) | set(self._state.dm_room_by_user) | set(self._state.verified)
        for user_id in sorted(users):
            try:
                await self.check_sso(user_id)
            except MatrixError as exc:
                log.warning("SSO check of %s failed: %s", user_id, exc)
            await asyncio.sleep(SSO_SWEEP_PAUSE_S)

    # -- refusals ----------------------------------------------------------------------------------

    async def _subject_refusal(self, index: str, user_id: str) -> tuple[str, BlacklistEntry | None] | None:
        """Why this subject may not verify ``user_id`` (and the blacklist entry), or None."""
        entry = await self._repo.blacklisted(index)
        if entry is not None:
            return "blacklisted", entry
        others = await self._repo.accounts_with_subject(index) - {user_id}
        return ("too_many_accounts", None) if len(others) >= self._config.accounts_per_subject else None

    async def _refused(self, user_id: str, verifier: str, method: str, refusal: tuple[str, BlacklistEntry | None],
                       actor: str, now: int, verified_at: int) -> None:
        """Audit the refused attempt; a blacklisted identity is also told to the moderators (with
        the case that blacklisted it, never the index), once per account and blacklist entry:
        every `!verify` and hourly sweep of a blacklisted SSO account asks again (review 9 #11)."""
        why, entry = refusal
        if entry is not None:
            if await self._repo.refused_by_entry(user_id, entry.id):
                log.info("verification of %s refused again: blacklisted (entry told already)", user_id)
                return
            await self._repo.record_refusal(user_id=user_id, verifier=verifier, reason=why, actor=actor, now_ms=now,
                                            blacklist_entry=entry.id)
            text = Translator(self._settings.language)(
                "identity.blacklisted_notice", user=user_id, verifier=verifier, method=method,
                case="?" if entry.case_id is None else entry.case_id)
            await self._management().post(text, f"identity/blacklisted/{user_id}/{entry.id}")
        else:
            if verifier == "sso" and await self._repo.sso_refusal_audited(user_id, why):
                # The hourly sweep asks again: the same refusal of the same account says nothing new.
                log.info("verification of %s refused again: %s (audited already)", user_id, why)
                return
            await self._repo.record_refusal(user_id=user_id, verifier=verifier, reason=why, actor=actor, now_ms=now)
        log.warning("verification of %s refused: %s", user_id, why)

    def _management(self) -> "ManagementRoom":
        if self.management is None:
            # Imported late: the gate (and this service) start before matrix-nio is loaded.
            from bot.matrix.management import ManagementRoom

            self.management = ManagementRoom(self._store.effects)
        return self.management


def _provider_ids(record: dict[str, Any] | None, providers: list[str]) -> list[tuple[str, str]]:
    """(provider, external ID) pairs of ``record`` for the configured providers, in config order."""
    if record is None or record.get("deactivated"):
        return []
    found = {}
    for entry in record.get("external_ids") or []:
        if isinstance(entry, dict) and isinstance(entry.get("external_id"), str):
            found.setdefault(entry.get("auth_provider"), entry["external_id"])
    return [(provider, found[provider]) for provider in providers if provider in found]


# --- review 9 #2: the key must be the one the database's records were written under ---------------

async def _key_of_the_records(settings: Settings, store: Store) -> IdentityKeys:
    """The identity key, created only while nothing was ever recorded under one; KeyFileError when
    the file is missing or another key than the database's (its fingerprint is kept in kv)."""
    path = settings.identity_key_path()
    recorded = await store.get(KEY_FINGERPRINT)
    if not path.exists() and (recorded is not None or await store.identity.has_keyed_records()):
        raise KeyFileError(
            f"{path} does not exist, but this database holds identity records written under a key:"
            " restore that key file (from a backup, or copy it from the other bot process) or point"
            " identity.key_file at it. A new key would let blacklisted people verify again, lift the"
            " accounts-per-person limit and make every kept attribute unreadable"
        )
    keys = await asyncio.to_thread(IdentityKeys.load_or_create, path)
    if await store.identity.key_fingerprint(keys.fingerprint) != keys.fingerprint:
        raise KeyFileError(
            f"{path} is not the identity key this database's records were written under (its"
            " fingerprint differs): restore the original key file or point identity.key_file at it."
            " This key would let blacklisted people verify again and read no kept attribute"
        )
    return keys
