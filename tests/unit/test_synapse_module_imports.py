"""What loading the module brings into Synapse: the policy core, the replica protocol, the
catalogs, and what Synapse already has. Not the bot's own stack, and installing the project into
Synapse's environment changes none of Synapse's dependencies."""

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

# pydantic itself is fine: Synapse imports it. pydantic-settings is the bot's, not Synapse's.
FORBIDDEN = ("aiohttp", "nio", "aiosqlite", "pydantic_settings", "asyncpg")


def test_importing_the_module_does_not_import_the_bots_stack():
    code = (
        "import sys, bot.synapse, bot.synapse.module\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"bot.synapse imports {result.stdout.strip()}"


def _closure(root: str) -> dict[str, list[Requirement]]:
    """Every installed distribution ``root`` needs (no extras), with the requirements on it."""
    seen: dict[str, list[Requirement]] = {}
    todo = [root]
    visited = set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in visited:
            continue
        visited.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            dep = requirement.name.lower().replace("_", "-")
            seen.setdefault(dep, []).append(requirement)
            todo.append(requirement.name)
    return seen


def test_installing_the_project_keeps_every_installed_synapse_dependency_as_it_is():
    """pip (only-if-needed, its default) changes an installed distribution only when a new
    requirement excludes its version. Every distribution Synapse needs that the project needs too
    must already satisfy the project's requirement on it."""
    synapse = _closure("matrix-synapse")
    ours = _closure("matrix-rules-bot")
    conflicts = []
    for name, requirements in ours.items():
        if name not in synapse:
            continue
        installed = Version(metadata.version(name))
        for requirement in requirements:
            if not requirement.specifier.contains(installed, prereleases=True):
                conflicts.append(f"{name} {installed} vs {requirement}")
    assert conflicts == []
    shared = sorted(set(ours) & set(synapse))
    assert "prometheus-client" in shared and "pyyaml" in shared  # the check does look at shared ones


def test_the_bots_own_use_of_the_replica_client_does_not_import_twisted():
    """A standby (bot.standby) follows the active with bot.synapse.replica. Importing Twisted there
    took systemd's LISTEN_FDS out of the environment before the gate claimed its socket, so a bot on
    PostgreSQL behind socket activation listened on its configured port instead."""
    code = (
        "import os, sys\n"
        "os.environ['LISTEN_PID'], os.environ['LISTEN_FDS'] = str(os.getpid()), '1'\n"
        "import bot.standby, bot.ha\n"
        "print('twisted' in sys.modules, os.environ.get('LISTEN_FDS'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "1"]


def test_synapse_still_finds_the_module_by_its_configured_name():
    code = ("from synapse.util.module_loader import load_module\n"
            "cls, config = load_module({'module': 'bot.synapse.RulesModule', 'config': {'bot_url': 'http://127.0.0.1:9', 'token': 'x' * 24}}, ())\n"
            "print(cls.__module__, cls.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["bot.synapse.module", "RulesModule"], result.stderr
