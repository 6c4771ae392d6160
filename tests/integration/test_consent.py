"""The agreement at registration on a real Synapse with ``user_consent`` (require_at_registration),
its policy pages written by ``consent-templates``, the antispam module wired to the gate, and the
bot process: an account registered through the m.login.terms stage is never prompted or refused;
one registered through the admin API still is; a version mismatch is reported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from bot.consent.synapse import page_version
from bot.consent.templates import texts_for, write_templates
from bot.devserver import Homeserver, RegisteredUser, free_port, random_token
from bot.export import iso
from tests.integration.harness import (REPO, InprocessServer, User, inprocess_modules, new_user, sent, setup,
                                      until)

pytestmark = pytest.mark.integration

SYNAPSE_VERSION = "1"
NO_PROMPT_WAIT_S = 4.0  # how long a prompt that should not come is waited for


class ConsentServer:
    """A Synapse like the shared gated one, plus user_consent and open registration."""

    def __init__(self, workdir: Path) -> None:
        self.gate_port = free_port()
        self.gate_token = random_token()
        port = free_port()
        self.hs = Homeserver(workdir / "hs", port=port, gate=(f"http://127.0.0.1:{self.gate_port}/antispam", self.gate_token),
                             extra_config=consent_config(workdir, port))
        self.bot: RegisteredUser | None = None


def consent_config(workdir: Path, port: int) -> dict[str, Any]:
    templates = workdir / "consent-templates"
    write_templates(templates, SYNAPSE_VERSION, texts_for(None))
    return {
        # The README's snippet: the consent resource on the client listener.
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client", "consent"], "compress": False}]}],
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "user_consent": {"template_dir": str(templates), "version": SYNAPSE_VERSION,
                         "require_at_registration": True, "policy_name": "Service agreement"},
    }


class InprocessConsentServer(InprocessServer):
    """The same user_consent, with the rules decided inside Synapse (bot.synapse.RulesModule)."""

    def __init__(self, workdir: Path) -> None:
        # Not InprocessServer.__init__: its Homeserver has no user_consent; the rest is the same.
        self.gate_port, self.gate_token, self.also = free_port(), random_token(), []
        port = free_port()
        modules = inprocess_modules(f"http://127.0.0.1:{self.gate_port}", self.gate_token, poll_timeout=1)
        self.hs = Homeserver(workdir / "hs", port=port, extra_config={**consent_config(workdir, port),
                                                                      "modules": modules})
        self.bot: RegisteredUser | None = None


def running(server: ConsentServer | InprocessConsentServer) -> Iterator[Any]:
    server.hs.start()
    server.bot = asyncio.run(server.hs.register("rulesbot", "rulesbot-password", admin=True))
    yield server
    server.hs.stop()


@pytest.fixture(scope="module")
def consent_server(tmp_path_factory) -> Iterator[ConsentServer]:
    yield from running(ConsentServer(tmp_path_factory.mktemp("consent")))


async def register_with_terms(hs: Homeserver, name: str) -> tuple[User, dict[str, Any]]:
    """Registration as Element does it: the UIA flow, ticking the m.login.terms box, then the dummy stage.
    Returns the user and the 401 Synapse first answered (its flows and the terms' params)."""
    localpart, password = f"{name}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    url = f"{hs.url}/_matrix/client/v3/register"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"username": localpart, "password": password}) as resp:
            first = await resp.json()
            assert resp.status == 401, first
        for stage in ("m.login.terms", "m.login.dummy"):
            body = {"username": localpart, "password": password, "auth": {"type": stage, "session": first["session"]}}
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
        assert resp.status == 200, answer
    account = RegisteredUser(answer["user_id"], password, answer["access_token"], answer["device_id"])
    return User(hs, account), first


async def admin_user(hs: Homeserver, token: str, user_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hs.url}/_synapse/admin/v2/users/{user_id}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            return await resp.json()


def export_agreements(config_path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "bot", "export", "--config", str(config_path), "--kind", "agreements",
                             "--format", "jsonl"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        return json.loads(resp.read())


async def no_invite_from(user: User, bot_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await user.sync()
        assert bot_id not in user.invites.values(), f"{user.user_id} was invited by the bot (a prompt) after all"


@pytest.fixture
def process(consent_server, make_bot):
    """The bot with the admin token (it reads consent through the admin API), its gate wired."""
    started = make_bot(consent_server.hs, consent_server.bot, gate=consent_server, admin_token=True)
    started.start()
    return started


async def test_an_account_that_agreed_at_registration_posts_at_once_and_is_never_prompted(consent_server, process):
    hs, bot = consent_server.hs, consent_server.bot
    user, first = await register_with_terms(hs, "registered")
    try:
        # Synapse asked for the bot's version in the terms stage, the first stage of every flow.
        assert all(flow["stages"][0] == "m.login.terms" for flow in first["flows"]), first["flows"]
        assert first["params"]["m.login.terms"]["policies"]["privacy_policy"]["version"] == SYNAPSE_VERSION
        # The policy the stage links to is the page consent-templates wrote, as Synapse renders it.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{hs.url}/_matrix/consent") as resp:
                page = await resp.text()
        assert resp.status == 200 and page_version(page) == SYNAPSE_VERSION
        assert "信息真实性底线" in page and "the authenticity of information" in page
        record = await admin_user(hs, bot.access_token, user.user_id)
        assert record["consent_version"] == SYNAPSE_VERSION
        assert abs(record["consent_ts"] - time.time() * 1000) < 60_000  # milliseconds, as the bot records them

        # The very first thing the account does is gated, and allowed: a room, then a message in it.
        status, room = await user.create_room(name="Mine")
        assert status == 200, room
        sent(await user.say(room["room_id"], "hello, right after registering"))

        # A password login (Synapse's login callback) brings no prompt either.
        await user.login()
        await no_invite_from(user, bot.user_id, NO_PROMPT_WAIT_S)
        assert f"{user.user_id} accepted agreement version 1 at registration" in process.log()

        rows = [r for r in export_agreements(process.config_path) if r["user_id"] == user.user_id]
        assert len(rows) == 1, rows
        assert rows[0]["method"] == "registration" and rows[0]["version"] == SYNAPSE_VERSION
        assert rows[0]["event_id"] == f"consent:{user.user_id}:{SYNAPSE_VERSION}" and rows[0]["room_id"] == ""
        assert rows[0]["accepted_at"] == iso(record["consent_ts"])  # when Synapse recorded the consent
    finally:
        await user.close()


async def test_a_login_before_any_post_asks_the_admin_api_instead_of_prompting(consent_server, process):
    hs, bot = consent_server.hs, consent_server.bot
    user, _ = await register_with_terms(hs, "logsin")
    try:
        await user.login()  # the gate's login callback -> onboarding, which asks before it prompts
        await until(lambda: f"{user.user_id} accepted agreement version 1 at registration" in process.log(),
                    timeout=20, what="the acceptance at registration recorded by onboarding")
        await no_invite_from(user, bot.user_id, NO_PROMPT_WAIT_S)
    finally:
        await user.close()


async def created_by_admin(hs: Homeserver, token: str, name: str) -> User:
    """An account the operator creates with the admin API (PUT /_synapse/admin/v2/users), then its
    first password login for a token."""
    user_id, password = f"@{name}-{uuid.uuid4().hex[:8]}:{hs.server_name}", uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{hs.url}/_synapse/admin/v2/users/{user_id}", json={"password": password},
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 201, await resp.text()
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password}
        async with session.post(f"{hs.url}/_matrix/client/v3/login", json=login) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
    return User(hs, RegisteredUser(user_id, password, answer["access_token"], answer["device_id"]))


@pytest.mark.parametrize("path", ["shared-secret", "admin-api"])
async def test_an_account_registered_without_the_terms_stage_still_meets_the_chat_flow(consent_server, process, path):
    hs, bot = consent_server.hs, consent_server.bot
    if path == "shared-secret":
        user = await new_user(hs, "secretmade")  # /_synapse/admin/v1/register with the shared secret
    else:
        user = await created_by_admin(hs, bot.access_token, "adminmade")
    try:
        assert (await admin_user(hs, bot.access_token, user.user_id))["consent_version"] is None
        status, room = await user.create_room(name="Refused")
        assert status == 403 and "not accepted the service agreement (version 1)" in room["error"], room
        await user.login()
        dm = await user.wait_for_invite(bot.user_id)
        await user.join(dm)
        await user.wait_for_message(dm, bot.user_id, "!agree")
        assert not [r for r in export_agreements(process.config_path) if r["user_id"] == user.user_id]
    finally:
        await user.close()


async def test_a_version_mismatch_is_reported_and_consent_to_the_other_version_does_not_count(consent_server, make_bot):
    hs = consent_server.hs
    moderation = await setup(hs, consent_server.bot, make_bot, gate=consent_server, agreement={"version": "2"})
    user, _ = await register_with_terms(hs, "oldterms")
    try:
        await moderation.moderator.wait_for_message(
            moderation.room, moderation.bot_id, "asks new accounts to accept agreement version 1 (user_consent.version), "
            "but the bot's agreement is version 2")
        log = moderation.bot.log()
        assert "ERROR bot.consent.wiring: the homeserver's user_consent.version is '1'" in log
        assert "agreement.version is '2'" in log
        assert health(consent_server.gate_port)["warnings"] == [
            "Synapse user_consent.version '1' differs from agreement.version '2'"]
        # The account agreed to version 1 at registration; the bot asks for version 2.
        status, room = await user.create_room(name="Refused")
        assert status == 403 and "version 2" in room["error"], room
    finally:
        await user.close()
        for member in moderation.users:
            await member.close()


# --- the in-process module (review 9, break 7): it asks the bot before refusing as not agreed ---

@pytest.fixture(scope="module")
def inprocess_consent_server(tmp_path_factory) -> Iterator[InprocessConsentServer]:
    yield from running(InprocessConsentServer(tmp_path_factory.mktemp("consent-inprocess")))


async def test_with_the_in_process_module_an_account_that_agreed_at_registration_posts_at_once(
        inprocess_consent_server, make_bot):
    server = inprocess_consent_server
    hs, bot = server.hs, server.bot
    process = make_bot(hs, bot, gate=server, admin_token=True)
    process.start()  # waits for the module's snapshot
    user, _ = await register_with_terms(hs, "inproc")
    newcomer = await new_user(hs, "inproc-secretmade")  # no terms stage: still refused
    try:
        status, room = await user.create_room(name="Mine")
        assert status == 200, room
        sent(await user.say(room["room_id"], "hello, right after registering"))
        assert f"{user.user_id} accepted agreement version 1 at registration" in process.log()
        status, refused = await newcomer.create_room(name="Refused")
        assert status == 403 and "not accepted the service agreement (version 1)" in refused["error"], refused
        await no_invite_from(user, bot.user_id, NO_PROMPT_WAIT_S)
    finally:
        await user.close()
        await newcomer.close()
