"""Real Synapse servers for the whole session, on free loopback ports, and bots per test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bot.devserver import Homeserver, RegisteredUser, free_port, random_token
from tests.conftest import BACKENDS, backends_for
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


# Two of the deployments the README describes, one per backend: the sidecar gate with SQLite (one
# machine, `make demo`) and the in-process module with PostgreSQL (Synapse with workers). The
# third, the sidecar gate with PostgreSQL (an active/standby pair behind a balancer), is what every
# other integration module runs on PostgreSQL (public accounts, records, identity, room mode,
# consent, start-up, faults) and what the failover tests run.
DEPLOYMENTS = (("http", "sqlite"), ("inprocess", "postgres"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module with ``BOTH_SHELLS = True`` runs each test that uses ``gated`` with the HTTP
    gate (synapse-http-antispam) and with the in-process module (bot.synapse.RulesModule); every
    test whose bot takes ``bot_backend`` runs on SQLite and on PostgreSQL. Where both apply, the
    test runs once per deployment (DEPLOYMENTS): each shell and each backend once, in the pairs
    operators run, rather than all four pairs, which would add 50 runs of the slowest tests
    (the shells meet the backend only through the bot's memory: the replica routes, the gate)."""
    both_shells = getattr(metafunc.module, "BOTH_SHELLS", False) and "gated" in metafunc.fixturenames
    chosen = backends_for(metafunc.definition) if "bot_backend" in metafunc.fixturenames else None
    if both_shells and chosen == list(BACKENDS):
        metafunc.parametrize("gated,bot_backend", DEPLOYMENTS, indirect=True, scope="session",
                             ids=[f"{shell}-{backend}" for shell, backend in DEPLOYMENTS])
        return
    if both_shells:
        metafunc.parametrize("gated", SHELLS, indirect=True, scope="session")
    # After the shells, so that the ids read [http-postgres].
    if chosen is not None:
        metafunc.parametrize("bot_backend", chosen, indirect=True)


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
def bot_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def bot_database(bot_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The ``database`` section of the test's bot: a file in the test's folder, or a fresh migrated
    database in this session's PostgreSQL cluster (each xdist worker has its own). One per test:
    the bots a test makes share it, as they share the folder."""
    if bot_backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        # In a thread of its own: this fixture is synchronous and the test's loop may be running.
        with ThreadPoolExecutor(1) as thread:
            return {"url": thread.submit(asyncio.run, cluster.fresh()).result()}
    return {"path": str(tmp_path / "bot.db")}


@pytest.fixture
def make_bot(tmp_path: Path, bot_database: dict[str, str]) -> Iterator[Callable[..., BotProcess]]:
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
            "database": dict(bot_database),
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
