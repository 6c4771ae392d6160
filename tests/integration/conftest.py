"""Real Synapse servers for the whole session, on free loopback ports, and bots per test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bot.devserver import Homeserver, RegisteredUser, free_port, random_token
from tests.integration.harness import BotProcess, InprocessServer, Moderation, setup

pytestmark = pytest.mark.integration


class GatedServer:
    def __init__(self, workdir: Path) -> None:
        self.gate_port = free_port()
        self.gate_token = random_token()
        self.hs = Homeserver(workdir, gate=(f"http://127.0.0.1:{self.gate_port}/antispam", self.gate_token))


def _bot_account(hs: Homeserver) -> RegisteredUser:
    return asyncio.run(hs.register("rulesbot", "rulesbot-password", admin=True))


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rules-bot-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def http_gated(session_dir: Path) -> Iterator[GatedServer]:
    """A Synapse whose antispam module points at the gate port the bots under test listen on."""
    server = GatedServer(session_dir / "gated")
    server.hs.start()
    server.bot = _bot_account(server.hs)
    yield server
    server.hs.stop()


# --- the in-process module (bot.synapse, issue 10) ---
SHELLS = ("http", "inprocess")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module with ``BOTH_SHELLS = True`` runs each test that uses ``gated`` twice: with the
    HTTP gate (synapse-http-antispam) and with the in-process module (bot.synapse.RulesModule)."""
    if getattr(metafunc.module, "BOTH_SHELLS", False) and "gated" in metafunc.fixturenames:
        metafunc.parametrize("gated", SHELLS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def inprocess_gated(session_dir: Path) -> Iterator[InprocessServer]:
    """A Synapse loading bot.synapse.RulesModule, pointed at the gate port the bots under test
    listen on (the bot serves the replica there)."""
    server = InprocessServer(session_dir / "inprocess", free_port(), random_token())
    server.hs.start()
    server.bot = _bot_account(server.hs)
    yield server
    server.hs.stop()


@pytest.fixture(scope="session")
def gated(request: pytest.FixtureRequest):
    """The gated homeserver: the HTTP gate, or the in-process module in BOTH_SHELLS modules."""
    shell = getattr(request, "param", "http")
    return request.getfixturevalue("inprocess_gated" if shell == "inprocess" else "http_gated")
# --- end of the in-process module ---


@pytest.fixture(scope="session")
def plain(session_dir: Path) -> Iterator[Homeserver]:
    """A Synapse without the module: only room mode can enforce there."""
    hs = Homeserver(session_dir / "plain")
    hs.start()
    hs.bot = _bot_account(hs)
    yield hs
    hs.stop()


@pytest.fixture
def make_bot(tmp_path: Path) -> Iterator[Callable[..., BotProcess]]:
    bots: list[BotProcess] = []

    def make(
        hs: Homeserver,
        bot: RegisteredUser,
        *,
        gate: GatedServer | None = None,
        admin_token: bool = False,
        **overrides: Any,
    ) -> BotProcess:
        config: dict[str, Any] = {
            "homeserver": {"url": hs.url, "user_id": bot.user_id, "password": bot.password},
            "database": {"path": str(tmp_path / "bot.db")},
            "language": "en",
            "gate": {"enabled": False},
            "log_level": "INFO",
        }
        if admin_token:
            config["homeserver"]["admin_token"] = bot.access_token
        if gate is not None:
            config["gate"] = {"enabled": True, "listen": f"127.0.0.1:{gate.gate_port}", "token": gate.gate_token}
        # The shipped default asks public-account and news applicants for a verified identity
        # (article 6); the tests of article 7 apply from plain accounts. The identity tests set
        # their own identity section, the default's included.
        config["identity"] = {"required_for": []}
        config.update(overrides)
        process = BotProcess(config, tmp_path)
        if isinstance(gate, InprocessServer):  # start() waits for the module's replicas
            process.replicas = [gate, *gate.also]
        bots.append(process)
        return process

    yield make
    for process in bots:
        process.stop()


@pytest.fixture
async def mod(gated, make_bot, request) -> Iterator[Moderation]:
    """A moderator, a management room and the bot (with the admin token) on the gated server.
    A test module can add config with a module-level MOD_CONFIG dict."""
    moderation = await setup(gated.hs, gated.bot, make_bot, gate=gated, **getattr(request.module, "MOD_CONFIG", {}))
    yield moderation
    for user in moderation.users:
        await user.close()
