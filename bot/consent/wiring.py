"""The consent feature as the service wires it in (see bot.consent)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from bot.agreement import AgreementService
from bot.config import Settings
from bot.consent.registration import LOOKUP_TIMEOUT_S, RegistrationConsent, UserRecords
from bot.consent.synapse import SynapseConsent, probe
from bot.i18n import Translator
from bot.matrix.management import ManagementRoom
from bot.policy import PolicyState

log = logging.getLogger(__name__)


class Consent:
    """What the service wires in: ``accepted`` for the gate, onboarding, room mode and the module's
    consent question, ``check_versions`` once at start-up, ``warnings`` for /health."""

    def __init__(self, settings: Settings, state: PolicyState, agreements: AgreementService,
                 management: ManagementRoom, t: Translator, clock: Callable[[], int]) -> None:
        self._url = settings.homeserver.url
        self._version = agreements.document.version
        self._management = management
        self._t = t
        self.warnings: list[str] = []
        self._agreements = agreements
        # Synapse's consent record is trusted only once check_versions has seen Synapse ask for
        # this very version: its consent form stores whatever version string it is sent.
        self.synapse_serves_this_version = False
        # Set once check_versions has answered: a question asked at start-up, before that, waits
        # for it (up to the lookup's own timeout) instead of refusing a newcomer who did accept.
        self._versions_checked = asyncio.Event()
        self.versions_wait_s = LOOKUP_TIMEOUT_S
        token = settings.homeserver.admin_token
        self._records: UserRecords | None = None
        self.checker: RegistrationConsent | None = None
        if token is None:
            log.warning("no homeserver.admin_token: an agreement accepted at registration (Synapse's user_consent)"
                        " cannot be read, so every account is asked to agree in chat")
            return
        self._records = UserRecords(self._url, token.get_secret_value())
        self.checker = RegistrationConsent(self._records.user, agreements.accept_at_registration,
                                           lambda: agreements.document.version, state.is_local, clock)

    async def accepted(self, user_id: str) -> bool:
        """The account accepted the current agreement through Synapse (and it is recorded now).
        False until check_versions has found Synapse asking for this version, with this text."""
        return await self.answer(user_id) is True

    async def answer(self, user_id: str) -> bool | None:
        """``accepted``, with None for "could not be checked now" (review 11b): the versions not
        checked yet, or the lookup failed (RegistrationConsent.answer)."""
        if self.checker is None:
            return False
        if not self._versions_checked.is_set():
            try:
                await asyncio.wait_for(self._versions_checked.wait(), self.versions_wait_s)
            except asyncio.TimeoutError:
                return None
        if not self.synapse_serves_this_version:
            return False
        return await self.checker.answer(user_id)

    async def check_versions(self) -> SynapseConsent:
        """Compare Synapse's user_consent.version with agreement.version, and its policy page's texts
        with the bot's; a mismatch is an ERROR in the log, a /health warning and one management-room
        notice per pair of versions (per text). Synapse's consent record is trusted only when both
        match."""
        # First, so that a start with a new agreement records when it took effect before any
        # registration consent is compared with that time.
        await self._agreements.took_effect()
        found = await probe(self._url)
        sha256 = self._agreements.document.sha256
        self.synapse_serves_this_version = found.version == self._version and sha256 in found.text_sha256s
        self._versions_checked.set()
        if found.version is None:
            log.info("the homeserver shows no user_consent policy: the agreement is asked for in chat only")
        elif found.version == self._version and not self.synapse_serves_this_version:
            # The same version string over another text (an older or hand-written policy page):
            # a consent given there is not to the bot's agreement.
            log.error("the homeserver asks for agreement version %r, but its policy page /_matrix/consent does not"
                      " show the bot's agreement text (sha256 %s; the page names %s): accounts that accept at"
                      " registration will still be asked in chat. Regenerate the policy pages"
                      " (python -m bot consent-templates)", found.version, sha256,
                      " ".join(sorted(found.text_sha256s)) or "no text written by consent-templates")
            self.warnings.append(f"Synapse's policy page for version {found.version!r} is not the bot's agreement text")
            await self._management.post(self._t("consent.text_mismatch", version=self._version),
                                        f"consent-text-mismatch/{self._version}/{sha256}")
        elif found.version == self._version:
            log.info("the homeserver asks for agreement version %s (%s), as the bot does%s", found.version,
                     found.source, "" if self.checker is not None else ", but without the admin token it cannot be read")
        else:
            log.error("the homeserver's user_consent.version is %r (read from %s) but agreement.version is %r:"
                      " accounts that accept at registration will still be asked in chat. Regenerate the policy"
                      " pages (python -m bot consent-templates) and set user_consent.version to %r",
                      found.version, found.source, self._version, self._version)
            self.warnings.append(f"Synapse user_consent.version {found.version!r} differs from agreement.version"
                                 f" {self._version!r}")
            await self._management.post(self._t("consent.mismatch", synapse=found.version, version=self._version),
                                        f"consent-mismatch/{found.version}/{self._version}")
        return found

    async def close(self) -> None:
        if self._records is not None:
            await self._records.close()
