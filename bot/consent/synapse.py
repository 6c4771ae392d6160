"""Which agreement version Synapse asks for (its ``user_consent.version``), read from outside.

Synapse publishes it in two places the bot can read without any privilege:
1. the ``m.login.terms`` stage's parameters in the 401 that ``POST /_matrix/client/v3/register``
   answers to an empty body (``params["m.login.terms"]["policies"]["privacy_policy"]["version"]``)
   when ``require_at_registration`` is on and registration is open;
2. the policy page ``GET /_matrix/consent`` (Synapse renders its configured version), whose
   template ``consent-templates`` writes with a ``rulesbot-agreement-version`` meta tag, and a
   ``rulesbot-agreement-sha256`` one naming the hash of each text on it: the same version string
   over another text (an older policy page) is not the bot's agreement.
If neither answers, Synapse has no ``user_consent`` the bot can see, and every account meets the
chat flow.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

_VERSION_META = re.compile(r'<meta\s+name="rulesbot-agreement-version"\s+content="([^"]*)"', re.IGNORECASE)
_SHA256_META = re.compile(r'<meta\s+name="rulesbot-agreement-sha256"\s+content="([0-9a-f ]*)"', re.IGNORECASE)
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SynapseConsent:
    version: str | None  # None: Synapse's user_consent could not be seen
    at_registration: bool  # the m.login.terms stage is in the registration flows
    source: str  # where the version was read, for the log
    # the hashes of the texts on Synapse's policy page (empty: no page written by consent-templates)
    text_sha256s: frozenset[str] = frozenset()


def terms_version(body: Any) -> str | None:
    """The policy version of the m.login.terms stage in a UIA 401 body, if it has one."""
    try:
        version = body["params"]["m.login.terms"]["policies"]["privacy_policy"]["version"]
    except (KeyError, TypeError):
        return None
    return version if isinstance(version, str) else None


def page_text_sha256s(html_text: str) -> frozenset[str]:
    """The hashes of the agreement texts on a policy page written by ``consent-templates``."""
    found = _SHA256_META.search(html_text)
    return frozenset(found.group(1).split()) if found else frozenset()


def page_version(html_text: str) -> str | None:
    """The version a policy page written by ``consent-templates`` was rendered for."""
    found = _VERSION_META.search(html_text)
    return found.group(1) if found else None


async def probe(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> SynapseConsent:
    """Ask Synapse which agreement version it asks for. Never raises: an unreachable homeserver
    is the same as one without user_consent, and says so in the log."""
    base = base_url.rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        try:
            # An empty body starts no registration: Synapse answers with the flows and their params.
            async with session.post(f"{base}/_matrix/client/v3/register", json={}) as resp:
                body = await resp.json(content_type=None) if resp.status == 401 else None
            # The page too, for the texts it shows (the stage names only a version).
            async with session.get(f"{base}/_matrix/consent") as resp:
                text = await resp.text() if resp.status == 200 else ""
            version = terms_version(body)
            if version is not None:
                return SynapseConsent(version, True, "the m.login.terms stage of registration", page_text_sha256s(text))
            version = page_version(text)
            if version is not None:
                return SynapseConsent(version, False, "the policy page /_matrix/consent", page_text_sha256s(text))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("could not ask the homeserver for its user_consent version: %s", type(exc).__name__)
    return SynapseConsent(None, False, "")
