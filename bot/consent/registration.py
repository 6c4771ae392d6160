"""The agreement accepted at registration: Synapse's ``user_consent`` record, read and recorded.

With ``user_consent.require_at_registration`` Synapse puts an ``m.login.terms`` stage before
registration; when it is completed, Synapse sets the account's ``consent_version`` (the configured
``user_consent.version``) and ``consent_ts`` (ms), which the admin API's user record
(``GET /_synapse/admin/v2/users/<id>``) shows. The same columns are set when someone agrees on
Synapse's consent page (``/_matrix/consent``, linked from its server notice) and on the SSO
new-user consent page. An account whose ``consent_version`` is the bot's agreement version has
accepted the agreement: the bot records it (method ``registration``) and never prompts or refuses
it. Accounts made without the stage (the admin API, shared-secret registration, SSO without
consent) have no ``consent_version`` and meet the chat flow as before.

The gate asks this before it refuses an account for not having agreed, so the first message sent
right after registering is let through: the lookup is short (a timeout), one per account at a time,
and its answer is kept (a yes for good, since it is recorded; a no for a while, then asked again,
since the account may agree on the consent page meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 2.0  # the gate waits this long at most, once per account
NEGATIVE_FOR_MS = 60_000  # a "not accepted" answer is asked again after this
FAILED_FOR_MS = 10_000  # an unreachable admin API is asked again sooner
MAX_REMEMBERED = 200_000  # only a guard against growth


class AcceptRegistration(Protocol):
    """Records the acceptance: True if recorded now, False if it was before, None if Synapse's
    record does not count as accepting this document (see AgreementService.accept_at_registration)."""

    def __call__(self, user_id: str, version: str, accepted_at: int | None) -> Awaitable[bool | None]: ...


class UserRecords:
    """The admin API's user record, with its own short timeout (the admin client's is 60 s, too long
    for the gate to wait on)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """The user's record, None if Synapse has no such user; raises LookupFailed otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        url = f"{self._base}/_synapse/admin/v2/users/{quote(user_id)}"
        try:
            async with self._session.get(url) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise LookupFailed(f"HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise LookupFailed(type(exc).__name__) from exc
        if not isinstance(data, dict):
            raise LookupFailed("the user record is not a JSON object")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class LookupFailed(Exception):
    pass


def consent_of(record: dict[str, Any] | None) -> tuple[str | None, int | None]:
    """(consent_version, consent_ts in ms) of an admin-API user record; Nones where absent."""
    if record is None:
        return None, None
    version = record.get("consent_version")
    ts = record.get("consent_ts")
    return (version if isinstance(version, str) else None,
            ts if isinstance(ts, int) and not isinstance(ts, bool) else None)


class RegistrationConsent:
    """Answers "did this account accept the current agreement through Synapse?" and records a yes."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[dict[str, Any] | None]],
        accept: AcceptRegistration,
        version: Callable[[], str],
        is_local: Callable[[str], bool],
        clock: Callable[[], int],
    ) -> None:
        self._lookup = lookup
        self._accept = accept
        self._version = version
        self._is_local = is_local
        self._clock = clock
        # user -> when a "no" (or a failed lookup) may be asked again, and which it was (False: no,
        # None: could not be checked)
        self._ask_again_at: dict[str, tuple[int, bool | None]] = {}
        self._pending: dict[str, asyncio.Future[bool | None]] = {}
        self.lookups = 0  # admin API calls made (for tests and /metrics-minded readers)

    async def accepted(self, user_id: str) -> bool:
        """True if the account accepted the current version through Synapse (recorded now if not
        before). Never raises: a failed lookup is a "not known to have accepted"."""
        return await self.answer(user_id) is True

    async def answer(self, user_id: str) -> bool | None:
        """``accepted``, with None for "could not be checked now" (the lookup failed, or recording
        the yes did; asked again after FAILED_FOR_MS) apart from a "no" (review 11b: a standby
        asking the active keeps each as long as the active does)."""
        if not self._is_local(user_id):
            return False  # the admin API knows only this homeserver's accounts
        until, remembered = self._ask_again_at.get(user_id, (0, False))
        if self._clock() < until:
            return remembered
        pending = self._pending.get(user_id)
        if pending is not None:  # one lookup per account at a time; the others wait for its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._pending[user_id] = future
        try:
            answer = await self._ask(user_id)
        except BaseException:
            future.set_result(None)  # cancelled: the others waiting learn nothing either way
            raise
        else:
            future.set_result(answer)
        finally:
            del self._pending[user_id]
        return answer

    async def _ask(self, user_id: str) -> bool | None:
        self.lookups += 1
        try:
            record = await self._lookup(user_id)
        except LookupFailed as exc:
            log.warning("could not read %s's consent from the admin API (%s): the chat flow applies for now", user_id, exc)
            self._remember_no(user_id, FAILED_FOR_MS, unknown=True)
            return None
        consent_version, consent_ts = consent_of(record)
        version = self._version()
        if consent_version != version:
            self._remember_no(user_id, NEGATIVE_FOR_MS)
            return False
        try:
            recorded = await self._accept(user_id, version, consent_ts)
        except Exception:  # the store failed: not recorded, so not let through on it; asked again soon
            log.exception("recording %s's acceptance at registration failed", user_id)
            self._remember_no(user_id, FAILED_FOR_MS, unknown=True)
            return None
        if recorded is None:
            log.info("%s's consent to version %s in Synapse (at %s) predates this agreement text: not counted",
                     user_id, version, consent_ts)
            self._remember_no(user_id, NEGATIVE_FOR_MS)
            return False
        self._ask_again_at.pop(user_id, None)
        if recorded:
            log.info("%s accepted agreement version %s at registration (Synapse user_consent); recorded", user_id, version)
        return True

    def _remember_no(self, user_id: str, for_ms: int, unknown: bool = False) -> None:
        """Answer no (None if ``unknown``) without asking for ``for_ms``."""
        if len(self._ask_again_at) >= MAX_REMEMBERED:
            self._ask_again_at.clear()
        self._ask_again_at[user_id] = (self._clock() + for_ms, None if unknown else False)
