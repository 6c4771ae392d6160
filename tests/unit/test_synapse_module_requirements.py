"""The in-process module's install into Synapse's environment (issue 10 review, break 6):
config/synapse-module-requirements.txt names everything the module imports beyond Synapse, and
each floor it puts on a package Synapse requires is no higher than Synapse's own, so installing
it (with the project itself under --no-deps) changes no version Synapse's environment holds."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

CHECKOUT = Path(__file__).resolve().parents[2]
REQUIREMENTS = CHECKOUT / "config" / "synapse-module-requirements.txt"


def _name(text: str) -> str:
    return text.lower().replace("_", "-").replace(".", "-")


def module_requirements() -> dict[str, Requirement]:
    lines = [line.strip() for line in REQUIREMENTS.read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {_name(r.name): r for r in requirements}


def floor(specifier: SpecifierSet) -> Version:
    """The lowest version a specifier admits (0 when it has no lower bound)."""
    bounds = [Version(s.version) for s in specifier if s.operator in (">=", "==", "~=", "===")]
    bounds += [Version(s.version) for s in specifier if s.operator == ">"]
    return max(bounds, default=Version("0"))


def synapse_floors() -> dict[str, Version]:
    """matrix-synapse's own requirements (no extras): package -> its floor."""
    floors = {}
    for text in metadata.requires("matrix-synapse") or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            floors[_name(requirement.name)] = floor(requirement.specifier)
    return floors


def test_the_requirements_cover_everything_the_module_imports_beyond_synapse():
    """What loading the module (and the text pipeline's lazy imports) brings in that Synapse's
    own modules, treq, Twisted and prometheus_client did not."""
    code = (
        "import sys\n"
        "import synapse.module_api, synapse.spam_checker_api, treq, twisted.web.client, prometheus_client\n"
        "before = set(sys.modules)\n"
        "import bot.synapse.module\n"
        "from bot.policy import normalize\n"
        "normalize._confusables(True); normalize._t2s()\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(m for m in new if m not in sys.stdlib_module_names and not m.startswith('_'))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    owners = metadata.packages_distributions()
    needed = {_name(dist) for top in loaded if top not in ("bot", "synapse") for dist in owners.get(top, [top])}
    assert needed == {"selectolax", "opencc", "confusable-homoglyphs", "ahocorasick-rs"}
    assert needed <= set(module_requirements()), f"missing from {REQUIREMENTS.name}"


def test_every_floor_on_a_package_synapse_requires_is_no_higher_than_synapses():
    synapse = synapse_floors()
    version = metadata.version("matrix-synapse")
    assert Version(version).release[:2] >= (1, 163)
    shared = {name: r for name, r in module_requirements().items() if name in synapse}
    assert set(shared) == {"prometheus-client", "treq", "twisted"}  # the check looks at these
    too_high = [f"{r} (Synapse {version}: >={synapse[name]})" for name, r in shared.items()
                if floor(r.specifier) > synapse[name]]
    assert too_high == []


def test_the_text_libraries_have_the_projects_floors():
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["dependencies"]
    ours = {_name(r.name): r.specifier for r in map(Requirement, project)}
    synapse = synapse_floors()
    text_libraries = {name: r for name, r in module_requirements().items() if name not in synapse}
    assert set(text_libraries) == {"selectolax", "opencc", "confusable-homoglyphs", "ahocorasick-rs"}
    for name, requirement in text_libraries.items():
        assert requirement.specifier == ours[name], name


def test_the_projects_own_floors_on_synapses_packages_are_what_the_bot_needs():
    """The bot's own install (pyproject.toml) may need more than Synapse's floor only where its
    code does: prometheus_client.registry.Collector came in 0.14. Any other floor above Synapse's
    would upgrade a package in an environment Synapse is content with."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["dependencies"]
    synapse = synapse_floors()
    above = {_name(r.name): str(r.specifier) for r in map(Requirement, project)
             if _name(r.name) in synapse and floor(r.specifier) > synapse[_name(r.name)]}
    assert above == {"prometheus-client": ">=0.14"}
